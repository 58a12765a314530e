"""Rows the leaderboard could not take yet: one local Parquet file per sweep (``layout.spool_file``), rewritten whole
whenever a write fails, removed once its rows are written, and appended by that sweep's ``tune --resume``
(``append_spooled``)."""
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


def append_spooled(board, location: str, experiment: str, sweep_id: str) -> list[str]:
    """Append the spool file of sweep ``sweep_id`` to ``board`` and remove it; returns the files appended. Another
    sweep's spool is left to its own resume: it may still run and rewrite it. A storage error propagates (the file
    stays)."""
    path = layout.spool_file(location, experiment, sweep_id)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        board.append_parquet(f.read())
    drop(path)
    return [path]
