"""Paths inside a plain config dict: which fields hold paths or URIs, resolving the relative ones against the
config file's folder, redacting credentials, and setting a value by dotted path (``--set``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..storage import is_uri, redact

PATH_FIELDS = (("data", "train"), ("data", "validation"), ("backbone", "path"), ("backbone", "weights"), ("storage",))
_NOT_PATHS = {"imagenet", "none", "pretrained"}


def _is_relative_path(value: Any) -> bool:
    return (isinstance(value, str) and bool(value) and value not in _NOT_PATHS and not value.startswith("builtin:")
            and not is_uri(value) and not Path(value).is_absolute())


def parent(data: dict, keys) -> Optional[dict]:
    """The dict that holds ``keys[-1]`` inside nested ``data`` (reached through ``keys[:-1]``); None where a step
    is missing or not a dict."""
    node = data
    for k in keys[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def resolve_paths(data: dict, base: Path) -> dict:
    """Relative paths in a config (data, backbone file, storage) -> absolute, against ``base``; ``~`` -> home."""
    out = _plain(data)
    for keys in PATH_FIELDS:
        node = parent(out, keys)
        if node is not None and isinstance(node.get(keys[-1]), str) and node[keys[-1]].startswith("~"):
            node[keys[-1]] = os.path.expanduser(node[keys[-1]])   # ~/runs is the user's, not <config folder>/~
        if node is not None and _is_relative_path(node.get(keys[-1])):
            node[keys[-1]] = str((base / node[keys[-1]]).resolve())
    return out


def rebased_paths(data: dict, base: Path, root: Path, *, what: str) -> dict:
    """Relative paths in ``data``, meant against ``base``, made relative to ``root``: the folder a Ray job runs in (its
    upload). One that leads outside ``root`` is refused: the job has no such file. ``~`` is left to the job's node."""
    out = _plain(data)
    for keys in PATH_FIELDS:
        node = parent(out, keys)
        value = node.get(keys[-1]) if node is not None else None
        if _is_relative_path(value) and not value.startswith("~"):
            path = (base / value).resolve()
            if not path.is_relative_to(root):
                raise ConfigError(f"{what} {'.'.join(keys)}={value}: {path} is outside {root}, the folder uploaded "
                                  f"with the job: give a path inside it, an absolute path on the cluster's nodes, or "
                                  f"a URI")
            node[keys[-1]] = path.relative_to(root).as_posix()
    return out


def _plain(value: Any) -> Any:
    """A copy of parsed YAML whose scalars are JSON's (a YAML date becomes its text), keys kept as they are: a JSON
    copy made every key a string, so a branch keyed 5 became '5' (the largest of '5' and '20' is '5')."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def redact_paths(data: dict) -> dict:
    out = json.loads(json.dumps(data, default=str))
    for keys in PATH_FIELDS:
        node = parent(out, keys)
        if node is not None and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = redact(node[keys[-1]])
    return out


def get_dotted(d: dict, path: str) -> Any:
    keys = path.split(".")
    return parent(d, keys)[keys[-1]]


def set_dotted(d: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = d
    for i, k in enumerate(keys[:-1]):
        if node.get(k) is None:
            node[k] = {}
        if not isinstance(node[k], dict):
            raise ConfigError(f"cannot set {path!r}: {'.'.join(keys[:i + 1])} is a value, not a section; "
                              f"write --set {'.'.join(keys[:i + 1])}=VALUE")
        node = node[k]
    node[keys[-1]] = value


def check_model_file(path: Optional[str], weights: Optional[str]) -> None:
    """Only Keras 3 archives are loaded from users: they load with safe_mode (no code runs); legacy HDF5 models and
    SavedModel folders can run code."""
    bare = lambda p: redact(p).split("?", 1)[0].rstrip("/")  # noqa: E731
    if path and not bare(path).endswith(".keras"):
        raise ValueError(f"backbone.path {redact(path)} is not a .keras archive: only .keras files are loaded (safely); "
                         f"re-save the model with model.save('backbone.keras') under Keras 3")
    if weights and weights not in ("imagenet", "none") and not bare(weights).endswith((".weights.h5", ".keras")):
        raise ValueError(f"backbone.weights {redact(weights)} is not a .weights.h5 or .keras file: save them with "
                         f"model.save_weights('backbone.weights.h5') under Keras 3")


def backbone_files(backbone) -> list[str]:
    """The user's files a ``BackboneConfig`` loads: a .keras model, or an application's weights file."""
    if backbone.kind == "file":
        return [backbone.path]
    named = backbone.kind == "application" and backbone.weights not in ("imagenet", "none")
    return [backbone.weights] if named else []
