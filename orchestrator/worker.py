"""The per-worker training loop run by Ray Train. Knows nothing of Tune or the leaderboard.

Every rank runs ``train_loop_per_worker``; they synchronize only inside the distributed step
(gradient all-reduce), in ``allreduce_sum`` (step counts; once per epoch: loss, validation sums) and at
``ray.train.report`` (a barrier: every rank reports once per epoch).
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

REPORT_KEYS = ("epoch", "train_loss", "objective", "world_size", "status")


def make_train_step(strategy, mt, cfg, opt_backbone, opt_heads, *, global_batch: int):
    """One synchronous data-parallel step. ``x, y`` are this worker's part of the global batch."""
    import tensorflow as tf
    from .model import per_example_losses

    weights = cfg.normalized_loss_weights()
    backbone_vars, head_vars = mt.variable_groups()
    n_bb = len(backbone_vars)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            out = mt.model(x, training=True)  # frozen blocks (incl. BatchNorm) run in inference mode
            per_task = per_example_losses(cfg, y, out)
            # Average over the GLOBAL batch, not the local one: the optimizer sums gradients
            # across replicas, so the sum is then exactly the gradient of the global mean loss.
            loss = tf.add_n([weights[t] * tf.nn.compute_average_loss(per_task[t], global_batch_size=global_batch)
                             for t in cfg.tasks])
        grads = tape.gradient(loss, backbone_vars + head_vars)
        # apply_gradients all-reduces (sums) each gradient across workers: workers sync here.
        if n_bb:
            opt_backbone.apply_gradients(zip(grads[:n_bb], backbone_vars))
        opt_heads.apply_gradients(zip(grads[n_bb:], head_vars))
        return loss

    @tf.function
    def step(x, y):
        # This worker's share of the global mean loss. Not all-reduced here: a collective per step
        # just for logging costs throughput; the epoch's sum is all-reduced once instead.
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
    """Per-epoch lines come from rank 0; silence per-step chatter from TF, Ray Data and Ray Train."""
    import logging

    import tensorflow as tf
    from ray.data import DataContext

    tf.get_logger().setLevel("ERROR")
    DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.train", "ray.train.v2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Ray Train logs every report at INFO under a logger named by file path
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


def shard_arrays(shard, tasks) -> tuple[np.ndarray, dict]:
    """Pull this worker's Ray Data shard once into memory (decoded tensors, not bytes)."""
    xs, ys = [], {t: [] for t in tasks}
    for batch in shard.iter_batches(batch_size=4096, batch_format="numpy", prefetch_batches=2):
        xs.append(batch["image"].astype(np.float32, copy=False))
        for t in tasks:
            ys[t].append(batch[f"y_{t}"])
    return np.concatenate(xs), {t: np.concatenate(v) for t, v in ys.items()}


def _save_checkpoint(directory, mt, optimizers, state):
    mt.model.save_weights(os.path.join(directory, "model.weights.h5"))
    np.savez(os.path.join(directory, "optimizers.npz"),
             **{f"{name}_{i}": v.numpy() for name, opt in optimizers.items() for i, v in enumerate(opt.variables)})
    with open(os.path.join(directory, "state.json"), "w") as f:
        json.dump(state, f)


def _restore_checkpoint(checkpoint, mt, optimizers) -> dict:
    with checkpoint.as_directory() as d:
        mt.model.load_weights(os.path.join(d, "model.weights.h5"))
        saved = np.load(os.path.join(d, "optimizers.npz"))
        for name, opt in optimizers.items():
            for i, v in enumerate(opt.variables):
                v.assign(saved[f"{name}_{i}"])
        with open(os.path.join(d, "state.json")) as f:
            return json.load(f)


