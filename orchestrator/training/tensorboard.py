"""TensorBoard event files of a run: per-task metrics per epoch, written by rank 0.

``tensorboard --logdir <storage>/trials`` shows every run (trials of every sweep, `train` runs). Events
are written to a local file (tensorboardX's protos and record writer, which Ray Tune already brings) and copied to
``<run>/tb/`` after each epoch, so remote storage gets them too. They are written synchronously: tensorboardX's
SummaryWriter queues events for a thread, and its flush() does not wait for the queue, so a copy made after it
could miss the epoch's last scalars.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from .. import storage

SKIP = ("rank", "steps_per_epoch", "world_size", "epoch")


class EpochBoard:
    """``with EpochBoard(run) as board``: its local event folder and writer are closed and deleted at the end."""

    def __init__(self, run_dir: str):
        from tensorboardX.event_file_writer import EventsWriter

        self.run_dir = run_dir
        self.local = tempfile.mkdtemp(prefix="tb-")
        self.writer = EventsWriter(os.path.join(self.local, "events"))

    def write(self, metrics: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        epoch, now = int(metrics["epoch"]), time.time()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith(SKIP):
                self.writer.write_event(Event(summary=scalar(_tag(key), float(value)), step=epoch, wall_time=now))
        self.writer.flush()
        for name in os.listdir(self.local):
            with open(os.path.join(self.local, name), "rb") as f:
                storage.atomic_write(storage.join(self.run_dir, "tb", name), f.read())

    def close(self) -> None:
        self.writer.close()
        shutil.rmtree(self.local, ignore_errors=True)

    def __enter__(self) -> "EpochBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tag(key: str) -> str:
    """``left_accuracy`` -> ``left/accuracy`` (TensorBoard groups by the part before the slash)."""
    for prefix in ("train_loss_", "eff_weight_"):
        if key.startswith(prefix):
            return f"{prefix.rstrip('_')}/{key[len(prefix):]}"
    if "_" in key and key not in ("train_loss", "mean_score", "examples_per_s", "epoch_seconds", "delta_m"):
        task, metric = key.split("_", 1)
        return f"{task}/{metric}"
    return f"run/{key}"
