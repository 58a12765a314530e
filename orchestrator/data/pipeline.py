"""Decoding on the cluster: units (``data.make_units``) -> Ray Data -> decoded arrays, per worker.

Three modes (``data.cache``):
- **memory**: the units are decoded once per run or sweep by Ray Data on the cluster and kept in the
  object store; each worker fetches its units (zero-copy on its node) and trains from memory. A
  sweep decodes once for all its trials.
- **none** (streaming): each worker runs a Ray Data pipeline over its units every epoch; decoded
  batches stream into its input pipeline and are never held whole.
- **disk**: like streaming, but each unit is decoded once per node into a file (``data.disk_cache``) that
  later epochs and trials read memory-mapped.

Which units a worker gets is a pure function of (epoch, rank, world size, seed) (``dealing``), so every
rank knows every rank's row count: all ranks run the same number of steps, and validation covers every
row exactly once. Augmentation runs in the worker's input pipeline (``augment``).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np

from .. import _ray
from ..errors import DataError
from .augment import augmenter
from .dealing import deal, memory_blocks, rows_per_rank, sizes_of
from .decode import decode_options, decode_unit

DECODE_CPUS = 0.5     # per decode task when decoding into the object store, before any training
STREAM_DECODERS = 2   # decode tasks per worker while streaming
VAL_BATCH_BYTES = 16 * 2 ** 20   # decoded bytes per validation batch: 1024 small images, 111 at 224x224x3


def val_batch_size(spec) -> int:
    """Images per validation batch: up to 1024, fewer when they are large (1024 RGB images at 224x224 are
    616 MB as float32 before the model's own activations; validation sums add up whatever the batch)."""
    return int(max(1, min(1024, VAL_BATCH_BYTES // spec.decoded_bytes_per_image)))


def concat(batches: list[dict]) -> dict:
    keys = batches[0].keys()
    return {k: np.concatenate([b[k] for b in batches]) for k in keys}


def decode_all(units: list[dict], opts: dict) -> dict:
    """Every unit decoded in this process (small data, in-process runs and tests)."""
    return concat([decode_unit(u, opts) for u in units])


def load_arrays(cfg):
    """Check and decode a small data set in this process: ((x, y), (xv, yv), spec). For the built-in
    data and in-process runs (pretraining, benches, tests), not for the product's distributed path."""
    from .prepare import prepare

    data = prepare(cfg)
    opts = decode_options(cfg.model_dump(mode="json"), data.spec.to_dict())
    tasks = list(cfg.tasks)
    out = []
    for units in (data.train_units, data.val_units):
        d = decode_all(units, opts)
        out.append((d["image"], {t: d[f"y_{t}"] for t in tasks}))
    return out[0], out[1], data.spec


def cause_message(e: BaseException) -> Optional[str]:
    """The one-line message of a DataError raised inside a Ray Data task, however Ray wrapped it."""
    import re

    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        if isinstance(e, DataError):
            return str(e).splitlines()[0]
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    for exc in chain:   # Ray keeps the original only as text: "...DataError: <message>"
        found = re.findall(r"DataError: (.*)", str(exc))
        if found:
            return found[-1].strip()
    return None


@contextlib.contextmanager
def ray_data_errors():
    """A DataError raised in a Ray Data decode task comes out as itself (one line), not as Ray's wrapper."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps the decode task's error; keep its one line
        msg = cause_message(e)
        if msg:
            raise DataError(msg) from None
        raise


def stream_task_options() -> dict:
    """Ray options of the decode tasks a Train worker starts. Inside a Train worker the workers may hold every CPU:
    decode tasks ask for none (they would wait forever) and a small pool caps them instead. They would inherit the
    Train worker's setup hook, which imports TensorFlow (training/warm.py): not in a decoder."""
    return {"num_cpus": 0, "runtime_env": _ray.without_setup_hook()}


def decoded_units(units: list[dict], opts: dict, *, task_options: dict):
    """A Ray Data pipeline that decodes one unit per block, in Ray tasks with ``task_options`` (map_batches')."""
    import ray.data

    ds = ray.data.from_items([{"unit": i} for i in range(len(units))], override_num_blocks=max(len(units), 1))
    ds = ds.map_batches(_decode_batch, fn_kwargs={"units": units, "opts": opts}, batch_size=1, batch_format="numpy",
                        **task_options)
    # Blocks come out in the order dealt, not in the order their decode tasks finish: a seeded run streams the same
    # batches, and its workers hold the same in-memory shards (``dealing.memory_blocks``), every time. Finishing order
    # follows the machine's load: it moved a streamed 6-epoch r2 from 0.80 to 0.55, and an in-memory run's left
    # accuracy from 0.91 to 0.85.
    ds.context.execution_options.preserve_order = True
    # One block per unit: Ray Data splits a block past 1.5 x 128 MiB (256 RGB images at 512 px), and in-memory
    # blocks are dealt by unit (``dealing.memory_blocks``): a split would leave rows to no worker.
    ds.context.target_max_block_size = None
    return ds


def stream(units: list[dict], opts: dict, *, batch_size: int, seed: int, drop_last: bool = False) -> Iterator[dict]:
    """Decoded batches of these units through a Ray Data pipeline (decoding runs in Ray tasks)."""
    import ray.data

    ds = decoded_units(units, opts, task_options={"compute": ray.data.TaskPoolStrategy(size=STREAM_DECODERS),
                                                  **stream_task_options()})
    with ray_data_errors():
        yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last,
                                   local_shuffle_buffer_size=4 * batch_size if seed is not None else None,
                                   local_shuffle_seed=seed, prefetch_batches=2)


def _decode_batch(batch: dict, *, units: list[dict], opts: dict) -> dict:
    return concat([decode_unit(units[int(i)], opts) for i in batch["unit"]])


# -- what the training loop reads ----------------------------------------------------------------
def _finish(ds, cfg, tasks, spec, *, augment=None):
    """Batches of (float32 images, {task: labels}): cast, standardize regression targets, augment (``augment``,
    keyed on each batch's index in the epoch)."""
    import tensorflow as tf

    mean, std = spec.label_mean, spec.label_std

    def prep(i, batch):
        x, y = batch
        x = tf.cast(x, tf.float32)
        if augment is not None:
            x = augment(i, x)
        return x, {t: (tf.cast(y[t], tf.float32) - mean[t]) / std[t] if t in mean else y[t] for t in tasks}

    return ds.enumerate().map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class ArrayData:
    """In-memory arrays: in-process runs, and a worker's cached shard."""

    def __init__(self, cfg, spec, train, val, *, rank: int = 0, world: int = 1):
        (self.x, self.y), (self.xv, self.yv) = train, val
        self.cfg, self.spec, self.rank, self.world = cfg, spec, rank, world
        self.steps, self.augment = None, augmenter(cfg, rank=rank)

    def agree_steps(self, per_worker: int, allreduce_sum) -> None:
        """Every rank must run the same number of collective steps: the fewest any rank can fill."""
        counts = allreduce_sum(np.eye(self.world)[self.rank] * (len(self.x) // per_worker))
        self.steps = int(counts.min())
        if self.steps < 1:
            raise DataError(f"train.batch_size {self.cfg.train.batch_size} is larger than a worker's "
                            f"{int(len(self.x))} training examples; lower it or use fewer workers")

    def set_epoch(self, epoch: int) -> int:
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        return self.steps

    def start_at(self, epoch: int, dist) -> None:
        """Before a fit's first epoch: the shuffle below draws each epoch's order from a seed generator that advances
        once per iterator made in this process, so a run resumed at epoch k first makes (and drops) k iterators and
        trains epoch k on epoch k's order, not epoch 1's. Making an iterator reads no element."""
        for _ in range(epoch):
            iter(dist)

    def train_dataset(self, per_worker: int):
        import tensorflow as tf

        tasks = list(self.cfg.tasks)
        ds = (tf.data.Dataset.from_tensor_slices((self.x, {t: self.y[t] for t in tasks}))
              .shuffle(len(self.x), seed=self.cfg.train.seed + self.rank, reshuffle_each_iteration=True)
              .batch(per_worker, drop_remainder=True).take(self.steps))
        return _finish(ds, self.cfg, tasks, self.spec, augment=self.augment)

    def val_batches(self):
        size = val_batch_size(self.spec)
        for i in range(0, len(self.xv), size):
            yield self.xv[i:i + size], {t: v[i:i + size] for t, v in self.yv.items()}


def worker_data(payload: dict, cfg, spec, *, rank: int, world: int):
    """A Ray Train worker's data. ``payload["mode"]``: ``memory`` (``train``/``val``: ObjectRefs of
    decoded blocks, fetched once), ``stream`` (``train``/``val``: an ObjectRef of the units list,
    decoded by Ray Data every epoch) or ``disk`` (the same units, decoded once per node into ``folder``)."""
    import ray

    tasks = list(cfg.tasks)
    if payload["mode"] == "memory":
        train = _gather(ray.get(memory_blocks(payload, "train", rank=rank, world=world)))
        val = _gather(ray.get(memory_blocks(payload, "val", rank=rank, world=world)), allow_empty=True)
        return ArrayData(cfg, spec, (train["image"], {t: train[f"y_{t}"] for t in tasks}),
                         (val.get("image", np.zeros((0, *spec.image_shape))), {t: val.get(f"y_{t}", np.zeros(0))
                                                                              for t in tasks}),
                         rank=rank, world=world)
    return (DiskData if payload["mode"] == "disk" else StreamData)(payload, cfg, spec, rank=rank, world=world)


class StreamData:
    """Units decoded by Ray Data every epoch; which units a rank gets changes each epoch (seeded)."""

    def __init__(self, payload: dict, cfg, spec, *, rank: int, world: int):
        import ray

        self.opts, self.cfg, self.spec, self.rank, self.world = payload["opts"], cfg, spec, rank, world
        self.units, self.all_val_units = ray.get(payload["train"]), ray.get(payload["val"])
        self.val_units = [self.all_val_units[i]
                          for i in deal(sizes_of(self.all_val_units), world=world, epoch=None, seed=0)[rank]]
        self.sizes = sizes_of(self.units)
        self.seed, self.epoch, self.per_worker = cfg.train.seed, 0, None
        self.tasks = list(cfg.tasks)
        self.error, self.augment = None, augmenter(cfg, rank=rank)

    def agree_steps(self, per_worker: int, allreduce_sum) -> None:
        self.per_worker = per_worker   # every rank computes every rank's rows from the same units: no collective
        self.set_epoch(0)

    def start_at(self, epoch: int, dist) -> None:
        """Nothing to do: each epoch's units and order are a function of (seed, epoch)."""

    def set_epoch(self, epoch: int) -> int:
        self.epoch = epoch
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        rows = rows_per_rank(self.sizes, world=self.world, epoch=epoch, seed=self.seed)
        steps = min(rows) // self.per_worker
        if steps < 1:
            raise DataError(f"train.batch_size {self.cfg.train.batch_size} is larger than a worker's {min(rows)} "
                            f"training examples; lower it or use fewer workers")
        return steps

    def train_dataset(self, per_worker: int):
        import tensorflow as tf

        shape = tuple(self.spec.image_shape)
        dtype = tf.uint8 if self.spec.pixel_dtype == "uint8" else tf.float32
        signature = (tf.TensorSpec((per_worker, *shape), dtype),
                     {t: tf.TensorSpec((per_worker,), tf.int32 if t in self.spec.classes else tf.float32)
                      for t in self.tasks})

        def batches():
            steps = self.set_epoch(self.epoch)
            mine = deal(self.sizes, world=self.world, epoch=self.epoch, seed=self.seed)[self.rank]
            try:
                for i, b in enumerate(self.epoch_batches(mine, per_worker)):
                    if i >= steps:
                        break
                    yield b["image"], {t: b[f"y_{t}"] for t in self.tasks}
            except DataError as e:
                self.error = e   # TensorFlow turns it into an opaque op error: the loop re-raises this one
                raise

        ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
        return _finish(ds, self.cfg, self.tasks, self.spec, augment=self.augment)

    def epoch_batches(self, mine: list[int], per_worker: int) -> Iterator[dict]:
        return stream([self.units[j] for j in mine], self.opts, batch_size=per_worker, seed=self.seed + self.epoch,
                      drop_last=True)

    def val_batches(self):
        if not self.val_units:
            return
        for b in stream(self.val_units, self.opts, batch_size=val_batch_size(self.spec), seed=None):
            yield b["image"], {t: b[f"y_{t}"] for t in self.tasks}


class DiskData(StreamData):
    """Units decoded once per node into ``data.disk_cache``'s files, then read memory-mapped every epoch."""

    def __init__(self, payload: dict, cfg, spec, *, rank: int, world: int):
        super().__init__(payload, cfg, spec, rank=rank, world=world)
        self.folder = payload["folder"]
        self.keys = ["image", *(f"y_{t}" for t in self.tasks)]

    def epoch_batches(self, mine: list[int], per_worker: int) -> Iterator[dict]:
        from .disk_cache import shuffled_batches, units_in_order

        arrays = units_in_order(self.folder, "train", mine, self.units, self.opts)
        return shuffled_batches(arrays, batch_size=per_worker, seed=self.seed + self.epoch, keys=self.keys)

    def val_batches(self):
        from .disk_cache import units_in_order

        mine = deal(sizes_of(self.all_val_units), world=self.world, epoch=None, seed=0)[self.rank]
        size = val_batch_size(self.spec)
        for unit in units_in_order(self.folder, "val", mine, self.all_val_units, self.opts):
            for i in range(0, len(unit["image"]), size):
                yield np.asarray(unit["image"][i:i + size]), {t: unit[f"y_{t}"][i:i + size] for t in self.tasks}


def _gather(decoded: list[dict], *, allow_empty: bool = False) -> dict:
    if not decoded:
        if allow_empty:
            return {}
        raise DataError("a worker got no training data: use fewer workers (the data has too few blocks)")
    return concat(decoded)


def decode_to_object_store(units: list[dict], opts: dict) -> list:
    """Decode every unit once with Ray Data on the cluster; ObjectRefs of the decoded blocks.
    The driver holds references only. A bad image fails here, before any training."""
    import ray

    if not units:
        return []
    if all("pixels" in u for u in units) and opts["image_size"] is None and opts["color_mode"] == "keep":
        return [ray.put(decode_unit(u, opts)) for u in units]   # already pixels in memory: nothing to decode
    ds = decoded_units(units, opts, task_options={"num_cpus": DECODE_CPUS})
    with ray_data_errors():
        refs = ds.to_numpy_refs()
    if len(refs) != len(units):
        raise RuntimeError(f"Ray Data made {len(refs)} blocks of {len(units)} units: one block per unit is what the "
                           f"workers' shares count (dealing.memory_blocks)")
    return refs
