"""``data.augment``: Keras's random image layers in a worker's training input pipeline (never validation), with
every draw keyed on (``train.seed``, rank, epoch, batch).

Keras's layers draw from stateful seed generators. In a parallel ``map`` which batch gets which draw then follows
thread timing (three runs of one seeded pipeline gave three different results), and a resumed run restarts the
draws. Here each layer's generator hands out stateless seeds built from the batch's key instead: a batch gets the
same draws in every run, resumed or not, whichever thread augments it, and each rank gets its own.
"""
from __future__ import annotations

import hashlib
from typing import Optional

BATCHES_PER_EPOCH = 2 ** 20   # the key is epoch * this + batch: distinct below it


def augmenter(cfg, *, rank: int = 0) -> Optional["Augment"]:
    """The run's augmentation, or None when ``data.augment`` does nothing."""
    return Augment(cfg, rank=rank) if cfg.data.augment.active else None


class Augment:
    """Call as ``augment(batch_index, images)`` inside the input pipeline's map; ``set_epoch`` before each epoch."""

    def __init__(self, cfg, *, rank: int):
        import keras
        import tensorflow as tf

        a, seed = cfg.data.augment, cfg.train.seed
        self.layers = []
        if a.flip != "none":
            self.layers.append(keras.layers.RandomFlip(a.flip))
        if a.rotation:
            self.layers.append(keras.layers.RandomRotation(a.rotation))
        if a.zoom:
            self.layers.append(keras.layers.RandomZoom(a.zoom))
        if a.contrast:
            self.layers.append(keras.layers.RandomContrast(a.contrast))
        for i, layer in enumerate(self.layers):
            layer.generator = _keyed_seeds(self, stream=(seed, rank, i))
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="augment_epoch")   # read per batch
        self.key = None   # the batch's key while the map function is traced

    def set_epoch(self, epoch: int) -> None:
        self.epoch.assign(epoch)

    def __call__(self, batch_index, images):
        import tensorflow as tf

        self.key = self.epoch * BATCHES_PER_EPOCH + tf.cast(batch_index, tf.int64)
        for layer in self.layers:
            layer.generator.draws = 0   # each trace numbers its draws from the start
            images = layer(images, training=True)
        return images


def _keyed_seeds(augment: Augment, *, stream: tuple):
    """A Keras SeedGenerator whose n-th seed in a traced call is (hash of ``stream`` and n, the batch's key)."""
    import keras
    import tensorflow as tf

    class KeyedSeeds(keras.random.SeedGenerator):
        def __init__(self):
            super().__init__(seed=0)
            self.draws = 0

        def next(self, ordered=True):
            self.draws += 1   # counted while tracing: the n-th draw of a layer's call gets the same seed
            mixed = hashlib.sha256(repr((*stream, self.draws)).encode()).digest()
            return tf.stack([tf.constant(int.from_bytes(mixed[:4], "little") >> 1, tf.int64), augment.key])

    return KeyedSeeds()
