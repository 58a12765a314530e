"""Reading one split: a manifest (Parquet or CSV of image paths or URIs), Parquet with image bytes or pixel lists, or
``builtin:NAME``; every label read and checked, with the file, the row and the fix in each ``DataError``."""
from __future__ import annotations

import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from . import builtin
from .. import credentials, storage
from ..config.schema import ExperimentConfig
from ..errors import DataError
from .decode import pixel_array
from .spec import Source

F32_MAX = float(np.finfo(np.float32).max)


# -- reading -------------------------------------------------------------------------------------
def read_source(uri: str, image_column: str, label_columns: list[str], *, allow_outside: bool = True) -> Source:
    """One split. ``allow_outside=False``: a manifest's image paths must stay inside its folder (``inside``)."""
    if uri.startswith("builtin:"):
        table = builtin.load(uri)
        missing = [c for c in label_columns if c not in table.column_names]
        if missing:
            labels = [c for c in table.column_names if c != "image"]
            raise DataError(f"built-in data {uri!r} has no label column {missing[0]!r} (its columns: "
                            f"{', '.join(labels)}): set tasks.<task>.label to one of them")
        return Source(uri, table.select(label_columns), "pixels", pixels=_builtin_pixels(table))
    fs, path = storage.filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise DataError(f"cannot reach data {storage.redact(uri)!r} ({storage.first_line(e)})") from None
    if info.type == pafs.FileType.NotFound:
        what = "manifest" if path.endswith(".csv") else "data file"
        raise DataError(f"{what} {storage.redact(uri)!r} not found: check data.train / data.validation "
                        f"(relative paths resolve against the config file's folder)")
    try:
        if path.endswith(".csv"):
            src = _read_csv(uri, fs, path, image_column, label_columns)
        else:
            src = _read_parquet(uri, fs, path, image_column, label_columns)
    except (pa.ArrowInvalid, OSError) as e:
        if path.endswith(".csv"):
            raise DataError(f"cannot read CSV manifest {storage.redact(uri)!r} ({storage.first_line(e)}): is it a CSV file "
                            f"with a header row?") from None
        raise DataError(f"cannot read Parquet data {storage.redact(uri)!r} ({storage.first_line(e)}): is it a complete "
                        f"Parquet file or directory (or a .csv manifest)?") from None
    if not allow_outside and src.kind == "paths":
        inside(src, image_column)
    return src


def _read_csv(uri, fs, path, image_column, label_columns) -> Source:
    import pyarrow.csv as pacsv

    # an empty, "NA" or "null" text cell is a missing value, as it is in a number column (labels() refuses it)
    with fs.open_input_stream(path) as f:
        table = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    _require_columns(table.schema, image_column, label_columns, uri)
    if not pa.types.is_string(table.schema.field(image_column).type):
        raise DataError(f"column {image_column!r} of the CSV manifest {storage.redact(uri)} must hold image paths")
    src = _manifest(uri, table, image_column, label_columns)
    numbers = [c for c in label_columns if not pa.types.is_string(table.schema.field(c).type)]
    if numbers:   # the cells as written: '007' and '7' both read as 7 (``one_spelling``)
        with fs.open_input_stream(path) as f:
            src.label_text = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(
                include_columns=numbers, column_types={c: pa.string() for c in numbers}))
    return src


def _read_parquet(uri, fs, path, image_column, label_columns) -> Source:
    ds = pads.dataset(path, filesystem=fs, format="parquet")
    _require_columns(ds.schema, image_column, label_columns, uri)
    t = ds.schema.field(image_column).type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _manifest(uri, ds.to_table(columns=[image_column] + label_columns), image_column, label_columns)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        kind = "bytes"
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        kind = "pixels"
    else:
        raise DataError(f"column {image_column!r} in {storage.redact(uri)} has type {t}; store image paths "
                        f"(strings), PNG/JPEG bytes, or lists of pixel values")
    groups, first = [], 0
    for file in ds.files:
        meta = pq.ParquetFile(file, filesystem=fs).metadata
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            groups.append((_file_uri(uri, path, file), g, first, rows))
            first += rows
    meta = (ds.schema.metadata or {}).get(b"orchestrator.image_shape")
    shape = tuple(int(v) for v in meta.decode().split(",")) if meta else None
    return Source(uri, ds.to_table(columns=label_columns), kind, row_groups=groups, shape_meta=shape)


def _file_uri(uri: str, root_path: str, file: str) -> str:
    """A dataset file as a location the cluster can open (keeps the URI's scheme and options)."""
    if not storage.is_uri(uri):
        return file
    rel = os.path.relpath(file, root_path) if file != root_path else ""
    return storage.join(uri, rel) if rel and rel != "." else uri


def _manifest(uri: str, table: pa.Table, image_column: str, label_columns: list[str]) -> Source:
    raw = table.column(image_column).to_pylist()
    base = storage.parent(uri)
    paths = []
    for i, p in enumerate(raw):
        if not p:
            raise DataError(f"row {i} of {storage.redact(uri)} has no image path in column {image_column!r}; "
                            f"fill or drop that row")
        if storage.is_uri(p):   # credentials written into an image URI are kept in memory, out of the units
            paths.append(credentials.adopt(p, folder=True) if storage.has_credentials(p) else p)
        else:
            paths.append(p if os.path.isabs(p) else storage.join(base, p))
    return Source(uri, table.select(label_columns), "paths", paths=paths, raw_paths=raw)


