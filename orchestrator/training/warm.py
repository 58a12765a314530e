"""Warm Train workers: a trial's workers are given processes that started, and imported TensorFlow, before it asked.

Every trial is a new Ray Train run on new worker processes, and a new process imports TensorFlow (4.6 s of a
1-worker trial's 10.6 s fixed cost, bench/sweep_overhead). Two pieces remove that from all trials but the first:

- Train workers start with ``import_tensorflow`` as their process's setup hook (set in their runtime env), so a
  process imports TensorFlow as it starts, before a run is given it;
- a run of a sweep, as it starts, asks the raylets of its workers' nodes for as many spare processes with its
  workers' runtime env (``start_spares``). The raylet gives them to the next Train workers that start there.

Ray's own pool of idle processes serves only actors with an empty runtime env, which Train workers never have
(README, Performance; bench/prewarm.py), so the spares are asked for explicitly.

Tasks and actors a Train worker starts inherit its runtime env, the hook too: each would import TensorFlow as its
process starts. Give them ``_ray.without_setup_hook()`` as their runtime env (as the streaming decoders do:
``data.pipeline.stream_task_options``).
What it costs: the spares of the last runs of a sweep go unused (a TensorFlow import each, and 760 MB RSS until the
job ends or ``KEEP_ALIVE_S`` passes: bench/prewarm.py); and a spare's import takes a core for some seconds. So a sweep
starts spares only when trials wait for a slot and the trials running at once leave cores idle
(``sweep.capacity.idle_cores``): on a 2-core machine, 1-worker trials one at a time do; the demo's 4 trials at once,
or 2-worker trials, do not.
"""
from __future__ import annotations

import collections
import logging
import time

from .. import _ray

HOOK = f"{__name__}.import_tensorflow"
KEEP_ALIVE_S = 600   # how long the raylet keeps an unused spare; the next trial may wait for a running one to end
_marks: dict = {}


def import_tensorflow() -> None:
    """Ray runs this in a Train worker's process as it starts: TensorFlow, Keras and Ray Train are imported.
    No device is probed: a process is given its GPU (CUDA_VISIBLE_DEVICES) only when a run takes it."""
    _marks["worker_process_start"] = time.time()
    from ..console import import_tensorflow_quietly

    try:
        import_tensorflow_quietly()
        import ray.train  # noqa: F401 - what the run's Train worker imports next: 0.4 s of a warm trial's start ahead
    except Exception:  # noqa: BLE001 - a failed hook would end the process; the run's own import reports it as one line
        return
    _marks["worker_tensorflow_ready"] = time.time()


def marks() -> dict:
    """When this process started and had TensorFlow, if the hook ran in it (progress.json, bench/)."""
    return dict(_marks)


def worker_runtime_env() -> dict:
    """The runtime env every Train worker gets (merged by Ray with the caller's): the hook above."""
    return {"env_vars": {_ray.SETUP_HOOK_ENV_VAR: HOOK}}


def _placement() -> tuple[str, str]:
    import ray

    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_runtime_env_string()


def start_spares(worker_group) -> None:
    """Ask each node of ``worker_group`` for as many spare processes as the group has workers there, with the
    workers' own runtime env. A refused request costs only the warm start: it is logged, and the run goes on."""
    for (node_id, runtime_env), count in collections.Counter(worker_group.execute(_placement)).items():
        try:
            _ray.prestart_workers(node_id, runtime_env, count=count, keep_alive_s=KEEP_ALIVE_S)
        except Exception as e:  # noqa: BLE001 - gRPC's errors, a node gone: none of them is the run's failure
            logging.getLogger(__name__).warning("no spare Train worker processes on node %s: %s", node_id, e)
