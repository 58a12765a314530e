"""Driver of a sweep: Ray Tune runs trials, each trial is one Ray Train run (``run.make_trainer``),
and every trial that ends becomes one leaderboard row, written here on the driver.

A sweep has an id (``sweep_id``); its Tune state lives in ``<storage>/sweeps/<experiment>/<sweep id>``
and its trials' runs in ``<storage>/trials/<sweep id>-<trial id>``. ``--resume`` restores the latest
(or a named) sweep through ``Tuner.restore``: finished trials are not rerun, unfinished ones continue
from their checkpoints, and rows already written are not written again.
"""
from __future__ import annotations

import json
import time
import uuid
from importlib import metadata

from .. import storage
from ..config.schema import ExperimentConfig, frozen_blocks
from ..errors import ConfigError
from ..train.driver import (Prepared, advice, check, check_batch, ensure_pretrained, init_ray, make_trainer, run_dir, ship_backbone,
                  ship_data)
from ..config.space import candidate_values, largest, materialize, param_space, point_for

TRIAL_DRIVER_CPU = 0.05   # the Tune trial only drives its TensorflowTrainer; Ray refuses 0 CPUs here
EXPERIMENT_STATE_EVERY_S = "2"


def check_space(p: Prepared) -> None:
    """Every edge of the search space against config, backbone and data, before anything runs."""
    cfg = p.cfg
    if cfg.search is None:
        raise ConfigError("the experiment has no 'search' section: add one (see README, 'Sweeps') or use "
                          "`orchestrator train`")
    for path, domain in cfg.search.space.items():
        for value in candidate_values(domain, list(cfg.tasks)):
            try:
                trial = cfg.with_values({path: value})
            except ConfigError as e:
                raise ConfigError(f"search.space {path}: value {value!r} is invalid ({e})") from None
            if path == "train.freeze_depth":
                frozen_blocks(value, p.n_blocks, where="search.space train.freeze_depth choice")
            if path in ("train.batch_size", "resources.workers"):
                check_batch(trial, p.data)


def trial_config(base: ExperimentConfig, params: dict) -> ExperimentConfig:
    return base.with_values(materialize(base.search, params, list(base.tasks)))


def make_scheduler(cfg: ExperimentConfig):
    """ASHA on the reported epoch; ``max_t`` is the largest epoch budget a trial can have."""
    sch = cfg.search.scheduler
    if sch.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = int(largest(cfg.search, "train.epochs", cfg.train.epochs))
    return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=min(sch.grace_period, max_t),
                         reduction_factor=sch.reduction_factor)


def make_searcher(cfg: ExperimentConfig, concurrent: int, points: list[dict]):
    s = cfg.search
    if s.searcher == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=s.seed, points_to_evaluate=points or None),
                                  max_concurrent=concurrent)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=s.seed, max_concurrent=concurrent, points_to_evaluate=points or None)


def first_points(cfg: ExperimentConfig, *, say) -> list[dict]:
    """Trials evaluated first: the base config as written, then the warm start's K best configs.
    Points are complete (Optuna needs every searched path): a path an earlier config lacks, or whose
    value is outside the new space, takes the base config's value, with one line each."""
    from ..config.space import dotted_get, fits

    tasks, points, s = list(cfg.tasks), [], cfg.search
    if s.searcher == "grid":
        return []   # a grid enumerates its own points
    base_fields = cfg.run_fields(public=False)

    def value_of(fields: dict, path: str):
        if path == "train.loss_weights":
            raw = dotted_get(fields, path) or {}
            return {t: float(raw.get(t, 0.0 if raw else 1.0)) for t in tasks}
        return dotted_get(fields, path)

    base = {p: value_of(base_fields, p) for p in s.space}
    if s.base_first:
        if all(fits(s.space[p], v) for p, v in base.items()):
            points.append(point_for(s, base, tasks))
        else:
            say("base config: outside the search space, not evaluated first")
    if s.warm_start is not None:
        from ..leaderboard.leaderboard import Leaderboard

        rows = Leaderboard(cfg.storage).top(s.warm_start.top, experiment=s.warm_start.experiment).to_pylist()
        if not rows:
            say(f"warm start: experiment {s.warm_start.experiment!r} has no rows in {storage.redact(cfg.storage)}")
        for row in rows:
            old = json.loads(row["config"]) if isinstance(row["config"], str) else row["config"]
            values = {}
            for p in s.space:
                v = value_of(old, p) if dotted_get(old, p) is not None or p == "train.loss_weights" else None
                if v is None or not fits(s.space[p], v):
                    say(f"warm start {row['trial_id']}: {p}={v!r} does not fit the search space: base value used")
                    v = base[p]
                values[p] = v
            points.append(point_for(s, values, tasks))
    return points


