"""The Ray Train trainer of one run, without TensorFlow in the driver, the Tune trial or the controller.

Ray's ``TensorflowTrainer`` does two things: it is a ``DataParallelTrainer`` whose backend sets
``TF_CONFIG`` on every worker (the cluster spec ``MultiWorkerMirroredStrategy`` reads), and its module
imports TensorFlow. That import happens in every process that builds or unpickles the trainer's
config: the Tune trial and the Train controller too, about 3 CPU-seconds and 400 MB each, per trial.
Here the same backend is written without that import, so only the workers load TensorFlow.

The trainer also carries the failure policy: a ``UserError`` raised in a worker fails the run at once;
anything else (a killed worker, a lost node) is retried from the latest checkpoint.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig

from .. import _ray
from . import warm


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    """What MultiWorkerMirroredStrategy reads on each worker: every worker's address and this one's index."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": worker_addresses},
                                          "task": {"type": "worker", "index": index}})


class _MultiWorkerBackend(Backend):
    def on_start(self, worker_group, backend_config):
        import ray

        urls = worker_group.execute(_ray.worker_address)
        ray.get([worker_group.execute_single_async(i, _set_tf_config, worker_addresses=urls, index=i)
                 for i in range(len(worker_group))])
        if backend_config.spares:
            warm.start_spares(worker_group)


@dataclass
class MultiWorkerConfig(BackendConfig):
    """Ray Train backend for tf.distribute.MultiWorkerMirroredStrategy (TF_CONFIG per worker); with ``spares``, the
    run asks for warm processes for the next run's workers as it starts (``warm``)."""

    spares: bool = False

    @property
    def backend_cls(self):
        return _MultiWorkerBackend


def make(train_loop_per_worker, *, train_loop_config: dict, scaling_config, run_config, controller=None,
         spares: bool = False, autoscaler: bool = True):
    """A DataParallelTrainer with the MultiWorkerMirroredStrategy backend and the fail-fast policy; its controller
    runs in ``controller`` (an ``_ray.LocalController``, for a caller that is an actor) or, by default, in an actor;
    ``autoscaler``: the cluster has one, which the run asks for its workers (not a Ray the driver started)."""
    from .failures import failure_policy

    trainer = _ray.trainer_class(failure_policy, controller=controller, autoscaler=autoscaler)
    return trainer(train_loop_per_worker, backend_config=MultiWorkerConfig(spares=spares),
                   train_loop_config=train_loop_config, scaling_config=scaling_config, run_config=run_config)
