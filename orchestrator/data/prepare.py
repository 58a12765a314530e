"""Driver-side data checks, before any Ray work starts. Never decodes the data set on the driver.

The driver reads the schema, every label (and, for a manifest, every image path), and a sample of
images; it checks them, and cuts the data into *units* (a few hundred rows each: their labels plus
where their images are) that Ray Data decodes on the cluster (``data.pipeline``). Every
problem is a ``DataError`` naming the file, the row and the fix.

Sources, by the type of the image column:
- a string column: a **manifest** (Parquet or CSV) of image file paths or URIs, relative ones
  resolving against the manifest's folder;
- a binary column: encoded PNG/JPEG bytes inside Parquet;
- a list / fixed-size list column: pixel values inside Parquet;
- ``builtin:NAME``: the embedded default (pixels made in memory from scikit-learn's digits).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa

from .. import storage
from ..config.paths import backbone_files
from ..config.schema import ExperimentConfig
from ..errors import DataError
from .decode import conform, decode_options, decode_unit
from .leakage import overlap
from .sources import class_list, labels, one_spelling, read_source
from .spec import DataSpec, PreparedData, Source

UNIT_ROWS = {"paths": 128, "bytes": 256, "pixels": 1024}
SAMPLE = 48


# -- a sample of images --------------------------------------------------------------------------
def sample_rows(n: int, seed: int) -> np.ndarray:
    """Every row of a small set; else the first rows plus a random spread."""
    if n <= SAMPLE:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.unique(np.concatenate([np.arange(16), rng.choice(n, SAMPLE - 16, replace=False)]))


def _check_paths_exist(src: Source) -> None:
    """Local image files: every one must exist (a stat each; remote ones are only sampled)."""
    for i, p in enumerate(src.paths):
        if not storage.is_uri(p) and not os.path.isfile(p):
            raise DataError(f"image file {storage.redact(p)} (row {i} of {storage.redact(src.uri)}) not found: fix the path or drop "
                            f"the row (relative paths resolve against the manifest's folder)")


def sample_images(src: Source, rows, *, cfg: ExperimentConfig) -> np.ndarray:
    """Decoded images of some rows of a source, (n, H, W, C), by the cluster's own decoder: the rows are cut into
    units as for training and each unit goes through ``decode.decode_unit``."""
    units = make_units(src, np.asarray(rows, np.int64), {}, shuffle_seed=None)
    opts = decode_options(cfg.model_dump(mode="json"))
    images, where = [], []
    for unit in units:
        images += list(decode_unit(unit, opts)["image"])
        where += _where(src, unit)
    return conform(images, size=None, color_mode="keep", where=where)   # one shape for all, or a clear error


def _where(src: Source, unit: dict) -> list[str]:
    if src.kind == "paths":
        return [f"image {storage.redact(p)} (row {r} of {storage.redact(src.uri)})" for p, r in zip(unit["paths"], unit["rows"])]
    return [f"row {r} of the image column in {storage.redact(src.uri)}" for r in unit["rows"]]


# -- units: what Ray Data decodes ----------------------------------------------------------------
def make_units(src: Source, rows: np.ndarray, y: dict[str, np.ndarray], *, shuffle_seed: int | None,
               workers: int = 1) -> list[dict]:
    """Cut ``rows`` of a source into units of up to a few hundred rows: labels, row numbers, where the
    images are. At least four units per worker, so every worker gets a share.

    File paths can be read in any order, so their rows are shuffled across units (``shuffle_seed``);
    Parquet units stay inside one row group."""
    rows = np.asarray(rows, np.int64)
    if src.kind == "paths" and shuffle_seed is not None:
        rows = np.random.default_rng(shuffle_seed).permutation(rows)
    size = int(min(UNIT_ROWS[src.kind], max(1, len(rows) // (4 * workers))))
    units = []
    if src.kind in ("paths", "pixels") and not src.row_groups:
        for start in range(0, len(rows), size):
            r = rows[start:start + size]
            unit = {"rows": r, "source": storage.redact(src.uri), "y": {t: v[r] for t, v in y.items()}}
            if src.kind == "paths":
                unit["paths"] = [src.paths[i] for i in r]
            else:
                unit["pixels"] = np.ascontiguousarray(src.pixels[r])
            units.append(unit)
        return units
    rows = np.sort(rows)
    for file, group, first, count in src.row_groups:
        lo, hi = np.searchsorted(rows, [first, first + count])
        for start in range(lo, hi, size):
            r = rows[start:min(hi, start + size)]
            units.append({"rows": r, "source": storage.redact(src.uri), "y": {t: v[r] for t, v in y.items()},
                          "parquet": (file, group, (r - first).astype(np.int64)), "shape": src.shape_meta})
    return units


def _fingerprint(cfg: ExperimentConfig, *sources: Source) -> str:
    d = cfg.data
    h = hashlib.sha256(repr((d.image_size, d.color_mode, d.image_shape, d.split_seed, d.validation)).encode())
    for src in sources:
        h.update(src.uri.encode() if src.uri.startswith("builtin:") else b"")
        for name in src.labels.column_names:
            h.update(name.encode())
            for chunk in src.labels.column(name).chunks:
                # a dictionary column's buffers are its indices only, a slice's its parent's: both said in full
                # (other columns hash as they did, so their fingerprints stay)
                if pa.types.is_dictionary(chunk.type) or chunk.offset:
                    chunk = chunk.dictionary_decode() if pa.types.is_dictionary(chunk.type) else chunk
                    h.update(f"{chunk.type}:{chunk.offset}:{len(chunk)}".encode())
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(memoryview(buf))
        for p in src.paths or []:
            h.update(p.encode())
        for file, group, first, count in src.row_groups:
            h.update(f"{storage.redact(file)}:{group}:{first}:{count}".encode())
        if src.pixels is not None:
            h.update(np.ascontiguousarray(src.pixels).tobytes())
        h.update(repr(_file_stats(src)).encode())
    loaded = backbone_files(cfg.backbone)
    if loaded:   # named by path in the config: one rewritten in place (a newer export) is other work
        h.update(repr(storage.file_stats(loaded)).encode())
    return h.hexdigest()[:16]


def _file_stats(src: Source) -> list:
    """(size, mtime) of every file behind the labels, so that content rewritten in place is other data: every Parquet
    file and every image file (behind URIs: from one listing per folder). What it trades: a copy of the same files
    (new mtimes) is other data too, so done work is trained again there rather than a changed file's results
    reused."""
    return storage.file_stats(list(src.paths or []) + sorted({file for file, *_ in src.row_groups}))


# -- the whole check -----------------------------------------------------------------------------
def prepare(cfg: ExperimentConfig) -> PreparedData:
    """Read labels, check them and a sample of images, split, cut into units (enough for the most
    workers a run or sweep can have). Raises DataError."""
    d = cfg.data
    label_columns = sorted({cfg.label_of(t) for t in cfg.tasks})
    train = read_source(d.train, d.image_column, label_columns, allow_outside=d.allow_outside)
    one_spelling(cfg, train)
    n = train.labels.num_rows
    if n == 0:
        raise DataError(f"data set {storage.redact(d.train)!r} has no rows: point data.train at non-empty data")
    classes = {t: class_list(cfg, t, train.labels) for t, tc in cfg.tasks.items() if tc.type == "classification"}
    for t, cl in classes.items():
        if len(cl) < 2:
            raise DataError(f"task {t!r} has only {len(cl)} class(es) in the training data; it needs at least 2")
    y_train = {t: labels(cfg, t, train.labels, d.train, classes.get(t)) for t in cfg.tasks}
    binary = _binary_classes(cfg, y_train)
    sources = [train]
    if isinstance(d.validation, str):
        val = read_source(d.validation, d.image_column, label_columns, allow_outside=d.allow_outside)
        one_spelling(cfg, val)
        if val.labels.num_rows == 0:
            raise DataError(f"data set {storage.redact(d.validation)!r} has no rows: point data.validation at "
                            f"non-empty data")
        y_val = {t: labels(cfg, t, val.labels, d.validation, classes.get(t)) for t in cfg.tasks}
        train_rows, val_rows = np.arange(n), np.arange(val.labels.num_rows)
        sources.append(val)
    else:
        order = np.random.default_rng(cfg.data.split_seed).permutation(n)
        cut = int(round(n * (1 - d.validation)))
        if cut < 1 or cut >= n:
            raise DataError(f"{n} rows are too few to hold out {d.validation:.0%} for validation")
        train_rows, val_rows, val, y_val = np.sort(order[:cut]), np.sort(order[cut:]), train, y_train
    for src in sources:
        if src.kind == "paths":
            _check_paths_exist(src)
    sample = sample_images(train, sample_rows(n, cfg.data.split_seed), cfg=cfg)
    if val is not train:
        vs = sample_images(val, sample_rows(val.labels.num_rows, cfg.data.split_seed), cfg=cfg)
        if vs.shape[1:] != sample.shape[1:]:
            raise DataError(f"validation images are {list(vs.shape[1:])} but training images are "
                            f"{list(sample.shape[1:])}; set data.image_size (and data.color_mode) so they match")
        if vs.dtype != sample.dtype:   # the workers cast to the training side's type: [0, 1] floats become 0
            raise DataError(f"validation images are {_stored_as(vs)} but training images are {_stored_as(sample)}; "
                            f"store both sides the same way (image files/bytes, or pixel tables on one scale)")
        _one_scale(float(sample.max()), float(vs.max()))
    _every_class_trains(cfg, {**classes, **binary}, y_train, train_rows, held=(y_val, val_rows, val is train))
    reg = [t for t, tc in cfg.tasks.items() if tc.type == "regression"]
    yt = {t: v[train_rows].astype(np.float64) for t, v in y_train.items()}   # float64: no overflow in mean/std
    spec = DataSpec(image_shape=tuple(int(s) for s in sample.shape[1:]), image_kind=train.kind,
                    pixel_dtype="uint8" if sample.dtype == np.uint8 else "float32", classes=classes,
                    label_mean={t: float(yt[t].mean()) for t in reg}, label_std={t: float(yt[t].std()) or 1.0 for t in reg},
                    n_train=len(train_rows), n_val=len(val_rows), fingerprint=_fingerprint(cfg, *sources),
                    max_pixel=float(sample.max()))
    seed, workers = cfg.data.split_seed, most_workers(cfg)
    return PreparedData(spec, make_units(train, train_rows, y_train, shuffle_seed=seed, workers=workers),
                        make_units(val, val_rows, y_val, shuffle_seed=None, workers=workers),
                        overlap=overlap(train, train_rows, val, val_rows, image_column=d.image_column))


def _binary_classes(cfg: ExperimentConfig, y: dict) -> dict:
    """Each binary task's classes, [0, 1], once its training labels hold both (all 0 would train a constant)."""
    binary = {t: [0, 1] for t, tc in cfg.tasks.items() if tc.type == "binary"}
    for t in binary:
        if len(values := np.unique(y[t])) < 2:
            raise DataError(f"task {t!r} has only one label value ({int(values[0])}) in the training data; a binary "
                            f"task needs rows of both 0 and 1")
    return binary


