"""Loggers that follow a sweep live, beside the leaderboard (which records each trial once it ends).

``search.mlflow: URI``: Ray Tune's own ``MLflowLoggerCallback`` (``ray.air.integrations.mlflow``) logs every trial
of the sweep as it runs into the MLflow experiment named like ours: the values it trains with as params (its active
searched values, as its leaderboard row and console line give them: ``_ray.tune_mlflow``), each report as metrics,
tagged with the sweep id. ``orchestrator export --to mlflow:URI`` writes the finished rows (nested under their
sweep) afterwards; the two do not collide (export's runs carry ``orchestrator.kind``)."""
from __future__ import annotations

from functools import partial

from ..config.sampling import materialize
from ..config.schema import ExperimentConfig
from ..errors import ConfigError


def live_loggers(cfg: ExperimentConfig, sweep_id: str, *, n_blocks: int | None = None) -> tuple:
    """The Tune callbacks that log ``cfg``'s sweep live (none unless ``search.mlflow`` is set)."""
    uri = cfg.search.mlflow if cfg.search is not None else None
    if not uri:
        return ()
    try:
        import mlflow  # noqa: F401 - Ray's callback imports it only when the sweep starts

        from .._ray.tune_mlflow import TrainedParamsMLflow
    except ImportError:
        raise ConfigError("search.mlflow needs MLflow: pip install 'orchestrator[mlflow]' (or remove search.mlflow)"
                          ) from None
    from ..leaderboard.export_mlflow import check_experiment

    check_experiment(uri, cfg.name)   # answers, and the experiment is not one someone deleted: before the sweep
    shown = partial(materialize, cfg.search, tasks=list(cfg.tasks), seed=cfg.train.seed, n_blocks=n_blocks)
    return (TrainedParamsMLflow(shown, tracking_uri=uri, experiment_name=cfg.name,
                                tags={"experiment": cfg.name, "sweep_id": sweep_id}),)
