"""Driver side of one run: check everything, ship data and backbone, fit one TensorflowTrainer.

``check`` does every check that can fail because of the user's input (config, data, backbone,
freeze depth, batch against a worker's shard) and starts nothing: `validate`, `train` and `tune`
all call it. Pretraining the built-in backbone is a separate, explicit step (``ensure_pretrained``).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass

from . import checkpoints
from .. import storage
from .failures import attempts
from ..config.schema import ExperimentConfig, frozen_blocks
from ..data.prepare import DataSpec, PreparedData, prepare
from ..errors import ConfigError, DataError
from ..data.pipeline import decode_options, rows_per_rank

# Ray Train waits this long for a worker group before retrying. TF start-up on 2 cores can pass
# Ray's default of 60 s; raised here (the driver's environment is passed to the controller).
WORKER_START_TIMEOUT_S = "600"
HEALTH_CHECK_INTERVAL_S = "0.1"


@dataclass
class Prepared:
    cfg: ExperimentConfig
    data: PreparedData
    n_blocks: int

    @property
    def spec(self) -> DataSpec:
        return self.data.spec


def resolve_storage(cfg: ExperimentConfig) -> ExperimentConfig:
    """Relative local storage (given on the command line or by default) becomes absolute; credentials in
    storage or data URIs move to the environment (``storage.adopt_credentials``)."""
    values = {}
    for path, value in (("storage", cfg.storage), ("data.train", cfg.data.train),
                        ("data.validation", cfg.data.validation)):
        if isinstance(value, str) and storage.has_credentials(value):
            values[path] = storage.adopt_credentials(value)
    if not storage.is_uri(cfg.storage) and not os.path.isabs(cfg.storage):
        values["storage"] = os.path.abspath(cfg.storage)
    return cfg.with_values(values) if values else cfg


def count_blocks(cfg: ExperimentConfig, image_shape) -> int:
    """Blocks of the configured backbone: builds it (a file backbone or weights file is loaded, once,
    here on the driver; the built-in's pretrained weights are not needed to count)."""
    from ..model.backbones import block_model, blocks, build_backbone

    bb = cfg.backbone
    if bb.kind == "builtin":
        bb = bb.model_copy(update={"weights": "none"})
    elif bb.kind == "application" and bb.weights == "imagenet":
        bb = bb.model_copy(update={"weights": "none"})   # the architecture is the same; no download here
    return len(blocks(block_model(build_backbone(bb, image_shape, storage=cfg.storage)), cfg.backbone.blocks))


def check(cfg: ExperimentConfig) -> Prepared:
    """Everything that can fail because of the user's input, before any Ray resources are used."""
    cfg = resolve_storage(cfg)
    data = prepare(cfg)
    spec = data.spec
    b = cfg.backbone
    if b.kind == "application" and b.weights == "imagenet" and spec.image_shape[-1] != 3:
        raise DataError(f"backbone {b.name} with ImageNet weights needs 3 channels; the images have "
                        f"{spec.image_shape[-1]}: set data.color_mode: rgb (or use weights: none)")
    n_blocks = count_blocks(cfg, spec.image_shape)
    frozen_blocks(cfg.train.freeze_depth, n_blocks)
    check_batch(cfg, data)
    return Prepared(cfg, data, n_blocks)


def advice(p: Prepared) -> list[str]:
    """What the data is and how workers will get it, then things that are allowed but probably wrong, one line
    each (printed by validate, train, tune)."""
    s, mode = p.spec, cache_mode(p.cfg, p.spec)
    share_mb = worker_share_bytes(p.cfg, s) / 2 ** 20
    how = ("kept in memory" if mode == "memory" else "streamed every epoch") + \
        (f" (data.cache: auto, budget {p.cfg.data.cache_budget_mb:g} MB)" if p.cfg.data.cache == "auto" else "")
    lines = [f"data: {s.n_train} training + {s.n_val} validation images, {'x'.join(map(str, s.image_shape))} "
             f"{s.pixel_dtype}; a worker's decoded share is {share_mb:.1f} MB, {how}"]
    if p.cfg.backbone.kind == "application" and p.spec.max_pixel <= 1.0:
        lines.append(f"warning: the sampled pixels are at most {p.spec.max_pixel:g}, but {p.cfg.backbone.name} expects "
                     f"0-255 (its preprocess_input is inside the model): store pixels as 0-255")
    return lines


def check_batch(cfg: ExperimentConfig, data: PreparedData, *, workers: int | None = None) -> None:
    """Every worker must fill at least one batch of its share of the global batch."""
    world = workers or cfg.resources.workers
    per_worker = cfg.train.batch_size // world
    if per_worker < 1:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is smaller than resources.workers {world}: "
                          f"each worker needs at least one example per step")
    rows = min(rows_per_rank([len(u["rows"]) for u in data.train_units], world=world, epoch=None, seed=0))
    if rows < per_worker:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} needs {per_worker} examples per worker per "
                          f"step, but a worker's share of the {data.spec.n_train} training examples can be {rows}: "
                          f"lower train.batch_size or use fewer workers")


