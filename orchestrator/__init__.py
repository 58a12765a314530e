"""orchestrator: multi-task fine-tuning sweeps on Ray Train + Ray Tune, with a leaderboard.

    from orchestrator import Leaderboard, load_config, train, tune
    summary = train(load_config("examples/digits.yaml"))
    tune(load_config("experiment.yaml"))
    Leaderboard("runs").top(5)
"""
from .config import ExperimentConfig, load_config
from .errors import ConfigError, DataError, UserError
from .leaderboard.leaderboard import Leaderboard
from .train.driver import train
from .sweep.tuner import tune

__all__ = ["ExperimentConfig", "load_config", "train", "tune", "Leaderboard", "ConfigError", "DataError", "UserError"]
