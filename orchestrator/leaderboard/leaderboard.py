"""The leaderboard: every finished trial of every experiment, a Parquet dataset under ``<storage>/leaderboard/``.

Each ``append`` writes one new file (atomically, retried); ``compact`` merges small files into few large ones.
Every row has a ``row_id`` and reads keep one row per id, so a row that a compaction copied into a merged file
but has not yet removed from its source counts once. Queries read only the columns they need and fetch whole
rows (the JSON columns ``config``, ``history``, ``versions`` included) only for the rows they return.
Files and types: ``leaderboard_files``; ``--where``, Pareto fronts and rendering: ``query``; merging:
``compaction``. Metric directions come from ``metrics.direction`` (the one registry).
"""
from __future__ import annotations

import math
import operator
import os
import time
from functools import reduce
from typing import Callable, NamedTuple, Optional, TypeVar, Union

import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..errors import ConfigError
from ..metrics import direction
from .columns import KNOWN_TYPES, parquet_bytes, rows_to_table
from .files import MERGED_PREFIX, Folder, Snapshot, Vanished, first_occurrences
from .query import NoMatchingRows, answered, check_numeric, compile_where, distinct, rows as row_dicts
from .ranking import (OBJECTIVES, ROW_KINDS, TIE_BREAKS, VERSION_COLUMNS, best_first, compared, current, done_work,
                      apart_line, front_rows, listed, newest_versions, objectives_apart, once_per_work, ranked,
                      reruns)

Names = Union[str, list[str], tuple[str, ...], None]
T = TypeVar("T")
_ATTEMPTS = 8


class Scope(NamedTuple):
    """What a query selects (its filters), passed on whole."""
    experiment: "Names"
    where: Optional[str]
    sweep_id: "Names"
    kind: "Names"


