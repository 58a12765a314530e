"""Backbones and their blocks. Knows nothing of Ray or Tune.

A backbone maps an image batch to a feature vector. Its *blocks* are an ordered grouping of its
weighted layers, from the input; ``freeze_depth`` counts blocks. Three kinds:
- ``builtin``: ``digits-cnn``, the small CNN `orchestrator pretrain` trains on the source task;
- ``application``: ``keras.applications`` by class name, ``weights: imagenet | none | <file>``;
- ``file``: a saved ``.keras`` model (loaded with ``safe_mode=True``).
"""
from __future__ import annotations

import os
import re
import tempfile

import keras

from .config import BackboneConfig, frozen_blocks
from .errors import ConfigError

BUILTIN_FILE = "backbones/digits-cnn-v1.keras"   # under the experiment's storage
_BLOCK = re.compile(r"^(.*?block_?\d+[a-z]?)(_|$)")


def digits_cnn(input_shape, *, seed: int = 0) -> keras.Model:
    """Five blocks: conv32, conv32+pool, conv64+pool, dense64, dense64 (science.md's pilot CNN)."""
    init = lambda i: keras.initializers.GlorotUniform(seed=seed + i)  # noqa: E731
    inp = keras.Input(input_shape, name="image")
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(1), name="block1_conv")(inp)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(2), name="block2_conv")(h)
    h = keras.layers.MaxPooling2D(name="block2_pool")(h)
    h = keras.layers.Conv2D(64, 3, padding="same", activation="relu", kernel_initializer=init(3), name="block3_conv")(h)
    h = keras.layers.MaxPooling2D(name="block3_pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", kernel_initializer=init(4), name="block4_dense")(h)
    h = keras.layers.Dense(64, activation="relu", kernel_initializer=init(5), name="block5_dense")(h)
    return keras.Model(inp, h, name="digits_cnn")


def local_copy(uri: str) -> str:
    """A local path for a file that may live behind a URI (s3://...)."""
    if "://" not in uri:
        return uri
    from .data import filesystem

    fs, path = filesystem(uri)
    fd, local = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
    with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
        out.write(src.read())
    return local


def build_backbone(cfg: BackboneConfig, input_shape, *, storage: str, seed: int = 0) -> keras.Model:
    if cfg.kind == "builtin":
        model = digits_cnn(input_shape, seed=seed)
        if cfg.weights == "pretrained":
            path = f"{storage.rstrip('/')}/{BUILTIN_FILE}"
            pretrained = keras.models.load_model(local_copy(path), safe_mode=True)
            model.set_weights(pretrained.get_weights())
        return model
    if cfg.kind == "file":
        model = keras.models.load_model(local_copy(cfg.path), safe_mode=True)
        if tuple(model.input_shape[1:]) != tuple(input_shape):
            raise ConfigError(f"backbone {cfg.path} expects inputs {list(model.input_shape[1:])} but images are "
                              f"{list(input_shape)}; set data.image_shape or use a matching backbone")
        return model
    ctor = getattr(keras.applications, cfg.name, None)
    if ctor is None or not callable(ctor):
        raise ConfigError(f"keras.applications has no model {cfg.name!r}; use a class name like MobileNetV2 or ResNet50")
    weights = {"none": None, "imagenet": "imagenet"}.get(cfg.weights, None)
    try:
        model = ctor(include_top=False, weights=weights, input_shape=tuple(input_shape), pooling="avg")
    except ValueError as e:
        raise ConfigError(f"backbone {cfg.name}: {str(e).splitlines()[0]}") from None
    if cfg.weights not in ("none", "imagenet"):
        model.load_weights(local_copy(cfg.weights))
    return model


def blocks(model: keras.Model, prefixes: list[str] | None = None) -> list[list[str]]:
    """Weighted layer names grouped into blocks, in input order.

    With ``prefixes``, block i holds the layers whose names start with ``prefixes[i]``. Otherwise
    names like ``conv2_block1_...``, ``block_3_...``, ``block4a_...`` group by that block key;
    weighted layers before the first block form a ``stem`` block, those after it join the previous
    one; models without such names get one block per weighted layer.
    """
    weighted = [layer.name for layer in model.layers if layer.weights]
    if prefixes:
        groups = [[n for n in weighted if n.startswith(p)] for p in prefixes]
        empty = [p for p, g in zip(prefixes, groups) if not g]
        if empty:
            raise ConfigError(f"backbone.blocks prefix {empty[0]!r} matches no weighted layer of {model.name}")
        return groups
    keys = [(_BLOCK.match(n).group(1) if _BLOCK.match(n) else None) for n in weighted]
    if not any(keys):
        return [[n] for n in weighted]
    groups: dict[str, list[str]] = {}
    current = "stem"
    for name, key in zip(weighted, keys):
        current = key or current
        groups.setdefault(current, []).append(name)
    return list(groups.values())


def freeze_mask(n_blocks: int, depth: int | str) -> list[bool]:
    """trainable flag per block: the first ``depth`` blocks are frozen ('all' = every block)."""
    frozen = frozen_blocks(depth, n_blocks)
    return [i >= frozen for i in range(n_blocks)]


def apply_freeze(model: keras.Model, groups: list[list[str]], depth: int | str) -> None:
    """The one place freezing happens. A frozen BatchNormalization runs in inference mode
    (Keras 3 semantics of ``trainable=False``), so its moving statistics stay fixed too."""
    for trainable, names in zip(freeze_mask(len(groups), depth), groups):
        for name in names:
            model.get_layer(name).trainable = trainable
