"""Every path under a storage location (a local folder or a URI), in one place.

    <storage>/trials/<run>/                 one Ray Train run (a `train` run, or one trial: <sweep id>-<trial id>)
        checkpoints/epoch_000003/           model.weights.h5, optimizers.npz, state.json (written last)
        progress.json  attempts/  tb/       rank 0's record of the run, its (re)starts, TensorBoard events
        summary.json  trial.json            `train`'s summary; a trial's start/end marks
        lease.json                          who writes the run now (training/lease.py)
        config.json                         the resolved config of a `train` run
    <storage>/sweeps/<experiment>/<sweep id>/   Ray Tune's state, sweep.json, config.json
        orchestrator/                       the sweep's lease and its scheduler's rungs (``sweep_own``)
        lease.json  asha.json ...           where older code kept them: read, never written (``*_kept_before``)
    <storage>/leaderboard/                  the leaderboard's Parquet files
    <storage>/backbones/                    the pretrained built-in backbone
    <storage>/logs/   <storage>/reports/<experiment>/
    <storage>/spool/<experiment>/<sweep id>.parquet   rows the leaderboard could not take yet (``spool_file``)

A remote storage keeps no logs: they go to ~/.orchestrator/logs/<hash of the location>/. Its spool is local too:
~/.orchestrator/spool/<hash of the location>/<experiment>/<sweep id>.parquet.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from urllib.parse import urlsplit

from . import storage

BUILTIN_BACKBONE = "backbones/digits-cnn-v1.keras"
CONFIG_FILE = "config.json"
LEASE_FILE = "lease.json"


def trials(location: str) -> str:
    """Where Ray Train keeps its runs (its ``storage_path``)."""
    return storage.join(location, "trials")


def run_dir(location: str, name: str) -> str:
    return storage.join(location, "trials", name)


SWEEP_ID = r"\d{8}-\d{6}-[0-9a-f]{6}"   # what new_sweep_id makes


def new_sweep_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def require_run_name(name: str) -> str:
    """``train --name``: a folder of its own under ``trials/``, not a path out of it, a hidden one, or a sweep's trial
    run (``<sweep id>-<trial id>``: a trial's folder has no lease of its own)."""
    from .errors import ConfigError

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or ".." in name:
        raise ConfigError(f"--name (name=) {name!r} is not a run name: use letters, digits, '_', '-' and '.' (not "
                          f"first, no '..'), e.g. --name digits-lr3")
    if re.match(rf"(?:[a-z]+-)?{SWEEP_ID}-", name):   # a sweep's, or a confirm/ablate/baselines run's
        raise ConfigError(f"--name (name=) {name!r} names a sweep's trial run: pick another name (or omit it)")
    return name


def trial_run_name(sweep_id: str, trial_id: str) -> str:
    """A trial's Ray Train run: a stable name, so a resumed trial finds its checkpoints."""
    return f"{sweep_id}-{trial_id}"


def lease_file(folder: str) -> str:
    """The lease of a run (or sweep) folder: one live writer at a time."""
    return storage.join(folder, LEASE_FILE)


def checkpoints(run: str) -> str:
    return storage.join(run, "checkpoints")


def checkpoint(run: str, epoch: int) -> str:
    return storage.join(run, "checkpoints", f"epoch_{epoch:06d}")


def progress_file(run: str) -> str:
    return storage.join(run, "progress.json")


def attempts(run: str) -> str:
    return storage.join(run, "attempts")


def tensorboard(run: str) -> str:
    return storage.join(run, "tb")


def summary_file(run: str) -> str:
    return storage.join(run, "summary.json")


def trial_marks(run: str) -> str:
    return storage.join(run, "trial.json")


def sweeps(location: str, experiment: str) -> str:
    return storage.join(location, "sweeps", experiment)


def sweep_dir(location: str, experiment: str, sweep_id: str) -> str:
    return storage.join(location, "sweeps", experiment, sweep_id)


def sweep_record(location: str, experiment: str, sweep_id: str) -> str:
    return storage.join(sweep_dir(location, experiment, sweep_id), "sweep.json")


def sweep_own(location: str, experiment: str, sweep_id: str) -> str:
    """What we write into a sweep's folder while it runs (its lease, its scheduler's rungs): a subfolder, because the
    top level is Ray Tune's. A resumed Tune copies every .json and .pkl file of that level to its staging folder and
    uploads its copies back every few seconds, over anything newer written there since."""
    return storage.join(sweep_dir(location, experiment, sweep_id), "orchestrator")


def sweep_lease_kept_before(location: str, experiment: str, sweep_id: str) -> tuple[str, ...]:
    """Where a driver of older code (before ``sweep_own``) held its sweep's lease: the sweep's folder itself. A new
    driver reads it (a live holder there keeps the sweep) and never writes it."""
    return (sweep_dir(location, experiment, sweep_id),)


def scheduler_state(location: str, experiment: str, sweep_id: str, scheduler: str = "moasha") -> str:
    """A scheduler's rung records, ``asha``, ``moasha`` or ``sync`` (Tune keeps no scheduler's state across a
    resume)."""
    return storage.join(sweep_own(location, experiment, sweep_id), f"{scheduler}.json")


def scheduler_state_kept_before(state: str) -> str:
    """Where a sweep started by older code (before ``sweep_own``) kept the rung records now at ``state``: the sweep's
    folder itself (Tune's level). Read by a resume of such a sweep when ``state`` does not exist yet; never written."""
    name = (urlsplit(state).path if storage.is_uri(state) else state).rstrip("/").rsplit("/", 1)[-1]
    return storage.join(storage.parent(storage.parent(state)), name)


def leaderboard(location: str) -> str:
    return storage.join(location if storage.is_uri(location) else os.path.abspath(location), "leaderboard")


def builtin_backbone(location: str) -> str:
    return storage.join(location, BUILTIN_BACKBONE)


def report_dir(location: str, experiment: str) -> str | None:
    """Reports of the demo: a local folder under storage (None for remote storage)."""
    return None if storage.is_uri(location) else os.path.join(location, "reports", experiment)


def log_file(location: str, what: str, experiment: str) -> str:
    """A command's full log: under local storage (logs/), or for remote storage beside its spool,
    ~/.orchestrator/logs/<hash of the location>/ (in a Ray job, the working directory is Ray's to delete)."""
    name = f"{what}-{experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.log"   # one per command
    if storage.is_uri(location):
        key = hashlib.sha256(storage.redact(location).encode()).hexdigest()[:12]
        return os.path.join(os.path.expanduser("~"), ".orchestrator", "logs", key, name)
    return os.path.join(os.path.abspath(location), "logs", name)


def spool_dir(location: str, experiment: str) -> str:
    """Where a sweep keeps the rows the leaderboard could not take (storage failing): always a local folder, so the
    rows survive the sweep; ``tune --resume`` appends them."""
    if not storage.is_uri(location):
        return os.path.join(os.path.abspath(location), "spool", experiment)
    key = hashlib.sha256(storage.redact(location).encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser("~"), ".orchestrator", "spool", key, experiment)


def spool_file(location: str, experiment: str, sweep_id: str) -> str:
    return os.path.join(spool_dir(location, experiment), f"{sweep_id}.parquet")
