"""Every use of a private Ray API, in one place: this package (Ray Train's controller pieces in ``controller``).
Each was read in, and checked on, Ray ``CHECKED_ON``; ``tests/test_ray_private.py`` resolves every one of them and
fails loudly, naming what moved, when a Ray upgrade changes them. Nothing else in the package imports
``ray._private``, ``ray._common``, ``ray.core`` or a Ray ``_internal`` module, nor touches a private attribute of a
Ray object.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

from .controller import LocalController, failure_policy_base, kept_sync_actors, trainer_class
from .gcs import gcs_token_refusal, same_cluster, started_here

__all__ = ["LocalController", "failure_policy_base", "kept_sync_actors", "trainer_class", "gcs_token_refusal",
           "same_cluster", "started_here"]

CHECKED_ON = "2.60.0"


def worker_address() -> str:
    """``host:port`` of a free port on this Ray Train worker (what TF_CONFIG lists for MultiWorkerMirroredStrategy).
    Ray's TensorFlow backend uses the same two helpers."""
    from ray._common.network_utils import build_address
    from ray.train._internal.utils import get_address_and_port

    return build_address(*get_address_and_port())


# Ray offers ``worker_process_setup_hook`` in a job's runtime env only (``ray.init``); it becomes this variable, which
# Ray's worker process reads as it starts. Set directly, it gives one actor class (Train workers) a hook of its own.
SETUP_HOOK_ENV_VAR = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"

# How long Tune's FunctionTrainable.reset_config waits for a trial's thread to end before it hands the trial's process
# to the next trial (reuse_actors) or fails that trial; read from the trial process's environment at every reset.
TRIAL_THREAD_TIMEOUT_ENV_VAR = "TUNE_FUNCTION_THREAD_TIMEOUT_S"


def without_setup_hook() -> dict:
    """The runtime env for tasks an actor with a setup hook starts: they inherit its runtime env, hook included, and
    an empty value is no hook (Ray's worker runs the hook only when the variable is non-empty)."""
    return {"env_vars": {SETUP_HOOK_ENV_VAR: ""}}


