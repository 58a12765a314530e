"""The embedded default data, made offline from scikit-learn's bundled 8x8 digits.

``multidigits`` ("MultiDigits-8x8" of the team's science notes): a 12x12 canvas with one digit at (0, 0) and
another at (4, 4), combined by pixel-wise max, so the two digits overlap and compete for the same
pixels. Tasks: ``left`` and ``right`` (which digit), and ``sum`` (their sum, a regression).
The *target* uses digits 5-9; the *source* (for pretraining the built-in backbone) uses 0-4.
Base digit images are split 70/30 before compositing, so validation canvases are made of digit
images the model never saw.

Names: ``builtin:multidigits/train``, ``builtin:multidigits/val``,
``builtin:multidigits-source/train``, ``builtin:multidigits-source/val``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import DataError

IMAGE_SHAPE = (12, 12, 1)
_SIZES = {"train": 4000, "val": 1000}
_SETS = {"multidigits": (5, 6, 7, 8, 9), "multidigits-source": (0, 1, 2, 3, 4)}
NAMES = [f"builtin:{s}/{p}" for s in _SETS for p in _SIZES]


def composites(digits: tuple[int, ...], part: str, *, n: int | None = None, seed: int = 0) -> dict:
    """Arrays for one split: image (n, 12, 12, 1) float32 in [0, 1], left, right, sum."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.isin(bunch.target, digits)
    images, labels = bunch.images[keep] / 16.0, bunch.target[keep]
    order = np.random.default_rng(0).permutation(len(labels))  # fixed base split, whatever the seed
    cut = int(0.7 * len(order))
    base = order[:cut] if part == "train" else order[cut:]
    rng = np.random.default_rng(seed + (0 if part == "train" else 1))
    n = n or _SIZES[part]
    a, b = rng.choice(base, n), rng.choice(base, n)
    canvas = np.zeros((n, 12, 12), np.float32)
    canvas[:, 0:8, 0:8] = images[a]
    canvas[:, 4:12, 4:12] = np.maximum(canvas[:, 4:12, 4:12], images[b])
    left, right = labels[a].astype(np.int64), labels[b].astype(np.int64)
    return {"image": canvas[..., None], "left": left, "right": right, "sum": (left + right).astype(np.float32)}


def image_table(arrays: dict) -> pa.Table:
    """A Parquet-ready table: image as a fixed-size list column, shape in the schema metadata."""
    img = np.ascontiguousarray(arrays["image"], dtype=np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), int(np.prod(img.shape[1:])))
    cols = {"image": flat, **{k: v for k, v in arrays.items() if k != "image"}}
    meta = {b"orchestrator.image_shape": ",".join(map(str, img.shape[1:])).encode()}
    return pa.table(cols).replace_schema_metadata(meta)


def load(name: str) -> pa.Table:
    """The table behind ``builtin:NAME/PART``."""
    body = name.removeprefix("builtin:")
    dataset, _, part = body.partition("/")
    if dataset not in _SETS or part not in _SIZES:
        raise DataError(f"unknown built-in data set {name!r}; use one of {NAMES}")
    return image_table(composites(_SETS[dataset], part))
