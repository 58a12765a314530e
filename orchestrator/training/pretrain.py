"""Pretrain the built-in backbone on the *source* task (digits 0-4), in process, and cache it.

The backbone is trained exactly like a trial (same model code, same step), on one process
with TensorFlow's default strategy, then saved to ``<storage>/backbones/digits-cnn-v1.keras``.
"""
from __future__ import annotations

import os
import shutil

from .. import layout, scratch, storage
from ..config.schema import ExperimentConfig, parse_config

SOURCE = {
    "name": "pretrain-source",
    "data": {"train": "builtin:multidigits-source/train", "validation": "builtin:multidigits-source/val"},
    "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
    "backbone": {"kind": "builtin", "weights": "none"},
    "heads": {"hidden_units": 0},
    "train": {"epochs": 8, "batch_size": 64, "backbone_lr": 2e-3, "head_lr": 2e-3, "seed": 0},
}


def exists(storage_location: str) -> bool:
    return storage.is_file(layout.builtin_backbone(storage_location))


def pretrain(storage_location: str, *, force: bool = False, out=print, epoch_out=None) -> dict:
    """Train and save the source backbone unless cached. Returns its source-task metrics.
    ``out`` gets the start and end lines, ``epoch_out`` (if given) one line per epoch."""
    uri = layout.builtin_backbone(storage_location)
    if exists(storage_location) and not force:
        out(f"built-in backbone cached at {storage.redact(uri)}")
        return {}
    from ..console import quiet_tensorflow

    tf = quiet_tensorflow()
    from ..data.pipeline import load_arrays
    from .loop import fit_arrays, format_epoch

    cfg: ExperimentConfig = parse_config({**SOURCE, "storage": storage_location})
    train, val, spec = load_arrays(cfg)
    out(f"pretraining the built-in backbone on the source task (digits 0-4, {spec.n_train} images, "
        f"{cfg.train.epochs} epochs) ...")
    mt, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train, val,
                           on_epoch=(lambda m, *_: epoch_out("  " + format_epoch(m, cfg.train.epochs)))
                           if epoch_out else None)
    d = scratch.mkdtemp()   # save locally, then one atomic write: never a torn cache file
    try:
        local = os.path.join(d, "backbone.keras")
        mt.backbone.save(local)
        with open(local, "rb") as f:
            storage.atomic_write(uri, f.read())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    final = state["history"][-1]
    out(f"saved built-in backbone to {storage.redact(uri)} (source left_accuracy={final['left_accuracy']:.3f}, "
        f"right_accuracy={final['right_accuracy']:.3f})")
    return final
