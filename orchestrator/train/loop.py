"""The per-worker training loop run by Ray Train. Knows nothing of Tune or the leaderboard.

Every rank runs ``train_loop_per_worker``; they synchronize only inside the distributed step
(gradient all-reduce), in ``allreduce_sum`` (once per epoch: losses, step counts, validation sums)
and at ``ray.train.report`` (a barrier: every rank reports once per epoch).
"""
from __future__ import annotations

import json
import os
import resource
import tempfile
import time

import numpy as np

from . import checkpoints
from .. import storage
from .failures import read_progress, write_progress


def make_train_step(strategy, mt, cfg, weighting, opt_backbone, opt_heads, *, global_batch: int):
    """One synchronous data-parallel step. ``x, y`` are this worker's part of the global batch.
    Returns this worker's share of [total loss, task 1 loss, ...] (summed over workers: global means)."""
    import tensorflow as tf
    from ..model.multitask import per_example_losses

    backbone_vars, head_vars = mt.variable_groups()
    n_bb = len(backbone_vars)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            out = mt.model(x, training=True)  # frozen blocks (incl. BatchNorm) run in inference mode
            per_task = per_example_losses(cfg, y, out)
            # Average over the GLOBAL batch, not the local one: the optimizer sums gradients across
            # replicas, so the sum is exactly the gradient of the global mean loss.
            task_losses = [tf.nn.compute_average_loss(per_task[t], global_batch_size=global_batch) for t in cfg.tasks]
            loss = weighting.combine(task_losses)
        grads = tape.gradient(loss, backbone_vars + head_vars)
        # apply_gradients all-reduces (sums) each gradient across workers: workers sync here.
        if n_bb:
            opt_backbone.apply_gradients(zip(grads[:n_bb], backbone_vars))
        opt_heads.apply_gradients(zip(grads[n_bb:], head_vars))
        return tf.stack([loss] + task_losses)

    @tf.function
    def step(x, y):
        # This worker's share only: a collective per step just for logging costs throughput;
        # the epoch's sums are all-reduced once instead.
        return tf.add_n(strategy.experimental_local_results(strategy.run(replica_step, args=(x, y))))

    return step


