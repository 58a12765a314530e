"""Leaderboard rows as flat tables that spreadsheets, pandas and other tools read without parsing JSON: one column
per hyperparameter and per metric (the JSON columns ``config``, ``versions``, ``history`` left out), and the
per-epoch history as a second, long table (one row per trial, epoch and metric). ``leaderboard --format csv`` and
every export use these. Which columns are hyperparameters and which are metrics is decided here, once."""
from __future__ import annotations

import json
import math
from typing import Iterator

import pyarrow as pa

from .. import metrics
from .columns import JSON_COLUMNS, JSON_KEY, KNOWN_TYPES, column_type

RECIPE = ("freeze_depth", "backbone_lr", "head_lr", "loss_weighting", "optimizer", "batch_size", "max_epochs", "seed")
NOT_HPARAMS = ("epochs", "kind", "name", "backbone", "storage")   # config leaf names that are other columns
HISTORY_IDS = ("row_id", "experiment", "sweep_id", "trial_id")
WORK_MARKS = ("duplicate_of", "reused_from", "merged_from")   # a row of work another row holds: exports say so


def json_names(table: pa.Table) -> list[str]:
    """The columns holding JSON strings (named in the schema metadata, plus the known ones)."""
    listed = json.loads((table.schema.metadata or {}).get(JSON_KEY, b"[]"))
    return [c for c in table.column_names if c in listed or c in JSON_COLUMNS]


def flat(table: pa.Table) -> pa.Table:
    """``table`` without its JSON columns: every remaining column is a plain number, string or time."""
    drop = set(json_names(table))
    return table.select([c for c in table.column_names if c not in drop]).replace_schema_metadata(None)


def hparam_columns(table: pa.Table) -> list[str]:
    """The hyperparameter columns with a value in some row: the recipe (freeze depth, learning rates...), loss
    weights and every searched value (a column named like a config field, see ``config.space.hp_columns``)."""
    leaves: set[str] = set()
    for config in _parsed(table, "config"):
        for path in _leaf_paths(config or {}):
            leaves.update((path.rsplit(".", 1)[-1], path.replace(".", "_")))
    out = []
    for c in table.column_names:
        searched = c not in KNOWN_TYPES and column_type(c) is None and c in leaves and c not in NOT_HPARAMS
        if (c in RECIPE or c.startswith("weight_") or searched) and table.column(c).null_count < table.num_rows:
            out.append(c)
    return out


def metric_columns(table: pa.Table) -> list[str]:
    """The numeric metric columns with a value in some row: objective, per-task metrics, run metrics (mean score,
    Δm%, train loss...), best-of-run values and applied loss weights."""
    out = []
    for f in table.schema:
        is_metric = (f.name in ("objective", "best_objective") or metrics.direction(f.name) is not None
                     or f.name.startswith("eff_weight_"))
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
        if is_metric and numeric and f.name not in RECIPE and table.column(f.name).null_count < table.num_rows:
            out.append(f.name)
    return out


def history_long(table: pa.Table) -> pa.Table:
    """The per-epoch history of every row, long: row_id, experiment, sweep_id, trial_id, epoch, metric, value."""
    ids = {c: table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
           for c in HISTORY_IDS}
    out: dict[str, list] = {**{c: [] for c in HISTORY_IDS}, "epoch": [], "metric": [], "value": []}
    for i, history in enumerate(_parsed(table, "history")):
        for epoch, metric, value in epoch_points(history or []):
            for c in HISTORY_IDS:
                out[c].append(ids[c][i])
            out["epoch"].append(epoch)
            out["metric"].append(metric)
            out["value"].append(value)
    types = {"epoch": pa.int64(), "metric": pa.string(), "value": pa.float64()}
    return pa.table({c: pa.array(v, type=types.get(c, pa.string())) for c, v in out.items()})


def epoch_points(history: list[dict]) -> Iterator[tuple[int, str, float]]:
    """(epoch, metric, value) of one row's history: numeric finite values, the epoch counter itself left out."""
    for i, record in enumerate(history):
        epoch = int(record.get("epoch", i + 1))
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                yield epoch, key, float(value)


def row_points(row: dict, metrics: list[str]) -> list[tuple[int, str, float]]:
    """A row's (step, metric, value) points, JSON parsed: the per-epoch history (step = epoch), then the row's final
    values of ``metrics`` not already recorded at the last epoch (best-of-run values, Δm%...)."""
    points = list(epoch_points(row.get("history") or []))
    last = max((epoch for epoch, _, _ in points), default=int(row.get("epochs") or 0))
    done = {(epoch, key) for epoch, key, _ in points}
    for key in metrics:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (last, key) not in done:
            points.append((last, key, float(value)))
    return points


def exported_points(row: dict, metrics: list[str]) -> list[tuple[int, str, float]]:
    """``row_points`` as MLflow and TensorBoard get them: finite values, and a failed or diverged row's curves ending
    on NaN at the epoch it did not finish (a diverged row's last, whose scores were not finite; a failed row's next),
    where a curve has no value then. Both tools show a curve's latest value: not the epoch before it failed."""
    from .ranking import UNRANKED

    points = [p for p in row_points(row, metrics) if math.isfinite(p[2])]
    if row.get("status") not in UNRANKED:
        return points
    history = row.get("history") or []
    last = max((int(h.get("epoch", i + 1)) for i, h in enumerate(history)), default=0)   # with or without values
    ended = last if row.get("status") == "diverged" and last else last + 1
    have = {key for step, key, _ in points if step == ended}
    return points + [(ended, key, math.nan) for key in sorted({k for _, k, _ in epoch_points(history)} - have)]


def _parsed(table: pa.Table, column: str) -> list:
    if column not in table.column_names:
        return [None] * table.num_rows
    return [json.loads(v) if isinstance(v, str) else v for v in table.column(column).to_pylist()]


def _leaf_paths(d: dict, prefix: str = "") -> Iterator[str]:
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path + ".")
        else:
            yield path
