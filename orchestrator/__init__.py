"""orchestrator: multi-task fine-tuning sweeps on Ray Train + Ray Tune, with a leaderboard.

    from orchestrator import Leaderboard, load_config, train, tune
    summary = train("examples/digits.yaml")            # or an ExperimentConfig, or a row's config dict
    tune(load_config("experiment.yaml"))
    Leaderboard("runs").top(5, experiment="demo")

``train`` and ``tune`` bring Ray along on first use, so importing the package stays light.
"""
from __future__ import annotations

import os
from typing import Union

from .config import ExperimentConfig, load_config
from .endpoints import check_ray_address
from .errors import ConfigError, DataError, UserError
from .leaderboard import Leaderboard

__all__ = ["ExperimentConfig", "load_config", "train", "tune", "Leaderboard", "ConfigError", "DataError", "UserError"]

Config = Union[ExperimentConfig, str, os.PathLike, dict]


def __getattr__(name: str):
    if name == "__version__":   # the installed distribution's, as rows record it (code_version)
        from importlib import metadata

        return metadata.version("orchestrator")
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


def _config(config: Config) -> ExperimentConfig:
    """An ExperimentConfig from what a user holds: one already, a YAML path, or a config dict (``best()["config"]``)."""
    from .config import parse_config

    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(os.fspath(config))
    if isinstance(config, dict):
        return parse_config(config)
    raise ConfigError(f"a config is an ExperimentConfig, a YAML path or a dict, not {type(config).__name__}")


def train(config: Config, *, address: str | None = None, name: str | None = None, out=print,
          verbose: bool = False) -> dict:
    """Train one configuration as `orchestrator train` does, with its checks: a run the cluster can never hold
    raises ConfigError, Δm% without its baselines UserError, before anything trains; a user's mistake found while
    training (bad data) raises UserError. Returns the run's summary (status, metrics, summary_file)."""
    from .console import left_as_found
    from .sweep.single import train_checked

    cfg = _config(config)   # a config error before Ray is imported
    check_ray_address(address)
    with left_as_found():
        return train_checked(cfg, address=address, name=name, out=out, verbose=verbose)


def tune(config: Config, *, name: str | None = None, address: str | None = None, resume: bool = False,
         sweep_id: str | None = None, verbose: bool = False, out=print) -> dict:
    """Run (or ``resume``) the config's sweep as `orchestrator tune` does: one leaderboard row per trial; returns
    its summary. Ctrl-C raises ``errors.Interrupted`` (continue with ``resume=True``)."""
    from .console import left_as_found
    from .sweep.tuner import tune as run

    cfg = _config(config)   # a config error before Ray is imported
    check_ray_address(address)
    with left_as_found(searching=True):
        return run(cfg, name=name, address=address, resume=resume, sweep_id=sweep_id, verbose=verbose, out=out)
