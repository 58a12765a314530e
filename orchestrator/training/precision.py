"""Precision and GPUs: float16's dynamic loss scale (one for both optimizer groups) and the per-process GPU memory
cap of trials packed on one card. Knows nothing of Ray or Tune."""
from __future__ import annotations

import os
import subprocess
from typing import Optional

INITIAL_SCALE, GROWTH_STEPS = 2.0 ** 15, 2000   # Keras's LossScaleOptimizer defaults


class LossScale:
    """float16's dynamic loss scale. Keras's LossScaleOptimizer wraps one optimizer; the step has two (backbone and
    heads), which must skip together, so they share this one. The loss is multiplied by ``scale`` before the
    backward pass (small float16 gradients don't underflow) and the gradients divided by it after. A non-finite
    gradient on any worker skips the step and halves the scale; ``GROWTH_STEPS`` finite steps in a row double it.
    Build it in the strategy's scope; ``update`` runs in the step's cross-replica part with the all-reduced verdict."""

    def __init__(self, *, initial: float = INITIAL_SCALE, growth_steps: int = GROWTH_STEPS):
        import keras

        self.growth_steps = growth_steps
        self.scale = keras.Variable(initial, dtype="float32", trainable=False, name="loss_scale")
        self.good = keras.Variable(0, dtype="int64", trainable=False, name="loss_scale_good_steps")
        self.skipped = keras.Variable(0, dtype="int64", trainable=False, name="skipped_steps")

    def state(self) -> dict:
        """What a checkpoint keeps: a resumed run continues with this scale, not the initial one."""
        return {"scale": float(self.scale.numpy()), "good": int(self.good.numpy())}

    def restore(self, state: dict) -> None:
        self.scale.assign(state["scale"])
        self.good.assign(state["good"])

    def update(self, finite) -> None:
        import tensorflow as tf

        grow = tf.logical_and(finite, self.good >= self.growth_steps - 1)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale * 1.0), self.scale * 0.5))
        self.good.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good + 1, tf.zeros_like(self.good)))
        self.skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64))


def memory_cap_mb(gpus_per_worker: float, card_mb: Optional[float]) -> Optional[int]:
    """The memory one worker may take on a card it shares: ``gpus_per_worker`` × the card's memory. None (memory
    growth only) for a whole card or more, or when the card's memory is unknown."""
    if card_mb is None or not 0 < gpus_per_worker < 1:
        return None
    return int(gpus_per_worker * card_mb)


def card_memory_mb(device: str) -> Optional[float]:
    """Total memory of the GPU ``device`` (an index or UUID as in CUDA_VISIBLE_DEVICES) from ``nvidia-smi``; None
    when it cannot tell."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", device],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def configure_gpus(tf, gpus_per_worker: float) -> Optional[int]:
    """Before any TensorFlow op: a worker that shares its card (``gpus_per_worker`` < 1, trials packed on one GPU)
    gets a hard memory cap, so one trial's allocator cannot starve the others; a worker with whole cards grows
    its memory as needed. Returns the cap in MB, if any. (Not run here: the machines that test this have no GPU.)"""
    gpus = tf.config.list_physical_devices("GPU")
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    shared = gpus and 0 < gpus_per_worker < 1   # a whole card needs no nvidia-smi (up to 30 s): memory growth
    cap = memory_cap_mb(gpus_per_worker, card_memory_mb(visible[0] if visible else "0")) if shared else None
    for gpu in gpus:
        if cap is None:
            tf.config.experimental.set_memory_growth(gpu, True)
        else:   # memory growth and a logical device's limit exclude each other: the cap alone
            tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=cap)])
    return cap