def make_allreduce_sum(strategy):
    """``f(vec) -> vec`` summed over all workers (one replica per worker). A tf.function: eager
    collectives are slow under MultiWorkerMirroredStrategy."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def allreduce(local):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(local,)), axis=None)

    return lambda vec: allreduce(tf.constant(vec, dtype=tf.float64)).numpy()


def quiet_logs() -> None:
    """Per-epoch lines come from the driver; silence per-step chatter from TF, Ray Data and Ray Train."""
    import logging

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False
    for name in ("ray.data", "ray.train", "ray.train.v2", "ray.util"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Ray Train logs every report at INFO under a logger named by file path
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_loop_per_worker(payload: dict) -> None:
    """Ray Train entry point: data from the pipeline, metrics and checkpoints through Ray."""
    marks = {"loop_start": time.time()}   # where a run's start-up time goes (progress.json, bench/)
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_dir = payload["run_dir"]
    if rank == 0 and read_progress(run_dir) is None:
        write_progress(run_dir, [], marks=marks)   # for the driver's watcher: resources acquired, the run has started
    from ..console import quiet_tensorflow

    tf = quiet_tensorflow()
    marks["tensorflow"] = time.time()
    quiet_logs()
    for gpu in tf.config.list_physical_devices("GPU"):
        # Trials packed on one GPU (gpus_per_worker < 1) share it: allocate memory as needed.
        tf.config.experimental.set_memory_growth(gpu, True)
    # Create the strategy before any other TF op. One worker has nothing to synchronize: the
    # default strategy then spares the per-step collectives (measured in bench/).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    from ..config.schema import ExperimentConfig
    from ..data.prepare import DataSpec
    from ..data.pipeline import worker_data

    cfg = ExperimentConfig.model_validate(payload["config"])  # workers re-validate
    spec = DataSpec.from_dict(payload["data_spec"])
    data = worker_data(payload["data"], cfg, spec, rank=rank, world=world)
    backbone_file = _local_file(payload.get("backbone_file"))
    marks["data"] = time.time()

    def restore(load):
        # Rank 0 picks the checkpoint and tells the others, so all ranks resume from the same epoch.
        from ray.train.collective import broadcast_from_rank_zero

        epochs = checkpoints.epochs_on_storage(run_dir) if rank == 0 else None
        epoch = broadcast_from_rank_zero(epochs[-1] if epochs else 0) if world > 1 else (epochs[-1] if epochs else 0)
        state = checkpoints.load(run_dir, epoch, load) if epoch else None
        if rank == 0:   # one record per (re)start: which epoch it resumed from
            storage.atomic_write(storage.join(run_dir, "attempts", f"{time.time():.3f}.json"),
                                 json.dumps({"start_epoch": epoch, "pid": os.getpid()}).encode())
        return state

    board = None
    if rank == 0:
        from .tensorboard import EpochBoard

        board = EpochBoard(run_dir)

    def on_epoch(metrics, state, save):
        last = metrics["epoch"] == cfg.train.epochs or metrics["status"] == "diverged"
        if rank == 0 and (metrics["epoch"] % cfg.train.checkpoint_every == 0 or last):
            t0 = time.perf_counter()
            checkpoints.save(run_dir, metrics["epoch"], save, state)
            marks.setdefault("checkpoint_s", []).append(time.perf_counter() - t0)
        if rank == 0:
            board.write(metrics)
            marks.setdefault("epoch_end", []).append(time.time())
            write_progress(run_dir, state["history"], marks=marks)
        ray.train.report(metrics)  # a barrier: every rank reports once per epoch (Tune hears rank 0)

    fit(strategy, cfg, spec, data, rank=rank, world=world, restore=restore, on_epoch=on_epoch,
        backbone_file=backbone_file, baselines=payload.get("baselines"), marks=marks)


def _local_file(shipped):
    """A backbone/weights file shipped through the object store -> a local path on this worker."""
    if shipped is None:
        return None
    import ray

    blob, suffix = ray.get(shipped["ref"])
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


def fit(strategy, cfg, spec, data, *, rank=0, world=1, restore=None, on_epoch=None, backbone_file=None,
        baselines=None, marks=None):
    """Build the model in ``strategy``'s scope and train it; returns (model, state).

    Shared by Ray workers (MultiWorkerMirroredStrategy) and in-process runs (default strategy:
    `orchestrator pretrain`, benches, tests). ``data`` (``orchestrator.pipeline``) gives
    ``agree_steps``, ``set_epoch(epoch) -> steps``, ``train_dataset(per_worker)`` and ``val_batches()``."""
    import keras
    import tensorflow as tf
    from ..model.multitask import build, eval_sums, make_optimizer, metrics_from_sums
    from ..model.weighting import LossWeighting

    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        mt = build(cfg, spec, backbone_file=backbone_file)
        weighting = LossWeighting(cfg, num_replicas=strategy.num_replicas_in_sync)
        mt.extra_variables = weighting.trainable_variables
        backbone_vars, head_vars = mt.variable_groups()
        optimizers = {"heads": make_optimizer(cfg, cfg.train.head_lr)}
        optimizers["heads"].build(head_vars)
        if backbone_vars:
            optimizers["backbone"] = make_optimizer(cfg, cfg.train.backbone_lr)
            optimizers["backbone"].build(backbone_vars)

    def save(directory):
        mt.model.save_weights(os.path.join(directory, "model.weights.h5"))
        np.savez(os.path.join(directory, "optimizers.npz"),
                 **{f"{n}_{i}": v.numpy() for n, opt in optimizers.items() for i, v in enumerate(opt.variables)})

    def load(directory):
        mt.model.load_weights(os.path.join(directory, "model.weights.h5"))
        with np.load(os.path.join(directory, "optimizers.npz")) as saved:
            for n, opt in optimizers.items():
                for i, v in enumerate(opt.variables):
                    v.assign(saved[f"{n}_{i}"])

    marks = {} if marks is None else marks
    marks["model"] = time.time()
    config_hash = cfg.config_hash()
    state = (restore and restore(load)) or {"epoch": 0, "history": []}
    if state.get("config_hash", config_hash) != config_hash:
        from ..errors import ConfigError

        raise ConfigError(f"the run's checkpoint was made by another config (hash {state['config_hash']}, this is "
                          f"{config_hash}): use another run name")
    if "weighting" in state:
        weighting.restore(state["weighting"])

    per_worker = max(cfg.train.batch_size // world, 1)
    allreduce_sum = make_allreduce_sum(strategy) if world > 1 else (lambda v: np.asarray(v, np.float64))
    data.agree_steps(per_worker, allreduce_sum)
    dist = strategy.distribute_datasets_from_function(lambda _: data.train_dataset(per_worker))
    step = make_train_step(strategy, mt, cfg, weighting, optimizers.get("backbone"), optimizers["heads"],
                           global_batch=per_worker * world)
    tasks, k = list(cfg.tasks), len(cfg.tasks)
    executed = 0  # steps this rank ran since (re)start: proof that every worker trained
    for epoch in range(state["epoch"], cfg.train.epochs):
        steps = data.set_epoch(epoch)
        t0 = time.perf_counter()
        total = tf.zeros(k + 1)
        try:
            for xb, yb in dist:
                total += step(xb, yb)
                executed += 1
                if "first_step" not in marks:
                    float(total[0])   # wait for the step: tracing and the first step's compute end here
                    marks["first_step"] = time.time()
        except Exception:
            if getattr(data, "error", None) is not None:
                raise data.error from None   # a bad image met while streaming: the user's error, one line
            raise
        seconds = time.perf_counter() - t0
        # One collective per epoch: losses, per-rank step counts and validation sums together.
        local = np.concatenate([total.numpy().astype(np.float64), np.eye(world)[rank] * executed,
                                np.eye(world)[rank] * peak_rss_mb(), eval_sums(cfg, spec, mt.model, data.val_batches())])
        summed = allreduce_sum(local)
        losses = summed[:k + 1] / steps
        rss = summed[k + 1 + world:k + 1 + 2 * world]
        metrics = metrics_from_sums(cfg, summed[k + 1 + 2 * world:], baselines=baselines)
        diverged = not np.isfinite(losses[0])
        applied = weighting.effective()                 # the weights this epoch trained with
        weighting.end_epoch(dict(zip(tasks, losses[1:])))   # DWA: next epoch's weights
        metrics.update(epoch=epoch + 1, train_loss=float(losses[0]), world_size=world, steps_per_epoch=steps,
                       examples_per_s=steps * per_worker * world / seconds, epoch_seconds=seconds,
                       **{f"train_loss_{t}": float(v) for t, v in zip(tasks, losses[1:])},
                       **{f"eff_weight_{t}": w for t, w in applied.items()},
                       **{f"rank{r}_steps": int(c) for r, c in enumerate(summed[k + 1:k + 1 + world])},
                       **{f"rank{r}_peak_rss_mb": float(m) for r, m in enumerate(rss)},
                       status="diverged" if diverged else "running", config_hash=config_hash)
        state = {"epoch": epoch + 1, "history": state["history"] + [metrics], "config_hash": config_hash,
                 "weighting": weighting.state()}
        if on_epoch:
            on_epoch(metrics, state, save)
        if diverged:
            break
    return mt, state


def fit_arrays(strategy, cfg, spec, train, val, *, on_epoch=None, backbone_file=None):
    """``fit`` on in-memory arrays ``(x, {task: y})``, in this process (no Ray)."""
    from ..data.pipeline import ArrayData

    return fit(strategy, cfg, spec, ArrayData(cfg, spec, train, val),
               on_epoch=(lambda m, s, _save: on_epoch(m, s)) if on_epoch else None, backbone_file=backbone_file)


def format_epoch(m: dict, epochs: int) -> str:
    task_metrics = " ".join(f"{k}={v:.4f}" for k, v in m.items()
                            if k.endswith(("_accuracy", "_auc", "_mae", "_r2")) and isinstance(v, float))
    return (f"epoch {m['epoch']}/{epochs} train_loss={m['train_loss']:.4f} {task_metrics} "
            f"objective={m['objective']:.4f} ({m['examples_per_s']:.0f} ex/s)")
