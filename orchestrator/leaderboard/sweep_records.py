"""What ``merge`` carries beside the rows: each merged sweep's record (``sweep.json``: the config and search it ran,
the baselines its Δm% is measured against), which ``report`` (scheduler fronts, hints), ``ablate`` and ``confirm``
read in the storage that holds the rows."""
from __future__ import annotations

import json
import re
from functools import partial
from typing import Callable

import pyarrow as pa

from .. import layout, storage

NAME = re.compile(r"[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*")   # a folder name: no '/', not '.' or '..'


def copy_sweep_records(table: pa.Table, source: str, into: str, *, out: Callable[[str], None]) -> int:
    """Copy the sweep.json of every sweep with rows in ``table`` (a source's leaderboard) from ``source`` to the same
    place under ``into`` (storage locations), where ``into`` has none: a record DST has, the same or another, stays
    as it is; a sweep whose record the source lacks gets none. Written whole (``storage.atomic_write``), so a merge
    killed midway and run again copies the rest. Returns how many were copied."""
    if not {"experiment", "sweep_id"} <= set(table.column_names):
        return 0
    sweeps = {(r["experiment"], r["sweep_id"]) for r in table.select(["experiment", "sweep_id"]).to_pylist()}
    copied = 0
    for experiment, sweep_id in sorted(s for s in sweeps if all(isinstance(n, str) and NAME.fullmatch(n) for n in s)):
        here, there = layout.sweep_record(source, experiment, sweep_id), layout.sweep_record(into, experiment, sweep_id)
        if storage.exists(there) or not storage.exists(here):
            continue
        try:
            data = storage.read_bytes(here)
        except OSError as e:
            out(f"sweep {sweep_id}'s sweep.json in {storage.redact(source)} cannot be read ({storage.first_line(e)}): "
                f"not copied")
            continue
        try:   # marked as merged: DST holds none of its Tune state, so `tune --resume` there never takes it up
            data = json.dumps({**json.loads(data), "merged_from": storage.redact(source)}).encode()
        except ValueError:
            continue
        storage.retry(partial(storage.atomic_write, there, data), what="sweep record copy")
        copied += 1
    return copied
