"""Leaderboard queries that need no files: the ``--where`` language, Pareto fronts, and rendering rows as a
table, JSON or CSV."""
from __future__ import annotations

import ast
import csv
import io
import json
import math
import operator
import os
import re
import shutil
from datetime import date, datetime, timezone
from functools import reduce
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError, shortened
from .columns import JSON_KEY, KNOWN_TYPES, column_type
from .flat import flat

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}


def distinct(table: pa.Table, names: list[str]) -> pa.Table:
    """The different rows of ``table``'s columns ``names`` (in no promised order)."""
    return table.select(names).group_by(names, use_threads=False).aggregate([])


def compile_where(where: str, schema: pa.Schema, used: set[str] | None = None) -> pc.Expression:
    """Compile a filter such as ``"acc >= 0.9 and status in ['completed']"`` to a pyarrow Expression."""
    try:
        tree = ast.parse(where, mode="eval")
        return _compile(tree.body, schema, set() if used is None else used)
    except SyntaxError as e:
        raise ConfigError(f"--where (where=) {shortened(where, 80)!r} is not a valid expression ({e.msg})") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"--where (where=) {shortened(where, 80)!r} is nested too deeply: write a shorter "
                          f"expression") from None


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
        values = [_constant(v) for v in right.elts]
        kinds = {"number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__
                 for v in values if v is not None}
        if len(kinds) > 1:
            raise ConfigError(f"the list {ast.unparse(right)} in --where (where=) mixes types "
                              f"({', '.join(sorted(kinds))}): use values of one type, the column's")
        column = _column(left.id, schema, used)
        _same_kind(left.id, schema.field(left.id).type, kinds, ast.unparse(right))
        expr = column.isin(values)
        return ~expr if isinstance(op, ast.NotIn) else expr
    if type(op) not in _CMP:
        raise ConfigError(f"unsupported operator {type(op).__name__} in --where (where=): use == != < <= > >= or "
                          f"in [...] (write x == None, not x is None)")
    a, b = (_column(n.id, schema, used) if isinstance(n, ast.Name) else _constant(n) for n in (left, right))
    if a is None or b is None:
        other = b if a is None else a
        if not isinstance(other, pc.Expression) or not isinstance(op, (ast.Eq, ast.NotEq)):
            raise ConfigError("None can only be compared with == or != to a column, e.g. reason == None")
        return other.is_null() if isinstance(op, ast.Eq) else other.is_valid()
    # as in Python: a missing value equals nothing and differs from everything (an order with it is false), so
    # `x != v`, `not (x == v)` and `x not in [v]` select the same rows
    return pc.coalesce(_CMP[type(op)](_scalar(a, right, schema), _scalar(b, left, schema)),
                       pc.scalar(isinstance(op, ast.NotEq)))


def _same_kind(name: str, type_: pa.DataType, kinds: set[str], listed: str) -> None:
    """``isin`` casts its values to the column's type ('7' and True match 7): refuse what ``==`` refuses."""
    held = ("number" if numeric(type_) else
            "bool" if pa.types.is_boolean(type_) else "str" if pa.types.is_string(type_) or
            pa.types.is_large_string(type_) else None)
    if held is not None and kinds - {held}:
        raise ConfigError(f"{name} is {type_} and the list {listed} in --where (where=) holds "
                          f"{', '.join(sorted(kinds))} values: compare columns with values of their type (quote "
                          f"strings)")


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
        if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) >= 2 ** 63:
            raise ConfigError(f"the number {node.value} in --where (where=) is too large for a 64-bit integer: write "
                              f"it as a float (e.g. {float(node.value):.0e})")
        return node.value
    raise _unsupported(node)


def _column(name: str, schema: pa.Schema, used: set[str]) -> pc.Expression:
    if name not in schema.names:
        raise ConfigError(f"unknown column {name!r} in --where (where=); available columns: {', '.join(schema.names)}")
    used.add(name)
    return pc.field(name)


def _unsupported(node: ast.AST) -> ConfigError:
    return ConfigError(f"unsupported {type(node).__name__} `{ast.unparse(node)}` in --where (where=): use column "
                       f"names, numbers, quoted strings, True/False/None, == != < <= > >=, in [...], and/or/not")


