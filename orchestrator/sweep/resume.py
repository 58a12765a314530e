"""What ``tune --resume`` finds: the sweep (the latest that started, or a named one), checked to be this config's on
this data by this code, and the rows it recorded (spooled rows appended first)."""
from __future__ import annotations

import hashlib
import json
import os

from .. import layout, storage
from ..config.explain import changed_fields
from ..config.freezing import every_block_as_all, saved_as_today
from ..config.revision import TRAINING_REVISION, revision_of, task_order
from ..config.schema import ExperimentConfig, parse_config
from ..errors import ConfigError
from .callback import recorded


def sweep_hash(cfg: ExperimentConfig) -> str:
    blob = json.dumps({**cfg.public_dump(), **task_order(cfg.tasks)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def find_sweep(cfg: ExperimentConfig, sweep_id: str | None, *, fingerprint: str | None, say=lambda line: None,
               n_blocks: int | None = None) -> str:
    """The sweep to resume: ``sweep_id``, or the latest of this experiment that started (newer ones that never did
    are named, with ``say``); refused with another config or on other data (``fingerprint``: the files behind the
    config's paths changed). ``n_blocks``: the backbone's, to read a config saved before a depth of every block ran
    as 'all' (``every_block_as_all``) as it runs now."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(layout.sweeps(cfg.storage, cfg.name))
    ids = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                 if i.type == pafs.FileType.Directory
                 and not i.base_name.startswith(("baseline-", "confirm-", "ablation-")))
    if sweep_id is None:   # the latest that started: a start that failed leaves a folder without its record
        started = (i for i in reversed(ids) if _own_record(cfg, i))
        sweep_id = next(started, None)
        if sweep_id is None:
            raise ConfigError(f"no sweep of experiment {cfg.name!r} to resume in {storage.redact(cfg.storage)}: "
                              f"run it without --resume (Python: resume=False) first")
        if sweep_id != ids[-1]:   # e.g. one stopped during its baselines: Tune never saved a state to resume
            say(f"the newer sweep {ids[-1]} never started its trials (stopped or failed before them): nothing of it "
                f"to resume; resuming sweep {sweep_id} (run without --resume, or resume=False, for a new sweep)")
    elif sweep_id not in ids:
        raise ConfigError(f"no sweep {sweep_id!r} of experiment {cfg.name!r} in {storage.redact(cfg.storage)} "
                          f"(sweeps: {ids[-5:]})")
    try:
        saved = json.loads(storage.read_bytes(layout.sweep_record(cfg.storage, cfg.name, sweep_id)))
    except (OSError, ValueError):
        raise ConfigError(f"sweep {sweep_id} has no sweep.json: it cannot be resumed") from None
    if "merged_from" in saved:
        raise ConfigError(f"sweep {sweep_id} was merged from {saved['merged_from']}: resume it there (its Tune state "
                          f"is there; this storage holds its rows only)")
    if saved["config_hash"] != sweep_hash(cfg) and not _same_read_today(saved, cfg, n_blocks):
        changed = _changed(saved, cfg, n_blocks)
        raise ConfigError(f"sweep {sweep_id} was started with another config ({changed + '; ' if changed else ''}"
                          f"hash {saved['config_hash']}, this {sweep_hash(cfg)}): resume it with the same config, or "
                          f"start a new sweep")
    if revision_of(saved) != TRAINING_REVISION:
        raise ConfigError(f"sweep {sweep_id} was started by older code (training revision "
                          f"{revision_of(saved)}, now {TRAINING_REVISION}: what a config trains changed), "
                          f"so its unfinished trials cannot continue: start a new sweep (its rows stay)")
    if fingerprint and saved.get("data_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(f"sweep {sweep_id} was started on other data (fingerprint {saved['data_fingerprint']}, now "
                          f"{fingerprint}: its files or the backbone file changed): start a new sweep")
    return sweep_id


def recorded_rows(board, cfg: ExperimentConfig, sweep_id: str, *, out=print) -> tuple[set, dict]:
    """A resumed sweep's rows: spooled rows appended first, then ``callback.recorded``."""
    from ..errors import LeaderboardWriteError
    from ..leaderboard.spool import append_spooled, spooled
    from ..training.lease import live_holder

    def free(path: str) -> bool:   # this sweep's, or one no live driver holds (another sweep may still rewrite it)
        other = os.path.basename(path)[:-len(".parquet")]
        folders = (layout.sweep_own(cfg.storage, cfg.name, other),
                   *layout.sweep_lease_kept_before(cfg.storage, cfg.name, other))
        return other == sweep_id or live_holder(folders)[1] is None

    paths = [p for p in spooled(cfg.storage, cfg.name) if free(p)]
    try:
        for path in append_spooled(board, paths):
            out(f"appended the spooled rows of {path} to the leaderboard")
    except OSError as e:
        raise LeaderboardWriteError(f"the spooled rows in {paths[0]} still cannot be written "
                                    f"({storage.first_line(e)}); resume the sweep again once storage works") from None
    return recorded(board, sweep_id)


def _changed(saved: dict, cfg: ExperimentConfig, n_blocks: int | None) -> str:
    """The fields ``cfg`` changed from the config a sweep was started with, read the way a config is read now ("" where
    its sweep.json has none, or one that no longer validates)."""
    try:
        before = parse_config(saved["config"])
    except (ConfigError, KeyError, TypeError):
        return ""
    return changed_fields(saved_as_today(before, n_blocks).public_dump(), cfg.public_dump())


def _same_read_today(saved: dict, cfg: ExperimentConfig, n_blocks: int | None) -> bool:
    """Is the config a sweep was started with (its sweep.json, written before ``every_block_as_all``) ``cfg``, read
    the way a config is read now?"""
    try:
        return n_blocks is not None and sweep_hash(every_block_as_all(parse_config(saved["config"]), n_blocks)) == \
            sweep_hash(cfg)
    except (ConfigError, KeyError):
        return False


def _own_record(cfg: ExperimentConfig, sweep_id: str) -> bool:
    """Does this storage hold the sweep's record, written by the sweep here (not one a merge brought along)?"""
    try:
        return "merged_from" not in json.loads(storage.read_bytes(layout.sweep_record(cfg.storage, cfg.name,
                                                                                         sweep_id)))
    except (OSError, ValueError):
        return False