def ensure_pretrained(cfg: ExperimentConfig, *, out=print) -> None:
    """The built-in backbone's pretrained weights, trained once per storage (cached)."""
    if cfg.backbone.kind == "builtin" and cfg.backbone.weights == "pretrained":
        from .pretrain import pretrain

        pretrain(cfg.storage, out=out)


def run_name(experiment: str) -> str:
    """A run name no other run has: time plus random suffix."""
    return f"train-{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_dir(cfg: ExperimentConfig, name: str) -> str:
    return storage.join(cfg.storage, "trials", name)


def check_run_name(cfg: ExperimentConfig, name: str) -> None:
    """A run continues only its own checkpoints: a name used by another config is refused."""
    state = checkpoints.latest_state(run_dir(cfg, name))
    if state is not None and state.get("config_hash") != cfg.config_hash():
        raise ConfigError(f"run {name!r} already exists with another config (checkpoint at epoch {state['epoch']}, "
                          f"config hash {state.get('config_hash')}, this config {cfg.config_hash()}): pick another "
                          f"--name, or omit it for a new unique one")


def init_ray(address: str | None = None, *, num_gpus: float | None = None, log_to_driver: bool = False) -> None:
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_START_TIMEOUT_S)
    # The Train controller polls its workers at this pace; reports and the end of a run wait for a poll.
    # A late poll is only awaited again (a worker counts as dead after 600 s), so a short interval is safe.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    if not ray.is_initialized():
        kwargs = {"num_gpus": num_gpus} if (num_gpus is not None and not address) else {}
        if storage.adopted_env():   # credentials taken out of a URI: every Ray process gets them
            kwargs["runtime_env"] = {"env_vars": storage.adopted_env()}
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=True, logging_level="ERROR",
                 include_dashboard=None, **kwargs)
    from ..console import mute_ray_stderr
    from .loop import quiet_logs

    quiet_logs()   # Ray Data runs on the driver too (decoding into the object store)
    if not log_to_driver:
        mute_ray_stderr()   # ray.init attached its stderr handler again


def cache_mode(cfg: ExperimentConfig, spec: DataSpec) -> str:
    """memory or stream: ``auto`` keeps a worker's decoded shard in memory when it fits the budget."""
    if cfg.data.cache != "auto":
        return "memory" if cfg.data.cache == "memory" else "stream"
    return "memory" if worker_share_bytes(cfg, spec) <= cfg.data.cache_budget_mb * 2 ** 20 else "stream"


def worker_share_bytes(cfg: ExperimentConfig, spec: DataSpec) -> float:
    """Decoded bytes of one worker's share of the training and validation rows."""
    return (spec.n_train + spec.n_val) / cfg.resources.workers * spec.decoded_bytes_per_image


def ship_data(p: Prepared) -> dict:
    """What workers read: decoded blocks in the object store (memory), or units to stream."""
    import ray

    from ..data.pipeline import decode_to_object_store

    opts = decode_options(p.cfg.model_dump(mode="json"), p.spec.to_dict())
    mode = cache_mode(p.cfg, p.spec)
    if mode == "memory":
        return {"mode": mode, "opts": opts, "train": decode_to_object_store(p.data.train_units, opts),
                "val": decode_to_object_store(p.data.val_units, opts)}
    return {"mode": mode, "opts": opts, "train": ray.put(p.data.train_units), "val": ray.put(p.data.val_units)}


