"""The leaderboard's files: rows -> typed Parquet, and a folder of such files read as one table.

Files are immutable once written (unique names, atomic writes): their footers are read once per
``Folder`` and cached. A query scans only the columns it needs from every file at once (a pyarrow
dataset with the unified schema), remembers where each row lives (file, position), and fetches whole
rows, heavy JSON columns included, only for the rows it returns. A file that vanishes during a read
(a compaction took it) is replaced by the files that appeared meanwhile (``Folder.scan``). A storage error
(an S3 503, a dropped connection) is retried with backoff; only a file whose bytes fail to parse is skipped, with
one warning, and an error that persists fails the read in one line (``StorageError``, ``Folder.attempt``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import StorageError
from ..storage import first_line
from .schemas import to_schema, unify

MERGED_PREFIX = "compact-"     # merged files: compact-<time>-<random>.parquet
ROW_GROUP_ROWS = 8192          # merged files: a row group is the unit read to fetch one whole row
READ_ATTEMPTS = 5              # storage errors: tries per listing or file read, 0.1 s backoff doubling


class Vanished(Exception):
    """The files changed under a read in a way it cannot absorb (a file gone between scan and fetch, new
    columns): the query starts over on a fresh listing."""


@dataclass(frozen=True)
class FileInfo:
    path: str
    schema: pa.Schema
    num_rows: int
    row_groups: tuple[int, ...]        # rows per row group

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Snapshot:
    """The files one read sees, their unified schema and where each file's rows start. ``seen``: every path
    listed so far (read or not); ``moved``: some listed file vanished before it was read."""
    infos: list[FileInfo]
    schema: pa.Schema
    seen: frozenset = frozenset()
    moved: bool = False
    starts: np.ndarray = field(init=False)

    def __post_init__(self):
        counts = np.array([i.num_rows for i in self.infos], dtype=np.int64)
        self.starts = np.cumsum(counts) - counts


class Folder:
    """The Parquet files directly under one folder (``fs`` path), read with per-instance caches.

    Reading while compactions run: a compaction writes its merged file before it deletes the sources, so a
    row is always in some file, but a file listed for a read may be gone when it is read. ``scan`` then reads
    on: it lists again and reads the files it has not seen (the merged ones hold the moved rows), until a
    listing shows nothing new after a round in which nothing vanished. Copies are dropped by row id later."""

    def __init__(self, fs: pafs.FileSystem, path: str, label: str):
        self.fs, self.path, self.label = fs, path, label
        self._infos: dict[str, FileInfo] = {}
        self._schemas: dict[tuple, pa.Schema] = {}   # one object per distinct schema (100,000 files: a few)
        self._bad: set[str] = set()

    # -- listing and footers ----------------------------------------------------------------
    def list(self) -> list[str]:
        """Finished files in name order; temporary (".x.tmp") and skipped files left out."""
        found = self.retried(lambda: self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)),
                             what=f"list the leaderboard files in {self.label}")
        return sorted(i.path for i in found if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not i.base_name.startswith((".", "_")) and i.path not in self._bad)

    def infos(self, paths: Iterable[str]) -> tuple[list[FileInfo], bool]:
        """Footers of ``paths`` (cached), and whether any file was gone; unreadable files are left out (warned)."""
        out, gone = [], False
        for path in paths:
            info = self._infos.get(path)
            if info is None:
                info, vanished = self.attempt(path, lambda: self._footer(path))
                gone = gone or vanished
                if info is None:
                    continue
                self._infos[path] = info
            out.append(info)
        return out, gone

    def _footer(self, path: str) -> FileInfo:
        meta = pq.read_metadata(path, filesystem=self.fs)
        schema = meta.schema.to_arrow_schema()
        schema = self._schemas.setdefault((schema, tuple(sorted((schema.metadata or {}).items()))), schema)
        return FileInfo(path, schema, meta.num_rows, tuple(meta.row_group(i).num_rows
                                                           for i in range(meta.num_row_groups)))

    def snapshot(self) -> Snapshot:
        """The files to read now, with their footers and unified schema."""
        paths = self.list()
        infos, gone = self.infos(paths)
        self._infos = {i.path: i for i in infos}      # forget files that are gone
        return Snapshot(infos, unify([i.schema for i in infos]), frozenset(paths), gone)

    def exists(self, path: str) -> bool:
        return self.retried(lambda: self.fs.get_file_info(path).type, what=f"look for {path}") != \
            pafs.FileType.NotFound

    def retried(self, call, *, what: str):
        """``call()``, again after a storage error (OSError) with a growing pause; a persisting error as one line."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return call()
            except OSError as e:
                error = e
            time.sleep(0.1 * 2 ** attempt)
        raise StorageError(f"cannot {what} ({first_line(error, 200)}) after {READ_ATTEMPTS} attempts; try again") from None

    def attempt(self, path: str, read):
        """(``read()``, False); (None, True) when the file is gone (a compaction took it); (None, False) when its
        bytes fail to parse (skipped, warned). Storage errors are retried; OSError (one line) when they persist."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return read(), False
            except (OSError, pa.ArrowException) as e:
                error = e
            state = self._diagnose(path)
            if state == "gone":
                return None, True
            if state == "corrupt":
                self.skip(path, error)
                return None, False
            time.sleep(0.1 * 2 ** attempt)
        raise StorageError(f"cannot read leaderboard file {path} ({first_line(error, 200)}) after {READ_ATTEMPTS} "
                      f"attempts; try again") from None

    def unreadable(self, path: str, error: BaseException) -> None:
        """After ``error`` reading ``path`` in a way that cannot be retried piecemeal: skip it if it fails to parse,
        nothing if it is gone; OSError (one line) if storage failed."""
        state = self._diagnose(path)
        if state == "corrupt":
            self.skip(path, error)
        elif state == "transient":
            raise StorageError(f"cannot read leaderboard file {path} ({first_line(error, 200)}); try again") from None

    def _diagnose(self, path: str) -> str:
        """Why a read failed: "gone", "corrupt" (its bytes, read whole, fail to parse) or "transient" (storage)."""
        try:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return "gone"
            with self.fs.open_input_file(path) as f:
                data = f.read()
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "transient"
        try:
            pq.ParquetFile(pa.BufferReader(data)).read()
        except (OSError, pa.ArrowException):
            return "corrupt"
        return "transient"                    # it parses: the failure was the storage's

    def skip(self, path: str, error: BaseException) -> None:
        """Leave a file that fails to parse out of every read of this folder, with one warning line."""
        if path not in self._bad:
            self._bad.add(path)
            print(f"warning: skipping unreadable leaderboard file {path} ({first_line(error, 200)}): move it out of "
                  f"{self.label} to silence this warning", file=sys.stderr, flush=True)

    # -- reading ------------------------------------------------------------------------------
    def scan(self, snap: Snapshot, columns: Iterable[str]) -> tuple[Snapshot, pa.Table]:
        """``columns`` (those that exist) of every row, in file order, plus ``_file`` (index into the returned
        snapshot's files) and ``_pos`` (row in that file); missing row ids filled (``fill_row_ids``). The returned
        snapshot holds the files actually read. ``Vanished``: files with new columns appeared, start over."""
        names = [c for c in dict.fromkeys(["row_id", *columns]) if c in snap.schema.names] or snap.schema.names[:1]
        light = pa.schema([snap.schema.field(n) for n in names])
        done, tables, seen, pending, moved = [], [], set(snap.seen), list(snap.infos), snap.moved
        for _ in range(100):
            for start in range(0, len(pending), 2048):
                read, parts, gone = self._read_some(pending[start:start + 2048], snap.schema, light)
                done += read
                tables += parts
                moved |= gone
            fresh = [p for p in self.list() if p not in seen]
            if not fresh and not moved:
                break
            seen.update(fresh)
            pending, moved = self.infos(fresh)
            if not unify([i.schema for i in done + pending]).equals(snap.schema, check_metadata=True):
                raise Vanished()
        else:
            raise Vanished()
        after = Snapshot(done, snap.schema, frozenset(seen))
        table = pa.concat_tables(tables).combine_chunks() if tables else light.empty_table()
        counts = np.array([i.num_rows for i in done], dtype=np.int64)
        file_idx = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        table = table.append_column("_file", pa.array(file_idx))
        table = table.append_column("_pos", pa.array(np.arange(len(file_idx)) - after.starts[file_idx]))
        return after, fill_row_ids(table, [i.name for i in done])

    def _read_some(self, infos: list[FileInfo], schema: pa.Schema, light: pa.Schema):
        """(files read, their tables, whether some had vanished): one dataset read, again without the files
        that vanished, or file by file to find an unreadable one."""
        gone = False
        while infos:
            try:
                table = dataset(self.fs, [i.path for i in infos], schema).to_table(columns=light.names)
                if table.num_rows == sum(i.num_rows for i in infos):
                    return infos, [table], gone
            except (OSError, pa.ArrowException):
                pass
            found = self.retried(lambda: self.fs.get_file_info([i.path for i in infos]),
                                 what=f"list the leaderboard files in {self.label}")
            there = [i for i, f in zip(infos, found) if f.type != pafs.FileType.NotFound]
            if len(there) == len(infos):
                break
            infos, gone = there, True
        read, tables = [], []
        for info in infos:
            table, vanished = self._read_columns(info, light.names)
            gone = gone or vanished
            if table is not None:
                read.append(info)
                tables.append(to_schema(table, light))
        return read, tables, gone

    def _read_columns(self, info: FileInfo, names: list[str]) -> tuple[Optional[pa.Table], bool]:
        """(``names`` that exist of one file, or None; whether it had vanished). A file that fails to parse is
        skipped (``attempt``)."""
        return self.attempt(info.path, lambda: pq.ParquetFile(info.path, filesystem=self.fs).read(
            columns=[c for c in names if c in info.schema.names]))

    def fetch(self, snap: Snapshot, rows: pa.Table) -> pa.Table:
        """Whole rows (every column of the unified schema) for the ``rows`` of a ``scan``, in their order."""
        schema = snap.schema
        if rows.num_rows == 0:
            return schema.empty_table()
        file_idx = rows.column("_file").to_numpy()
        pos = rows.column("_pos").to_numpy()
        files = np.unique(file_idx)
        involved = [snap.infos[f] for f in files]
        try:
            if len(files) > 64:        # many files: one dataset scan, then pick the rows
                full = dataset(self.fs, [i.path for i in snap.infos], schema).to_table()
                out = full.take(pa.array(snap.starts[file_idx] + pos))
            else:                      # few files: only the row groups holding the rows
                pieces, order = [], []
                for f in files:
                    sel = np.flatnonzero(file_idx == f)
                    pieces.append(self._read_rows(snap.infos[f], schema, pos[sel]))
                    order.append(sel)
                out = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        except (OSError, pa.ArrowException):
            for info in involved:      # gone since the scan (a compaction), or broken (skipped): read again
                table, _ = self.attempt(info.path, lambda: pq.ParquetFile(info.path, filesystem=self.fs).read())
                if table is None:
                    break
            raise Vanished() from None
        wanted = rows.column("row_id")
        if "row_id" not in out.column_names:       # only files from before row ids
            return out.append_column("row_id", wanted)
        if not _same_where_stored(out.column("row_id"), wanted):
            raise Vanished()
        return out.set_column(out.column_names.index("row_id"), "row_id", wanted)

    def _read_rows(self, info: FileInfo, schema: pa.Schema, positions: np.ndarray) -> pa.Table:
        ends = np.cumsum(info.row_groups)
        groups = np.searchsorted(ends, positions, side="right")
        wanted = sorted(set(groups.tolist()))
        offsets, at = {}, 0
        for g in wanted:
            offsets[g], at = at - int(ends[g] - info.row_groups[g]), at + info.row_groups[g]
        part = pq.ParquetFile(info.path, filesystem=self.fs).read_row_groups(
            wanted, columns=[c for c in schema.names if c in info.schema.names])
        local = [offsets[g] + p for g, p in zip(groups.tolist(), positions.tolist())]
        return to_schema(part.take(pa.array(local, type=pa.int64())), schema)

    def read_file(self, info: FileInfo, schema: pa.Schema) -> Optional[pa.Table]:
        """One whole file conformed to ``schema``, row ids filled; None if it is gone or unreadable (warned)."""
        table, _ = self._read_columns(info, schema.names)
        return None if table is None else fill_row_ids(to_schema(table, schema), [info.name])


def dataset(fs: pafs.FileSystem, paths: list[str], schema: pa.Schema) -> ds.Dataset:
    """Many Parquet files as one dataset with ``schema`` (missing columns read as nulls); no per-file checks."""
    return ds.FileSystemDataset.from_paths(paths, schema=schema, format=ds.ParquetFileFormat(), filesystem=fs)


def fill_row_ids(table: pa.Table, names: list[str], *, first: int = 0) -> pa.Table:
    """Rows from files written before row ids existed get a stable id: ``<file name>#<row in file>``, the same in
    every process, so a row and its copy in a merged file are recognized as one. ``table`` holds the rows of the
    files ``names`` in order (``_file`` column, or one file starting at row ``first``)."""
    if "row_id" not in table.column_names:
        table = table.append_column("row_id", pa.nulls(table.num_rows, pa.string()))
    ids = table.column("row_id")
    if ids.null_count == 0:
        return table
    values = ids.to_pylist()
    files = table.column("_file").to_numpy() if "_file" in table.column_names else np.zeros(len(values), int)
    pos = table.column("_pos").to_numpy() if "_pos" in table.column_names else np.arange(len(values)) + first
    for i, v in enumerate(values):
        if v is None:
            values[i] = f"{names[files[i]]}#{pos[i]}"
    return table.set_column(table.column_names.index("row_id"), "row_id", pa.array(values, pa.string()))


def first_occurrences(ids: pa.ChunkedArray | pa.Array) -> Optional[np.ndarray]:
    """Indices of the first row of each id, in order; None if every id is distinct (the usual case)."""
    if pc.count_distinct(ids).as_py() == len(ids):
        return None
    seen: set = set()
    return np.array([i for i, v in enumerate(ids.to_pylist()) if not (v in seen or seen.add(v))], dtype=np.int64)


def _same_where_stored(stored: pa.ChunkedArray, wanted: pa.ChunkedArray) -> bool:
    a, b = stored.to_pylist(), wanted.to_pylist()
    return all(x is None or x == y for x, y in zip(a, b))
