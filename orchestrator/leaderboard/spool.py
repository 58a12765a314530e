"""Rows the leaderboard could not take yet: one local Parquet file per sweep (``layout.spool_file``), rewritten whole
whenever a write fails, removed once its rows are written, and appended by ``tune --resume`` (``append_spooled``):
the resumed sweep's own, and those of sweeps and runs that no live driver holds."""
from __future__ import annotations

import os

from .. import layout, storage
from .columns import parquet_bytes, rows_to_table


def keep(path: str, rows: list[dict]) -> None:
    """Write ``rows`` (all the sweep's unwritten rows) as the spool file ``path``, atomically."""
    storage.atomic_write(path, parquet_bytes(rows_to_table(rows)).to_pybytes())


def drop(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def spooled(location: str, experiment: str) -> list[str]:
    """The spool files of ``experiment``'s sweeps and runs in this storage, oldest first."""
    folder = layout.spool_dir(location, experiment)
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".parquet"))


def append_spooled(board, paths: list[str]) -> list[str]:
    """Append these spool files to ``board``, removing each once appended; returns them. A storage error
    propagates (the files not yet appended stay)."""
    for path in paths:
        with open(path, "rb") as f:
            board.append_parquet(f.read())
        drop(path)
    return list(paths)
