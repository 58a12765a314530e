"""Checkpoints of one run, in the run's folder on storage (local or URI). No TensorFlow here.

``<run>/checkpoints/epoch_000003/`` holds ``model.weights.h5``, ``optimizers.npz`` and, written last,
``state.json`` (epoch, history, config hash, loss-weighting state): a folder without ``state.json``
is incomplete and ignored. Rank 0 writes; on a (re)start every rank reads the latest complete one
itself, so a worker lost right after an epoch redoes at most ``train.checkpoint_every`` epochs,
whatever the Train controller had registered. The two newest are kept.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Optional

import pyarrow.fs as pafs

from .. import storage

_EPOCH = re.compile(r"^epoch_(\d{6})$")
KEEP = 2


def folder(run_dir: str) -> str:
    return storage.join(run_dir, "checkpoints")


def epochs_on_storage(run_dir: str) -> list[int]:
    """Epochs with a complete checkpoint, ascending."""
    fs, path = storage.filesystem(folder(run_dir))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    found = []
    for info in infos:
        m = _EPOCH.match(info.base_name)
        if m and info.type == pafs.FileType.Directory and fs.get_file_info(info.path + "/state.json").type == \
                pafs.FileType.File:
            found.append(int(m.group(1)))
    return sorted(found)


def latest_state(run_dir: str) -> Optional[dict]:
    """``state.json`` of the newest complete checkpoint, or None."""
    epochs = epochs_on_storage(run_dir)
    if not epochs:
        return None
    return json.loads(storage.read_bytes(storage.join(folder(run_dir), f"epoch_{epochs[-1]:06d}", "state.json")))


def save(run_dir: str, epoch: int, write_files, state: dict) -> str:
    """``write_files(local_dir)`` writes the weights; then state.json goes last. Returns the location."""
    target = storage.join(folder(run_dir), f"epoch_{epoch:06d}")
    local = tempfile.mkdtemp(prefix="ckpt-")
    try:
        write_files(local)
        fs, path = storage.filesystem(target)
        fs.create_dir(path, recursive=True)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as f:
                storage.atomic_write(storage.join(target, name), f.read())
        storage.atomic_write(storage.join(target, "state.json"), json.dumps(state).encode())
    finally:
        shutil.rmtree(local, ignore_errors=True)
    for old in epochs_on_storage(run_dir)[:-KEEP]:
        fs, path = storage.filesystem(storage.join(folder(run_dir), f"epoch_{old:06d}"))
        try:
            fs.delete_dir(path)
        except OSError:
            pass
    return target


def load(run_dir: str, epoch: int, read_files) -> dict:
    """``read_files(local_dir)`` loads the weights from a local copy; returns the state."""
    source = storage.join(folder(run_dir), f"epoch_{epoch:06d}")
    if not storage.is_uri(source):
        read_files(source)
    else:
        local = tempfile.mkdtemp(prefix="ckpt-")
        try:
            fs, path = storage.filesystem(source)
            for info in fs.get_file_info(pafs.FileSelector(path)):
                with open(os.path.join(local, info.base_name), "wb") as out, fs.open_input_stream(info.path) as src:
                    out.write(src.read())
            read_files(local)
        finally:
            shutil.rmtree(local, ignore_errors=True)
    return json.loads(storage.read_bytes(storage.join(source, "state.json")))
