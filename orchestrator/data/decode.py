"""The one decoder: images and pixel lists into arrays, for the driver's sample and on the cluster alike (a *unit*,
``prepare.make_units``, in; decoded arrays out). Pure numpy + Pillow + pyarrow: no TensorFlow, so the Ray Data tasks
that decode stay light.

The input convention (README, "Images"): decoded PNG/JPEG files and bytes give uint8 pixels 0-255,
height x width x channels; pixel lists stay as stored (float32). A ``keras.applications`` backbone
expects 0-255 and applies its own ``preprocess_input`` inside the model.
"""
from __future__ import annotations

import io
import math
import re
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError

_MODES = {"rgb": "RGB", "grayscale": "L"}


def decode_image(data: bytes, *, where: str, size: Optional[Sequence[int]] = None,
                 color_mode: str = "keep") -> np.ndarray:
    """Encoded bytes (PNG, JPEG, ...) -> uint8 array (H, W, C); resized (bilinear) to ``size`` = (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            _scalable(img, where=where)
            img = _eight_bit(img)
            if color_mode in _MODES:
                img = img.convert(_MODES[color_mode])
            elif img.mode not in ("L", "RGB"):
                img = img.convert("RGBA" if "A" in img.getbands() and img.mode != "LA" else
                                  ("L" if img.mode in ("LA", "1") else "RGB"))
                if img.mode == "RGBA":
                    img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e).splitlines()[0])[:120] if str(e) \
            else type(e).__name__
        raise DataError(f"{where} is not a decodable image ({reason}): fix or remove it") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _scalable(img, *, where: str) -> None:
    """32-bit images (float, or integer outside the 16-bit formats that Pillow opens as mode I) have no fixed range
    to scale to 0-255 from: a float in [0, 1] became 0/1, an integer 0-255 scaled as 16-bit became black."""
    if img.mode == "F" or (img.mode == "I" and img.format not in ("PNG", "PPM")):
        kind = "32-bit float" if img.mode == "F" else "32-bit integer"
        raise DataError(f"{where} is a {kind} image, which has no fixed pixel range to scale from: convert it to an "
                        f"8- or 16-bit image (e.g. PNG), or store its pixels as float lists in Parquet")


def _eight_bit(img):
    """16-bit grayscale (Pillow modes I;16* and I, as 16-bit PNGs open) scaled to 0-255: Pillow's own conversion
    to L clips every value above 255."""
    from PIL import Image

    if img.mode != "I" and not img.mode.startswith("I;16"):
        return img
    wide = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")


def resize_pixels(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize float pixels (H, W, C) bilinearly, channel by channel (Pillow's float mode)."""
    from PIL import Image

    if tuple(arr.shape[:2]) == tuple(size):
        return arr
    channels = [np.asarray(Image.fromarray(arr[..., c].astype(np.float32), mode="F")
                           .resize((int(size[1]), int(size[0])), Image.BILINEAR)) for c in range(arr.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32)


def convert_channels(arr: np.ndarray, color_mode: str, *, where: str) -> np.ndarray:
    if color_mode == "rgb" and arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if color_mode == "grayscale" and arr.shape[-1] == 3:
        return (arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(arr.dtype)
    if color_mode != "keep" and arr.shape[-1] not in (1, 3):
        raise DataError(f"{where} has {arr.shape[-1]} channels; color_mode {color_mode} converts 1 or 3")
    return arr


def pixel_array(col: pa.ChunkedArray | pa.Array, *, shape: Optional[Sequence[int]], where: str) -> np.ndarray:
    """(n, H, W, C) float32 from a fixed-size list, list or nested-list column."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.null_count:
        row = pc.index(pc.is_null(col), True).as_py()
        raise DataError(f"row {row} of the image column in {where} is null; drop rows without an image")
    depth, inner = 0, col
    while pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type) or pa.types.is_fixed_size_list(inner.type):
        lengths = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.argmax(lengths != lengths[0]))
            raise DataError(f"the image column in {where} is ragged: row {row} has {lengths[row]} values where row 0 "
                            f"has {lengths[0]}; make every image the same size")
        inner, depth = inner.flatten(), depth + 1
    if not (pa.types.is_integer(inner.type) or pa.types.is_floating(inner.type)):
        raise DataError(f"the image column in {where} holds {inner.type}, not numbers: store pixel values")
    flat = inner.to_numpy(zero_copy_only=False).astype(np.float32)
    n = len(col)
    arr = flat.reshape(n, -1) if depth == 1 else flat.reshape(n, *_nested_shape(col, depth))
    if arr.ndim == 3:
        arr = arr[..., None]
    if not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr.reshape(n, -1)).all(axis=1)))
        raise DataError(f"row {row} of the image column in {where} has NaN/inf pixels; clean that row")
    if arr.ndim == 2:   # flat vectors: need a shape
        if shape is None:   # never guessed: 256 values may be 16x16 gray, 32x8 gray or 8x8 RGBA
            side = math.isqrt(arr.shape[1])
            example = f" (e.g. [{side}, {side}, 1] for square grayscale)" if side * side == arr.shape[1] else ""
            raise DataError(f"the image column in {where} holds flat vectors of {arr.shape[1]} values and no shape: "
                            f"set data.image_shape: [height, width, channels]{example}")
        if math.prod(shape) != arr.shape[1]:
            raise DataError(f"the image column in {where} has {arr.shape[1]} values per image but data.image_shape "
                            f"{list(shape)} needs {math.prod(shape)}; fix data.image_shape or the data")
        arr = arr.reshape(n, *shape)
    elif shape is not None and tuple(arr.shape[1:]) != tuple(shape):
        raise DataError(f"images in {where} are {list(arr.shape[1:])} but data.image_shape is {list(shape)}; "
                        f"fix data.image_shape or resize the images")
    elif shape is None and arr.shape[1] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        raise DataError(f"images in {where} are {list(arr.shape[1:])}: channels first (C, H, W), as PyTorch stores "
                        f"them, where (H, W, C) is read; store them channels last (numpy: x.transpose(1, 2, 0)), or "
                        f"set data.image_shape: {list(arr.shape[1:])} if that is height, width, channels")
    return arr


def _nested_shape(col: pa.Array, depth: int) -> list[int]:
    shape, inner = [], col
    for _ in range(depth):
        shape.append(int(pc.list_value_length(inner)[0].as_py()) if len(inner) else 0)
        inner = inner.flatten()
    return shape


def conform(images: list[np.ndarray], *, size: Optional[Sequence[int]], color_mode: str,
            where: Sequence[str]) -> np.ndarray:
    """Stack decoded images into (n, H, W, C), resizing and converting channels as configured."""
    out = []
    for img, w in zip(images, where):
        img = convert_channels(img, color_mode, where=w)
        if size is not None:
            img = resize_pixels(img, size) if img.dtype != np.uint8 else img
        if out and img.shape != out[0].shape:
            what = "channels" if img.shape[:2] == out[0].shape[:2] else "sizes"
            fix = ("set data.color_mode: rgb (or grayscale)" if what == "channels"
                   else "set data.image_size: [height, width] to resize every image on decode")
            raise DataError(f"images differ in {what}: {where[0]} is {list(out[0].shape)}, {w} is {list(img.shape)}; "
                            f"{fix}")
        out.append(img)
    return np.stack(out)


# -- units: what the driver samples and what Ray Data decodes on the cluster --------------------------
def decode_options(cfg_dict: dict, spec_dict: dict | None = None) -> dict:
    """What decoding needs (plain values, cheap to ship). ``stored_shape``: how flat pixel lists are stored
    (``data.image_shape``; else a Parquet file's shape metadata, carried by its units). Without ``spec_dict`` (the
    driver's sample, which finds the shape) decoded images are not checked against a shape or cast."""
    d = cfg_dict["data"]
    return {"image_column": d["image_column"], "image_size": d["image_size"], "color_mode": d["color_mode"],
            "stored_shape": d["image_shape"],
            "image_shape": tuple(spec_dict["image_shape"]) if spec_dict else None,
            "pixel_dtype": spec_dict["pixel_dtype"] if spec_dict else None}


def decode_unit(unit: dict, opts: dict) -> dict:
    """One unit -> {"image": (n, H, W, C), "y_<task>": (n,), "row": (n,)}."""
    rows, source = unit["rows"], unit["source"]
    imgs = np.asarray(_images(unit, opts))
    if opts["image_shape"] is not None and tuple(imgs.shape[1:]) != tuple(opts["image_shape"]):
        raise DataError(f"row {rows[0]} of {source}: images are {list(imgs.shape[1:])}, the sample was "
                        f"{list(opts['image_shape'])}; set data.image_size (and data.color_mode) so all images match")
    if opts["pixel_dtype"] is not None:
        imgs = imgs.astype(opts["pixel_dtype"], copy=False)
    return {"image": imgs, "row": np.asarray(rows, np.int64), **{f"y_{t}": v for t, v in unit["y"].items()}}


def _images(unit: dict, opts: dict):
    rows, source = unit["rows"], unit["source"]
    size, color = opts["image_size"], opts["color_mode"]
    if "pixels" in unit:
        imgs = unit["pixels"]
        if size is None and color == "keep":
            return imgs
        return conform(list(imgs), size=size, color_mode=color, where=[f"row {r} of {source}" for r in rows])
    if "paths" in unit:
        from ..storage import read_bytes_or_fail, redact

        where = [f"image {redact(p)} (row {r} of {source})" for p, r in zip(unit["paths"], rows)]
        return conform([decode_image(read_bytes_or_fail(p, where=w), where=w, size=size, color_mode=color)
                        for p, w in zip(unit["paths"], where)], size=size, color_mode=color, where=where)
    import pyarrow.parquet as pq

    from ..storage import filesystem

    file, group, positions = unit["parquet"]
    fs, path = filesystem(file)
    col = pq.ParquetFile(path, filesystem=fs).read_row_group(group, columns=[opts["image_column"]]).column(0)
    col = col.take(pa.array(positions))
    where = [f"row {r} of the image column in {source}" for r in rows]
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        imgs = [decode_image(b, where=w, size=size, color_mode=color) for b, w in zip(col.to_pylist(), where)]
    else:
        imgs = list(pixel_array(col, shape=opts["stored_shape"] or unit.get("shape"), where=source))
    return conform(imgs, size=size, color_mode=color, where=where)