class Leaderboard:
    """The Parquet leaderboard under ``<storage>/leaderboard/`` (local path or URI such as ``s3://b/p``).

    Filters shared by ``table``/``top``/``best``/``pareto``: ``experiment`` and ``sweep_id`` (a name or a list),
    ``where`` (e.g. ``"right_accuracy >= 0.9 and freeze_depth <= 2"``) and ``kind`` ("trial" by default, rows
    written before kinds existed count as trials; a list; None for every kind). ``top``, ``best``, ``pareto`` and
    ``to_pandas`` raise NoMatchingRows when no row answers because the storage, experiment or sweep named holds none
    (a typo); ``table`` reads what is there."""

    def __init__(self, storage_location: Union[str, os.PathLike]):
        storage_location = _location(storage_location)
        if storage.is_uri(storage_location):
            self._location = storage.join(storage_location, "leaderboard")
        else:
            self._location = os.path.join(os.path.abspath(os.path.expanduser(storage_location)), "leaderboard")
        fs, path = storage.filesystem(self._location)
        self._files = Folder(fs, path, storage.redact(self._location))

    @property
    def uri(self) -> str:
        """Where the files are (credentials redacted: safe to print)."""
        return storage.redact(self._location)

    def append(self, rows: list[dict]) -> str:
        """Write ``rows`` as one new Parquet file and return its location; "" if ``rows`` is empty.

        The file is serialized in memory and written atomically (readers see all of it or nothing); storage
        errors are retried, then raised: a row is never dropped silently."""
        if not rows:
            return ""
        return self.append_parquet(parquet_bytes(rows_to_table(rows)).to_pybytes())

    def append_parquet(self, data: bytes) -> str:
        """Write one Parquet file made by ``append``'s serialization (a spool file) as a new leaderboard file;
        its row ids are kept, so appending it twice counts its rows once."""
        location = storage.join(self._location, storage.unique_name("", ".parquet"))
        storage.retry(lambda: storage.atomic_write(location, data), what="leaderboard append")
        return location

    # -- queries ---------------------------------------------------------------------------------------
    def table(self, *, experiment: Names = None, where: Optional[str] = None, sweep_id: Names = None,
              kind: Names = "trial", columns: Optional[list[str]] = None, superseded: bool = False) -> pa.Table:
        """Matching rows, one per row id, with every column (unified schema) or only ``columns``; ``superseded``:
        also the rows a rerun's row replaced (as stored: merge's read of what a storage holds)."""
        def work(snap: Snapshot) -> pa.Table:
            if not snap.infos:
                return _empty(columns)
            unknown = [c for c in columns or () if c not in snap.schema.names]
            if unknown:
                raise ConfigError(f"unknown column {unknown[0]!r}; available columns: {', '.join(snap.schema.names)}")
            snap, light = self._select(snap, columns or [], experiment=experiment, where=where, sweep_id=sweep_id,
                                       kind=kind, superseded=superseded)
            if columns is not None:
                return light.select(columns).replace_schema_metadata(snap.schema.metadata)
            return self._files.fetch(snap, light)
        return self._read(work)

    def to_pandas(self, *, experiment: Names = None, where: Optional[str] = None, sweep_id: Names = None,
                  kind: Names = "trial"):
        """``table(...)`` as a pandas DataFrame."""
        table = self.table(experiment=experiment, where=where, sweep_id=sweep_id, kind=kind)
        return answered(self, table, experiment, sweep_id).to_pandas()

    def top(self, k: int = 10, *, metric: str = "objective", experiment: Names = None, where: Optional[str] = None,
            sweep_id: Names = None, kind: Names = "trial", ascending: Optional[bool] = None,
            ranked: bool = True) -> pa.Table:
        """The ``k`` best rows by ``metric``, NaN and missing values last. Direction: ``metrics.direction``;
        ``objective``/``best_objective`` follow each row's ``objective_mode`` (none: max); unknown columns sort
        descending unless ``ascending`` is given. Failed and diverged rows are never ranked (``ranking.UNRANKED``);
        ``ranked=False`` (listings) keeps every row, numbered in a ``rank`` column where a ranking compares it
        (``ranking.listed``). Ranked, rows of other objectives are a ConfigError (``_one_objective``)."""
        if ranked and metric in OBJECTIVES:   # an objective of one metric compares with itself only
            self._one_objective(Scope(experiment, where, sweep_id, kind))

        def work(snap: Snapshot) -> pa.Table:
            if not snap.infos:
                return _empty()
            check_numeric(snap.schema, metric, what="metric")
            versions = [] if ranked else [c for c in (*VERSION_COLUMNS, "duplicate_of") if c in snap.schema.names]
            snap, light = self._select(snap, [metric, "objective_mode", "status", *TIE_BREAKS, *versions],
                                       experiment=experiment, where=where, sweep_id=sweep_id, kind=kind,
                                       ranked_only=ranked, once=ranked)
            if ranked:
                return self._files.fetch(snap, light.take(best_first(light, metric, ascending=ascending)[:max(k, 0)]))
            # each work once among the compared rows, and among the others: a copy measured like the newest counts
            mask = compared(light, metric)
            parts = [light.filter(pa.array([m == side for m in mask], pa.bool_())) for side in (True, False)]
            parts = [_each_work_once(p) if "duplicate_of" in p.column_names else p for p in parts]
            light = pa.concat_tables(parts)
            order, ranks = listed(light, metric, ascending=ascending,
                                  compared_rows=[True] * parts[0].num_rows + [False] * parts[1].num_rows)
            table = self._files.fetch(snap, light.take(order[:max(k, 0)]))
            return table.append_column("rank", pa.array(ranks[:max(k, 0)], pa.int64()))
        return answered(self, self._read(work), experiment, sweep_id)

    def best(self, *, metric: str = "objective", experiment: Names = None, where: Optional[str] = None,
             sweep_id: Names = None, kind: Names = "trial") -> dict:
        """The best row by ``metric`` as a dict, JSON columns parsed; NoMatchingRows if no row has a value (failed
        and diverged rows never count)."""
        table = self.top(1, metric=metric, experiment=experiment, where=where, sweep_id=sweep_id, kind=kind)
        row = row_dicts(table)[0] if table.num_rows else {}
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            scope = "".join(f" {k}={v!r}" for k, v in (("experiment", experiment), ("sweep_id", sweep_id),
                                                        ("kind", kind), ("where", where)) if v)
            raise NoMatchingRows(f"no leaderboard rows with a value of {metric} in {self.uri}{scope} (experiments: "
                                 f"{self.experiments()}); run `orchestrator tune` first or relax the filters")
        return row

    def pareto(self, metrics: list[str], *, experiment: Names = None, where: Optional[str] = None,
               sweep_id: Names = None, kind: Names = "trial") -> pa.Table:
        """The non-dominated rows for ``metrics`` (2 or more; each metric's direction from ``metrics.direction``),
        best first by the first metric. Rows missing any of the metrics are left out; rows that tie on every
        metric are all kept."""
        names = [metrics] if isinstance(metrics, str) else list(dict.fromkeys(metrics))
        if len(names) < 2:
            raise ConfigError(f"a Pareto front needs two or more metrics, got {names}; for one metric use top/best")
        if set(OBJECTIVES) & set(names):
            self._one_objective(Scope(experiment, where, sweep_id, kind))

        def work(snap: Snapshot) -> pa.Table:
            if not snap.infos:
                return _empty()
            for m in names:
                check_numeric(snap.schema, m, what="Pareto metric")
                if m not in OBJECTIVES and direction(m) is None:
                    raise ConfigError(f"Pareto metric {m!r} has no known direction (higher or lower is better); "
                                      f"use metrics such as <task>_accuracy, <task>_mae, mean_score, objective")
            snap, light = self._select(snap, [*names, "objective_mode"], experiment=experiment, where=where,
                                       sweep_id=sweep_id, kind=kind, ranked_only=True, once=True)
            return self._files.fetch(snap, light.take(front_rows(light, names)))
        return answered(self, self._read(work), experiment, sweep_id)

    def done(self, experiment: str, config_hashes: tuple[str, ...], *, fingerprint: Optional[str],
             epochs: Optional[int] = None) -> Optional[dict]:
        """A completed trial row of ``experiment`` with one of these config hashes (of one work, which covers the
        seed: ``hashes_of_same_work``) on the data with this
        fingerprint (the hash names the data's path, not its content): done work (given ``epochs``, a stopped one's
        after as many epochs too: ``done_work``). The work's own row, not one that names it (``duplicate_of``: a
        later sweep's reuse); None without."""
        rows = row_dicts(self.table(experiment=experiment, where=f"config_hash in {list(config_hashes)!r}"))
        return done_work(rows, experiment, config_hashes, fingerprint=fingerprint, epochs=epochs)

    def reruns(self) -> dict:
        """Row id -> the row id it supersedes (None), of every row held, superseded ones too (``ranking.reruns``)."""
        def work(snap: Snapshot) -> dict:
            names = [c for c in ("row_id", "supersedes") if c in snap.schema.names]
            return reruns(self._files.scan(snap, names)[1]) if snap.infos else {}
        return self._read(work)

    def experiments(self) -> list[str]:
        """Sorted names of the experiments that have rows (of any kind)."""
        def work(snap: Snapshot) -> list[str]:
            if "experiment" not in snap.schema.names:
                return []
            values = pc.unique(self._files.scan(snap, ["experiment"])[1].column("experiment")).to_pylist()
            return sorted(v for v in values if v is not None)
        return self._read(work)

    # -- compaction ------------------------------------------------------------------------------------
    def compact(self, *, min_files: int = 2) -> dict:
        """Merge the small files into as few files as possible and delete the merged sources; safe while other
        processes append, read or compact. Returns counts: files_before, files_after, rows (merged),
        duplicates (dropped), seconds."""
        from .compaction import compact

        return compact(self._files, self._location, min_files=min_files)

    def maybe_compact(self, *, threshold_files: int = 64) -> Optional[dict]:
        """``compact()`` when more than ``threshold_files`` files were appended since the last compaction (the
        sweep driver calls it at the end of each sweep); None otherwise."""
        fresh = [p for p in self._files.list() if not p.rsplit("/", 1)[-1].startswith(MERGED_PREFIX)]
        return self.compact() if len(fresh) > threshold_files else None

    # -- interop (merge, export) ---------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """Where the files are, credentials included (for writing; print ``uri``)."""
        return self._location

    def merge(self, sources: Union[str, os.PathLike, list], *, out: Callable[[str], None] = lambda line: None) -> dict:
        """Pull the rows of other storages' leaderboards (local paths or URIs) into this one (``merge.merge``):
        deduplicated by row id, the same work marked ``duplicate_of``, ``merged_from`` naming the source.
        Idempotent and safe to kill. Returns counts: rows (added), skipped (already here), repeated (in two sources:
        merged once), duplicates, files."""
        from .merge import merge

        one = isinstance(sources, (str, os.PathLike))
        return merge(self, storage.parent(self._location), [_location(s) for s in ([sources] if one else sources)],
                     open_board=type(self), out=out)

    def export(self, to: str, *, experiment: Names = None, sweep_id: Names = None, kind: Names = "trial") -> dict:
        """Write the matching rows to ``mlflow:URI``, ``tensorboard:DIR``, ``csv:FILE`` or ``parquet:FILE``
        (``export.export``); returns what was written."""
        from .export import export

        return export(self, to, experiment=experiment, sweep_id=sweep_id, kind=kind)

    # -- internals -------------------------------------------------------------------------------------
    def _one_objective(self, scope: "Scope") -> None:
        """ConfigError naming the experiments when the rows a ranking would compare measure their objectives by
        other metrics (a Δm% of 3.5 is no better than a mean score of 0.93), or mean scores of other tasks (a
        single-task baseline's, another experiment's: ``ranking.objectives_apart``, configs read where the rows are
        of more than one experiment or kind, or are baselines): one experiment's, -e, and one kind, then."""
        def work(snap: Snapshot) -> dict:
            if not snap.infos or "objective_metric" not in snap.schema.names:
                return {}
            def select(columns: list[str]) -> pa.Table:   # each different row once: the verdict reads sets
                return distinct(self._select(snap, columns, ranked_only=True, experiment=scope.experiment,
                                             where=scope.where, sweep_id=scope.sweep_id, kind=scope.kind)[1], columns)

            keys = [c for c in ("experiment", "kind") if c in snap.schema.names]
            light = select([*keys, "objective_metric"])
            pairs = set(zip(*(light.column(c).to_pylist() for c in keys)))
            if "config" in snap.schema.names and (len(pairs) > 1 or any("baseline" in p for p in pairs)):
                light = select([*keys, "objective_metric", "config",   # what each measures (a baseline: its task)
                                *(["baseline_task"] if "baseline_task" in snap.schema.names else [])])
            return objectives_apart(light.to_pylist())
        apart = self._read(work)
        if len(apart) > 1:
            raise ConfigError(f"the rows selected in {self.uri} rank by {apart_line(apart, verb='select')} "
                              f"(experiment=, kind=, where= from Python)")

    def _read(self, work: Callable[[Snapshot], T]) -> T:
        """``work`` on a fresh snapshot of the files; again when a file vanished under it (a compaction)."""
        for attempt in range(_ATTEMPTS):
            try:
                return work(self._files.snapshot())
            except Vanished:
                time.sleep(0.02 * 2 ** attempt)
        raise OSError(f"the leaderboard files in {self.uri} kept changing during {_ATTEMPTS} reads; try again")

    def _select(self, snap: Snapshot, columns: list[str], *, experiment: Names, where: Optional[str],
                sweep_id: Names, kind: Names, ranked_only: bool = False, once: bool = False,
                superseded: bool = False) -> tuple[Snapshot, pa.Table]:
        """``columns`` (and what the filters read) of the matching current rows (``ranking.current``), one per
        row id, with their places in the files of the returned snapshot; ``ranked_only``: only rows a ranking may
        pick (``ranking.ranked``, of their experiment's newest training revision and data: ``newest_versions``);
        ``once``: each work once among the selected rows (a row marked ``duplicate_of``, a merged copy or a sweep's
        row of work done before, left out where the row it names is selected too: ``ranking.once_per_work``)."""
        schema, scope, used, exprs = snap.schema, [], set(), []
        if ranked_only and "status" in schema.names:
            scope.append("status")
            exprs.append(ranked(schema.names))
        if ranked_only:   # and only rows measured like their experiment's newest (newest_versions, below)
            scope += [c for c in VERSION_COLUMNS if c in schema.names]
        if once and "duplicate_of" in schema.names:
            scope.append("duplicate_of")   # for _each_work_once, after the filters
        for name, values in (("experiment", experiment), ("sweep_id", sweep_id), ("kind", kind)):
            if values is None:
                continue
            wanted = _names(values)
            if name == "kind" and set(wanted) - set(ROW_KINDS):
                raise ConfigError(f"no row is of kind {sorted(set(wanted) - set(ROW_KINDS))[0]!r}: kinds are "
                                  f"{', '.join(ROW_KINDS)} (None: every kind)")
            if name not in schema.names:         # files from before kinds existed hold trials
                exprs.append(pc.scalar(name == "kind" and "trial" in wanted))
                continue
            scope.append(name)
            expr = pc.field(name).isin(wanted)
            exprs.append(expr | pc.field(name).is_null() if name == "kind" and "trial" in wanted else expr)
        if where:
            exprs.append(compile_where(where, schema, used))
        history = ["supersedes"] if "supersedes" in schema.names else []
        snap, light = self._files.scan(snap, [*columns, *scope, *sorted(used), *history])
        keep = first_occurrences(light.column("row_id"))
        if keep is not None:
            light = light.take(keep)
        light = light if superseded else current(light)
        try:
            light = light.filter(reduce(operator.and_, exprs)) if exprs else light
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
            types = ", ".join(f"{c} is {schema.field(c).type}" for c in sorted(used) if c in schema.names)
            raise ConfigError(f"cannot evaluate --where (where=) {where!r}: {str(e).splitlines()[0][:200]} ({types}); "
                              f"compare columns with values of their type (quote strings)") from None
        # one measurement, then each work once in it (a copy rescored against a sweep's new baselines is of another
        # measurement than the row it names)
        light = newest_versions(light, by=columns) if ranked_only else light
        return snap, _each_work_once(light) if once and "duplicate_of" in light.column_names else light


def _each_work_once(table: pa.Table) -> pa.Table:
    """One row per work among the selected rows (``ranking.once_per_work``): a read of two sweeps, one reusing the
    other's work, or of one sweep that reused its own, held it twice; a read of one experiment lost its trial whose
    work another experiment's row holds."""
    keep = once_per_work(table.column("row_id").to_pylist(), table.column("duplicate_of").to_pylist())
    return table if len(keep) == table.num_rows else table.take(keep)


def _empty(columns: Optional[list[str]] = None) -> pa.Table:
    """No rows yet: the known columns (or ``columns``), so that ``table().column("trial_id")`` works."""
    schema = pa.schema(KNOWN_TYPES.items())
    if columns is None:
        return schema.empty_table()
    return pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.null()) for c in columns]).empty_table()


def _location(where) -> str:
    if not isinstance(where, (str, os.PathLike)):
        raise ConfigError(f"a storage is a folder path or a URI, not {type(where).__name__}")
    return os.fspath(where)


def _names(values: Names) -> list[str]:
    return [values] if isinstance(values, str) else list(values)