def versions() -> dict:
    out = {}
    for pkg in ("orchestrator", "ray", "tensorflow", "keras", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _trial(params: dict, *, base: dict, configs: list | None, spec: dict, data: dict, backbone_ref, sweep_id: str,
           baselines=None):
    """One Tune trial: fit one TensorflowTrainer with this trial's configuration."""
    from ray import tune

    from ..data.prepare import DataSpec
    from ..train.failures import one_line

    cfg = (ExperimentConfig.model_validate(configs[params["index"]]) if configs is not None
           else trial_config(ExperimentConfig.model_validate(base), params))
    trial_id = tune.get_context().get_trial_id()
    reports = _report_queue()
    trainer = make_trainer(cfg, DataSpec.from_dict(spec), name=f"{sweep_id}-{trial_id}", data=data,  # stable name:
                           backbone_ref=backbone_ref, callbacks=[_to_trial(reports)], baselines=baselines)  # resumable
    marks = {"trial_fit_start": time.time()}
    try:
        _fit_reporting(trainer, reports, tune.report)
    except Exception as e:  # noqa: BLE001 - the trial's row keeps one line, not Ray's wrappers
        raise TrialFailed(one_line(e)) from None
    finally:   # where the trial's time went, beside the worker's own marks (bench/sweep_overhead.py)
        marks["trial_fit_end"] = time.time()
        storage.atomic_write(storage.join(run_dir(cfg, f"{sweep_id}-{trial_id}"), "trial.json"),
                             json.dumps(marks).encode())


# Rank 0's metrics reach Tune from the trial's own thread, each epoch in order and all of them before the trial
# function returns. Ray's TuneReportCallback hands them to the trial actor's main thread instead; when the driver
# is slower than the trial, the last epoch and the function's end then arrive together and the actor deadlocks
# (Queue.put on a full result queue that only it reads: a sweep that never ends; tests/test_faults.py).
def _report_queue():
    from ray.util.queue import Queue

    return Queue(1, actor_options={"num_cpus": 0})   # one in flight: the Train run waits while Tune decides (ASHA)


def _to_trial(queue):
    """A Train callback for the controller: rank 0's metrics of each report, into the trial's queue."""
    from ray.train import UserCallback

    class ToTrial(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            queue.put(dict(metrics[0]))   # returns once queued: every put is done before fit() returns

    return ToTrial()


def _fit_reporting(trainer, reports, report, *, poll_s: float = 0.5) -> None:
    """``trainer.fit()`` in a helper thread; this thread passes each queued report to Tune, then re-raises."""
    import queue as stdqueue
    import threading

    done, failure = threading.Event(), []

    def fit():
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the trial's thread below
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=fit, name="train-fit", daemon=True).start()
    while True:
        try:
            metrics = reports.get(timeout=poll_s)
        except stdqueue.Empty:
            if done.is_set() and reports.empty():   # no put can follow fit()'s end
                break
            continue
        report(metrics)   # blocks until Tune asks for the next result; ASHA's stop ends this thread here
    if failure:
        raise failure[0]


class TrialFailed(RuntimeError):
    """A trial's run failed; the message is one line."""


def new_sweep_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def sweep_dir(cfg: ExperimentConfig, sweep_id: str) -> str:
    return storage.join(cfg.storage, "sweeps", cfg.name, sweep_id)


def sweep_hash(cfg: ExperimentConfig) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.public_dump(), sort_keys=True).encode()).hexdigest()[:12]


