"""Driver side of one run: check everything, then fit one TensorflowTrainer.

``prepare_run`` does all the checking (config, backbone blocks, data) before Ray starts;
``make_trainer`` builds the Ray Train run that one trial or one ``orchestrator train`` fits.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pyarrow as pa

from .config import ExperimentConfig, frozen_blocks
from .data import DataSpec, filesystem, prepare

# Ray Train waits this long for a worker group before retrying. TF start-up on 2 cores can pass
# Ray's default of 60 s; raised here (the driver's environment is passed to the controller).
WORKER_START_TIMEOUT_S = "600"


@dataclass(frozen=True)
class Prepared:
    cfg: ExperimentConfig
    spec: DataSpec
    train: pa.Table
    val: pa.Table
    n_blocks: int


def resolve_storage(cfg: ExperimentConfig) -> ExperimentConfig:
    """Relative local storage becomes absolute, so every process agrees on it."""
    if "://" in cfg.storage or os.path.isabs(cfg.storage):
        return cfg
    return cfg.with_values({"storage": os.path.abspath(cfg.storage)})


def count_blocks(cfg: ExperimentConfig, image_shape) -> int:
    """Blocks of the configured backbone (built without pretrained weights: cheap, offline)."""
    if cfg.backbone.kind == "builtin":
        from .backbones import blocks, digits_cnn

        return len(blocks(digits_cnn(image_shape), cfg.backbone.blocks))
    from .backbones import blocks, build_backbone

    bb = cfg.backbone if cfg.backbone.kind == "file" else cfg.backbone.model_copy(update={"weights": "none"})
    return len(blocks(build_backbone(bb, image_shape, storage=cfg.storage), cfg.backbone.blocks))


def prepare_run(cfg: ExperimentConfig, *, out=print, pretrain: bool = True) -> Prepared:
    """Everything that can fail because of the user's input, before any Ray resources are used;
    then (``pretrain``) the built-in backbone is pretrained if it is not cached yet."""
    cfg = resolve_storage(cfg)
    train, val, spec = prepare(cfg)
    n_blocks = count_blocks(cfg, spec.image_shape)
    frozen_blocks(cfg.train.freeze_depth, n_blocks)
    if pretrain and cfg.backbone.kind == "builtin" and cfg.backbone.weights == "pretrained":
        from .pretrain import pretrain

        pretrain(cfg.storage, out=out)  # cached after the first time
    return Prepared(cfg, spec, train, val, n_blocks)


def init_ray(address: str | None = None, *, num_gpus: float | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_START_TIMEOUT_S)
    if ray.is_initialized():
        return
    kwargs = {"num_gpus": num_gpus} if (num_gpus is not None and not address) else {}
    ray.init(address=address, log_to_driver=True, configure_logging=True, logging_level="WARNING", **kwargs)


def make_trainer(p: Prepared, *, name: str, storage_path: str, callbacks=(), max_failures: int = 2):
    """The Ray Train run for one configuration (used by `train` and by every Tune trial)."""
    import ray.data
    import ray.train
    from ray.train import DataConfig
    from ray.train.tensorflow import TensorflowTrainer

    from .worker import train_loop_per_worker

    ray.data.DataContext.get_current().enable_progress_bars = False
    r = p.cfg.resources
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={"config": p.cfg.model_dump(mode="json"), "data_spec": p.spec.to_dict()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.workers, use_gpu=r.use_gpu, placement_strategy=r.placement_strategy,
            resources_per_worker={"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if r.use_gpu else {})}),
        datasets={"train": ray.data.from_arrow(p.train), "val": ray.data.from_arrow(p.val)},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # val: every worker strides the whole set
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, callbacks=list(callbacks),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=max_failures)),
    )


def summarize(p: Prepared, result, *, name: str, wall_time_s: float) -> dict:
    m = dict(result.metrics or {})
    task_metrics = {t: {k.removeprefix(f"{t}_"): v for k, v in m.items() if k.startswith(f"{t}_")} for t in p.cfg.tasks}
    world = int(m.get("world_size", 0))
    return {
        "run": name,
        "status": "diverged" if m.get("status") == "diverged" else ("failed" if result.error else "completed"),
        "error": str(result.error).splitlines()[0] if result.error else None,
        "objective": m.get("objective"),
        "objective_metric": p.cfg.objective.metric,
        "tasks": task_metrics,
        "epochs": m.get("epoch"),
        "train_loss": m.get("train_loss"),
        "world_size": world,
        "rank_steps": [m.get(f"rank{r}_steps") for r in range(world)],
        "examples_per_s": m.get("examples_per_s"),
        "wall_time_s": round(wall_time_s, 1),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "data": {"n_train": p.spec.n_train, "n_val": p.spec.n_val, "fingerprint": p.spec.fingerprint},
        "config": p.cfg.run_fields(),
    }


def write_json(uri: str, obj: dict) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path + ".partial") as f:
        f.write(json.dumps(obj, indent=2, default=str).encode())
    fs.move(path + ".partial", path)


def train(cfg: ExperimentConfig, *, address: str | None = None, name: str | None = None, out=print) -> dict:
    """`orchestrator train`: check, fit one configuration on Ray Train, write summary.json."""
    p = prepare_run(cfg, out=out)
    out("resolved config: " + json.dumps(p.cfg.run_fields(), sort_keys=True))
    name = name or f"train-{p.cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_path = f"{p.cfg.storage.rstrip('/')}/trials"
    init_ray(address)
    t0 = time.perf_counter()
    result = make_trainer(p, name=name, storage_path=storage_path).fit()
    summary = summarize(p, result, name=name, wall_time_s=time.perf_counter() - t0)
    summary["summary_file"] = f"{storage_path}/{name}/summary.json"
    write_json(summary["summary_file"], summary)
    return summary
