"""What the driver learned about the data (``DataSpec``: shipped to every worker as a plain dict), where one
split's images are (``Source``), and the checked data cut into units (``PreparedData``)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class DataSpec:
    image_shape: tuple[int, int, int]   # what reaches the model, after resizing and channel conversion
    image_kind: str                     # paths | bytes | pixels
    pixel_dtype: str                    # uint8 (decoded files, 0-255) | float32 (pixel lists, as stored)
    classes: dict[str, list]            # classification task -> labels in index order
    label_mean: dict[str, float]        # regression task -> train mean (targets are standardized)
    label_std: dict[str, float]
    n_train: int
    n_val: int
    fingerprint: str
    max_pixel: float = 255.0            # largest pixel value in the sample

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(**{**d, "image_shape": tuple(d["image_shape"])})

    @property
    def decoded_bytes_per_image(self) -> int:
        return math.prod(self.image_shape) * (1 if self.pixel_dtype == "uint8" else 4)


@dataclass
class Source:
    """One split's labels (all rows) and where its images are."""
    uri: str
    labels: pa.Table                    # label columns (+ the path column of a manifest)
    kind: str                           # paths | bytes | pixels
    pixels: np.ndarray | None = None    # builtin only: in memory
    paths: list[str] | None = None      # manifest: resolved image locations
    raw_paths: list[str] | None = None  # manifest: the image paths as written in it
    row_groups: list[tuple[str, int, int, int]] = field(default_factory=list)   # (file, group, first row, rows)
    shape_meta: tuple | None = None
    label_text: pa.Table | None = None  # CSV: label columns read as numbers, their cells as written


@dataclass
class PreparedData:
    spec: DataSpec
    train_units: list[dict]
    val_units: list[dict]
    overlap: dict = field(default_factory=dict)   # validation images also in training (``leakage.overlap``)
