"""What a data location holds, wherever it is: the identity that lets the same data in two storages be recognized
as one (``leaderboard merge``'s ``work_key``). The data fingerprint of a run hashes paths, so it cannot.

- ``builtin:NAME``: its name (the project makes it the same everywhere);
- a CSV or Parquet manifest (image paths): its bytes, plus the size of every image it lists, and the content of
  those of a format whose size says nothing of it (BMP, PPM, TIFF: one size for one shape);
- Parquet data (images inside): per file, its bytes (its images and labels: other pixels or relabelled rows can
  keep a file's size, footer and statistics), read once per merge.
Files are taken in name order, named relative to the location, so a copied folder has the same identity."""
from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .. import storage


def data_identity(location: str, *, image_column: str = "image") -> str:
    """A hash of what ``location`` holds; OSError if it cannot be reached."""
    if location.startswith("builtin:"):
        return location
    fs, path = storage.filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(storage.redact(location))
    if info.type == pafs.FileType.File:
        files = [info]
    else:
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted((f for f in found if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))),
                       key=lambda f: f.path)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{os.path.relpath(f.path, path) if f.path != path else ''}:{f.size}|".encode())
        if f.path.endswith(".csv") or _is_manifest(fs, f.path, image_column):
            with fs.open_input_stream(f.path) as stream:
                blob = stream.read()
            h.update(blob)
            h.update(repr(_image_sizes(location, fs, f.path, image_column)).encode())
        elif f.path.endswith((".parquet", ".pq")):
            _file_bytes(h, fs, f.path)
        elif info.type == pafs.FileType.File:
            h.update(_footer(fs, f.path, f.size))
    return "sha256:" + h.hexdigest()[:24]


def _is_manifest(fs: pafs.FileSystem, path: str, image_column: str) -> bool:
    if not path.endswith((".parquet", ".pq")):
        return False
    schema = pq.read_schema(path, filesystem=fs)
    return image_column in schema.names and pa.types.is_string(schema.field(image_column).type)


def _file_bytes(h, fs: pafs.FileSystem, path: str) -> None:
    """A file's bytes, read in chunks: Parquet data's images too (fixed-size pixel lists of other content keep a
    file's size, footer and statistics), and its labels (relabelled rows keep those as well)."""
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(1 << 23):
            h.update(chunk)


def _footer(fs: pafs.FileSystem, path: str, size: int) -> bytes:
    """The Parquet footer's bytes (its last 8 bytes give its length); the whole file if it is not Parquet."""
    with fs.open_input_file(path) as f:
        if size < 12:
            return f.read()
        f.seek(size - 8)
        tail = f.read(8)
        if tail[4:] != b"PAR1":
            f.seek(0)
            return f.read()
        length = int.from_bytes(tail[:4], "little")
        f.seek(max(size - 8 - length, 0))
        return f.read()


def _image_sizes(location: str, fs: pafs.FileSystem, path: str, image_column: str) -> list:
    """The size of every image a manifest lists (None for a missing one), paths resolved as the data reader does."""
    if path.endswith(".csv"):
        import pyarrow.csv as pacsv

        with fs.open_input_stream(path) as stream:
            table = pacsv.read_csv(stream)
    else:
        table = pq.read_table(path, filesystem=fs, columns=[image_column])
    if image_column not in table.column_names:
        return []
    base = storage.parent(location)          # as ``sources._manifest`` resolves relative paths
    local = [p for p in table.column(image_column).to_pylist() if p and not storage.is_uri(p)]
    base_fs, base_path = storage.filesystem(base)
    wanted = [p if os.path.isabs(p) else f"{base_path.rstrip('/')}/{p}" for p in local]
    sizes = [i.size if i.type == pafs.FileType.File else None for i in base_fs.get_file_info(wanted)]
    remote = [p for p in table.column(image_column).to_pylist() if p and storage.is_uri(p)]
    sizes += [size for size, _ in storage.file_stats(remote)]
    return sizes + [_content(base_fs, p) for p in wanted if p.lower().endswith(FIXED_SIZE)] + [
        _content(*storage.filesystem(p)) for p in remote if p.split("?")[0].lower().endswith(FIXED_SIZE)]


# Image formats whose files have one size for one shape, whatever the pixels: a size says nothing of their content
FIXED_SIZE = (".bmp", ".dib", ".ppm", ".pgm", ".pbm", ".pnm", ".tif", ".tiff")


def _content(fs: pafs.FileSystem, path: str) -> str | None:
    """A digest of an image file's bytes; None for a missing one."""
    try:
        with fs.open_input_stream(path) as stream:
            return hashlib.sha256(stream.read()).hexdigest()
    except FileNotFoundError:
        return None