def _every_class_trains(cfg: ExperimentConfig, classes: dict, y: dict, train_rows: np.ndarray, *,
                        held: tuple[dict, np.ndarray, bool]) -> None:
    """A class whose rows are all validation rows (``held``: labels, rows, and whether they are a split of the
    training table) would train on no example of it: the split held them all out, or, with the classes listed, only
    a validation table of its own has them."""
    y_val, val_rows, split = held
    for task, names in classes.items():
        trained, scored = (np.bincount(v[task].astype(np.int64)[rows], minlength=len(names))   # binary 0/1: floats
                           for v, rows in ((y, train_rows), (y_val, val_rows)))
        missing = [names[i] for i in np.flatnonzero((scored > 0) & (trained == 0))]
        if not missing:
            continue
        what, count = (f"label {missing[0]}" if cfg.tasks[task].type == "binary" else f"class {missing[0]!r}",
                       scored[names.index(missing[0])])
        raise DataError(f"{what} of task {task!r} has no training rows: " + (
            f"data.split_seed {cfg.data.split_seed} holds out all {count} of its rows for validation; add rows of "
            f"it, lower data.validation or change data.split_seed" if split else
            f"only the validation table has rows of it ({count}); add training rows of it, or drop it from the "
            f"validation table and tasks.{task}.classes"))


def _one_scale(train_max: float, val_max: float) -> None:
    """Pixel tables on [0, 1] beside ones on [0, 255] (sampled maxima): the model would see one side at 1/255 of
    the other's scale, and score it without a word."""
    low, high = sorted((train_max, val_max))
    if low <= 1.0 < 2.0 < high:
        raise DataError(f"validation pixels reach {val_max:g} but training pixels reach {train_max:g} (in the rows "
                        f"sampled): one side is scaled to [0, 1], the other to [0, 255]; store both on one scale")


def _stored_as(sample: np.ndarray) -> str:
    return ("uint8 pixels 0-255 (image files or bytes)" if sample.dtype == np.uint8
            else f"float pixel lists (max {float(sample.max()):.4g})")


def most_workers(cfg: ExperimentConfig) -> int:
    if cfg.search is not None:
        from ..config.space import largest

        return int(largest(cfg.search, "resources.workers", cfg.resources.workers))
    return cfg.resources.workers
