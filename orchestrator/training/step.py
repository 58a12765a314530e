"""Where workers synchronize: the distributed training step (a gradient all-reduce inside ``apply_gradients``) and
the one all-reduce per epoch, which carries named fields packed into one vector."""
from __future__ import annotations

import numpy as np


def make_train_step(strategy, mt, cfg, weighting, optimizers: dict, *, global_batch: int):
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
            optimizers["backbone"].apply_gradients(zip(grads[:n_bb], backbone_vars))
        optimizers["heads"].apply_gradients(zip(grads[n_bb:], head_vars))
        return tf.stack([loss] + task_losses)

    @tf.function
    def step(x, y):
        # This worker's share only: a collective per step just for logging costs throughput;
        # the epoch's sums are all-reduced once instead.
        return tf.add_n(strategy.experimental_local_results(strategy.run(replica_step, args=(x, y))))

    return step


def make_allreduce_sum(strategy, world: int):
    """``f(vec) -> vec`` summed over all workers (one replica per worker). A tf.function: eager
    collectives are slow under MultiWorkerMirroredStrategy. One worker: the vector itself."""
    if world == 1:
        return lambda vec: np.asarray(vec, np.float64)
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def allreduce(local):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(local,)), axis=None)

    return lambda vec: allreduce(tf.constant(vec, dtype=tf.float64)).numpy()


def allreduce_fields(allreduce_sum, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum named float64 fields over all workers in one collective: packed into one vector in a fixed order (every
    rank packs the same names with the same sizes), then unpacked by name."""
    parts = {name: np.atleast_1d(np.asarray(value, np.float64)) for name, value in fields.items()}
    summed = allreduce_sum(np.concatenate(list(parts.values())))
    out, at = {}, 0
    for name, part in parts.items():
        out[name] = summed[at:at + part.size]
        at += part.size
    return out


def one_hot(value: float, *, rank: int, world: int) -> np.ndarray:
    """This rank's ``value`` at its own index: summed over workers, every rank's value."""
    return np.eye(world)[rank] * value