def find_sweep(cfg: ExperimentConfig, sweep_id: str | None) -> str:
    """The sweep to resume: ``sweep_id``, or the latest of this experiment."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(storage.join(cfg.storage, "sweeps", cfg.name))
    ids = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                 if i.type == pafs.FileType.Directory and not i.base_name.startswith(("baseline-", "confirm-")))
    if sweep_id is None:
        if not ids:
            raise ConfigError(f"no sweep of experiment {cfg.name!r} to resume in {storage.redact(cfg.storage)}: "
                              f"run it without --resume first")
        sweep_id = ids[-1]
    elif sweep_id not in ids:
        raise ConfigError(f"no sweep {sweep_id!r} of experiment {cfg.name!r} in {storage.redact(cfg.storage)} "
                          f"(sweeps: {ids[-5:]})")
    try:
        saved = json.loads(storage.read_bytes(storage.join(sweep_dir(cfg, sweep_id), "sweep.json")))
    except (OSError, ValueError):
        raise ConfigError(f"sweep {sweep_id} has no sweep.json: it cannot be resumed") from None
    if saved["config_hash"] != sweep_hash(cfg):
        raise ConfigError(f"sweep {sweep_id} was started with another config (hash {saved['config_hash']}, this "
                          f"{sweep_hash(cfg)}): resume it with the same config, or start a new sweep")
    return sweep_id


def _tuner(p: Prepared, *, sweep_id: str, data: dict, backbone_ref, callback, param_space: dict, num_samples: int,
           searcher, scheduler, concurrent: int, configs: list | None = None, baselines=None, resume: bool = False,
           verbose: bool = False):
    """A Tuner over ``_trial`` (or its restore): state in ``<storage>/sweeps/<experiment>/<sweep id>``."""
    import os

    from ray import tune as rtune

    # Tune saves its experiment state at most every 10 s by default, and not when a trial ends: a lost
    # driver would then rerun finished trials. Every 2 s bounds what a resume redoes.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_EVERY_S)
    cfg = p.cfg
    trainable = rtune.with_resources(
        rtune.with_parameters(_trial, base=cfg.model_dump(mode="json"), spec=p.spec.to_dict(), data=data,
                              configs=[c.model_dump(mode="json") for c in configs] if configs is not None else None,
                              backbone_ref=backbone_ref, sweep_id=sweep_id, baselines=baselines),
        {"CPU": TRIAL_DRIVER_CPU})
    fs, sweeps_path = storage.filesystem(storage.join(cfg.storage, "sweeps", cfg.name))
    run_config = rtune.RunConfig(name=sweep_id, storage_path=sweeps_path, storage_filesystem=fs, callbacks=[callback],
                                 failure_config=rtune.FailureConfig(max_failures=0), verbose=1 if verbose else 0)
    if resume:
        tuner = rtune.Tuner.restore(f"{sweeps_path.rstrip('/')}/{sweep_id}", trainable, resume_unfinished=True,
                                    resume_errored=True, storage_filesystem=fs)
        tuner._local_tuner._run_config = run_config   # today's callback (rows already written are skipped)
        return tuner
    return rtune.Tuner(
        trainable, param_space=param_space,
        tune_config=rtune.TuneConfig(metric="objective", mode=cfg.objective_mode, num_samples=num_samples,
                                     search_alg=searcher, scheduler=scheduler,
                                     max_concurrent_trials=None if searcher is not None else concurrent),
        run_config=run_config)


def run_configs(p: Prepared, configs: list[ExperimentConfig], *, kind: str, data: dict, backbone_ref, out=print,
                extra: list[dict] | None = None, verbose: bool = False) -> list:
    """Train explicit configurations as one Tune run (baselines, confirmation runs); rows of ``kind``."""
    from ray import tune as rtune

    from .capacity import plan_concurrency
    from .callback import make_callback

    sweep_id = f"{kind}-{new_sweep_id()}"
    callback = make_callback(p.cfg, sweep_id=sweep_id, n_blocks=p.n_blocks, fingerprint=p.spec.fingerprint,
                             versions=versions(), kind=kind, configs=configs, extra=extra, out=out)
    concurrent = min(len(configs), plan_concurrency(configs[0], say=lambda m: None))
    tuner = _tuner(p, sweep_id=sweep_id, data=data, backbone_ref=backbone_ref, callback=callback,
                   param_space={"index": rtune.grid_search(list(range(len(configs))))}, num_samples=1,
                   searcher=None, scheduler=None, concurrent=concurrent, configs=configs, verbose=verbose)
    tuner.fit()
    return callback.rows


def tune(cfg: ExperimentConfig, *, name: str | None = None, address: str | None = None, resume: bool = False,
         sweep_id: str | None = None, verbose: bool = False, out=print) -> dict:
    """`orchestrator tune`: run (or resume) a sweep; one leaderboard row per trial; returns a summary."""
    from .capacity import plan_concurrency
    from ..leaderboard.leaderboard import Leaderboard
    from .callback import make_callback

    if name:
        cfg = cfg.with_values({"name": name})
    p = check(cfg)
    check_space(p)
    cfg = p.cfg
    sweep_id = find_sweep(cfg, sweep_id) if resume else (sweep_id or new_sweep_id())
    out("resolved config: " + json.dumps(cfg.public_dump(), sort_keys=True))
    for line in advice(p):
        out(line)
    ensure_pretrained(cfg, out=out)
    init_ray(address, log_to_driver=verbose)
    concurrent = plan_concurrency(cfg, say=out)
    board = Leaderboard(cfg.storage)
    written = set(board.table(sweep_id=sweep_id, kind=None, columns=["trial_id"]).column("trial_id").to_pylist()) if resume else set()
    t0 = time.perf_counter()
    data, backbone_ref = ship_data(p), ship_backbone(cfg)
    baselines = None
    if cfg.search.baselines or cfg.objective.metric == "delta_m":
        from .baselines import baselines_for

        baselines = baselines_for(p, data=data, backbone_ref=backbone_ref, out=out) or None
    callback = make_callback(cfg, sweep_id=sweep_id, n_blocks=p.n_blocks, fingerprint=p.spec.fingerprint,
                             versions=versions(), baselines=baselines, written=written, out=out,
                             request={"CPU": cfg.resources.cpus_per_worker,
                                      **({"GPU": cfg.resources.gpus_per_worker} if cfg.resources.use_gpu else {})})
    if resume:
        out(f"resuming sweep {sweep_id} of experiment {cfg.name} ({len(written)} trials already recorded)")
    else:
        storage.atomic_write(storage.join(sweep_dir(cfg, sweep_id), "sweep.json"), json.dumps(
            {"sweep_id": sweep_id, "config_hash": sweep_hash(cfg), "config": cfg.public_dump()}).encode())
        out(f"experiment {cfg.name}, sweep {sweep_id}: {cfg.search.samples} trials, searcher {cfg.search.searcher}, "
            f"scheduler {cfg.search.scheduler.type}, up to {concurrent} at once")
    tuner = _tuner(p, sweep_id=sweep_id, data=data, backbone_ref=backbone_ref, callback=callback,
                   param_space=param_space(cfg.search, list(cfg.tasks)), num_samples=cfg.search.samples,
                   searcher=None if resume else make_searcher(cfg, concurrent, first_points(cfg, say=out)),
                   scheduler=make_scheduler(cfg), concurrent=concurrent, baselines=baselines, resume=resume,
                   verbose=verbose)
    tuner.fit()
    board.maybe_compact()
    return {"experiment": cfg.name, "sweep_id": sweep_id, "trials": len(callback.rows) + len(written),
            "leaderboard": storage.redact(board.uri), "storage": cfg.storage, "baselines": baselines,
            "statuses": {s: sum(r["status"] == s for r in callback.rows) for s in {r["status"] for r in callback.rows}},
            "wall_time_s": round(time.perf_counter() - t0, 1)}
