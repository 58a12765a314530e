"""TensorBoard event files of a run: per-task metrics per epoch, written by rank 0.

``tensorboard --logdir <storage>/trials`` shows every run (trials of every sweep, `train` runs). The event file is
built in memory (tensorboardX's protos and its record format, which Ray Tune already brings) and written whole to
``<run>/tb/`` after each epoch, so remote storage gets it too and a worker killed mid-run (a stopped trial) leaves no
local file behind. It is written synchronously: tensorboardX's SummaryWriter queues events for a thread, and its
flush() does not wait for the queue, so a copy made after it could miss the epoch's last scalars.
"""
from __future__ import annotations

import socket
import struct
import time

from .. import storage
from ..metrics import is_run_field, task_of


class EpochBoard:
    """``with EpochBoard(run) as board``: one event file per board, rewritten whole at each ``write`` (a few hundred
    bytes per epoch)."""

    def __init__(self, run_dir: str):
        from tensorboardX.proto.event_pb2 import Event

        self.run_dir, self.closed = run_dir, False
        now = time.time()
        self.name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}"   # the name TensorBoard looks for
        self.events = bytearray()
        self._append(Event(wall_time=now, file_version="brain.Event:2"))

    def write(self, metrics: dict) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        if self.closed:
            raise ValueError("write to a closed EpochBoard")
        epoch, now = int(metrics["epoch"]), time.time()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch" and \
                    not is_run_field(key):
                self._append(Event(summary=scalar(_tag(key), float(value)), step=epoch, wall_time=now))
        storage.atomic_write(storage.join(self.run_dir, "tb", self.name), bytes(self.events))

    def _append(self, event) -> None:
        """One TFRecord: length, its masked CRC32C, the event, its masked CRC32C (tensorboardX's RecordWriter)."""
        from tensorboardX.record_writer import masked_crc32c

        def masked(data: bytes) -> bytes:
            return struct.pack("<I", masked_crc32c(data))   # TFRecord is little-endian

        data = event.SerializeToString()
        header = struct.pack("<Q", len(data))
        self.events += header + masked(header) + data + masked(data)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "EpochBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tag(key: str) -> str:
    """``left_accuracy`` -> ``left/accuracy`` (TensorBoard groups by the part before the slash)."""
    for prefix in ("train_loss_", "eff_weight_"):
        if key.startswith(prefix):
            return f"{prefix.rstrip('_')}/{key[len(prefix):]}"
    task = task_of(key)
    return f"{task[0]}/{task[1]}" if task else f"run/{key}"
