"""Read, check and normalize the data set on the driver, before any Ray work starts.

Output: two Arrow tables with an ``image`` tensor column (n, H, W, C) float32 and one ``y_<task>``
column per task (class index int32, or float32), plus a ``DataSpec`` the workers need to build
heads (classes, regression scaling). Every problem found is a ``DataError`` naming the column,
the row and the fix.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from . import builtin
from .config import ExperimentConfig
from .errors import DataError


@dataclass(frozen=True)
class DataSpec:
    image_shape: tuple[int, int, int]
    classes: dict[str, list]          # classification task -> labels in index order
    label_mean: dict[str, float]      # regression task -> train mean (targets are standardized)
    label_std: dict[str, float]
    n_train: int
    n_val: int
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(**{**d, "image_shape": tuple(d["image_shape"])})


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem + path for a local path or any URI pyarrow knows (s3://, gs://, ...)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


def read_table(uri: str, columns: list[str]) -> pa.Table:
    if uri.startswith("builtin:"):
        table = builtin.load(uri)
    else:
        try:
            fs, path = filesystem(uri)
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise DataError(f"data file {uri!r} not found: check data.train / data.validation")
            ds = pads.dataset(path, filesystem=fs, format="parquet")
            missing = [c for c in columns if c not in ds.schema.names]
            if missing:
                raise DataError(f"column {missing[0]!r} not in {uri} (columns: {ds.schema.names}): "
                                f"fix the column name in the config")
            table = ds.to_table(columns=columns).replace_schema_metadata(ds.schema.metadata)
        except DataError:
            raise
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read Parquet data {uri!r} ({str(e).splitlines()[0][:160]}): "
                            f"is it a complete Parquet file or directory?") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"column {missing[0]!r} not in {uri} (columns: {table.column_names}): fix the column name")
    if table.num_rows == 0:
        raise DataError(f"data set {uri!r} has no rows: point data.train/validation at non-empty Parquet data")
    return table


def _decode_images(col: pa.ChunkedArray, uri: str) -> np.ndarray:
    import tensorflow as tf  # only for encoded PNG/JPEG bytes

    out = []
    for i, blob in enumerate(col.to_pylist()):
        try:
            out.append(tf.io.decode_image(blob, expand_animations=False).numpy())
        except Exception:  # noqa: BLE001 - TF raises several types for bad bytes
            raise DataError(f"row {i} of image column in {uri}: not a decodable PNG/JPEG; fix or drop that row") from None
        if out[-1].shape != out[0].shape:
            raise DataError(f"row {i} of image column in {uri}: image size {out[-1].shape} differs from row 0 "
                            f"{out[0].shape}; resize all images to one size")
    return np.stack(out).astype(np.float32) / 255.0


def images(table: pa.Table, column: str, shape: tuple | None, uri: str) -> np.ndarray:
    """(n, H, W, C) float32 from a fixed-size list, list, nested list or encoded-bytes column."""
    col = table.column(column)
    if col.null_count:
        row = pc.index(pc.is_null(col), True).as_py()
        raise DataError(f"row {row} of column {column!r} in {uri} is null; drop rows without an image")
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        arr = _decode_images(col, uri)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        col = col.combine_chunks()
        depth, inner = 0, col
        while hasattr(inner, "flatten") and (pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type)
                                             or pa.types.is_fixed_size_list(inner.type)):
            lengths = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != lengths[0]).any():
                row = int(np.argmax(lengths != lengths[0]))
                raise DataError(f"column {column!r} in {uri} is ragged: row {row} has {lengths[row]} values "
                                f"where row 0 has {lengths[0]}; make every image the same size")
            inner, depth = inner.flatten(), depth + 1
        if not (pa.types.is_integer(inner.type) or pa.types.is_floating(inner.type)):
            raise DataError(f"column {column!r} in {uri} holds {inner.type}, not numbers: store pixel values")
        flat = inner.to_numpy(zero_copy_only=False).astype(np.float32)
        arr = flat.reshape(len(col), -1) if depth == 1 else flat.reshape(len(col), *_nested_shape(col, depth))
        if arr.ndim == 3:
            arr = arr[..., None]
    else:
        raise DataError(f"column {column!r} in {uri} has type {t}; store images as lists of numbers or PNG/JPEG bytes")
    if not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)))
        raise DataError(f"row {row} of column {column!r} in {uri} has NaN/inf pixels; clean that row")
    meta = (table.schema.metadata or {}).get(b"orchestrator.image_shape")
    shape = tuple(shape) if shape else (tuple(int(v) for v in meta.decode().split(",")) if meta else None)
    if arr.ndim == 2:  # flat vectors: need a shape
        if shape is None:
            side = int(math.isqrt(arr.shape[1]))
            if side * side != arr.shape[1]:
                raise DataError(f"column {column!r} holds flat vectors of {arr.shape[1]} values: set data.image_shape")
            shape = (side, side, 1)
        if math.prod(shape) != arr.shape[1]:
            raise DataError(f"column {column!r} in {uri} has {arr.shape[1]} values per image but data.image_shape "
                            f"{list(shape)} needs {math.prod(shape)}; fix data.image_shape or the data")
        arr = arr.reshape(len(arr), *shape)
    elif shape is not None and tuple(arr.shape[1:]) != tuple(shape):
        raise DataError(f"images in {uri} are {list(arr.shape[1:])} but data.image_shape is {list(shape)}; "
                        f"fix data.image_shape or resize the images")
    return arr


def _nested_shape(col: pa.Array, depth: int) -> list[int]:
    shape, inner = [], col
    for _ in range(depth):
        shape.append(int(pc.list_value_length(inner)[0].as_py()) if len(inner) else 0)
        inner = inner.flatten()
    return shape


def _labels(cfg: ExperimentConfig, task: str, table: pa.Table, uri: str, classes: list | None) -> np.ndarray:
    tc, column = cfg.tasks[task], cfg.label_of(task)
    col = table.column(column)
    values = col.to_pylist()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise DataError(f"row {i} of label column {column!r} (task {task!r}) in {uri} is null/NaN; "
                            f"drop or fill unlabeled rows")
    if tc.type == "regression":
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise DataError(f"label column {column!r} of regression task {task!r} has type {col.type}; it must be numeric")
        return np.asarray(values, np.float32)
    if tc.type == "binary":
        bad = [i for i, v in enumerate(values) if v not in (0, 1, True, False)]
        if bad:
            raise DataError(f"row {bad[0]} of label column {column!r} (binary task {task!r}) in {uri} is "
                            f"{values[bad[0]]!r}, not 0/1; map labels to 0/1 or use type: classification")
        return np.asarray(values, np.float32)
    index = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(values), np.int32)
    for i, v in enumerate(values):
        j = index.get(str(v))
        if j is None:
            hint = ("add it to 'classes'" if tc.classes else "the training data never has this label")
            raise DataError(f"row {i} of label column {column!r} (task {task!r}) in {uri}: label {v!r} is not one of "
                            f"the classes {classes}; {hint}")
        out[i] = j
    return out


def _class_list(cfg: ExperimentConfig, task: str, table: pa.Table) -> list:
    tc = cfg.tasks[task]
    if tc.classes is not None:
        return list(tc.classes)
    seen = {v for v in table.column(cfg.label_of(task)).to_pylist() if v is not None}
    return sorted(seen, key=lambda v: (isinstance(v, str), v))


def _fingerprint(*tables: pa.Table) -> str:
    h = hashlib.sha256()
    for t in tables:
        for name in t.column_names:
            h.update(name.encode())
            for chunk in t.column(name).chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(memoryview(buf))
    return h.hexdigest()[:16]


def prepare(cfg: ExperimentConfig) -> tuple[pa.Table, pa.Table, DataSpec]:
    """Read, validate and normalize train and validation data. Raises DataError.

    Rows are checked in the files' own order, so error messages name the row a user can find."""
    d = cfg.data
    columns = [d.image_column] + sorted({cfg.label_of(t) for t in cfg.tasks})
    train = read_table(d.train, columns)
    x_train = images(train, d.image_column, d.image_shape, d.train)
    classes = {t: _class_list(cfg, t, train) for t, tc in cfg.tasks.items() if tc.type == "classification"}
    for t, cl in classes.items():
        if len(cl) < 2:
            raise DataError(f"task {t!r} has only {len(cl)} class(es) in the training data; it needs at least 2")
    y_train = {t: _labels(cfg, t, train, d.train, classes.get(t)) for t in cfg.tasks}
    if isinstance(d.validation, str):
        val = read_table(d.validation, columns)
        x_val = images(val, d.image_column, d.image_shape or x_train.shape[1:], d.validation)
        y_val = {t: _labels(cfg, t, val, d.validation, classes.get(t)) for t in cfg.tasks}
        fingerprint = _fingerprint(train, val)
    else:
        order = np.random.default_rng(cfg.train.seed).permutation(len(x_train))
        cut = int(round(len(x_train) * (1 - d.validation)))
        if cut < 1 or cut >= len(x_train):
            raise DataError(f"{len(x_train)} rows are too few to hold out {d.validation:.0%} for validation")
        tr, va = order[:cut], order[cut:]
        x_train, x_val = x_train[tr], x_train[va]
        y_train, y_val = {t: v[tr] for t, v in y_train.items()}, {t: v[va] for t, v in y_train.items()}
        fingerprint = _fingerprint(train)
    reg = [t for t, tc in cfg.tasks.items() if tc.type == "regression"]
    spec = DataSpec(image_shape=tuple(int(s) for s in x_train.shape[1:]), classes=classes,
                    label_mean={t: float(y_train[t].mean()) for t in reg},
                    label_std={t: float(y_train[t].std()) or 1.0 for t in reg},
                    n_train=len(x_train), n_val=len(x_val), fingerprint=fingerprint)
    return to_arrow(x_train, y_train), to_arrow(x_val, y_val), spec


def to_arrow(x: np.ndarray, y: dict[str, np.ndarray]) -> pa.Table:
    from ray.data.extensions import ArrowTensorArray

    return pa.table({"image": ArrowTensorArray.from_numpy(x), **{f"y_{t}": v for t, v in y.items()}})


def to_arrays(table: pa.Table, tasks) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The inverse of ``to_arrow``: (images, {task: labels}) as numpy."""
    return (table.column("image").combine_chunks().to_numpy(),
            {t: table.column(f"y_{t}").to_numpy() for t in tasks})
