"""Every private Ray API the package uses lives in orchestrator/_ray/, checked on one Ray version: this fails loudly,
naming what moved, when a Ray upgrade changes one of them, and when another module starts using one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import ray

from orchestrator import _ray

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"
PRIVATE_MODULES = ("ray._private", "ray._common", "ray.core", "ray._raylet")


def private_uses(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PRIVATE_MODULES) or "._internal" in node.module:
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith(PRIVATE_MODULES)
                      or "._internal" in a.name]
        elif isinstance(node, ast.Attribute) and node.attr in ("_local_tuner", "_base_exc", "print_to_stdstream",
                                                               "_initialize_and_run_controller"):
            found.append(f".{node.attr}")
    return found


def test_ray_is_the_version_the_private_uses_were_checked_on():
    assert ray.__version__ == _ray.CHECKED_ON, (
        f"Ray {ray.__version__} is installed; orchestrator/_ray/ was checked on {_ray.CHECKED_ON}: read each use "
        f"there against the new Ray, then update CHECKED_ON")


def test_every_private_name_still_resolves():
    _ray.check()


def test_no_other_module_uses_a_private_ray_api():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "_ray":
            continue
        uses = private_uses(ast.parse(path.read_text()))
        if uses:
            offenders[str(path.relative_to(PACKAGE.parent))] = uses
    assert not offenders, offenders
    for own in ("__init__.py", "controller.py"):
        assert private_uses(ast.parse((PACKAGE / "_ray" / own).read_text())), f"the scan finds the uses in _ray/{own}"


def test_a_run_starts_no_dataset_manager_and_no_placement_group_cleaner(tmp_path):
    """Ray's DatasetsCallback starts a DatasetManager actor per run even with no datasets; ours pass none. Its
    PlacementGroupCleanerCallback starts a detached actor per run that asks the State API every second whether the
    controller lives; the sweep's driver releases the groups of dead controllers itself (training/progress.py)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from orchestrator.training import backend

    trainer = backend.make(lambda config: None, train_loop_config={}, scaling_config=ScalingConfig(num_workers=1),
                           run_config=RunConfig(name="t", storage_path=str(tmp_path)))
    kinds = [type(c).__name__ for c in trainer._create_default_callbacks()]
    assert "BackendSetupCallback" in kinds and "AcceleratorSetupCallback" in kinds, kinds
    unwanted = (DatasetsCallback, PlacementGroupCleanerCallback)
    assert not any(isinstance(c, unwanted) for c in trainer._create_default_callbacks()), kinds


def test_a_run_on_a_ray_started_here_asks_no_autoscaler():
    """Ray Train's scaling policy asks Ray's autoscaler for each run's workers through one detached actor per Ray
    (``_AutoscalingCoordinatorActor``: a process start, then an RPC at each run's start, every few seconds and at
    its end). A Ray this process started has no autoscaler to ask: its runs get a policy that decides as Ray's does
    and asks no one. On a cluster the product joined, Ray's policy is left as it is."""
    from types import SimpleNamespace

    from ray.train import RunConfig, ScalingConfig
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy, ResizeDecision, create_scaling_policy

    from orchestrator.training import backend

    class Capture:   # stands in for LocalController: keeps what Ray Train would build its controller with
        def run(self, controller_kwargs):
            self.kwargs = controller_kwargs

    policies = {}
    for autoscaler in (True, False):
        capture, ray_policy = Capture(), create_scaling_policy(ScalingConfig(num_workers=2))
        trainer = backend.make(lambda config: None, train_loop_config={}, scaling_config=ScalingConfig(num_workers=2),
                               run_config=RunConfig(name="t"), controller=capture, autoscaler=autoscaler)
        trainer._initialize_and_run_controller(scaling_policy=ray_policy)
        policies[autoscaler] = (ray_policy, capture.kwargs["scaling_policy"])
    ray_policy, kept = policies[True]
    assert kept is ray_policy
    ray_policy, quiet = policies[False]
    assert isinstance(quiet, FixedScalingPolicy) and quiet is not ray_policy
    quiet.after_controller_start(SimpleNamespace(run_id="r1"))   # no Ray runs here: any request would fail
    decision = quiet.make_decision_for_non_running_worker_group()
    assert isinstance(decision, ResizeDecision) and decision.num_workers == 2
    quiet.make_decision_for_running_worker_group(None, None)
    quiet.before_controller_abort()
    assert quiet._coordinator_client is None and quiet.scaling_config is ray_policy.scaling_config


def test_a_new_call_of_the_autoscaling_coordinator_is_named(monkeypatch):
    """The check reads Ray's scaling policy for calls of the coordinator that ``asking_no_one`` does not override."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    monkeypatch.setattr(FixedScalingPolicy, "_poll_coordinator", lambda self: self._coordinator_client, raising=False)
    with pytest.raises(RuntimeError, match=r"coordinator in \['FixedScalingPolicy._poll_coordinator'\]"):
        _ray.check()


def test_a_renamed_tune_variable_is_named(monkeypatch):
    """The check reads Tune's own source for the variable the sweep sets: a wrong name fails, naming it."""
    monkeypatch.setattr(_ray, "TRIAL_THREAD_TIMEOUT_ENV_VAR", "TUNE_NO_SUCH_VARIABLE")
    with pytest.raises(RuntimeError, match="no longer reads TUNE_NO_SUCH_VARIABLE"):
        _ray.check()


