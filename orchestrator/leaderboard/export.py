"""``export``: leaderboard rows into the tools teams already use. ``csv:FILE`` / ``parquet:FILE`` write flat rows
(``flat``) and the per-epoch history as a second, long file next to it (``FILE`` -> ``FILE-history``);
``mlflow:URI`` and ``tensorboard:DIR`` are in their own modules (MLflow is an optional extra, imported only there).
Every file is written whole or not at all (``storage.atomic_write``): local paths or URIs."""
from __future__ import annotations

from typing import Union

from .. import storage
from ..errors import ConfigError
from .columns import parquet_bytes
from .flat import flat, history_long
from .query import refuse_missing

Names = Union[str, list[str], tuple[str, ...], None]
TARGETS = "mlflow:URI, tensorboard:DIR, csv:FILE or parquet:FILE"


def parse_target(to: str) -> tuple[str, str]:
    """``"csv:out.csv"`` -> ``("csv", "out.csv")``; ConfigError naming the forms for anything else."""
    kind, sep, where = to.partition(":")
    if not sep or kind not in ("mlflow", "tensorboard", "csv", "parquet") or not where:
        raise ConfigError(f"unknown export target {to!r}: use {TARGETS} (e.g. --to mlflow:sqlite:///mlflow.db)")
    name = where.partition("?")[0].rpartition("/")[2]
    ext = "." + name.rpartition(".")[2] if "." in name else ""
    other = {"csv": (".parquet", ".pq"), "parquet": (".csv",)}.get(kind, ())
    if ext.lower() in other:   # csv:out.parquet would write CSV text over a Parquet file of that name
        raise ConfigError(f"export target {to!r} writes {kind.upper() if kind == 'csv' else 'Parquet'} to a file "
                          f"whose name ends in {ext}: name it for what it holds, or use "
                          f"{'parquet' if kind == 'csv' else 'csv'}:{where}")
    return kind, where


def export(board, to: str, *, experiment: Names = None, sweep_id: Names = None, kind: Names = "trial") -> dict:
    """Write the matching rows of ``board`` (a Leaderboard) to ``to``; returns what was written (rows, where...)."""
    target, where = parse_target(to)
    # a typo in the storage, an experiment or a sweep id: not a file replaced by its header, "exported 0 rows"
    refuse_missing(board, experiment, sweep_id, what="nothing exported")
    table = board.table(experiment=experiment, sweep_id=sweep_id, kind=kind)
    if not table.num_rows:   # filters that match nothing (a kind not run yet): the last export stays as it was
        kinds = " or ".join([kind] if isinstance(kind, str) else kind or []) or "matching"
        names = [experiment] if isinstance(experiment, str) else list(experiment or [])
        of = f" of experiment {', '.join(names)}" if names else ""
        raise ConfigError(f"no {kinds} rows{of} in {board.uri}: nothing exported (check --kind, kind=)")
    if target == "mlflow":
        from .export_mlflow import export_mlflow

        return export_mlflow(table, where, chain=board.reruns())
    if target == "tensorboard":
        from .export_tensorboard import export_tensorboard

        return export_tensorboard(table, where)
    if storage.is_uri(where):
        storage.require_bucket(where)   # checked on the target named: its history file's name would hide it
    history = history_path(where)
    if target == "csv":
        from .query import render

        files = render(table, fmt="csv").encode(), render(history_long(table), fmt="csv").encode()
    else:
        files = parquet_bytes(flat(table)).to_pybytes(), parquet_bytes(history_long(table)).to_pybytes()
    # the history first: a failed write leaves the main file, the one users open, as the last export left it
    storage.atomic_write(history, files[1])
    storage.atomic_write(where, files[0])
    return {"target": target, "rows": table.num_rows, "to": storage.redact(where), "history": storage.redact(history)}


def history_path(location: str) -> str:
    """``runs/out.csv`` -> ``runs/out-history.csv`` (a URI's query string kept at its end)."""
    path, q, query = location.partition("?")
    base, dot, ext = path.rpartition(".")
    if not dot or "/" in ext:
        base, dot, ext = path, "", ""
    return f"{base}-history{dot}{ext}{q}{query}"
