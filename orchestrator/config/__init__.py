"""Stage 1 — the experiment config: YAML -> one frozen, validated object (``schema``), and search spaces over its
fields (``space``). Pure Python: no Ray, no TensorFlow."""
from .loading import load_config
from .schema import ExperimentConfig, parse_config

__all__ = ["ExperimentConfig", "load_config", "parse_config"]