@pytest.mark.slow
def test_a_kept_synchronization_actor_serves_the_next_run_after_an_aborted_one(ray_session):
    """A trial's process keeps one SynchronizationActor for all its Train runs instead of starting one (a new process,
    about 2 CPU-s) per run. A run aborted while a rank waited at a barrier leaves that call waiting in the actor; the
    next run must not meet it there: handing the actor out again wakes it with an error, and the next run's barrier
    sees only its own ranks. Real Ray, Ray Train's own actor and worker-group code."""
    from ray.train.v2._internal.execution.checkpoint.sync_actor import SynchronizationBarrierResetError
    from ray.train.v2._internal.execution.worker_group import state, worker_group

    from factories import wait_until

    here = {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}
    real, kill = worker_group.SynchronizationActor, state._shutdown_sync_actor
    with _ray.kept_sync_actors():
        first = worker_group.SynchronizationActor.options(**here).remote(timeout_s=None, warn_interval_s=60)
        # run A: rank 1 reached a report barrier, rank 0 was killed; the worker group shuts down
        stale = first.broadcast_from_rank_zero.remote(world_rank=1, world_size=2, data=None, caller_method_name="a")
        wait_until(lambda: ray.get(first.get_counter.remote()) == 1, timeout_s=60, what="rank 1 waits at the barrier")
        assert not ray.wait([stale], timeout=0.5)[0]
        state._shutdown_sync_actor(first)
        # run B, in the same process
        second = worker_group.SynchronizationActor.options(**here).remote(timeout_s=None, warn_interval_s=60)
        assert second == first   # the same actor (handles compare by actor id): no new process
        with pytest.raises(SynchronizationBarrierResetError):
            ray.get(stale, timeout=30)
        calls = [second.broadcast_from_rank_zero.remote(world_rank=r, world_size=2, data=f"B{r}",
                                                         caller_method_name="b") for r in (1, 0)]
        assert ray.get(calls, timeout=30) == ["B0", "B0"]   # rank 0's data, to both of run B's ranks
        one = second.broadcast_from_rank_zero.remote(world_rank=0, world_size=1, data="C", caller_method_name="c")
        assert ray.get(one, timeout=30) == "C"   # a later 1-worker run
        # a run that overlaps one still holding the kept actor (an abort that outlasted its patience) gets its own,
        # killed at its end as Ray's is
        overlapping = worker_group.SynchronizationActor.options(**here).remote(timeout_s=None, warn_interval_s=60)
        assert overlapping != second
        state._shutdown_sync_actor(overlapping)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(overlapping.get_counter.remote(), timeout=30)
        state._shutdown_sync_actor(second)   # run B ends: kept, alive
        assert ray.get(second.get_counter.remote(), timeout=30) == 0
    assert (worker_group.SynchronizationActor, state._shutdown_sync_actor) == (real, kill)   # only inside the block


def test_a_one_worker_runs_barrier_is_no_process(ray_session):
    """A 1-worker run's barrier has one rank: it gets ``SoloBarrier`` (no actor, no process) in a trial's process,
    which answers Ray Train's calls as the actor would for one rank and refuses a second rank."""
    import pickle

    from ray.train.v2._internal.execution.worker_group import worker_group

    from orchestrator._ray.controller import SoloBarrier, _KeptSync

    barrier = pickle.loads(pickle.dumps(SoloBarrier()))   # as Ray Train hands it to the worker
    call = dict(caller_method_name="ray.train.report", collective_seq=1, relaxable=True)
    answer = barrier.broadcast_from_rank_zero.remote(world_rank=0, world_size=1, data="ckpt_1", **call)
    assert ray.get(answer) == "ckpt_1"
    assert ray.get([barrier.reset.remote(), barrier.set_required_ranks.remote(None)]) == [None, True]
    with pytest.raises(RuntimeError, match="1-worker runs only; rank 1 of 2"):
        barrier.broadcast_from_rank_zero.remote(world_rank=1, world_size=2, data=None, **call)
    _KeptSync.solo.value = True
    try:
        with _ray.kept_sync_actors():
            assert isinstance(worker_group.SynchronizationActor.options().remote(timeout_s=None), SoloBarrier)
    finally:
        _KeptSync.solo.value = False


@pytest.mark.slow
def test_a_sweep_and_a_run_on_a_ray_started_here_start_no_autoscaling_coordinator(ray_session, tmp_path):
    """On a Ray of its own (no autoscaler), neither a Tune trial's Train run (its controller in the trial's process)
    nor `train`'s (its controller in an actor) starts Ray's ``_AutoscalingCoordinatorActor``: about 3 CPU-s per Ray
    and 3 s of the first trial's start. The Ray is a new one: the coordinator is one detached actor per Ray, which
    an earlier test's Ray Data run may have started."""
    from ray.util.state import list_actors

    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune
    from orchestrator.training.driver import train
    from orchestrator.training.session import init_ray

    from factories import embedded

    ray_session.shutdown()
    init_ray(None, num_gpus=1)   # as the ray_session fixture starts it: later tests keep it

    def coordinators():
        return [a.state for a in list_actors(limit=10_000, raise_on_missing_output=False)
                if a.class_name.endswith("AutoscalingCoordinatorActor")]

    cfg = parse_config(embedded(tmp_path, name="no-autoscaler", search={
        "num_samples": 1, "searcher": "random", "space": {"train.head_lr": {"loguniform": [1e-3, 3e-3]}}}))
    tune(cfg, out=lambda line: None)
    assert [r["status"] for r in Leaderboard(str(tmp_path)).table(experiment="no-autoscaler").to_pylist()] == [
        "completed"]
    assert coordinators() == []
    summary = train(cfg, name="one-run", out=lambda line: None)
    assert summary["status"] == "completed", summary
    assert coordinators() == []
