"""Training and validation images that are the same: by file path (manifests) and by identical bytes (a hash of each
image: the encoded file, the stored bytes, or the pixel values). `validate` and every command print one warning line
with the counts; it is not an error (a data set may hold true duplicates on purpose).

Bytes are read on the driver once, up to ``BYTES_BUDGET``: larger data sets, and image files behind URIs, are
compared by path only (and the line says so)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from .spec import Source

BYTES_BUDGET = 2 * 2 ** 30


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _column_digests(column: pa.ChunkedArray) -> list[bytes]:
    out = []
    for chunk in column.chunks:
        if pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type):
            out += [_digest(v) if v is not None else b"" for v in chunk.to_pylist()]
            continue
        flat, bounds = _leaves(chunk)
        out += [_digest(flat[a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]
    return out


def _leaves(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A (nested) list array's pixel values as one float32 array, and each row's [start, end) in it."""
    bounds, arr = np.arange(len(chunk) + 1), chunk
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if pa.types.is_fixed_size_list(arr.type):
            inner = np.arange(len(arr) + 1) * arr.type.list_size
        else:
            offsets = arr.offsets.to_numpy()
            inner = offsets - offsets[0]
        bounds, arr = inner[bounds], arr.flatten()
    return np.asarray(arr.to_numpy(zero_copy_only=False), np.float32), bounds


def _file_digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return _digest(f.read())
    except OSError:
        return None


def _open(location: str) -> pq.ParquetFile:
    fs, path = storage.filesystem(location)
    return pq.ParquetFile(path, filesystem=fs)


def digests(src: Source, image_column: str) -> list[bytes | None] | None:
    """One hash per row of ``src`` (None: not read), or None when the images are over the budget."""
    if src.pixels is not None:
        return [_digest(np.ascontiguousarray(p, np.float32).tobytes()) for p in src.pixels]
    if src.kind == "paths":
        local = [p for p in src.paths if not storage.is_uri(p)]
        if sum(os.path.getsize(p) for p in local if os.path.isfile(p)) > BYTES_BUDGET:
            return None
        return [None if storage.is_uri(p) else _file_digest(p) for p in src.paths]
    files = {}
    for file, group, _, _ in src.row_groups:
        files.setdefault(file, []).append(group)
    opened = {f: _open(f) for f in files}
    if sum(opened[f].metadata.row_group(g).total_byte_size for f, gs in files.items() for g in gs) > BYTES_BUDGET:
        return None
    out: list = []
    for file, group, _, _ in src.row_groups:
        out += _column_digests(opened[file].read_row_group(group, columns=[image_column]).column(image_column))
    return out


def overlap(train: Source, train_rows, val: Source, val_rows, *, image_column: str) -> dict:
    """Validation rows whose image is also a training row's: ``{"rows", "of", "paths", "bytes", "bytes_checked"}``."""
    train_rows, val_rows = np.asarray(train_rows), np.asarray(val_rows)
    same_path = np.zeros(len(val_rows), bool)
    if train.paths is not None and val.paths is not None:
        seen = {train.paths[i] for i in train_rows}
        same_path = np.array([val.paths[i] in seen for i in val_rows], bool)
    td = digests(train, image_column)
    vd = td if val is train else digests(val, image_column)
    same_bytes = np.zeros(len(val_rows), bool)
    if td is not None and vd is not None:
        seen = {td[i] for i in train_rows} - {None}
        same_bytes = np.array([vd[i] in seen for i in val_rows], bool)
    return {"rows": int((same_path | same_bytes).sum()), "of": len(val_rows), "paths": int(same_path.sum()),
            "bytes": int(same_bytes.sum()), "bytes_checked": td is not None and vd is not None}


def warning(found: dict) -> list[str]:
    """The one warning line (or none)."""
    if not found or not found["rows"]:
        return []
    how = f"{found['bytes']} by identical bytes" if found["bytes_checked"] else "bytes not compared: over 2 GiB"
    return [f"warning: {found['rows']} of {found['of']} validation images are also in the training data "
            f"({found['paths']} by file path, {how}): the validation score is optimistic; remove them from one side"]