def ship_backbone(cfg: ExperimentConfig):
    """A backbone or weights file the workers need, through the object store (any cluster, no shared disk)."""
    import ray

    from ..model.backbones import builtin_backbone_uri

    b = cfg.backbone
    location = (b.path if b.kind == "file" else builtin_backbone_uri(cfg.storage) if b.kind == "builtin" and
                b.weights == "pretrained" else b.weights if b.kind == "application" and b.weights not in
                ("imagenet", "none") else None)
    if location is None:
        return None
    # Wrapped in a dict: Tune's with_parameters resolves top-level ObjectRefs, nested ones stay references.
    return {"ref": ray.put((storage.read_bytes(location), os.path.splitext(location.split("?")[0])[1]))}


def make_trainer(cfg: ExperimentConfig, spec: DataSpec, *, name: str, data: dict, backbone_ref, callbacks=(),
                 max_failures: int = 2, baselines: dict | None = None):
    """The Ray Train run for one configuration (used by `train` and by every Tune trial)."""
    import ray.train

    from . import backend as trainer
    from .loop import train_loop_per_worker

    r = cfg.resources
    fs, path = storage.filesystem(storage.join(cfg.storage, "trials"))
    return trainer.make(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "data_spec": spec.to_dict(), "data": data,
                           "backbone_file": backbone_ref, "run_dir": run_dir(cfg, name), "baselines": baselines},
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=r.use_gpu, placement_strategy=r.placement_strategy,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=path, storage_filesystem=fs, callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=max_failures)),
    )


def worker_request(cfg: ExperimentConfig) -> dict:
    r = cfg.resources
    return {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}


def fit_and_watch(p: Prepared, *, name: str, data: dict, backbone_ref,
                  out=print) -> tuple[list[dict], str | None, bool]:
    """Fit one run, printing its epochs as they land; (history, one-line error or None, user error?)."""
    import threading

    from .failures import find_user_error, one_line, read_progress, watch
    from .loop import format_epoch

    stop = threading.Event()
    thread = watch(run_dir(p.cfg, name), request=worker_request(p.cfg), workers=p.cfg.resources.workers,
                   on_epoch=lambda m: out(format_epoch(m, p.cfg.train.epochs)), out=out, stop=stop, what=f"run {name}")
    error, user = None, False
    try:
        make_trainer(p.cfg, p.spec, name=name, data=data, backbone_ref=backbone_ref).fit()
    except Exception as e:  # noqa: BLE001 - Ray Train raises its own wrappers; keep one line
        error, user = one_line(e), find_user_error(e) is not None
    finally:
        time.sleep(1.5)   # the watcher prints the last epoch
        stop.set()
        thread.join()
    progress = read_progress(run_dir(p.cfg, name)) or {"history": []}
    return progress["history"], error, user


def summarize(p: Prepared, history: list[dict], *, name: str, error: str | None, wall_time_s: float) -> dict:
    m = history[-1] if history else {}
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
        "checkpoint": storage.redact(checkpoints.folder(run_dir(p.cfg, name))),
        "attempts": attempts(run_dir(p.cfg, name)),
        "data": {"n_train": p.spec.n_train, "n_val": p.spec.n_val, "fingerprint": p.spec.fingerprint},
        "history": history, "config": p.cfg.run_fields(),
    }


def write_json(location: str, obj: dict) -> None:
    storage.atomic_write(location, json.dumps(obj, indent=2, default=str).encode())


def train(cfg: ExperimentConfig, *, address: str | None = None, name: str | None = None, out=print,
          verbose: bool = False) -> dict:
    """`orchestrator train`: check, fit one configuration on Ray Train, write summary.json."""
    p = check(cfg)
    name = name or run_name(p.cfg.name)
    check_run_name(p.cfg, name)
    out("resolved config: " + json.dumps(p.cfg.run_fields(), sort_keys=True))
    for line in advice(p):
        out(line)
    ensure_pretrained(p.cfg, out=out)
    init_ray(address, log_to_driver=verbose)
    t0 = time.perf_counter()
    data, backbone_ref = ship_data(p), ship_backbone(p.cfg)
    history, error, user_error = fit_and_watch(p, name=name, data=data, backbone_ref=backbone_ref, out=out)
    summary = summarize(p, history, name=name, error=error, wall_time_s=time.perf_counter() - t0)
    summary["user_error"] = user_error
    summary["summary_file"] = storage.redact(storage.join(run_dir(p.cfg, name), "summary.json"))
    write_json(storage.join(run_dir(p.cfg, name), "summary.json"), summary)
    return summary