def render(table: pa.Table, *, fmt: str = "table", columns: list[str] | None = None, width: int | None = None) -> str:
    """Format rows as "table" (rich; compact columns, short headers), "json" (array of objects) or "csv" (flat:
    no JSON columns, see ``flat``)."""
    if columns is not None:
        unknown = [c for c in columns if c not in table.column_names and not (fmt == "table" and c == "rank")]
        if unknown:
            raise ConfigError(f"unknown column {unknown[0]!r}; available columns: {', '.join(table.column_names)}")
    if fmt == "table":
        return _rich_table(table, columns or default_columns(table), width=width)
    if fmt not in ("json", "csv"):
        raise ConfigError(f"unknown format {fmt!r}: use table, json or csv")
    table = table.select(columns) if columns else table
    if fmt == "csv":
        table = flat(table)       # no JSON blobs in a spreadsheet: one column per value (``flat``)
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows(table)], indent=2, allow_nan=False)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=table.column_names, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else _plain(v) for k, v in row.items()} for row in table.to_pylist())
    return out.getvalue()


_METRIC = re.compile(r"_(accuracy|auc|r2|mae|rmse)$")
_HPARAMS = ("freeze_depth", "backbone_lr", "head_lr")
_WHEN_VARIED = ("loss_weighting", "optimizer", "batch_size", "max_epochs", "seed")


def default_columns(table: pa.Table, *, also: tuple[str, ...] = ()) -> list[str]:
    """rank, ids, objective, ``also``, final score metric per task, Δm%, hyperparameters (freeze depth, learning
    rates, loss weights, other searched values; loss weighting, optimizer, batch size... when they vary), epochs,
    wall time. All-null columns are left out, and the experiment column when there is one experiment."""
    shown = [c for c in table.column_names if table.num_rows == 0 or table.column(c).null_count < table.num_rows]
    fixed = ["experiment", "trial_id", "status", "objective", *also]
    if "experiment" in shown and len(set(table.column("experiment").to_pylist())) == 1:
        fixed = fixed[1:]   # one experiment: its name needs no column
    nums = [f.name for f in table.schema if f.name in shown and numeric(f.type)]
    scores = [c for c in nums if f"best_{c}" in table.column_names and c not in fixed]   # each task's score metric
    metrics = (scores or [c for c in nums if _METRIC.search(c) and not c.startswith("best_")]) + ["delta_m_pct"]
    searched = [c for c in nums if c.startswith("weight_") or (c not in KNOWN_TYPES and column_type(c) is None)]
    varied = [c for c in _WHEN_VARIED if c in shown and len(set(table.column(c).to_pylist())) > 1]
    tail = ["epochs", "wall_time_s"]
    return list(dict.fromkeys(c for c in ["rank", *fixed, *metrics, *_HPARAMS, *searched, *varied, *tail]
                              if c in shown or c == "rank"))


def _rich_table(table: pa.Table, columns: list[str], *, width: Optional[int] = None) -> str:
    """The table at the terminal's width (``width``; piped output: COLUMNS, else 200): columns in priority order
    while they fit, one line per row, and a last line naming the columns left out (``--format csv`` has them all)."""
    from rich.console import Console
    from rich.table import Table

    width = width or shutil.get_terminal_size((200, 24)).columns
    rows = table.select([c for c in columns if c != "rank"]).to_pylist()
    ranks = table.column("rank").to_pylist() if "rank" in table.column_names else range(1, len(rows) + 1)
    cells = {c: [_text(r) for r in ranks] if c == "rank" else [_text(r[c]) for r in rows] for c in columns}
    shown, used = [], 0
    for c in columns:
        need = max([len(_header(c)), *map(len, cells[c])]) + 3     # rich's padding and separator
        if used + need > width and shown:
            continue
        shown.append(c)
        used += need
    view = Table(show_edge=False)
    for c in shown:
        view.add_column(_header(c), no_wrap=True, overflow="ellipsis",
                        justify="right" if c == "rank" or numeric(table.schema.field(c).type) else "left")
    for i in range(len(rows)):
        view.add_row(*[cells[c][i] for c in shown])
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(view)
    left_out = [c for c in columns if c not in shown]
    if not left_out:
        return console.file.getvalue()
    tail = "; --format csv or json shows them)"
    names = ", ".join(left_out)
    room = width - len(f"({len(left_out)} more columns: ") - len(tail)
    names = names if len(names) <= room else names[:max(room - 1, 0)] + "…"
    return console.file.getvalue() + f"({len(left_out)} more columns: {names}{tail}\n"


_SHORT = [(r"^weight_", "w_"), (r"_accuracy$", "_acc"), (r"^freeze_depth$", "freeze"),
          (r"^backbone_lr$", "bb_lr"), (r"^wall_time_s$", "time_s")]


