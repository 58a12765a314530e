"""The leaderboard: finished trials of all experiments, an append-only Parquet dataset (one file per batch)
under ``<storage>/leaderboard/``. Columns differ between experiments; reading unifies the files' schemas
(missing -> null). Nested values (``config``) are stored as JSON strings, parsed back by ``best``/``render``.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import math
import operator
import re
import uuid
from datetime import date, datetime, timezone
from functools import reduce

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .data import filesystem
from .errors import ConfigError, DataError

_JSON_KEY = b"orchestrator.json_columns"   # schema metadata: columns holding JSON strings
_MIN_SUFFIXES = ("_loss", "_mae", "_rmse", "_mse")
_MIN_NAMES = {"wall_time_s", "train_loss", "loss"}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}


class NoMatchingRows(ConfigError, LookupError):
    """``best`` found no row with a value for the metric."""


def metric_mode(name: str) -> str:
    """Sort direction of a metric: min for losses, errors and time; max for the rest (objective, accuracy, r2...)."""
    name = re.sub(r"^(best_|final_)", "", name)
    return "min" if name in _MIN_NAMES or name.endswith(_MIN_SUFFIXES) else "max"


class Leaderboard:
    """The Parquet leaderboard under ``<storage>/leaderboard/`` (local path or URI such as ``s3://b/p``)."""

    def __init__(self, storage: str):
        self._fs, root = filesystem(storage)
        self._dir = root.rstrip("/") + "/leaderboard"
        self._uri = storage.rstrip("/") + "/leaderboard" if "://" in storage else self._dir

    @property
    def uri(self) -> str:
        return self._uri

    def append(self, rows: list[dict]) -> str:
        """Write ``rows`` as one new Parquet file (atomically) and return its path; "" if ``rows`` is empty."""
        if not rows:
            return ""
        now = datetime.now(timezone.utc)
        names = list(dict.fromkeys(k for row in rows for k in row))
        json_cols = sorted({k for row in rows for k, v in row.items() if isinstance(v, (dict, list, tuple))})
        columns = {k: _array(k, [_cell(row.get(k), k in json_cols) for row in rows]) for k in names}
        if "created_at" not in columns:
            columns["created_at"] = pa.array([now] * len(rows))
        table = pa.table(columns).replace_schema_metadata({_JSON_KEY: json.dumps(json_cols)})
        name = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        path, tmp = f"{self._dir}/{name}", f"{self._dir}/.{name}.tmp"
        self._fs.create_dir(self._dir, recursive=True)
        try:
            pq.write_table(table, tmp, filesystem=self._fs)
            self._fs.move(tmp, path)
        except BaseException:
            if self._fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self._fs.delete_file(tmp)
            raise
        return path

    def table(self, *, experiment: str | list[str] | None = None, where: str | None = None) -> pa.Table:
        """All rows (unified schema), optionally only ``experiment`` and rows matching ``where``."""
        table = self._read()
        if table.num_columns == 0 or (experiment is None and not where):
            return table
        exprs, used = [], set()
        if experiment is not None:
            exprs.append(_column("experiment", table.schema, used).isin(
                [experiment] if isinstance(experiment, str) else list(experiment)))
        if where:
            exprs.append(compile_where(where, table.schema, used))
        try:
            return table.filter(reduce(operator.and_, exprs))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
            types = ", ".join(f"{c} is {table.schema.field(c).type}" for c in sorted(used))
            raise ConfigError(f"cannot evaluate --where {where!r}: {_first_line(e)} ({types}); "
                              f"compare columns with values of their type (quote strings)") from None

    def to_pandas(self, *, experiment: str | list[str] | None = None, where: str | None = None):
        """``table(...)`` as a pandas DataFrame."""
        return self.table(experiment=experiment, where=where).to_pandas()

    def top(self, k: int = 10, *, metric: str = "objective", experiment: str | list[str] | None = None,
            where: str | None = None, ascending: bool | None = None) -> pa.Table:
        """The ``k`` best rows by ``metric`` (direction from ``metric_mode`` unless ``ascending``); nulls/NaN last."""
        table = self.table(experiment=experiment, where=where)
        if table.num_columns == 0:
            return table
        numeric = [f.name for f in table.schema if _numeric(f.type) or pa.types.is_null(f.type)]
        if metric not in numeric:
            raise ConfigError(f"unknown metric {metric!r}: use one of the numeric columns {numeric}")
        if ascending is None:
            ascending = metric_mode(metric) == "min"
        return table.sort_by([(metric, "ascending" if ascending else "descending")]).slice(0, k)

    def best(self, *, metric: str = "objective", experiment: str | list[str] | None = None,
             where: str | None = None) -> dict:
        """The best row by ``metric`` as a dict, JSON columns parsed; NoMatchingRows if no row has a value."""
        table = self.top(1, metric=metric, experiment=experiment, where=where)
        row = _rows(table)[0] if table.num_rows else {}
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            scope = "".join(f" {k}={v!r}" for k, v in (("experiment", experiment), ("where", where)) if v)
            raise NoMatchingRows(f"no leaderboard rows with a {metric} value in {self.uri}{scope} "
                              f"(experiments: {self.experiments()}); run `orchestrator tune` first or relax --where")
        return row

    def experiments(self) -> list[str]:
        """Sorted names of the experiments that have rows."""
        table = self._read()
        values = table.column("experiment").unique().to_pylist() if "experiment" in table.column_names else []
        return sorted(v for v in values if v is not None)

    def _read(self) -> pa.Table:
        """Every finished file, conformed to the unified schema; temp files (".x.tmp") are skipped."""
        infos = self._fs.get_file_info(pafs.FileSelector(self._dir, allow_not_found=True))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File
                       and i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_")))
        tables = []
        for path in paths:
            try:
                tables.append(pq.read_table(path, filesystem=self._fs))
            except (pa.ArrowInvalid, OSError) as e:
                raise DataError(f"cannot read leaderboard file {path} ({_first_line(e)}): "
                                f"move it out of {self.uri}") from None
        if not tables:
            return pa.table({})
        schema = _unify([t.schema for t in tables])
        json_cols = sorted({c for t in tables for c in _json_columns(t.schema)})
        tables = [_conform(t, schema) for t in tables]
        return pa.concat_tables(tables).replace_schema_metadata({_JSON_KEY: json.dumps(json_cols)})


def compile_where(where: str, schema: pa.Schema, used: set[str] | None = None) -> pc.Expression:
    """Compile a filter such as ``"acc >= 0.9 and status in ['completed']"`` to a pyarrow Expression."""
    try:
        tree = ast.parse(where, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"--where {where!r} is not a valid expression ({e.msg})") from None
    return _compile(tree.body, schema, set() if used is None else used)


def _compile(node: ast.AST, schema: pa.Schema, used: set[str]):
    if isinstance(node, ast.BoolOp):
        op = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        return reduce(op, [_compile(v, schema, used) for v in node.values])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_compile(node.operand, schema, used)
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        return reduce(operator.and_, [_compare(a, op, b, schema, used)
                                      for a, op, b in zip(sides, node.ops, sides[1:])])
    if isinstance(node, ast.Name):
        return _column(node.id, schema, used)
    raise _unsupported(node)


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST, schema: pa.Schema, used: set[str]) -> pc.Expression:
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(left, ast.Name) or not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise ConfigError(f"`{ast.unparse(left)} in {ast.unparse(right)}` needs a column name on the "
                              f"left and a list of values on the right, e.g. experiment in ['a', 'b']")
        expr = _column(left.id, schema, used).isin([_constant(v) for v in right.elts])
        return ~expr if isinstance(op, ast.NotIn) else expr
    if type(op) not in _CMP:
        raise ConfigError(f"unsupported operator {type(op).__name__} in --where: use == != < <= > >= or in [...] "
                          f"(write x == None, not x is None)")
    a, b = (_column(n.id, schema, used) if isinstance(n, ast.Name) else _constant(n) for n in (left, right))
    if a is None or b is None:
        other = b if a is None else a
        if not isinstance(other, pc.Expression) or not isinstance(op, (ast.Eq, ast.NotEq)):
            raise ConfigError("None can only be compared with == or != to a column, e.g. reason == None")
        return other.is_null() if isinstance(op, ast.Eq) else other.is_valid()
    return _CMP[type(op)](_scalar(a, right, schema), _scalar(b, left, schema))