def inside(src: Source, image_column: str) -> None:
    """``data.allow_outside: false``: every image path is relative to the manifest's folder and stays in it."""
    for i, p in enumerate(src.raw_paths):
        why = ("is a URI" if storage.is_uri(p) else "is absolute" if os.path.isabs(p) or p.startswith(("/", "\\"))
               else "goes up with '..'" if ".." in p.replace("\\", "/").split("/") else None)
        if why:
            shown = storage.redact(p) if storage.is_uri(p) else p
            raise DataError(f"image path {shown!r} (row {i} of {storage.redact(src.uri)}, column {image_column!r}) "
                            f"{why}, and data.allow_outside is false: manifest paths must be relative and stay in "
                            f"the manifest's folder; fix the manifest, or set data.allow_outside: true if you "
                            f"trust it")


def _builtin_pixels(table: pa.Table) -> np.ndarray:
    return pixel_array(table.column("image"), shape=builtin.IMAGE_SHAPE, where="builtin data")


def _require_columns(schema: pa.Schema, image_column: str, label_columns: list[str], uri: str) -> None:
    """The columns a config names are there, each once, and its labels are one value per row."""
    names = schema.names
    for c in [image_column, *label_columns]:
        if c not in names:
            raise DataError(f"column {c!r} not in {storage.redact(uri)} (columns: {list(names)}): "
                            f"fix the column name in the config")
        if names.count(c) > 1:
            raise DataError(f"column {c!r} appears {names.count(c)} times in {storage.redact(uri)}: rename or drop "
                            f"the copies, so that the config names one column")
    for c in label_columns:
        t = schema.field(c).type
        if pa.types.is_nested(t):
            raise DataError(f"label column {c!r} of {storage.redact(uri)} holds {t} values: a label is one number or "
                            f"name per row; give each task a column of those")


# -- labels ------------------------------------------------------------------------------------
def labels(cfg: ExperimentConfig, task: str, table: pa.Table, uri: str, classes: list | None) -> np.ndarray:
    tc, column = cfg.tasks[task], cfg.label_of(task)
    col = table.column(column)
    values = col.to_pylist()
    where = storage.redact(uri)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            csv = (" (a CSV reads an empty cell, NA, N/A, null or nan as missing: a class written so needs another "
                   "name)") if uri.split("?")[0].endswith(".csv") else ""
            raise DataError(f"row {i} of label column {column!r} (task {task!r}) in {where} is null/NaN; "
                            f"drop or fill unlabeled rows{csv}")
    if tc.type == "regression":
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise DataError(f"label column {column!r} of regression task {task!r} has type {col.type}; it must be numeric")
        big = np.flatnonzero(~(np.abs(np.asarray(values, np.float64)) < F32_MAX))    # inf, or inf as float32
        if len(big):
            raise DataError(f"row {big[0]} of label column {column!r} (task {task!r}) in {where} is {values[big[0]]!r}: "
                            f"regression labels must be finite and smaller than {F32_MAX:.3g} (float32); fix or drop "
                            f"the row, or rescale the labels")
        _float32_holds(np.asarray(values, np.float64), column=column, task=task, where=where)
        return np.asarray(values, np.float32)
    if tc.type == "binary":
        bad = [i for i, v in enumerate(values) if v not in (0, 1, True, False)]
        if bad:
            raise DataError(f"row {bad[0]} of label column {column!r} (binary task {task!r}) in {where} is "
                            f"{values[bad[0]]!r}, not 0/1; map labels to 0/1 or use type: classification")
        return np.asarray(values, np.float32)
    index = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(values), np.int32)
    for i, v in enumerate(values):
        j = index.get(str(v))
        if j is None:
            hint = "add it to 'classes'" if tc.classes else "the training data never has this label"
            raise DataError(f"row {i} of label column {column!r} (task {task!r}) in {where}: label {v!r} is not one "
                            f"of the classes {classes}; {hint}")
        out[i] = j
    return out


def _float32_holds(y: np.ndarray, *, column: str, task: str, where: str) -> None:
    """Regression labels train and are scored as float32: refused when that loses more than 0.1% of their spread
    (unix times, large ids: 1.7e9 + 0..600 s rounds to steps of 128)."""
    spread = float(y.std()) if len(y) else 0.0
    lost = float(np.abs(y - y.astype(np.float32)).max()) if len(y) else 0.0
    if spread > 0 and lost > 1e-3 * spread:
        raise DataError(f"label column {column!r} of regression task {task!r} in {where}: values near "
                        f"{float(y.mean()):.6g} with a spread of {spread:.3g} lose up to {lost:.3g} as float32 (what "
                        f"training and scoring use): subtract an offset from the column (e.g. its minimum, "
                        f"{float(y.min()):.10g})")


def one_spelling(cfg: ExperimentConfig, src: Source) -> None:
    """A CSV column whose every cell is a number is read as numbers: the classes '007' and '7' (or '1' and '1.0')
    would train and score as one class. Refused: which spellings are one class is the user's to say."""
    for task, tc in cfg.tasks.items():
        column = cfg.label_of(task)
        if tc.type != "classification" or src.label_text is None or column not in src.label_text.column_names:
            continue
        first = {}
        for v, text in zip(src.labels.column(column).to_pylist(), src.label_text.column(column).to_pylist()):
            if v is not None and first.setdefault(v, text) != text:
                raise DataError(f"labels {first[v]!r} and {text!r} of column {column!r} (task {task!r}) in "
                                f"{storage.redact(src.uri)} both read as one number, {v!r}, so one class; write "
                                f"each class one way, or give classes names that are not numbers")


def class_list(cfg: ExperimentConfig, task: str, table: pa.Table) -> list:
    tc = cfg.tasks[task]
    if tc.classes is not None:
        return list(tc.classes)
    seen = {v for v in table.column(cfg.label_of(task)).to_pylist() if v is not None}
    return sorted(seen, key=lambda v: (isinstance(v, str), v))
