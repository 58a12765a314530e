"""Ray Tune's MLflowLoggerCallback logging the values a trial trains with (private Ray attributes, checked by
``orchestrator._ray.check``); imported only when a sweep sets ``search.mlflow``."""
from __future__ import annotations

from typing import Callable

from ray.air.integrations.mlflow import MLflowLoggerCallback


class TrainedParamsMLflow(MLflowLoggerCallback):
    """Tune's raw ``trial.config`` holds every branch's draws (a dwa temperature for an uncertainty trial), a
    simplex's uniforms and a grid's point index: each trial's run gets ``shown(trial.config)`` as its params instead,
    the values it trains with (a mapping value as one param per key, ``path.key``)."""

    def __init__(self, shown: Callable[[dict], dict], *, tracking_uri: str, experiment_name: str, tags: dict):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name, tags=tags)
        self.shown = shown

    def log_trial_start(self, trial) -> None:
        self.log_params_on_trial_end = True   # Ray's own start: the trial's run made, its raw config not logged
        try:
            super().log_trial_start(trial)
        finally:
            self.log_params_on_trial_end = False   # nor at its end
        params = {}
        for path, value in self.shown(trial.config).items():   # dotted keys, as the paths are (Ray's own flattening
            params.update({f"{path}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {path: value})
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=params)   # joins with "/")
