"""One run on Ray Train, driven from here: `orchestrator train`, and the trainer every Tune trial fits.

The run is a DataParallelTrainer with our TF_CONFIG backend (``training.backend``); its workers run
``training.loop.train_loop_per_worker``. The driver follows the run through rank 0's progress file and writes
``summary.json`` at the end.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from .. import _ray, layout, storage
from ..config.explain import changed_fields
from ..config.freezing import hashes_of_same_work, saved_as_today
from ..config.revision import TRAINING_REVISION, revision_of
from ..config.schema import ExperimentConfig, parse_config
from ..data.spec import DataSpec
from ..errors import ConfigError, Interrupted
from . import checkpoints
from .session import Prepared, Session, check, release, start


@dataclass(frozen=True)
class RunInputs:
    """What a run needs besides its config: what every worker reads (the data spec, the shipped data and backbone,
    object store references, see ``session``; single-task baselines for Δm%), and whether its Ray may have an
    autoscaler to ask for its workers (``Session.autoscaler``)."""
    spec: DataSpec
    data: dict
    backbone: Optional[dict]
    baselines: Optional[dict] = None
    autoscaler: bool = True

    @classmethod
    def of(cls, session: Session, *, baselines: Optional[dict] = None) -> "RunInputs":
        return cls(session.prepared.spec, session.data, session.backbone, baselines, session.autoscaler)


def make_trainer(cfg: ExperimentConfig, inputs: RunInputs, *, name: str, callbacks=(), max_failures: int = 2,
                 controller=None, spares: bool = False):
    """The Ray Train run for one configuration (used by `train` and by every Tune trial, which passes its
    ``_ray.LocalController``, and ``spares`` when later trials will want warm workers: ``warm``)."""
    import ray.train

    from . import backend, warm
    from .loop import train_loop_per_worker

    r = cfg.resources
    fs, path = storage.ray_filesystem(layout.trials(cfg.storage))
    return backend.make(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "data_spec": inputs.spec.to_dict(),
                           "data": inputs.data, "backbone_file": inputs.backbone,
                           "run_dir": layout.run_dir(cfg.storage, name), "baselines": inputs.baselines},
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=r.use_gpu, placement_strategy=r.placement_strategy,
            resources_per_worker=worker_request(cfg)),
        run_config=ray.train.RunConfig(
            name=name, storage_path=path, storage_filesystem=fs, callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            worker_runtime_env=warm.worker_runtime_env()),
        controller=controller, spares=spares, autoscaler=inputs.autoscaler,
    )


def worker_request(cfg: ExperimentConfig) -> dict:
    r = cfg.resources
    return {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}


def fit_and_watch(session: Session, *, name: str, out=print,
                  baselines: Optional[dict] = None) -> tuple[list[dict], str | None, bool]:
    """Fit one run, printing its epochs as they land; (history, one-line error or None, user error?)."""
    from .failures import find_user_error, one_line
    from .loop import format_epoch
    from .progress import attempt_records, read_progress, watch

    cfg, run = session.cfg, layout.run_dir(session.cfg.storage, name)
    try:   # before the watcher starts; a trainer that cannot be built is a failed run, as a failed fit
        trainer = make_trainer(cfg, RunInputs.of(session, baselines=baselines), name=name)
    except Exception as e:  # noqa: BLE001 - keep one line
        return (read_progress(run) or {"history": []})["history"], one_line(e), find_user_error(e) is not None
    stop = threading.Event()
    thread = watch(run, request=worker_request(cfg), workers=cfg.resources.workers, out=out, stop=stop,
                   on_epoch=lambda m: out(format_epoch(m, cfg.train.epochs)), what=f"run {name}")
    error, user = None, False
    try:
        with _ray.handlers_kept():   # Ray Train's fit leaves its Ctrl-C handler behind (a notebook's next Ctrl-C)
            trainer.fit()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - Ray Train raises its own wrappers; keep one line
        if isinstance(e, SystemExit) and not trainer.interrupted:
            raise
        error, user = one_line(e), find_user_error(e) is not None
    finally:
        stop.set()
        thread.join()   # the watcher reads the progress file once more after stop: the last epoch is printed
    if trainer.interrupted and error is not None:   # Ctrl-C aborted it (a run done before the abort keeps its summary)
        epoch = (read_progress(run) or {}).get("epoch", 0)
        raise Interrupted(f"run {name} stopped at epoch {epoch}", f"continue it with the same config and "
                                                                  f"name={name!r} (`--name {name}`)")
    for record in attempt_records(run):
        for line in record.get("notes", []):
            out(f"warning: {line}")
    progress = read_progress(run) or {"history": []}
    return progress["history"], error, user


def run_summary(p: Prepared, history: list[dict], *, name: str, error: str | None, wall_time_s: float) -> dict:
    from .progress import attempts

    m = history[-1] if history else {}
    run = layout.run_dir(p.cfg.storage, name)
    task_metrics = {t: {k.removeprefix(f"{t}_"): v for k, v in m.items() if k.startswith(f"{t}_")
                        and not k.startswith(f"{t}_loss_")} for t in p.cfg.tasks}
    world = int(m.get("world_size", 0))
    status = "failed" if error else "diverged" if m.get("status") == "diverged" else "completed"
    return {
        "run": name, "status": status, "error": error,
        "objective": m.get("objective"), "objective_metric": p.cfg.objective.metric,
        "tasks": task_metrics, "epochs": m.get("epoch"), "train_loss": m.get("train_loss"),
        "world_size": world, "rank_steps": [m.get(f"rank{r}_steps") for r in range(world)],
        "examples_per_s": m.get("examples_per_s"), "wall_time_s": round(wall_time_s, 1),
        "checkpoint": storage.redact(layout.checkpoints(run)), "attempts": attempts(run),
        "data": {"n_train": p.spec.n_train, "n_val": p.spec.n_val, "fingerprint": p.spec.fingerprint},
        "history": history, "config": p.cfg.run_fields(),
    }


def run_name(experiment: str) -> str:
    """A run name no other run has: time plus random suffix."""
    return f"train-{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def check_run_name(cfg: ExperimentConfig, name: str, *, fingerprint: Optional[str], n_blocks: int) -> None:
    """A run continues only its own checkpoints: a name used by another config (not one of ``hashes_of_same_work``),
    or by this one on other data (the files behind its paths changed), is refused."""
    state = checkpoints.latest_state(layout.run_dir(cfg.storage, name))
    if state is not None and revision_of(state) != TRAINING_REVISION:
        raise ConfigError(f"run {name!r} was trained by older code (training revision {revision_of(state)}"
                          f", now {TRAINING_REVISION}: what a config trains changed): pick another --name (name=), "
                          f"or omit it for a new unique one")
    if state is not None and state.get("config_hash") not in hashes_of_same_work(cfg, n_blocks):
        changed = _changed_since(cfg, layout.run_dir(cfg.storage, name), n_blocks=n_blocks)
        raise ConfigError(f"run {name!r} already exists with another config ({changed + '; ' if changed else ''}"
                          f"checkpoint at epoch {state['epoch']}, "
                          f"config hash {state.get('config_hash')}, this config {cfg.config_hash()}): pick another "
                          f"--name (name=), or omit it for a new unique one")
    if state is not None and fingerprint and state.get("data_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(f"run {name!r} was trained on other data (checkpoint at epoch {state['epoch']}, data "
                          f"fingerprint {state['data_fingerprint']}, now {fingerprint}: its files or the backbone "
                          f"file changed): pick another --name (name=), or omit it for a new unique one")


def _changed_since(cfg: ExperimentConfig, run: str, *, n_blocks: int) -> str:
    """The fields of what ``cfg`` trains (``work_fields``) that differ from the run's last config (its config.json),
    read the way a config is read now (``every_block_as_all``); "" where it has none, or one that no longer
    validates."""
    try:
        before = parse_config(json.loads(storage.read_bytes(storage.join(run, layout.CONFIG_FILE))))
    except (OSError, ValueError, ConfigError):
        return ""
    return changed_fields(saved_as_today(before, n_blocks).work_fields(), cfg.work_fields())


def train(cfg: ExperimentConfig, *, address: str | None = None, name: str | None = None, out=print,
          verbose: bool = False, ready: Optional[Callable[[ExperimentConfig], None]] = None,
          baselines: Optional[Callable[[Prepared], Optional[dict]]] = None) -> dict:
    """`orchestrator train`: check, fit one configuration on Ray Train, write summary.json. ``ready``: a last check
    once Ray is up (the cluster can hold the run), before anything is written. ``baselines``: the single-task scores
    its Δm% is measured against, found from the checked config (before Ray starts)."""
    from .lease import acquire

    named = name is not None   # a named run is rerun (resumed) by its name; a folder of its own (the API's too)
    name = layout.require_run_name(name) if named else None
    p = check(cfg)
    found = baselines(p) if baselines is not None else None
    name = name or run_name(p.cfg.name)
    run = layout.run_dir(p.cfg.storage, name)
    with acquire(run, what=f"train run {name}"):   # one live writer per run folder, until the summary is written
        check_run_name(p.cfg, name, fingerprint=p.spec.fingerprint, n_blocks=p.n_blocks)
        return _train(p, name, address=address, out=out, verbose=verbose, ready=ready, baselines=found, keep=named)


def _train(p: Prepared, name: str, *, address: str | None, out, verbose: bool,
           ready: Optional[Callable[[ExperimentConfig], None]], baselines: Optional[dict] = None,
           keep: bool = False) -> dict:
    run = layout.run_dir(p.cfg.storage, name)
    t0 = time.perf_counter()
    session = start(p, owner=f"train run {name}", record=run, address=address, verbose=verbose, keep=keep, out=out,
                    ready=(lambda: ready(p.cfg)) if ready is not None else None)   # the run fits: before any cost
    try:
        history, error, user_error = fit_and_watch(session, name=name, out=out, baselines=baselines)
    except Interrupted:   # a named run's disk cache waits for its resume
        if not keep:
            release(session)
        raise
    release(session)
    summary = run_summary(p, history, name=name, error=error, wall_time_s=time.perf_counter() - t0)
    summary["user_error"] = user_error
    summary["summary_file"] = storage.redact(layout.summary_file(run))
    storage.atomic_write(layout.summary_file(run), json.dumps(summary, indent=2, default=str).encode())
    return summary