def train_loop_per_worker(payload: dict) -> None:
    """Ray Train entry point: data from this worker's shards, metrics and checkpoints to Ray."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TF loads: no C++ info/warning spam
    import tensorflow as tf
    import ray.train

    quiet_logs()

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    for gpu in tf.config.list_physical_devices("GPU"):
        # Trials packed on one GPU (gpus_per_worker < 1) share it: allocate memory as needed.
        tf.config.experimental.set_memory_growth(gpu, True)
    # Create the strategy before any other TF op. One worker has nothing to synchronize: the
    # default strategy then spares the per-step collectives (measured in bench/).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    from .config import ExperimentConfig
    from .data import DataSpec

    cfg = ExperimentConfig.model_validate(payload["config"])  # workers re-validate
    spec = DataSpec.from_dict(payload["data_spec"])
    tasks = list(cfg.tasks)
    x, y = shard_arrays(ray.train.get_dataset_shard("train"), tasks)
    xv, yv = shard_arrays(ray.train.get_dataset_shard("val"), tasks)   # not split: take every world-th row
    xv, yv = xv[rank::world], {t: v[rank::world] for t, v in yv.items()}

    def restore(mt, optimizers):
        ckpt = ray.train.get_checkpoint()  # set when a restarted worker group resumes
        return _restore_checkpoint(ckpt, mt, optimizers) if ckpt else None

    def on_epoch(metrics, state, mt, optimizers):
        if rank == 0:
            print(format_epoch(metrics, cfg.train.epochs), flush=True)
            with tempfile.TemporaryDirectory() as d:
                _save_checkpoint(d, mt, optimizers, state)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)  # a barrier: every rank reports once per epoch

    fit_arrays(strategy, cfg, spec, (x, y), (xv, yv), rank=rank, world=world, restore=restore, on_epoch=on_epoch)


def fit_arrays(strategy, cfg, spec, train, val, *, rank=0, world=1, restore=None, on_epoch=None):
    """Build the model in ``strategy``'s scope and train it on in-memory arrays; returns it.

    Shared by Ray workers (MultiWorkerMirroredStrategy) and in-process runs (default strategy:
    `orchestrator pretrain`, the benchmark's plain baseline).
    """
    import keras
    import tensorflow as tf
    from .model import build, eval_sums, make_optimizer, metrics_from_sums, standardize

    keras.utils.set_random_seed(cfg.train.seed)
    (x, y), (xv, yv) = train, val
    with strategy.scope():
        mt = build(cfg, spec)
        backbone_vars, head_vars = mt.variable_groups()
        optimizers = {"heads": make_optimizer(cfg, cfg.train.head_lr)}
        optimizers["heads"].build(head_vars)
        if backbone_vars:
            optimizers["backbone"] = make_optimizer(cfg, cfg.train.backbone_lr)
            optimizers["backbone"].build(backbone_vars)
    state = (restore and restore(mt, optimizers)) or {"epoch": 0, "history": []}

    allreduce_sum = make_allreduce_sum(strategy)
    per_worker = max(cfg.train.batch_size // world, 1)
    counts = allreduce_sum(np.eye(world)[rank] * (len(x) // per_worker))
    steps = int(counts.min())  # every rank must run the same number of collective steps
    if steps == 0:
        raise ValueError(f"global batch {cfg.train.batch_size} is larger than a worker's {len(x)} training examples")
    local = (tf.data.Dataset.from_tensor_slices((x, standardize(cfg, spec, y)))
             .shuffle(len(x), seed=cfg.train.seed + rank, reshuffle_each_iteration=True)
             .batch(per_worker, drop_remainder=True).take(steps).prefetch(tf.data.AUTOTUNE))
    dist = strategy.distribute_datasets_from_function(lambda _: local)
    step = make_train_step(strategy, mt, cfg, optimizers.get("backbone"), optimizers["heads"],
                           global_batch=per_worker * world)

    executed = 0  # steps this rank ran since (re)start: proof that every worker trained
    config_hash = cfg.config_hash()
    for epoch in range(state["epoch"], cfg.train.epochs):
        t0 = time.perf_counter()
        total = tf.constant(0.0)
        for xb, yb in dist:
            total += step(xb, yb)
            executed += 1
        seconds = time.perf_counter() - t0
        # One collective per epoch: loss sum, per-rank step counts and validation sums together.
        summed = allreduce_sum(np.concatenate([[float(total)], np.eye(world)[rank] * executed,
                                               eval_sums(cfg, spec, mt.model, xv, yv)]))
        train_loss = float(summed[0]) / steps
        rank_steps = summed[1:1 + world]
        metrics = metrics_from_sums(cfg, summed[1 + world:])
        diverged = not np.isfinite(train_loss)
        metrics.update(epoch=epoch + 1, train_loss=train_loss, world_size=world, steps_per_epoch=steps,
                       examples_per_s=steps * per_worker * world / seconds, epoch_seconds=seconds,
                       **{f"rank{r}_steps": int(c) for r, c in enumerate(rank_steps)},
                       status="diverged" if diverged else "running", config_hash=config_hash)
        state = {"epoch": epoch + 1, "history": state["history"] + [metrics]}
        if on_epoch:
            on_epoch(metrics, state, mt, optimizers)
        if diverged:
            break
    return mt, state


def format_epoch(m: dict, epochs: int) -> str:
    task_metrics = " ".join(f"{k}={v:.4f}" for k, v in m.items()
                            if k.endswith(("_accuracy", "_auc", "_mae", "_r2")) and isinstance(v, float))
    return (f"epoch {m['epoch']}/{epochs} train_loss={m['train_loss']:.4f} {task_metrics} "
            f"objective={m['objective']:.4f} ({m['examples_per_s']:.0f} ex/s)")
