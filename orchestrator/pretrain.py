"""Pretrain the built-in backbone on the *source* task (digits 0-4), in process, and cache it.

The backbone is trained exactly like a trial (same model code, same step), on one process
with TensorFlow's default strategy, then saved to ``<storage>/backbones/digits-cnn-v1.keras``.
"""
from __future__ import annotations

import os
import tempfile

from .backbones import BUILTIN_FILE
from .config import ExperimentConfig, parse_config

SOURCE = {
    "name": "pretrain-source",
    "data": {"train": "builtin:multidigits-source/train", "validation": "builtin:multidigits-source/val"},
    "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
    "backbone": {"kind": "builtin", "weights": "none"},
    "heads": {"hidden_units": 0},
    "train": {"epochs": 8, "batch_size": 64, "backbone_lr": 2e-3, "head_lr": 2e-3, "seed": 0},
}


def backbone_uri(storage: str) -> str:
    return f"{storage.rstrip('/')}/{BUILTIN_FILE}"


def exists(storage: str) -> bool:
    from .data import filesystem
    import pyarrow.fs as pafs

    fs, path = filesystem(backbone_uri(storage))
    return fs.get_file_info(path).type == pafs.FileType.File


def pretrain(storage: str, *, force: bool = False, out=print) -> dict:
    """Train and save the source backbone unless cached. Returns its source-task metrics."""
    uri = backbone_uri(storage)
    if exists(storage) and not force:
        out(f"built-in backbone cached at {uri}")
        return {}
    import tensorflow as tf

    from .data import filesystem, prepare, to_arrays
    from .worker import format_epoch, fit_arrays

    cfg: ExperimentConfig = parse_config({**SOURCE, "storage": storage})
    train, val, spec = prepare(cfg)
    arrays = [to_arrays(t, cfg.tasks) for t in (train, val)]
    out(f"pretraining the built-in backbone on the source task (digits 0-4, {spec.n_train} images) ...")
    mt, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, *arrays,
                           on_epoch=lambda m, *_: out("  " + format_epoch(m, cfg.train.epochs)))
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with tempfile.TemporaryDirectory() as d:   # write locally, then copy: no half-written file in storage
        local = os.path.join(d, "backbone.keras")
        mt.backbone.save(local)
        tmp = path + ".partial"
        with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
            dst.write(src.read())
        fs.move(tmp, path)
    final = state["history"][-1]
    out(f"saved built-in backbone to {uri} (source left_accuracy={final['left_accuracy']:.3f}, "
        f"right_accuracy={final['right_accuracy']:.3f})")
    return final
