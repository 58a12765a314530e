"""Checkpoints of one run, in the run's folder on storage (local or URI). No TensorFlow here.

``<run>/checkpoints/epoch_000003/`` holds ``model.weights.h5``, ``optimizers.npz`` and, written last,
``state.json`` (epoch, history, config hash, data fingerprint, training revision, loss-weighting state, and the
sha256 of every other file): a folder
without ``state.json`` is incomplete and ignored. Rank 0 writes; on a (re)start every rank reads the latest complete
one itself, so a worker lost right after an epoch redoes at most ``train.checkpoint_every`` epochs, whatever the
Train controller had registered. The two newest are kept: a latest one that fails its checksums (or whose
``state.json`` does not parse) is passed over for the one before, with one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from typing import Callable, Optional

import pyarrow.fs as pafs

from .. import scratch, storage
from ..config.revision import TRAINING_REVISION, revision_of

_EPOCH = re.compile(r"^epoch_(\d{6})$")
KEEP = 2


class CorruptCheckpoint(Exception):
    """A checkpoint whose files do not match the checksums in its state.json, or whose state.json is unreadable."""


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
    local = scratch.mkdtemp()   # named after this process: a killed one's is removed by the next
    try:
        write_files(local)
        fs, path = storage.filesystem(target)
        fs.create_dir(path, recursive=True)
        sums = {}
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as f:
                data = f.read()
            sums[name] = hashlib.sha256(data).hexdigest()
            storage.atomic_write(storage.join(target, name), data)
        storage.atomic_write(storage.join(target, "state.json"), json.dumps({**state, "sha256": sums}).encode())
    finally:
        shutil.rmtree(local, ignore_errors=True)
    for old in epochs_on_storage(run_dir)[:-KEEP]:
        fs, path = storage.filesystem(storage.join(folder(run_dir), f"epoch_{old:06d}"))
        try:
            fs.delete_dir(path)
        except OSError:
            pass
    return target


def read_state(run_dir: str, epoch: int) -> dict:
    try:
        return json.loads(storage.read_bytes(storage.join(folder(run_dir), f"epoch_{epoch:06d}", "state.json")))
    except (OSError, ValueError) as e:
        raise CorruptCheckpoint(f"its state.json cannot be read ({storage.first_line(e, 80)})") from None


def load(run_dir: str, epoch: int, read_files, *, state: Optional[dict] = None) -> dict:
    """``read_files(local_dir)`` loads the weights from a local copy whose checksums were verified; returns the state.
    ``CorruptCheckpoint`` if a file does not match its sha256 (checkpoints from before checksums load unverified)."""
    source = storage.join(folder(run_dir), f"epoch_{epoch:06d}")
    state = state if state is not None else read_state(run_dir, epoch)
    local = scratch.mkdtemp()   # named after this process: a killed one's is removed by the next
    try:
        fs, path = storage.filesystem(source)
        for info in fs.get_file_info(pafs.FileSelector(path)):
            if info.base_name == "state.json" or info.type != pafs.FileType.File:
                continue
            with fs.open_input_stream(info.path) as src:
                data = src.read()
            expected = state.get("sha256", {}).get(info.base_name)
            if expected is not None and hashlib.sha256(data).hexdigest() != expected:
                raise CorruptCheckpoint(f"{info.base_name} does not match its sha256")
            with open(os.path.join(local, info.base_name), "wb") as out:
                out.write(data)
        missing = set(state.get("sha256", {})) - set(os.listdir(local))
        if missing:
            raise CorruptCheckpoint(f"{sorted(missing)[0]} is missing")
        read_files(local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return state


def restore_latest(run_dir: str, read_files, *, check: Callable[[dict], None], say: Callable[[str], None],
                   epochs: Optional[list[int]] = None) -> Optional[dict]:
    """Load the newest kept checkpoint that is whole: ``check(state)`` first (e.g. the config hash: it raises before
    any weight is read), then the files against their checksums. A corrupt one is passed over with one line."""
    epochs = epochs_on_storage(run_dir) if epochs is None else epochs
    for epoch in reversed(epochs):
        try:
            state = read_state(run_dir, epoch)
            check(state)
            return load(run_dir, epoch, read_files, state=state)
        except CorruptCheckpoint as e:
            say(f"checkpoint epoch {epoch} of {storage.redact(run_dir)} is corrupt ({e}): "
                f"resuming from the checkpoint before it" if epoch != epochs[0] else
                f"checkpoint epoch {epoch} of {storage.redact(run_dir)} is corrupt ({e}): starting from scratch")
    return None


def same_config(config_hashes: tuple[str, ...], fingerprint: Optional[str] = None) -> Callable[[dict], None]:
    """A checkpoint's state must come from this config (one of the hashes of its work, its own first:
    ``config.freezing.hashes_of_same_work``), on this data (the hash names the data's path, not its content): checked
    before its weights are loaded."""
    def check(state: dict) -> None:
        from ..errors import ConfigError

        if revision_of(state) != TRAINING_REVISION:
            raise ConfigError(f"the run's checkpoint was made by older code (training revision "
                              f"{revision_of(state)}, now {TRAINING_REVISION}: what a config trains "
                              f"changed): use another run name")
        if state.get("config_hash", config_hashes[0]) not in config_hashes:
            raise ConfigError(f"the run's checkpoint was made by another config (hash {state['config_hash']}, this "
                              f"is {config_hashes[0]}): use another run name")
        if fingerprint and state.get("data_fingerprint", fingerprint) != fingerprint:
            raise ConfigError(f"the run's checkpoint was trained on other data (fingerprint "
                              f"{state['data_fingerprint']}, now {fingerprint}: its files or the backbone file "
                              f"changed): use another run name")
    return check
