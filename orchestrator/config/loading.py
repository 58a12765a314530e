"""Reading an experiment config: YAML -> relative paths resolved -> ``--set`` overrides -> validated object."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .paths import resolve_paths, set_dotted
from .schema import ExperimentConfig, parse_config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML, resolve its relative paths against its folder, apply dotted-path overrides
    (``--set train.epochs=3``; relative paths given there resolve against the working directory), validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found: pass the path to an experiment YAML")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p} is not valid YAML{at}: fix the syntax") from None
    if isinstance(data, dict):
        data = resolve_paths(data, p.resolve().parent)
        for k, v in (overrides or {}).items():
            set_dotted(data, k, v)
    return parse_config(data)
