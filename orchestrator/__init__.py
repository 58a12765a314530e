"""orchestrator: multi-task fine-tuning sweeps on Ray Train + Ray Tune, with a leaderboard.

    from orchestrator import Leaderboard, load_config, train, tune
    summary = train(load_config("examples/digits.yaml"))
    tune(load_config("experiment.yaml"))
    Leaderboard("runs").top(5)

``train`` and ``tune`` load on first use (they bring Ray along), so importing the package stays light.
"""
from .config import ExperimentConfig, load_config
from .errors import ConfigError, DataError, UserError
from .leaderboard import Leaderboard

__all__ = ["ExperimentConfig", "load_config", "train", "tune", "Leaderboard", "ConfigError", "DataError", "UserError"]


def __getattr__(name: str):
    if name == "train":
        from .training.driver import train

        return train
    if name == "tune":
        from .sweep.tuner import tune

        return tune
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
