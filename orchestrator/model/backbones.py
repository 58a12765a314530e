"""Backbones and their blocks. Knows nothing of Ray or Tune.

A backbone maps an image batch to a feature vector. Its *blocks* are an ordered grouping of its
weighted layers, from the input; ``freeze_depth`` counts blocks. Three kinds:
- ``builtin``: ``digits-cnn``, the small CNN `orchestrator pretrain` trains on the source task;
- ``application``: ``keras.applications`` by class name, ``weights: imagenet | none | <file>``;
- ``file``: a saved ``.keras`` model (loaded with ``safe_mode=True``).
"""
from __future__ import annotations

import importlib
import re

from ..console import quiet_tensorflow

quiet_tensorflow()   # before Keras loads TensorFlow: its start-up lines go to a log, not to the user

import keras  # noqa: E402

from .. import layout, storage as store  # noqa: E402
from ..config.freezing import frozen_blocks  # noqa: E402
from ..config.schema import BackboneConfig  # noqa: E402
from ..errors import ConfigError  # noqa: E402

_BLOCK = re.compile(r"^(.*?block_?\d+[a-z]?)(_|$)")
# Inception-ResNet (keras.applications.InceptionResNetV2): a block's branch convolutions are unnamed (conv2d_N) and
# come before its named projection, which ends the block (block35_3_conv); the stem and the reduction blocks end at
# a concatenation (mixed_5b, mixed_6a, mixed_7a)
_BLOCK_END = re.compile(r"^(block(35|17|8)_\d+_conv|mixed_\w+)$")
# InceptionV3: unnamed convolutions, each Inception module ending at its concatenation (mixed0..mixed10)
_MODULE_END = re.compile(r"^mixed\d+$")
# models that name units, not blocks: MobileNet's depthwise + pointwise pair (conv_dw_1, conv_pw_1), MobileNetV3's
# expanded_conv, expanded_conv_1, ...
_UNIT = re.compile(r"^(?:conv_(?:dw|pw)_(\d+)|(expanded_conv(?:_\d+)?))(_|$)")


def digits_cnn(input_shape, *, seed: int = 0) -> keras.Model:
    """Five blocks: conv32, conv32+pool, conv64+pool, dense64, dense64 (the pilot CNN of the team's science notes)."""
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


@keras.saving.register_keras_serializable(package="orchestrator")
class Preprocess(keras.layers.Layer):
    """A ``keras.applications`` model's own ``preprocess_input``, inside the model: images go in as
    decoded pixels (0-255) and reach the backbone exactly as its ImageNet weights expect."""

    def __init__(self, application: str, **kwargs):
        super().__init__(**kwargs)
        self.application = application
        self._fn = preprocess_fn(application)

    def call(self, x):
        return self._fn(keras.ops.cast(x, "float32"))

    def get_config(self):
        return {**super().get_config(), "application": self.application}


def preprocess_fn(application: str):
    ctor = getattr(keras.applications, application, None)
    if ctor is None or not callable(ctor):
        raise ConfigError(f"keras.applications has no model {application!r}; use a class name like MobileNetV2 or "
                          f"ResNet50")
    return importlib.import_module(ctor.__module__).preprocess_input


SAFE_KERAS = (3, 12, 1)   # earlier versions have published safe_mode bypasses (e.g. CVE-2025-1550, CVE-2025-9906)


def check_keras(version: str) -> None:
    """ConfigError unless ``version`` of Keras has no published safe_mode bypass (users' model files run no code)."""
    parts = [int(re.match(r"\d*", p).group() or 0) for p in version.split(".")[:3]]
    if tuple(parts + [0] * (3 - len(parts))) < SAFE_KERAS:
        raise ConfigError(f"keras {version} has published safe_mode bypasses (a model file could run code): "
                          f"pip install 'keras>=3.12.1'")


def load_model_file(location: str, *, what: str) -> keras.Model:
    """A ``.keras`` file (local or URI), loaded with ``safe_mode=True``; ConfigError if missing or unloadable."""
    check_keras(keras.__version__)
    if not store.is_file(location):
        raise ConfigError(f"{what} {store.redact(location)} not found: fix the path (relative paths resolve "
                          f"against the config file's folder)")
    try:
        with store.local_file(location) as path:   # a copy of a remote file is deleted after loading
            return keras.models.load_model(path, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ConfigError(f"{what} {store.redact(location)} cannot be loaded ({store.first_line(e)}): is it a Keras 3 "
                          f".keras file?") from None


def application(cfg: BackboneConfig, input_shape, *, weights_file: str | None = None) -> keras.Model:
    """The ``keras.applications`` model itself (no preprocessing), with its weights."""
    ctor = getattr(keras.applications, cfg.name, None)
    if ctor is None or not callable(ctor):
        raise ConfigError(f"keras.applications has no model {cfg.name!r}; use a class name like MobileNetV2 or "
                          f"ResNet50")
    weights = "imagenet" if cfg.weights == "imagenet" else None
    try:
        model = ctor(include_top=False, weights=weights, input_shape=tuple(input_shape), pooling="avg")
    except ValueError as e:
        raise ConfigError(f"backbone {cfg.name}: {store.first_line(e)}") from None
    if cfg.weights not in ("none", "imagenet"):
        location = weights_file or cfg.weights
        if not store.is_file(location):
            raise ConfigError(f"backbone weights file {store.redact(cfg.weights)} not found: fix backbone.weights")
        try:
            with store.local_file(location) as path:
                model.load_weights(path)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"backbone weights {store.redact(cfg.weights)} do not fit {cfg.name} at input "
                              f"{list(input_shape)} ({store.first_line(e)})") from None
    return model


