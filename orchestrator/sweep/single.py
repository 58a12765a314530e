"""One configuration trained outside a sweep (`orchestrator train`, and ``orchestrator.train`` from Python), with the
checks a sweep's trials get: the cluster can hold the run, and Δm%'s baselines are found before anything trains."""
from __future__ import annotations

from ..config.schema import ExperimentConfig
from ..errors import UserError


def train_checked(cfg: ExperimentConfig, *, address: str | None = None, name: str | None = None, out=print,
                  verbose: bool = False, reserved_cpu: float = 0.0) -> dict:
    """The run's summary; UserError for a user's mistake found while training (bad data). ``reserved_cpu``: what this
    process holds while the run waits (a Ray job's entrypoint)."""
    from ..training.driver import train
    from .baselines import recorded_for
    from .capacity import check_fits

    summary = train(cfg, address=address, name=name, out=out, verbose=verbose,
                    ready=lambda c: check_fits(c, reserved_cpu=reserved_cpu, what="run"), baselines=recorded_for)
    if summary.get("user_error"):
        raise UserError(summary["error"])
    return summary