def prestart_workers(node_id: str, runtime_env: str, *, count: int, keep_alive_s: int) -> None:
    """Ask the raylet of ``node_id`` to start ``count`` worker processes for this job with ``runtime_env`` (serialized,
    as ``get_runtime_env_string`` gives it), idle and kept alive for ``keep_alive_s``. The raylet hands such a process
    to the next actor of this job whose runtime env is the same string. Ray's core worker has this call (the raylet's
    PrestartWorkers RPC) but does not expose it to Python, so it is sent here as Ray's own gRPC clients send theirs."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc, runtime_environment_pb2

    node = next(n for n in ray.nodes() if n["NodeID"] == node_id and n["Alive"])
    channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON, job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
            runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(serialized_runtime_env=runtime_env),
            keep_alive_duration_secs=keep_alive_s, num_workers=count), timeout=10)
    finally:
        channel.close()


def exception_causes(exc: BaseException) -> list:
    """The exceptions Ray's and Ray Train's wrappers hold inside ``exc``: the original of a RayTaskError
    (``_base_exc``), a health-check failure, ``cause``, Python's own chain, and every worker's failure."""
    inner = [getattr(exc, "_base_exc", None), getattr(exc, "health_check_failure", None), getattr(exc, "cause", None),
             exc.__cause__, exc.__context__]
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict):
        inner += list(failures.values())
    return [e for e in inner if e is not None]


def original_error(exc: BaseException) -> BaseException:
    """The exception a RayTaskError wraps, or ``exc`` itself."""
    return getattr(exc, "_base_exc", exc)


def _placement_groups():
    """(the GCS placement-group table's message type, each group decoded): the public table names no job."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    table = gcs_pb2.PlacementGroupTableData
    return table, [table.FromString(raw) for raw in state._connect_and_get_accessor().get_placement_group_table()]


def placement_groups_with_dead_creators(job_id: str | None = None) -> list[dict]:
    """Placement groups made by an actor that is dead now (``{"id": hex, "job_id": hex}``); with ``job_id`` (hex),
    only that job's (a shared cluster's other jobs are theirs to clean). GCS marks
    ``creator_actor_dead`` on some deaths only (a Train controller destroyed with its trial's own placement group
    leaves it False), so the actor table decides too. Groups made by a driver (Tune's trial groups) have no creator
    actor and are not listed, nor are detached or removed ones."""
    import ray
    from ray._private.state import state

    table, groups = _placement_groups()
    found = []
    for pg in groups:
        if pg.state == table.REMOVED or pg.is_detached or ray.ActorID(pg.creator_actor_id).is_nil():
            continue
        if job_id is not None and pg.creator_job_id.hex() != job_id:
            continue
        if not pg.creator_actor_dead and state.actor_table(pg.creator_actor_id.hex()).get("State") != "DEAD":
            continue
        found.append({"id": pg.placement_group_id.hex(), "job_id": pg.creator_job_id.hex()})
    return found


def pending_placement_groups(job_id: str) -> int:
    """How many placement groups of the job ``job_id`` (hex) wait for resources."""
    table, groups = _placement_groups()
    return sum(pg.state in (table.PENDING, table.RESCHEDULING) and pg.creator_job_id.hex() == job_id for pg in groups)


def cpus_of_other_jobs(job_id: str) -> float:
    """CPUs the placement groups of jobs other than ``job_id`` (hex) hold now (their trials and Train runs; tasks
    and actors outside a group are not counted)."""
    table, groups = _placement_groups()
    return sum(bundle.unit_resources.get("CPU", 0.0) for pg in groups
               if pg.state == table.CREATED and pg.creator_job_id.hex() != job_id for bundle in pg.bundles)


def quiet_train_reports() -> None:
    """Ray Train logs every report at INFO under a logger named by its file path: raise it to WARNING."""
    import logging

    try:
        from ray.train.v2._internal.execution import context

        context.logger.setLevel(logging.WARNING)
    except (ImportError, AttributeError):
        pass


def stdstream_printer() -> Callable:
    """The function through which raylet/GCS messages and workers' logs reach the driver's terminal."""
    import ray._private.worker as ray_worker

    return ray_worker.print_to_stdstream


def set_stdstream_printer(fn: Callable) -> None:
    import ray._private.worker as ray_worker

    ray_worker.print_to_stdstream = fn


def upload_exclusions(root, excludes: list[str], rel_parts: tuple[str, ...], *, gitignore: bool, logger) -> bool:
    """Would Ray's working_dir upload leave out ``root/<rel_parts>``? The same walk as runtime_env packaging."""
    from ray._private.runtime_env.packaging import _get_excludes, get_excludes_from_ignore_files

    checks, path = [_get_excludes(root, excludes)], root
    for part in rel_parts:
        checks += get_excludes_from_ignore_files(path, include_gitignore=gitignore, logger=logger)
        path = path / part
        if any(check(path) for check in checks):
            return True
    return False


def redacted_entrypoint(redact: Callable[[str], str]) -> None:
    """Ray records a driver's whole command line as its job's entrypoint (the job table: the dashboard, `ray list
    jobs`, the Jobs API), where anyone with the cluster's address reads it: ``ray.init`` records it redacted."""
    import ray._private.utils as utils

    own = getattr(utils.get_entrypoint_name, "redacts", None)
    original = own or utils.get_entrypoint_name

    def redacted() -> str:
        return redact(original())

    redacted.redacts = original
    utils.get_entrypoint_name = redacted


def optuna_ended(searcher, trial_id: str) -> bool:
    """Ray's OptunaSearch has ended ``trial_id`` (and ignores its results from now on): a trial told as failed, then
    rerun under its id by ``tune --resume``."""
    return getattr(searcher, "_ot_study", None) is not None and trial_id in getattr(searcher, "_completed_trials", ())


def tell_optuna_again(searcher, trial_id: str, result: dict) -> None:
    """A rerun's ``result`` for a trial OptunaSearch has ended (``optuna_ended``), added to its study as a new trial of
    the same params."""
    import optuna

    metric, asked = searcher.metric, searcher._ot_trials[trial_id]
    values = [result[m] for m in metric] if isinstance(metric, list) else [result[metric]]
    searcher._ot_study.add_trial(optuna.trial.create_trial(params=asked.params, distributions=asked.distributions,
                                                           values=values))


@contextmanager
def noticing_interrupts():
    """Within the block, whether Ray Tune's own Ctrl-C handling ended a run: Tune catches the first SIGINT, saves its
    state, stops the trials and returns from ``fit()`` as if the run had finished (``ray.tune.tune``'s
    ``_setup_signal_catching``, whose event is kept here). Yields a function: True once a run was interrupted."""
    from ray.tune import tune as tune_module

    real, events = tune_module._setup_signal_catching, []

    def watched():
        events.append(real())
        return events[-1]

    tune_module._setup_signal_catching = watched
    try:
        with handlers_kept():
            yield lambda: any(e.is_set() for e in events)
    finally:
        tune_module._setup_signal_catching = real


@contextmanager
def handlers_kept():
    """The caller's SIGINT and SIGUSR1 handlers back after the block: Ray Tune's run and Ray Train's ``fit()`` (on the
    main thread) set their own and leave them, so a notebook's next Ctrl-C went to a finished run (the third raised
    SystemExit)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():   # only the main thread's handlers are set
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:   # None: set outside Python, which cannot be put back
                signal.signal(signum, handler)


def replace_run_config(tuner, run_config) -> None:
    """A restored Tuner keeps the RunConfig it was pickled with; give it today's (callbacks hold live objects)."""
    tuner._local_tuner._run_config = run_config


def check() -> None:
    """Resolve every private name used above; RuntimeError naming the first that moved."""
    import importlib

    names = [("ray._common.network_utils", "build_address"), ("ray.train._internal.utils", "get_address_and_port"),
             ("ray.tune.tune", "_setup_signal_catching"),
             ("ray.train.v2.api.data_parallel_trainer", "DataParallelTrainer"),
             ("ray.train.v2._internal.execution.controller", "TrainController"),
             ("ray.train.v2._internal.execution.controller.state", "AbortedState"),
             ("ray.train.v2._internal.callbacks", "DatasetsCallback"),
             ("ray.train.v2._internal.callbacks.placement_group_callback", "PlacementGroupCleanerCallback"),
             ("ray.train.v2._internal.execution.failure_handling", "DefaultFailurePolicy"),
             ("ray.train.v2._internal.execution.failure_handling", "FailureDecision"),
             ("ray._private.state", "state"), ("ray.core.generated.gcs_pb2", "PlacementGroupTableData"),
             ("ray.train.v2._internal.execution.context", "logger"), ("ray._private.worker", "print_to_stdstream"),
             ("ray._private.runtime_env.packaging", "_get_excludes"), ("ray._private.utils", "get_entrypoint_name"),
             ("ray._private.worker", "global_worker"),
             ("ray._private.runtime_env.packaging", "get_excludes_from_ignore_files"),
             ("ray._private.grpc_utils", "init_grpc_channel"), ("ray.core.generated.common_pb2", "PYTHON"),
             ("ray._private.authentication.authentication_utils", "is_token_auth_enabled"),
             ("ray.core.generated.gcs_service_pb2_grpc", "NodeInfoGcsServiceStub"),
             ("ray.core.generated.gcs_service_pb2", "GetClusterIdRequest"),
             ("ray.core.generated.node_manager_pb2", "PrestartWorkersRequest"),
             ("ray.core.generated.node_manager_pb2_grpc", "NodeManagerServiceStub"),
             ("ray.core.generated.runtime_environment_pb2", "RuntimeEnvInfo"),
             ("ray.train.v2._internal.execution.worker_group.worker_group", "SynchronizationActor"),
             ("ray.train.v2._internal.execution.worker_group.state", "_shutdown_sync_actor")]
    for module, name in names:
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise RuntimeError(f"Ray moved {module}.{name} (checked on Ray {CHECKED_ON}): update orchestrator/_ray/ "
                               f"({e})") from None
    from ray._private import ray_constants

    if ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR != SETUP_HOOK_ENV_VAR:
        raise RuntimeError(f"Ray renamed its setup-hook variable to {ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR} "
                           f"(checked on Ray {CHECKED_ON}): update orchestrator/_ray/ SETUP_HOOK_ENV_VAR")
    import inspect

    from ray.tune.trainable.function_trainable import FunctionTrainable

    if TRIAL_THREAD_TIMEOUT_ENV_VAR not in inspect.getsource(FunctionTrainable.reset_config):
        raise RuntimeError(f"Ray Tune's FunctionTrainable.reset_config no longer reads {TRIAL_THREAD_TIMEOUT_ENV_VAR} "
                           f"(checked on Ray {CHECKED_ON}): update orchestrator/_ray/ TRIAL_THREAD_TIMEOUT_ENV_VAR")
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    if not all(hasattr(DataParallelTrainer, m) for m in ("_initialize_and_run_controller",
                                                         "_create_default_callbacks", "_register_sigint_handler")):
        raise RuntimeError(f"Ray Train's DataParallelTrainer lost _initialize_and_run_controller, "
                           f"_create_default_callbacks or _register_sigint_handler (checked on Ray {CHECKED_ON}): "
                           f"update orchestrator/_ray/ trainer_class")
    _check_instances()


def _check_instances() -> None:
    """The private attributes used above of Ray's classes and objects; RuntimeError naming what moved."""
    import inspect

    from ray.train.v2._internal.execution.controller import TrainController
    from ray.tune.search.optuna import OptunaSearch

    lost = [a for a in ("_ot_study", "_ot_trials", "_completed_trials") if not hasattr(OptunaSearch(), a)]
    if lost:
        raise RuntimeError(f"Ray Tune's OptunaSearch lost {', '.join(lost)} (checked on Ray {CHECKED_ON}): update "
                           f"orchestrator/_ray/ optuna_ended")
    lost = [m for m in ("run", "get_result", "get_state", "_set_state") if not hasattr(TrainController, m)]
    if lost:
        raise RuntimeError(f"Ray Train's TrainController lost {', '.join(lost)} (checked on Ray {CHECKED_ON}): update "
                           f"orchestrator/_ray/ LocalController")
    from ray.train.v2._internal.execution.worker_group import state, worker_group

    if ("SynchronizationActor.options(" not in inspect.getsource(worker_group.WorkerGroup._start_impl)
            or "_shutdown_sync_actor(" not in inspect.getsource(state.WorkerGroupState.shutdown)
            or not all(hasattr(worker_group.SynchronizationActor, m) for m in ("reset", "set_required_ranks"))):
        raise RuntimeError(f"Ray Train's worker group no longer starts and stops its SynchronizationActor as it did "
                           f"(checked on Ray {CHECKED_ON}): update orchestrator/_ray/ kept_sync_actors")
    import re
    from pathlib import Path

    import ray.train.v2 as train_v2

    from .controller import SoloBarrier

    called = set()   # every method Ray Train calls on a worker group's SynchronizationActor: SoloBarrier has them all
    for path in Path(train_v2.__file__).parent.rglob("*.py"):
        called |= set(re.findall(r"sync(?:hronization)?_actor\.(\w+)\.remote", path.read_text()))
    if not called or any(not hasattr(SoloBarrier, m) for m in called):
        raise RuntimeError(f"Ray Train calls {sorted(called)} on its SynchronizationActor (checked on Ray {CHECKED_ON}"
                           f"): update orchestrator/_ray/ SoloBarrier")
    from .controller import coordinator_callers

    callers = coordinator_callers()
    if callers:
        raise RuntimeError(f"Ray Train's scaling policy reaches its autoscaling coordinator in {callers} "
                           f"too (checked on Ray {CHECKED_ON}): update orchestrator/_ray/ asking_no_one")
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    if not all(s in inspect.getsource(MLflowLoggerCallback.log_trial_start)
               for s in ("self._trial_runs[trial] =", "if not self.log_params_on_trial_end")):
        raise RuntimeError(f"Ray Tune's MLflowLoggerCallback.log_trial_start changed (checked on Ray {CHECKED_ON}): "
                           f"update orchestrator/_ray/ tune_mlflow")