def _scalar(value, other: ast.AST, schema: pa.Schema):
    """Wrap a constant; an ISO string compared with a timestamp column becomes a UTC timestamp."""
    if isinstance(value, pc.Expression):
        return value
    if isinstance(value, str) and isinstance(other, ast.Name) and pa.types.is_timestamp(schema.field(other.id).type):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not an ISO date/time to compare with {other.id}") from None
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return pc.scalar(pa.scalar(value, type=schema.field(other.id).type))
    return pc.scalar(value)


def _constant(node: ast.AST):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _constant(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        return node.value
    raise _unsupported(node)


def _column(name: str, schema: pa.Schema, used: set[str]) -> pc.Expression:
    if name not in schema.names:
        raise ConfigError(f"unknown column {name!r} in --where; available columns: {', '.join(schema.names)}")
    used.add(name)
    return pc.field(name)


def _unsupported(node: ast.AST) -> ConfigError:
    return ConfigError(f"unsupported {type(node).__name__} `{ast.unparse(node)}` in --where: use column names, "
                       f"numbers, quoted strings, True/False/None, == != < <= > >=, in [...], and/or/not")


def render(table: pa.Table, *, fmt: str = "table", columns: list[str] | None = None) -> str:
    """Format rows as "table" (rich; compact columns, short headers), "json" (array of objects) or "csv"."""
    if columns is not None:
        unknown = [c for c in columns if c not in table.column_names and not (fmt == "table" and c == "rank")]
        if unknown:
            raise ConfigError(f"unknown column {unknown[0]!r}; available columns: {', '.join(table.column_names)}")
    if fmt == "table":
        return _rich_table(table, columns or _default_columns(table))
    if fmt not in ("json", "csv"):
        raise ConfigError(f"unknown format {fmt!r}: use table, json or csv")
    table = table.select(columns) if columns else table
    if fmt == "json":
        rows = [{k: _plain(v) for k, v in row.items()} for row in _rows(table)]
        return json.dumps(rows, indent=2, allow_nan=False)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=table.column_names, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else _plain(v) for k, v in row.items()} for row in table.to_pylist())
    return out.getvalue()