def build_backbone(cfg: BackboneConfig, input_shape, *, storage: str, seed: int = 0, file: str | None = None,
                   precision: str = "float32") -> keras.Model:
    """The backbone: image batch -> features. ``file``: a local copy of the model or weights file, if
    the caller already has one (workers get it through the object store). ``precision``: train.precision, which a
    file's layers must compute in (Keras restores their saved policies, not the global one)."""
    if cfg.kind == "builtin":
        if min(input_shape[:2]) < 4:   # two 2x2 poolings: Keras's own error was a traceback
            raise ConfigError(f"images of {list(input_shape)} are too small for the built-in backbone, which pools "
                              f"height and width twice (2x2): set data.image_size (at least [4, 4])")
        model = digits_cnn(input_shape, seed=seed)
        if cfg.weights == "pretrained":
            pretrained = load_model_file(file or layout.builtin_backbone(storage), what="pretrained built-in backbone")
            model.set_weights(pretrained.get_weights())
        return model
    if cfg.kind == "file":
        model = load_model_file(file or cfg.path, what="backbone file")
        if tuple(model.input_shape[1:]) != tuple(input_shape):
            raise ConfigError(f"backbone {store.redact(cfg.path)} expects inputs {list(model.input_shape[1:])} but "
                              f"images are {list(input_shape)}; set data.image_size / data.color_mode or use a "
                              f"matching backbone")
        check_features(model, what=f"backbone {store.redact(cfg.path)}")
        saved = sorted({layer.dtype_policy.name for layer in _within(model) if layer.weights
                        and not isinstance(layer, keras.Model)} - {"float32"}) or ["float32"]   # a float32 layer
        if saved != [precision]:   # in a mixed model (the last one, for stable outputs) is as mixed precision has it
            raise ConfigError(f"backbone {store.redact(cfg.path)} computes in {', '.join(saved)} (its layers' saved "
                              f"dtype policy) but train.precision is {precision}: set train.precision: {saved[0]}, or "
                              f"save the model under {precision}")
        return model
    app = application(cfg, input_shape, weights_file=file)
    inp = keras.Input(tuple(input_shape), name="image")
    return keras.Model(inp, app(Preprocess(cfg.name, name="preprocess")(inp)), name=f"{app.name}_backbone")


def check_features(model: keras.Model, *, what: str) -> None:
    """Heads take (batch, features): any other output would broadcast in the losses or fail in workers."""
    shape = list(model.output_shape) if not isinstance(model.output_shape, list) else None
    if shape is None or len(shape) != 2:
        shown = shape if shape is not None else [list(s) for s in model.output_shape]
        raise ConfigError(f"{what} outputs {shown}, not (batch, features): add pooling (e.g. pooling='avg') or "
                          f"use kind: application")


def block_model(backbone: keras.Model) -> keras.Model:
    """The model whose layers are grouped into blocks: the application inside the wrapper, if any."""
    inner = [layer for layer in backbone.layers if isinstance(layer, keras.Model)]
    return inner[0] if len(inner) == 1 and isinstance(backbone.get_layer(index=1), Preprocess) else backbone


