"""orchestrator: multi-task fine-tuning sweeps on Ray Train + Ray Tune, with a leaderboard."""
from .config import ExperimentConfig, load_config
from .errors import ConfigError, DataError, UserError

__all__ = ["ExperimentConfig", "load_config", "ConfigError", "DataError", "UserError"]
