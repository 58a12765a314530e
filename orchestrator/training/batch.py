"""The one rule for a global batch across workers: checked before a run (``session.check_batch``, a sweep's every
batch size and worker count, ``sweep.capacity.check_batch_draws``) and again by each worker as it starts."""
from __future__ import annotations

from ..errors import ConfigError


def per_worker_batch(batch_size: int, workers: int) -> int:
    """Each worker's share of the global batch; ConfigError when a worker would get none, or when the batch does not
    split evenly (each step would train fewer examples than the config, and the run's row, say)."""
    per_worker = batch_size // workers
    if per_worker < 1:
        raise ConfigError(f"train.batch_size {batch_size} is smaller than resources.workers {workers}: each worker "
                          f"needs at least one example per step")
    if batch_size % workers:
        lower, upper = per_worker * workers, (per_worker + 1) * workers
        raise ConfigError(f"train.batch_size {batch_size} is not a multiple of resources.workers {workers} (each step "
                          f"would train on {lower} examples): use {lower} or {upper}")
    return per_worker