def blocks(model: keras.Model, prefixes: list[str] | None = None, *, application: bool = False) -> list[list[str]]:
    """Weighted layer names grouped into blocks, in input order.

    With ``prefixes``, block i holds the layers whose names start with ``prefixes[i]``. Otherwise
    names like ``conv2_block1_...``, ``block_3_...``, ``block4a_...`` group by that block key;
    weighted layers before the first block form a ``stem`` block, those after it join the previous
    one. Inception-ResNet's blocks end at their projections and concatenations instead (``_BLOCK_END``),
    InceptionV3's at its modules' concatenations (``_MODULE_END``); MobileNet and MobileNetV3 name units
    (``_UNIT``). Other models without such names get one block per weighted layer, except a
    ``keras.applications`` one (``application``): that would split a convolution from its BatchNorm, so it asks
    for ``backbone.blocks``.
    """
    weighted = [layer.name for layer in model.layers if layer.weights]
    if prefixes:
        groups = [[n for n in weighted if n.startswith(p)] for p in prefixes]
        empty = [p for p, g in zip(prefixes, groups) if not g]
        if empty:
            raise ConfigError(f"backbone.blocks prefix {empty[0]!r} matches no weighted layer of {model.name}")
        placed = [n for g in groups for n in g]
        twice = [n for n in weighted if placed.count(n) > 1]
        if twice:
            raise ConfigError(f"backbone.blocks puts {twice[0]!r} in two blocks: make the prefixes distinct "
                              f"(e.g. 'block1_' rather than 'block1')")
        left = [n for n in weighted if n not in placed]
        if left:   # freezing covers blocks only: freeze_depth 'all' would leave these training
            raise ConfigError(f"backbone.blocks prefixes leave {left[0]!r} ({len(left)} weighted layer(s) in all) "
                              f"in no block: add a prefix for them, or leave backbone.blocks out")
        return groups
    ends = {layer.name for layer in model.layers if _BLOCK_END.match(layer.name)}
    if "block35_1_conv" in ends:
        return _ending_at(model, ends)
    modules = {layer.name for layer in model.layers if _MODULE_END.match(layer.name)}
    if "mixed0" in modules:
        return _ending_at(model, modules)
    keys = [(_BLOCK.match(n).group(1) if _BLOCK.match(n) else None) for n in weighted]
    if not any(keys):
        keys = [_unit_key(n) for n in weighted]
    if not any(keys):
        if application:   # one block per layer would split a convolution from its BatchNorm
            raise ConfigError(f"{model.name} names no blocks orchestrator knows: give backbone.blocks (layer-name "
                              f"prefixes, one per block, from the input)")
        return [[n] for n in weighted]
    groups: dict[str, list[str]] = {}
    current = "stem"
    for name, key in zip(weighted, keys):
        current = key or current
        groups.setdefault(current, []).append(name)
    return list(groups.values())


def _unit_key(name: str) -> str | None:
    m = _UNIT.match(name)
    return None if m is None else f"conv_{m.group(1)}" if m.group(1) else m.group(2)


def _ending_at(model: keras.Model, ends: set[str]) -> list[list[str]]:
    """Weighted layers grouped by the layers that end blocks (in model order; a weighted end is its block's last
    layer); weighted layers after the last end join the last block."""
    groups, current = [], []
    for layer in model.layers:
        if layer.weights:
            current.append(layer.name)
        if layer.name in ends and current:
            groups.append(current)
            current = []
    if current:
        groups[-1].extend(current) if groups else groups.append(current)
    return groups


def freeze_mask(depth: int | str, n_blocks: int) -> list[bool]:
    """Frozen flag per block, in input order: the first ``depth`` blocks are frozen ('all' = every block).
    Arguments in the order of ``config.frozen_blocks``."""
    frozen = frozen_blocks(depth, n_blocks)
    return [i < frozen for i in range(n_blocks)]


# Keras layers that add noise only in training, and the attribute that sets how much (SpatialDropout is a Dropout)
_NOISE = {"Dropout": "rate", "GaussianDropout": "rate", "AlphaDropout": "rate", "GaussianNoise": "stddev"}


def apply_freeze(model: keras.Model, groups: list[list[str]], depth: int | str) -> None:
    """The one place freezing happens. A frozen BatchNormalization runs in inference mode
    (Keras 3 semantics of ``trainable=False``), so its moving statistics stay fixed too. A Dropout has no
    weights (``trainable`` does not stop it): one inside a frozen block (after its weighted layers, in model
    order; EfficientNet's drop-connect), or any other layer that adds noise in training (``_NOISE``), adds none,
    so a frozen block computes fixed features."""
    mask = freeze_mask(depth, len(groups))
    block_of = {name: i for i, names in enumerate(groups) for name in names}
    model.trainable = True   # the mask decides: a file saved after `model.trainable = False` loads frozen
    for frozen, names in zip(mask, groups):
        for name in names:
            model.get_layer(name).trainable = not frozen
    current = 0
    for top in model.layers:
        current = block_of.get(top.name, current)
        for layer in _within(top):   # a nested model's own layers too (a wrapped EfficientNet's drop-connect)
            attr = next((a for kind, a in _NOISE.items() if isinstance(layer, getattr(keras.layers, kind))), None)
            if attr:
                layer.unfrozen_noise = getattr(layer, "unfrozen_noise", getattr(layer, attr))
                setattr(layer, attr, 0.0 if mask and mask[current] else layer.unfrozen_noise)


def _within(layer):
    yield layer
    for inner in layer.layers if isinstance(layer, keras.Model) else ():
        yield from _within(inner)