_METRIC = re.compile(r"_(accuracy|auc|r2|mae|rmse)$")
_NOT_HPARAMS = {"objective", "best_objective", "epochs", "wall_time_s", "train_loss", "world_size", "seed"}


def _default_columns(table: pa.Table) -> list[str]:
    """rank, ids, objective, final per-task metrics, searched hyperparameters, epochs, wall time;
    all-null columns left out."""
    fixed = ["experiment", "trial_id", "status", "objective"]
    tail = ["epochs", "wall_time_s"]
    shown = [c for c in table.column_names if table.num_rows == 0 or table.column(c).null_count < table.num_rows]
    numeric = [f.name for f in table.schema if f.name in shown and _numeric(f.type)]
    scores = [c for c in numeric if f"best_{c}" in table.column_names]   # each task's score metric
    metrics = scores or [c for c in numeric if _METRIC.search(c) and not c.startswith("best_")]
    hparams = [c for c in numeric if not _METRIC.search(c) and c not in _NOT_HPARAMS and not c.startswith("best_")
               and not c.endswith("_loss") and c not in fixed + tail]
    if "experiment" in shown and len(set(table.column("experiment").to_pylist())) == 1:
        fixed = fixed[1:]   # one experiment: its name needs no column
    return ["rank"] + list(dict.fromkeys(c for c in fixed + metrics + hparams + tail if c in shown))


def _rich_table(table: pa.Table, columns: list[str]) -> str:
    from rich.console import Console
    from rich.table import Table

    view = Table(show_edge=False)
    for c in columns:
        view.add_column(_header(c), justify="right" if c == "rank" or _numeric(table.schema.field(c).type) else "left")
    rows = table.select([c for c in columns if c != "rank"]).to_pylist()
    for rank, row in enumerate(rows, 1):
        view.add_row(*[str(rank) if c == "rank" else _text(row[c]) for c in columns])
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(view)
    return console.file.getvalue()


_SHORT = [(r"^weight_", "w_"), (r"_accuracy$", "_acc"), (r"^freeze_depth$", "freeze"),
          (r"^backbone_lr$", "bb_lr"), (r"^wall_time_s$", "time_s")]


def _header(column: str) -> str:
    """Short table header (table view only; json/csv keep column names): right_accuracy -> right_acc,
    weight_left -> w_left, freeze_depth -> freeze, backbone_lr -> bb_lr, wall_time_s -> time_s."""
    for pattern, repl in _SHORT:
        column = re.sub(pattern, repl, column)
    return column


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def _json_columns(schema: pa.Schema) -> list[str]:
    return json.loads((schema.metadata or {}).get(_JSON_KEY, b"[]"))


def _rows(table: pa.Table) -> list[dict]:
    """Rows as dicts, JSON columns parsed."""
    json_cols = set(_json_columns(table.schema))
    return [{k: json.loads(v) if k in json_cols and isinstance(v, str) else v for k, v in row.items()}
            for row in table.to_pylist()]


def _plain(value):
    """A JSON/CSV-safe value: NaN/inf -> None, dates -> ISO strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return value


def _cell(value, as_json: bool):
    if as_json and value is not None:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value


def _array(name: str, values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"leaderboard column {name!r} has values of mixed types: {_first_line(e)}") from None


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    """Unify the files' schemas column by column (int + float -> float, null + x -> x; clashing types -> string)."""
    fields = []
    for name in dict.fromkeys(n for s in schemas for n in s.names):
        try:
            parts = [pa.schema([s.field(name)]) for s in schemas if name in s.names]
            fields.append(pa.unify_schemas(parts, promote_options="permissive").field(0))
        except pa.ArrowTypeError:
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
         for f in schema], schema=schema)


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]
