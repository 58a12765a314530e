"""Where workers synchronize: the distributed training step (a gradient all-reduce inside ``apply_gradients``) and
the one all-reduce per epoch, which carries named fields packed into one vector."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass
class TrainStep:
    """``step(x, y)``: one synchronous data-parallel step on this worker's part ``x, y`` of the global batch; returns
    this worker's share of [total loss, task 1 loss, ...] (summed over workers: global means). ``loss_scale``:
    float16's shared dynamic loss scale (``training.precision``), else None."""
    run: Callable
    loss_scale: Optional[object] = None

    def __call__(self, x, y):
        return self.run(x, y)


def make_train_step(strategy, mt, cfg, weighting, optimizers: dict, *, global_batch: int) -> TrainStep:
    import tensorflow as tf

    from .precision import LossScale

    groups = [(optimizers[g], vs) for g, vs in zip(("backbone", "heads"), mt.variable_groups()) if vs]
    variables = [v for _, vs in groups for v in vs]
    with strategy.scope():
        scale = LossScale() if cfg.train.precision == "mixed_float16" else None
    losses = _task_losses(mt, cfg, global_batch=global_batch)
    # XLA compiles the model's forward pass (and its gradient); no collective runs inside the compiled part.
    forward = tf.function(losses, jit_compile=True, autograph=False) if cfg.train.jit_compile else losses

    def backward(x, y):
        with tf.GradientTape() as tape:
            task, reg = forward(x, y)
            # FAMO weighs by the global batch's losses: K numbers all-reduced, workers sync here.
            both = _all_reduced(tf.stop_gradient(task)) if weighting.global_losses else task
            loss = weighting.combine(tf.unstack(task), global_losses=both) + reg
            scaled = loss * scale.scale if scale else loss   # float16: small gradients must not underflow
        grads = [g / scale.scale for g in tape.gradient(scaled, variables)] if scale else tape.gradient(loss, variables)
        if scale:   # float16: one verdict for all workers (a scalar all-reduce): a non-finite gradient anywhere skips
            bad = _all_reduced(tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads]))
        return grads, tf.concat([[loss], task], 0), both, tf.equal(bad, 0.0) if scale else tf.constant(True)

    def apply(grads):
        at = 0
        for optimizer, vs in groups:   # apply_gradients all-reduces (sums) each gradient across workers: workers sync
            optimizer.apply_gradients(zip(grads[at:at + len(vs)], vs))
            at += len(vs)

    # No AutoGraph (as Keras's own trainer): the step's branches are Python ones, on the config, and converting
    # Keras's layers made tracing, a trial's largest start-up cost after the launch, about 0.7 s longer.
    @tf.function(autograph=False)
    def step(x, y):
        grads, stats, before, finite = strategy.run(backward, args=(x, y))
        ok = tf.constant(True)
        if scale:   # both groups step, or neither; the cond sits in cross-replica context (apply_gradients may merge_call)
            ok = strategy.experimental_local_results(finite)[0]   # all-reduced: the same on every worker
            tf.cond(ok, lambda: strategy.run(apply, args=(grads,)), lambda: None)
            scale.update(ok)
        else:
            strategy.run(apply, args=(grads,))
        after = None
        if weighting.global_losses:   # FAMO: one extra no-gradient forward pass with the new weights, all-reduced
            after = strategy.experimental_local_results(strategy.run(lambda a, b: _all_reduced(forward(a, b)[0]),
                                                                     args=(x, y)))[0]
            before = strategy.experimental_local_results(before)[0]
        weighting.after_step(before, after, applied=ok)
        # This worker's share only: a collective per step just for logging costs throughput;
        # the epoch's sums are all-reduced once instead.
        return tf.add_n(strategy.experimental_local_results(stats))

    return TrainStep(step, scale)


def _task_losses(mt, cfg, *, global_batch: int) -> Callable:
    """``f(x, y)`` -> (this replica's share of each task's global-batch mean loss, as one float32 vector; its share
    of the model's regularization losses, e.g. a backbone file's kernel_regularizer)."""
    import tensorflow as tf

    from ..model.multitask import per_example_losses

    def losses(x, y):
        out = mt.model(x, training=True)  # frozen blocks (incl. BatchNorm) run in inference mode
        per_task = per_example_losses(cfg, y, out)
        # Average over the GLOBAL batch, not the local one: the optimizer sums gradients across
        # replicas, so the sum is exactly the gradient of the global mean loss.
        task = tf.stack([tf.nn.compute_average_loss(per_task[t], global_batch_size=global_batch) for t in cfg.tasks])
        reg = [tf.cast(v, tf.float32) for v in mt.model.losses]   # per replica: summed over replicas, counted once
        return task, tf.nn.scale_regularization_loss(tf.add_n(reg)) if reg else tf.constant(0.0)
    return losses


def _all_reduced(value):
    """``value`` summed over the replicas (in a replica context; one worker: itself)."""
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce("SUM", value)


def make_allreduce_sum(strategy, world: int):
    """``f(vec) -> vec`` summed over all workers (one replica per worker). A tf.function: eager
    collectives are slow under MultiWorkerMirroredStrategy. One worker: the vector itself."""
    if world == 1:
        return lambda vec: np.asarray(vec, np.float64)
    import tensorflow as tf

    @tf.function(reduce_retracing=True, autograph=False)
    def allreduce(local):
        return strategy.reduce("SUM", strategy.run(tf.identity, args=(local,)), axis=None)

    return lambda vec: allreduce(tf.constant(vec, dtype=tf.float64)).numpy()


def sync_batchnorm(model, allreduce_sum, world: int) -> None:
    """Every worker's moving statistics of the unfrozen BatchNormalization layers become their mean over workers.
    Keras 3 makes them with aggregation "none": under MultiWorkerMirroredStrategy each worker updates its own copy
    from its own shard, so validation would sum the scores of several models and the checkpoint (rank 0's) be none
    of them. A moving average is linear in its updates, so the mean equals averaging every update (Keras 2's "mean"
    aggregation). One collective, on every rank (the same model has the same layers); frozen layers do not move."""
    import keras

    stats = [v for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
             for v in (layer.moving_mean, layer.moving_variance)]
    if world == 1 or not stats:
        return
    mean = allreduce_sum(np.concatenate([np.ravel(v.numpy()) for v in stats])) / world
    at = 0
    for v in stats:
        size = int(np.prod(v.shape))
        v.assign(mean[at:at + size].reshape(v.shape).astype(v.dtype))
        at += size


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


def own_draws(model, rank: int) -> None:
    """Each worker's dropout and noise masks its own. Keras draws them from a layer's seed generator, whose state
    is mirrored under MultiWorkerMirroredStrategy, so every worker drew the same mask for its own examples: less
    noise than the rate says. Rank r's seeds are offset by r (rank 0 draws as one worker does); the state, which
    checkpoints hold, moves as before. Only the model's layers: loss weightings that draw (RLW) must draw alike."""
    import functools

    for layer in model._flatten_layers(include_self=False) if rank else ():
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.next = functools.partial(_offset_seed, generator.next, rank)


def _offset_seed(draw, rank: int, ordered: bool = True):
    import tensorflow as tf

    seed = draw(ordered=ordered)   # [seed, counter]; Keras casts it to int32 for TensorFlow: offset the seed part
    return seed + tf.constant([_RANK_STRIDE * rank, 0], seed.dtype)


_RANK_STRIDE = 1_000_003   # layers' seeds are train.seed + a small index: rank streams do not meet them
