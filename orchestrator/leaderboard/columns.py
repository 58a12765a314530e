"""The leaderboard's columns: fixed types for the known ones (and for ``<task>_<metric>``, ``best_*``, ``weight_*``
columns), dict and list values as JSON strings (named in the schema metadata), and rows -> one typed Parquet table."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .. import metrics
from ..storage import first_line

JSON_KEY = b"orchestrator.json_columns"   # schema metadata: columns holding JSON strings
JSON_COLUMNS = ("config", "versions", "history")
_S, _F, _I, _TS = pa.string(), pa.float64(), pa.int64(), pa.timestamp("us", tz="UTC")
KNOWN_TYPES: dict[str, pa.DataType] = {
    "row_id": _S, "kind": _S, "experiment": _S, "sweep_id": _S, "trial_id": _S, "status": _S, "reason": _S,
    "objective": _F, "best_objective": _F, "objective_metric": _S, "objective_mode": _S, "mean_score": _F,
    "delta_m_pct": _F, "baselines_id": _S, "freeze_depth": _I, "backbone_lr": _F, "head_lr": _F,
    "loss_weighting": _S, "optimizer": _S,
    "batch_size": _I, "max_epochs": _I, "seed": _I, "epochs": _I, "train_loss": _F, "wall_time_s": _F,
    "world_size": _I, "examples_per_s": _F, "checkpoint": _S, "config": _S, "versions": _S, "history": _S,
    "config_hash": _S, "worker_config_hash": _S, "data_fingerprint": _S, "backbone": _S, "supersedes": _S,
    "backbone_digest": _S,
    "code_version": _S, "git_commit": _S, "training_revision": _I,
    "started_at": _TS, "created_at": _TS,
}
# merged rows (leaderboard/merge.py): the work a row did (config without storage or name, data by content, seed), the
# row of the same work that counts for it, the storage the row was merged from, and the fingerprint its data has here
# (data_alias: a copy of this storage's data elsewhere); a sweep's row of work done
# before (sweep/callback.py) also has duplicate_of, and reused_from ("sweep/trial" of the row it reused)
MERGE_TYPES: dict[str, pa.DataType] = {"work_key": _S, "duplicate_of": _S, "merged_from": _S, "reused_from": _S,
                                        "data_alias": _S}
_FLOAT_PREFIXES = ("best_", "weight_", "eff_weight_")
_FLOAT_SUFFIXES = tuple(f"_{m}" for m in metrics.TASK_METRICS)   # <task>_<metric>

def column_type(name: str) -> Optional[pa.DataType]:
    """The fixed type of a leaderboard column, None for columns whose type is inferred."""
    if name in KNOWN_TYPES or name in MERGE_TYPES:
        return KNOWN_TYPES.get(name) or MERGE_TYPES[name]
    if name.startswith(_FLOAT_PREFIXES) or (name.endswith(_FLOAT_SUFFIXES) and name.split("_", 1)[0]):
        return _F
    return None


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows -> one table: known columns with fixed types, dict/list values as JSON strings (listed in the
    schema metadata), naive datetimes as UTC; missing row_id -> new uuid4 hex, created_at -> now, kind -> trial."""
    now = datetime.now(timezone.utc)
    defaults = {"row_id": lambda: uuid.uuid4().hex, "kind": lambda: "trial", "created_at": lambda: now}
    rows = [{**r, **{k: make() for k, make in defaults.items() if r.get(k) is None}} for r in rows]
    names = list(dict.fromkeys(k for r in rows for k in r))
    json_cols = [k for k in names if k in JSON_COLUMNS
                 or any(isinstance(r.get(k), (dict, list, tuple)) for r in rows)]
    columns = {}
    for name in names:
        values = [_cell(r.get(name), name in json_cols) for r in rows]
        columns[name] = _array(name, values, _S if name in json_cols else column_type(name))
    return pa.table(columns).replace_schema_metadata({JSON_KEY: json.dumps(json_cols)})


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue()


def _cell(value, as_json: bool):
    if as_json and value is not None:
        return value if isinstance(value, str) else json.dumps(value, default=str)   # keys in order: tasks' is work
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value


def _array(name: str, values: list, type_: Optional[pa.DataType]) -> pa.Array:
    try:
        if type_ is None:
            try:
                return pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):   # e.g. a searched choice of 0.2 and "val.csv": text, as
                return pa.array([None if v is None else pa.scalar(v).cast(_S).as_py() for v in values], _S)   # unify
        try:
            return pa.array(values, type=type_)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array(values).cast(type_)       # e.g. 2.0 -> int64 (safe casts only)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        want = f" (must be {type_})" if type_ is not None else ""
        raise TypeError(f"leaderboard column {name!r} has values of mixed or wrong types{want}: "
                        f"{first_line(e, 200)}") from None
