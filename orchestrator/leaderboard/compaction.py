"""Leaderboard compaction: many small files -> few large ones, never losing or duplicating a row.

What makes it safe while other processes append, read or compact, and when it is killed at any moment:

1. A merged file is written whole (atomic write) before any of its sources is deleted.
2. A compactor deletes only files it has read completely itself, after rule 1. A source that vanished
   meanwhile was taken by another compactor (its rows are in that one's merged file) and is skipped;
   an unreadable file is never merged nor deleted (it is reported, see ``Folder.skip``).
3. Rows are identified by ``row_id``. A merged file keeps one row per id and leaves out ids that a full file
   already holds (full files, ``ROWS_PER_FILE`` rows or more, are never merged again, so never deleted).
   Readers keep one row per id, so a row present both in a merged file and in a source not yet deleted (a
   kill between 1 and 2, two compactors at once) counts once; the next compaction removes the copy.
4. New files that appear during a compaction are not in its listing: appends are never touched.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import storage
from .files import MERGED_PREFIX, ROW_GROUP_ROWS, FileInfo, Folder, dataset, fill_row_ids
from .schemas import to_schema, unify

ROWS_PER_FILE = 200_000    # a merged file holds up to this many rows; a file this full is never merged again


def compact(folder: Folder, location: str, *, min_files: int = 2) -> dict:
    """Merge the small files of ``folder`` (``location``: the same folder as a path or URI) and delete them."""
    t0 = time.perf_counter()
    infos, _ = folder.infos(folder.list())
    small = [i for i in infos if i.num_rows < ROWS_PER_FILE]
    result = {"files_before": len(infos), "files_after": len(infos), "rows": 0, "duplicates": 0,
              "files_merged": 0, "seconds": 0.0}
    if len(small) >= max(min_files, 2):
        full_ids = _ids(folder, [i for i in infos if i.num_rows >= ROWS_PER_FILE])
        for group in _batches(small, ROWS_PER_FILE):
            if len(group) < 2:
                continue
            merged = _merge(folder, group, full_ids)
            if merged is None:          # a source broke mid-read: nothing written, nothing deleted
                continue
            data, rows, duplicates, sources = merged
            if rows:
                target = storage.join(location, storage.unique_name(MERGED_PREFIX, ".parquet"))
                storage.retry(lambda: storage.atomic_write(target, data), what="leaderboard compaction")
            for info in sources:
                _remove(folder.fs, info.path)
            result["rows"] += rows
            result["duplicates"] += duplicates
            result["files_merged"] += len(sources)
        result["files_after"] = len(folder.list())
    _remove_stale_temporaries(folder)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _remove_stale_temporaries(folder: Folder, *, age_s: float = 3600) -> None:
    """Temporary files (".<name>.<random>.tmp") that a writer killed mid-write left behind, an hour old or more."""
    found = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    now = time.time()
    for info in found:
        if (info.type == pafs.FileType.File and info.base_name.startswith(".") and info.base_name.endswith(".tmp")
                and info.mtime is not None and now - info.mtime.timestamp() > age_s):
            _remove(folder.fs, info.path)


def _remove(fs: pafs.FileSystem, path: str) -> None:
    """Delete a merged source; gone already is fine (another compactor merged it too)."""
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise


def _batches(infos: list[FileInfo], limit: int, *, alone: bool = False) -> Iterator[list[FileInfo]]:
    """Consecutive files (name order) of up to ``limit`` rows together; with ``alone``, a file of more than
    ``limit`` rows on its own. Groups (``ROWS_PER_FILE``): one merged file each; chunks (``ROW_GROUP_ROWS``):
    read at once, a big file streamed alone."""
    batch, rows = [], 0
    for info in infos:
        if batch and (rows + info.num_rows > limit or (alone and info.num_rows > limit)):
            yield batch
            batch, rows = [], 0
        batch.append(info)
        rows += info.num_rows
    if batch:
        yield batch


def _ids(folder: Folder, infos: list[FileInfo]) -> set:
    ids: set = set()
    for info in infos:
        table = folder.read_file(info, pa.schema([("row_id", pa.string())]))
        if table is not None:
            ids.update(table.column("row_id").to_pylist())
    return ids


def _merge(folder: Folder, group: list[FileInfo], full_ids: set) -> Optional[tuple[pa.Buffer, int, int, list]]:
    """One merged file's bytes from ``group``: (bytes, rows, duplicates left out, sources read completely);
    None when a source failed after part of it was read."""
    schema = unify([i.schema for i in group])
    if "row_id" not in schema.names:          # only files from before row ids: they get stable ids
        schema = schema.insert(0, pa.field("row_id", pa.string()))
    sink = pa.BufferOutputStream()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    seen: set = set()
    pending: list[pa.Table] = []
    counts = {"rows": 0, "duplicates": 0, "pending": 0}

    def put(table: pa.Table) -> None:
        ids = table.column("row_id").to_pylist()
        keep = [i for i, v in enumerate(ids) if v not in full_ids and not (v in seen or seen.add(v))]
        counts["duplicates"] += len(ids) - len(keep)
        if keep:
            pending.append(table.take(pa.array(keep, pa.int64())) if len(keep) < len(ids) else table)
            counts["pending"] += len(keep)
        if counts["pending"] >= ROW_GROUP_ROWS:
            flush()

    def flush() -> None:
        if pending:
            writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=ROW_GROUP_ROWS)
            counts["rows"] += counts["pending"]
            pending.clear()
            counts["pending"] = 0

    sources: list[FileInfo] = []
    with writer:
        for chunk in _batches(group, ROW_GROUP_ROWS, alone=True):
            if len(chunk) == 1 and chunk[0].num_rows > ROW_GROUP_ROWS:      # a big file: stream it
                batches = _stream(folder, chunk[0], schema)
                if batches is None:
                    continue
                try:
                    for first, table in batches:
                        put(fill_row_ids(table, [chunk[0].name], first=first))
                except (OSError, pa.ArrowException) as e:
                    folder.unreadable(chunk[0].path, e)
                    return None
                sources.append(chunk[0])
                continue
            for infos, table in _read_chunk(folder, chunk, schema):
                put(table)
                sources.extend(infos)
        flush()
    return sink.getvalue(), counts["rows"], counts["duplicates"], sources


def _read_chunk(folder: Folder, chunk: list[FileInfo], schema: pa.Schema) -> Iterator[tuple[list, pa.Table]]:
    """All of ``chunk`` in one dataset read; when that fails, file by file, skipping the vanished and unreadable."""
    try:
        table = dataset(folder.fs, [i.path for i in chunk], schema).to_table()
    except (OSError, pa.ArrowException):
        table = None
    if table is not None and table.num_rows == sum(i.num_rows for i in chunk):
        counts = np.array([i.num_rows for i in chunk], dtype=np.int64)
        file_idx = np.repeat(np.arange(len(chunk)), counts)
        places = pa.table({"row_id": table.column("row_id") if "row_id" in schema.names else
                           pa.nulls(table.num_rows, pa.string()), "_file": file_idx,
                           "_pos": np.arange(len(file_idx)) - (np.cumsum(counts) - counts)[file_idx]})
        ids = fill_row_ids(places, [i.name for i in chunk]).column("row_id")
        yield chunk, _with_ids(table, ids)
        return
    for info in chunk:
        one = folder.read_file(info, schema)
        if one is not None:
            yield [info], one


def _stream(folder: Folder, info: FileInfo, schema: pa.Schema):
    """(first row, table) batches of one big file, conformed to ``schema``; None if it cannot be opened."""
    try:
        handle = pq.ParquetFile(info.path, filesystem=folder.fs)
    except (OSError, pa.ArrowException) as e:
        folder.unreadable(info.path, e)
        return None
    columns = [c for c in schema.names if c in info.schema.names]

    def batches():
        first = 0
        for batch in handle.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns):
            yield first, to_schema(pa.Table.from_batches([batch]), schema)
            first += batch.num_rows
    return batches()


def _with_ids(table: pa.Table, ids: pa.ChunkedArray) -> pa.Table:
    if "row_id" in table.column_names:
        return table.set_column(table.column_names.index("row_id"), "row_id", ids)
    return table.append_column("row_id", ids)