def _header(column: str) -> str:
    """Short table header (table view only; json/csv keep column names): right_accuracy -> right_acc,
    weight_left -> w_left, freeze_depth -> freeze, backbone_lr -> bb_lr, wall_time_s -> time_s."""
    for pattern, repl in _SHORT:
        column = re.sub(pattern, repl, column)
    return column


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "-" if value is None else str(value)


def json_columns(schema: pa.Schema) -> list[str]:
    return json.loads((schema.metadata or {}).get(JSON_KEY, b"[]"))


def rows(table: pa.Table) -> list[dict]:
    """Rows as dicts, JSON columns parsed."""
    json_cols = set(json_columns(table.schema))
    return [{k: json.loads(v) if k in json_cols and isinstance(v, str) else v for k, v in row.items()}
            for row in table.to_pylist()]


def _plain(value):
    """A JSON/CSV-safe value: NaN/inf -> None, dates -> ISO strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return value


def numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def refuse_unknown_sweeps(board, *, experiment, sweep_id, what: str) -> None:
    """ConfigError naming the experiments' sweeps when a sweep id in ``sweep_id`` has no row of them (any kind)."""
    wanted = [sweep_id] if isinstance(sweep_id, str) else list(sweep_id)
    table = board.table(experiment=experiment, kind=None, columns=["sweep_id"])
    known = sorted({s for s in table.column("sweep_id").to_pylist() if s}) if table.num_rows else []
    unknown = [s for s in wanted if s not in known]
    if unknown:
        of = f" of experiment {', '.join([experiment] if isinstance(experiment, str) else experiment)}" \
            if experiment else ""
        raise ConfigError(f"no sweep {unknown[0]!r}{of} in {board.uri}: {what}; its sweeps: "
                          f"{', '.join(known) or 'none'} (check --sweep, sweep_id=)")


class NoMatchingRows(ConfigError, LookupError):
    """A query found no row to answer with: none with a value for ``best``'s metric, or no storage, experiment or
    sweep of the names asked for (``refuse_missing``)."""


def refuse_missing(board, experiment=(), sweep=(), *, what: str = "no rows") -> None:
    """A storage with no leaderboard at all, or an experiment or sweep (names, or one name) it has no row of, is a
    mistake (a typo in --storage, -e or --sweep), not a leaderboard whose rows matched nothing."""
    experiments, sweeps = ([] if v is None else [v] if isinstance(v, str) else list(v) for v in (experiment, sweep))
    known = board.experiments()
    if not known:
        given = os.path.dirname(board.uri)   # a local folder of the files themselves: its parent is the storage
        if "://" not in given and os.path.basename(given) == "leaderboard" and type(board)(given + "/..").experiments():
            raise ConfigError(f"{given} holds a leaderboard's files: pass its storage, {os.path.dirname(given)}")
        raise ConfigError(f"no leaderboard at {board.uri}: pass --storage (Leaderboard's storage) the folder your runs "
                          f"wrote to (the config's storage), or run `orchestrator tune` first")
    unknown = [e for e in experiments if e not in known]
    if unknown:
        raise ConfigError(f"no experiment {unknown[0]!r} in {board.uri} (experiments: {', '.join(known)}): check -e "
                          f"(experiment=)")
    if sweeps:
        refuse_unknown_sweeps(board, experiment=experiments or None, sweep_id=sweeps, what=what)


def check_numeric(schema: pa.Schema, name: str, *, what: str) -> None:
    nums = [f.name for f in schema if numeric(f.type) or pa.types.is_null(f.type)]
    if name not in nums:
        raise ConfigError(f"unknown {what} {name!r}: use one of the numeric columns {nums}")


def answered(board, table: pa.Table, experiment, sweep_id) -> pa.Table:
    """A query's answer, unless it is empty because ``board`` holds no rows of the storage, experiment or sweep it
    names (``refuse_missing``): a typo from Python is an error, as it is from the CLI, not "nothing ranked"."""
    if table.num_rows == 0:
        try:
            refuse_missing(board, experiment, sweep_id)
        except ConfigError as e:
            raise NoMatchingRows(str(e)) from None
    return table


def top_distinct(board, k: int, *, experiment, key) -> list[dict]:
    """The best rows (``board.top``, JSON columns parsed) of ``k`` distinct ``key(row)`` values, the first row of
    each (``key`` None: the row is left out), reading further down the ranking until found or none are left."""
    n = k
    while True:
        ranked = rows(board.top(n, experiment=experiment))
        seen, out = set(), []
        for row in ranked:
            value = key(row)
            if value is not None and value not in seen:
                seen.add(value)
                out.append(row)
        if len(out) >= k or len(ranked) < n:
            return out[:k]
        n *= 4
