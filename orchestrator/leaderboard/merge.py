"""``leaderboard merge SRC [SRC...] --into DST``: other storages' rows pulled into this leaderboard, so that
``best``, ``confirm``, ``report`` and warm starts see trials run elsewhere.

- Rows keep their ``row_id``; a row whose id DST already has is skipped, so merging twice adds nothing.
- Every merged row gets a ``work_key`` (``work_key``: the config as the config hash sees it, without storage, name
  or where it ran, with the data identified by content, seed included), ``merged_from`` (the source storage,
  credentials redacted; a row merged before keeps its first source), and points at DST: its config's ``storage`` is
  DST (and its ``config_hash`` that config's), so ``best`` / ``confirm`` train there and DST's sweeps find its work
  done. Checkpoint paths still name where the trial ran.
- Rows of work that DST or another row of this merge holds (the same work key, not another version of the data at
  the same location nor another training revision: ``same_work``; every source's rows judged together) get
  ``duplicate_of``: the id of the row that counts for that work (``preference``: completed before stopped, before
  failed), and ranked queries leave them out. DST's rows are never rewritten: a better merged run counts beside.
- Schemas may differ (older rows, other tasks): the columns are unioned, missing values are nulls. The new rows are
  written as new files, each whole or not at all (``storage.atomic_write``): a kill midway leaves some files written
  and the next merge adds the rest; reads keep one row per id, so nothing is lost or counted twice.
- Each source's sweeps bring their ``sweep.json`` (``sweep_records``) where DST has none; DST's is never rewritten.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import Callable, Optional

import pyarrow as pa

from .. import storage
from ..config.paths import parent
from ..config.revision import TRAINING_REVISION, revision_of, task_order
from ..config.schema import parse_config
from ..data.identity import data_identity
from ..errors import ConfigError
from ..training.lease import one_at_a_time
from .columns import parquet_bytes
from .compaction import ROWS_PER_FILE
from .ranking import UNRANKED, config_of, finite, objective_of
from .schemas import with_columns
from .sweep_records import copy_sweep_records

EXECUTION_ONLY = (("storage",), ("name",), ("search",), ("resources",), ("data", "cache"), ("data", "cache_budget_mb"),
                  ("data", "cache_dir"))

EXISTING = ("row_id", "work_key", "objective", "status", "epochs", "duplicate_of", "reused_from", "config",
            "data_fingerprint", "data_alias", "training_revision", "supersedes", "experiment", "created_at",
            "backbone_digest")   # what merged_rows reads of DST's rows (and of those merged before)

WORK_KEY = "w4:"   # the work key's formula (w4: Parquet data by its bytes); another's (older code's) is computed again
NAMED_FILE = ("path", "weights")   # backbone fields that can name a file (weights: but for these words)


def work_key(config: dict, identity: Callable[[str, str], str], *, backbone_digest: Optional[str] = None) -> str:
    """What a row trained, wherever and under whatever name: a hash of its config without storage, name, search
    block or resources (where it ran, not what it learned), with ``data.train`` / ``data.validation`` replaced by
    ``identity(location, image_column)`` and a backbone file it names by ``backbone_digest`` when given; the seed
    (``train.seed``) stays in."""
    c = _work_fields(config)
    for path in EXECUTION_ONLY:
        node = parent(c, path)
        if node is not None:
            node.pop(path[-1], None)
    data = c.get("data") or {}
    for field in ("train", "validation"):
        if isinstance(data.get(field), str):
            data[field] = identity(data[field], data.get("image_column") or "image")
    if backbone_digest is not None and _named_files(c):
        c["backbone"] = {**c["backbone"], **{f: backbone_digest for f in _named_files(c)}}
    c.update(task_order(c.get("tasks") or {}))
    return WORK_KEY + hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _named_files(config: dict) -> list[str]:
    """The backbone fields of ``config`` that name a file (a .keras path, an application's weights file)."""
    backbone = config.get("backbone") or {}
    return [f for f in NAMED_FILE if isinstance(backbone.get(f), str) and backbone[f] not in ("pretrained", "imagenet",
                                                                                             "none")]


def _work_fields(config: dict) -> dict:
    """The config as the config hash sees it (``work_fields``: unused fields at their defaults, static weights
    normalized, AdamW as Adam), or as written where it no longer validates (older code's)."""
    try:
        return parse_config(config).work_fields()
    except ConfigError:
        return copy.deepcopy(config)


def data_key(config: dict, identity: Callable[[str, str], str], *, backbone_digest: str) -> str:
    """What a row's data fingerprint measures, by content, not by where it is: the data section (cache settings left
    out, ``data.train`` / ``data.validation`` by ``identity``) and the backbone (a file it names by the digest of
    what it trained on)."""
    c = _work_fields(config)
    data = {k: v for k, v in (c.get("data") or {}).items() if ("data", k) not in EXECUTION_ONLY}
    for field in ("train", "validation"):
        if isinstance(data.get(field), str):
            data[field] = identity(data[field], data.get("image_column") or "image")
    backbone = {**(c.get("backbone") or {}), **{f: backbone_digest for f in _named_files(c)}}
    return hashlib.sha256(json.dumps([data, backbone], sort_keys=True, default=str).encode()).hexdigest()[:16]


def trained_on(row: dict) -> Optional[tuple[dict, Optional[str]]]:
    """``(config, backbone digest)`` of a row, for its keys; None where merge cannot tell what it trained: no config,
    or a backbone file named without the digest of what it held then (older code's rows: the file may have been
    rewritten since)."""
    config = config_of(row)
    if config is None or (_named_files(config) and not row.get("backbone_digest")):
        return None
    return config, row.get("backbone_digest")


def _where(row: dict) -> tuple:
    """Where a row's data and backbone file were: its data locations and backbone path."""
    config = config_of(row) or {}
    data, backbone = config.get("data") or {}, config.get("backbone") or {}
    return data.get("train"), data.get("validation"), backbone.get("path"), backbone.get("weights")


class DataAliases:
    """The fingerprint a merged row's data is measured by here. A fingerprint names where the data is, so a copy of
    DST's data elsewhere (a laptop's) fingerprints apart, and rankings compare one fingerprint's rows: a row on the
    same content (``data_key``) at another location is measured as the newest such row here (``data_alias``)."""

    def __init__(self, rows: list[dict], identity: Callable[[str, str], str]):
        self.identity, self.seen = identity, {}   # (experiment, data key) -> (created_at, fingerprint, where)
        for r in rows:
            self._add(r, self._key(r), r.get("data_alias"))

    def measure(self, row: dict) -> Optional[str]:
        """A merged row's ``data_alias`` (the fingerprint here of the same content elsewhere; else its own alias),
        recorded for the rows after it."""
        key = self._key(row)
        found, alias = self.seen.get(key), row.get("data_alias")
        if found and found[1] != (alias or row.get("data_fingerprint")) and found[2] != _where(row):
            alias = found[1]
        self._add(row, key, alias)
        return alias

    def _add(self, row: dict, key: Optional[tuple], alias: Optional[str]) -> None:
        """A row measured by its own fingerprint, where it was (one measured as another's adds nothing)."""
        entry = (str(row.get("created_at") or ""), row.get("data_fingerprint"), _where(row))
        if not alias and key is not None and entry[1] and (key not in self.seen or entry[0] >= self.seen[key][0]):
            self.seen[key] = entry

    def _key(self, row: dict) -> Optional[tuple]:
        known = trained_on(row)
        if known is None:
            return None
        config, digest = known
        return row.get("experiment"), data_key(config, self.identity, backbone_digest=digest or "")


class Identities:
    """``data_identity`` per location, computed once; unreachable data is identified by its location instead."""

    def __init__(self):
        self._seen: dict[tuple[str, str], str] = {}

    def __call__(self, location: str, image_column: str) -> str:
        key = (location, image_column)
        if key not in self._seen:
            try:
                self._seen[key] = data_identity(location, image_column=image_column)
            except (OSError, pa.ArrowException, ValueError, ConfigError):
                self._seen[key] = "location:" + storage.redact(location)
        return self._seen[key]


def row_work_key(row: dict, identity: Callable[[str, str], str]) -> Optional[str]:
    """A row's stored ``work_key`` (this formula's), else computed from its config; None where merge cannot tell what
    it trained (``trained_on``)."""
    if str(row.get("work_key") or "").startswith(WORK_KEY):
        return row["work_key"]
    known = trained_on(row)
    return work_key(known[0], identity, backbone_digest=known[1] or "") if known is not None else None


def preference(row: dict) -> tuple:
    """Which row of one work counts, lowest first: a completed run, a stopped one, any other ranked one, a failed or
    diverged one (a failed run keeps its last objective; a stopped one has fewer epochs); then one with an objective
    before one without, then more epochs; then the work's own row before a sweep's row that reused it (its copy)."""
    status = row.get("status")
    rank = 0 if status == "completed" else 1 if status == "stopped" else 3 if status in UNRANKED else 2
    return (rank, finite(row.get("objective")) is None, -(row.get("epochs") or 0),
            bool(row.get("reused_from") or row.get("duplicate_of")))


def version(row: dict) -> tuple:
    """What a work key cannot see: the data locations the row's config names, the data_fingerprint it trained on
    there (a rewrite in place between two runs gives the same content key at merge time) and the code's training
    revision (rows before it: 1)."""
    data = (config_of(row) or {}).get("data") or {}
    return (data.get("train"), data.get("validation")), row.get("data_fingerprint"), revision_of(row)


def same_work(a: tuple, b: tuple) -> bool:
    """Two rows of one work key (``version`` of each) did the same work: the same training revision, and not two
    versions of the data at one location."""
    (where_a, data_a, revision_a), (where_b, data_b, revision_b) = a, b
    return revision_a == revision_b and not (where_a == where_b and data_a and data_b and data_a != data_b)


def held(existing: list[dict], stored=frozenset()) -> set:
    """The row ids DST holds (``merged_rows``' ``existing`` and ``stored``): a merge skips an incoming row of one."""
    return {r["row_id"] for r in existing} | {r["supersedes"] for r in existing if r.get("supersedes")} | set(stored)


def merged_rows(existing: list[dict], incoming: list[dict], *, source: str | list[str], into: str,
                identity: Callable[[str, str], str], stored=frozenset()) -> tuple[list[int], dict[str, list]]:
    """Which ``incoming`` rows (JSON columns as strings; ``source``: theirs, or each one's) DST lacks, and their new
    column values: (indices, {"work_key", "duplicate_of", "merged_from", "config", "config_hash", "data_alias"}).
    ``existing``: DST's rows (``EXISTING``), extended with the new rows. The row that counts for a work (a work key,
    then ``same_work``) is the first by ``preference``, DST's before a source's; DST's rows are not rewritten: a new
    row ``preference`` puts before the one counting in DST counts too. DST's superseded row ids (``stored``: however
    many reruns ago) count as DST's too (merged again, they would come back)."""
    have = held(existing, stored)
    counts: dict[str, list[list]] = {}   # work key -> [row id, preference, version] of each work's counting row

    def counting(key, ver):
        return next((c for c in counts.get(key, []) if same_work(c[2], ver)), None)

    for r in existing:
        r["work_key"] = key = row_work_key(r, identity)
        if key and not r.get("duplicate_of"):
            ver, c = version(r), counting(key, version(r))
            if c is None:
                counts.setdefault(key, []).append([r["row_id"], preference(r), ver])
            elif preference(r) < c[1]:
                c[:] = [r["row_id"], preference(r), ver]
    order = sorted(range(len(incoming)), key=lambda i: preference(incoming[i]))
    replaced = {r.get("supersedes") for r in incoming} - {None}
    aliases = DataAliases(existing, identity)
    keep, new = [], {"work_key": {}, "duplicate_of": {}, "merged_from": {}, "config": {}, "config_hash": {},
                     "data_alias": {}}
    for i in order:
        r = incoming[i]
        if r["row_id"] in have:
            continue
        have.add(r["row_id"])
        key, ver = row_work_key(r, identity), version(r)
        live = r["row_id"] not in replaced   # a superseded row (a chain of reruns comes whole) counts for no work
        c = counting(key, ver) if key and live else None
        counted = c[0] if c is not None and preference(r) >= c[1] else None   # a stopped or failed run elsewhere
        if key and live and counted is None:                                   # does not hide a finished one
            if c is None:
                counts.setdefault(key, []).append([r["row_id"], preference(r), ver])
            else:
                c[:] = [r["row_id"], preference(r), ver]
        keep.append(i)
        new["work_key"][i], new["duplicate_of"][i] = key, counted
        came = source[i] if isinstance(source, list) else source   # each row's source, when several are judged together
        new["merged_from"][i] = r.get("merged_from") or storage.redact(came if storage.is_uri(came) else
                                                                       os.path.abspath(came))
        new["config"][i] = _pointed_at(r.get("config"), into)
        new["config_hash"][i] = _rehashed(r, new["config"][i])
        new["data_alias"][i] = alias = aliases.measure(r)
        existing.append({**{c: r.get(c) for c in EXISTING}, "work_key": key, "duplicate_of": counted,
                         "data_alias": alias})
    keep.sort()
    return keep, {name: [values[i] for i in keep] for name, values in new.items()}


def _pointed_at(config, into: str):
    """The row's config with ``storage`` = DST (credentials redacted), as a JSON string."""
    parsed = json.loads(config) if isinstance(config, str) else config
    if not isinstance(parsed, dict):
        return config
    return json.dumps({**parsed, "storage": storage.redact(into)}, default=str)   # in order: tasks' is work


def _rehashed(row: dict, config) -> Optional[str]:
    """The config hash of a row pointed at DST (the hash covers storage), so DST's sweeps, confirm and ablate find its
    work done; a row of older code keeps its own (it names other work of this code either way)."""
    if revision_of(row) != TRAINING_REVISION or not isinstance(config, str):
        return row.get("config_hash")
    try:
        return parse_config(json.loads(config)).config_hash()
    except (ConfigError, ValueError):
        return row.get("config_hash")


def merge(board, into: str, sources: list[str], *, open_board: Callable, out: Callable[[str], None]) -> dict:
    """Merge the leaderboards of ``sources`` (storage locations, each opened by ``open_board``) into ``board`` (the
    Leaderboard of ``into``). On local storage under the leaderboard folder's lock, from the read of its rows to the
    last write: a sweep's row of the same work waits, then names the merged one (``SweepCallback._finish``)."""
    with one_at_a_time(board.location):
        return _merge(board, into, sources, open_board=open_board, out=out)


def _merge(board, into: str, sources: list[str], *, open_board: Callable, out: Callable[[str], None]) -> dict:
    t0, identity = time.perf_counter(), Identities()
    stored = board.reruns()   # every row DST holds, superseded ones too
    current = board.table(kind=None)
    existing = current.select([c for c in EXISTING if c in current.column_names]).to_pylist()
    result = {"sources": len(sources), "rows": 0, "skipped": 0, "repeated": 0, "duplicates": 0, "files": 0}
    tables = [(source, open_board(source).table(kind=None, superseded=True))   # whole: a chain of reruns comes along
              for source in sources]                                          # all checked before any write
    for source, table in tables:
        if not table.num_rows:
            raise ConfigError(f"no leaderboard rows in {storage.redact(source)}: give the storage that holds them "
                              f"(the folder or URI above its leaderboard/)")
    _one_objective_per_experiment([(into, current), *tables])
    incoming = [r for _, table in tables for r in table.to_pylist()]   # judged together: the order sources are listed
    origin = [s for s, table in tables for _ in range(table.num_rows)]   # in does not decide which run counts
    there_before = held(existing, stored)
    every, all_values = merged_rows(existing, incoming, source=origin, into=into, identity=identity, stored=set(stored))
    start_at = 0
    for source, table in tables:
        mine = [j for j, i in enumerate(every) if start_at <= i < start_at + table.num_rows]
        keep, values = [every[j] - start_at for j in mine], {k: [v[j] for j in mine] for k, v in all_values.items()}
        start_at += table.num_rows
        there = sum(i in there_before for i in table.column("row_id").to_pylist())
        also = table.num_rows - len(keep) - there   # skipped, not there: another source (or this one again) has them
        result["skipped"] += there
        result["repeated"] += also
        result["duplicates"] += sum(v is not None for v in values["duplicate_of"])
        copy_sweep_records(table, storage.parent(open_board(source).location), into, out=out)   # before its rows
        for start in range(0, len(keep), ROWS_PER_FILE):
            part = with_columns(table.take(pa.array(keep[start:start + ROWS_PER_FILE], pa.int64())),
                                {k: v[start:start + ROWS_PER_FILE] for k, v in values.items()})
            location = storage.join(board.location, storage.unique_name("", ".parquet"))
            data = parquet_bytes(part).to_pybytes()
            storage.retry(lambda: storage.atomic_write(location, data), what="leaderboard merge")
            result["files"] += 1
        result["rows"] += len(keep)
        out(f"{storage.redact(source)}: {len(keep)} rows merged, {there} already there"
            + (f", {also} also in another source, or given twice (merged once)" if also else ""))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _one_objective_per_experiment(tables: list[tuple[str, pa.Table]]) -> None:
    """An experiment ranks its trials on one objective (as ``tune`` and ``report`` keep it): a source whose trials of
    an experiment use another objective than DST's (or an earlier source's) is refused."""
    seen: dict[str, tuple[str, str]] = {}
    for where, table in tables:
        if not {"experiment", "objective_metric"} <= set(table.column_names):
            continue
        names = [c for c in ("experiment", "objective_metric", "kind", "config") if c in table.column_names]
        for r in table.select(names).to_pylist():
            metric = objective_of(r)   # with each task's score metric where it averages them
            if (r.get("kind") or "trial") != "trial" or not metric:
                continue
            experiment = r["experiment"]
            first, first_where = seen.setdefault(experiment, (metric, where))
            if metric != first:
                raise ConfigError(f"experiment {experiment!r} ranks its trials by {first} in "
                                  f"{storage.redact(first_where)} and by {metric} in {storage.redact(where)}: merged, "
                                  f"the two would be ranked together; merge into another storage")
