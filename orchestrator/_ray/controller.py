"""Ray Train V2's controller, run the product's way (private Ray APIs, checked by ``orchestrator._ray.check``): in a
Tune trial's own process, with a kept report barrier, a failure policy of ours and two helper actors fewer per run.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable


class LocalController:
    """Ray Train V2's TrainController run in the calling process, on an event loop of the calling thread, instead of
    in an actor (a new process) of its own. A Tune trial only waits on its Train run, so its process can hold the
    controller: per trial that is one process start fewer (bench/sweep_overhead, a no-op trial: 3.8 s instead of 6.4 s,
    6.5 CPU-s instead of 9.7; the trial's process used no more CPU with the controller in it).

    Only for a caller that is itself an actor (a Tune trial): Train's worker group hands its workers the calling
    actor's handle, which a driver has not. ``abort`` may be called from any thread: on the controller's loop it
    aborts the worker group (Ray's own ``TrainController.abort``, whose last step, exiting the actor, would here end
    the trial's process) and cancels the run, so ``run`` raises CancelledError."""

    def __init__(self):
        import asyncio

        self._loop = asyncio.new_event_loop()
        self._controller = self._task = None
        self._aborted = False

    def run(self, controller_kwargs: dict):
        """Construct the controller and run it to its end on this thread; Ray Train's Result."""
        import asyncio

        async def main():
            from ray.train.v2._internal.execution.controller import TrainController

            self._controller = TrainController(**controller_kwargs)
            if self._aborted:
                raise asyncio.CancelledError
            await self._controller.run()

        scaling = controller_kwargs["scaling_policy"].scaling_config
        solo = isinstance(scaling.num_workers, int) and scaling.num_workers == 1   # not elastic, one worker
        try:
            self._task = self._loop.create_task(main())
            _KeptSync.solo.value = solo
            with kept_sync_actors():
                self._loop.run_until_complete(self._task)
        finally:
            _KeptSync.solo.value = False   # this thread's next caller of kept_sync_actors gets actors
            self._loop.close()
        return self._controller.get_result()

    def abort(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._abort)
        except RuntimeError:   # the loop has closed: the run has ended already
            pass

    def _abort(self) -> None:
        from ray.train.v2._internal.execution.controller.state import AbortedState

        self._aborted = True
        ctrl = self._controller
        try:
            if ctrl is not None and not ctrl.get_state().is_terminal():
                ctrl._controller_callback_manager.invoke_best_effort("before_controller_abort")
                if ctrl._worker_group:
                    ctrl._worker_group.abort()
                ctrl._set_state(AbortedState())
        finally:   # the run ends even if the abort failed: the trial's process then takes its workers with it
            if self._task is not None:
                self._task.cancel()


class _Call:
    """``actor.method.remote(...)`` of a ``SoloBarrier``: runs in the caller and returns an ObjectRef of the result."""

    def __init__(self, fn):
        self._fn = fn

    def __get__(self, obj, cls):
        return self

    def remote(self, *args, **kwargs):
        import ray

        return ray.put(self._fn(*args, **kwargs))


def _solo_broadcast(*, world_rank: int, world_size: int, data=None, **_):
    if world_size != 1 or world_rank != 0:
        raise RuntimeError(f"a SoloBarrier serves 1-worker runs only; rank {world_rank} of {world_size} called it")
    return data


class SoloBarrier:
    """Ray Train's SynchronizationActor for a run of one worker, without an actor (a process): a barrier of one
    rank is released at once with rank 0's data. The worker calls it (report's checkpoint-name consensus,
    ray.train.collective) in its own process; the controller's reset / set_required_ranks are no-ops. Its methods
    are every one Ray Train calls on its SynchronizationActor (``_ray.check``). A kept actor still costs a trial
    process one process start (about 2.5-3 CPU-s: Python, Ray's core worker, and Ray Train's import, which pulls
    in Ray Data, pyarrow and pandas) and about 0.011 CPU-s per second idle; a 1-worker trial needs no barrier.
    What it trades: none of the actor's checks (a missing rank's timeout, its warnings) apply to one rank."""
    broadcast_from_rank_zero = _Call(_solo_broadcast)
    reset = _Call(lambda: None)
    set_required_ranks = _Call(lambda ranks=None: True)
    get_counter = _Call(lambda: 0)


class _KeptSync:
    """Ray Train's SynchronizationActor class as ``kept_sync_actors`` gives it to worker groups: one kept actor per
    process and options, lent to one run at a time (a run that overlaps a lingering abort gets a new one); a
    1-worker run gets a ``SoloBarrier`` instead."""
    lock, depth, real, kill, kept, lent = threading.Lock(), 0, None, None, {}, []
    solo = threading.local()   # the calling thread's run has one worker (set by LocalController.run)

    def __init__(self, options: dict):
        self._options = options

    def options(self, **options):
        return _KeptSync({**self._options, **options})

    def remote(self, **kwargs):
        if getattr(_KeptSync.solo, "value", False):
            return SoloBarrier()
        key = repr(sorted({**self._options, **kwargs}.items()))
        with _KeptSync.lock:
            actor = self.kept.get(key)
            if actor is not None and actor not in self.lent and _idle(actor):
                self.lent.append(actor)
                return actor
            fresh = self.real.options(**self._options).remote(**kwargs)
            if actor is None or actor not in self.lent:   # else a run holds it: the new one is not kept
                if actor is not None:
                    self.kill(actor)
                self.kept[key] = fresh
                self.lent.append(fresh)
            return fresh

    @staticmethod
    def hand_back(actor) -> None:
        if isinstance(actor, SoloBarrier):
            return
        with _KeptSync.lock:
            if actor in _KeptSync.lent:
                _KeptSync.lent.remove(actor)
                if _idle(actor):
                    return
                _KeptSync.kept = {k: a for k, a in _KeptSync.kept.items() if a != actor}
        _KeptSync.kill(actor)


def _idle(actor) -> bool:
    """Reset a kept SynchronizationActor (calls an aborted run left waiting raise SynchronizationBarrierResetError;
    a preemption's relaxed rank set goes) and see its barrier empty; False if it is not, or is dead or hangs."""
    import ray

    try:
        ray.get([actor.reset.remote(), actor.set_required_ranks.remote(None)], timeout=30)
        deadline = time.monotonic() + 5
        while ray.get(actor.get_counter.remote(), timeout=30) != 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    except (ray.exceptions.RayError, TimeoutError):
        return False


@contextmanager
def kept_sync_actors():
    """Within the block, a Train run's worker group started in this process (a ``LocalController``'s) gets this
    process's kept SynchronizationActor (Ray Train's report barrier) instead of a new one, and hands it back at the
    run's end instead of killing it. A new one is a process that imports Ray Train: about 2 CPU-s per trial, the
    largest helper cost left (bench/sweep_overhead.py). A Tune trial's process runs its trials one at a time
    (``reuse_actors``); the actor serves them all and ends with the process, its owner. It is reset and seen empty
    as it is handed back and again as it is lent (``_idle``), else killed and replaced: a call an aborted run left
    at its barrier never meets the next run's ranks. What it trades: one that reached the actor after that check
    (a delivery takes milliseconds; an abort and a new group's start, seconds) would. Both pieces are module globals
    of Ray Train's worker group, swapped while any block runs."""
    from ray.train.v2._internal.execution.worker_group import state, worker_group

    with _KeptSync.lock:
        if _KeptSync.depth == 0:
            _KeptSync.real, _KeptSync.kill = worker_group.SynchronizationActor, state._shutdown_sync_actor
            worker_group.SynchronizationActor, state._shutdown_sync_actor = _KeptSync({}), _KeptSync.hand_back
        _KeptSync.depth += 1
    try:
        yield
    finally:
        with _KeptSync.lock:
            _KeptSync.depth -= 1
            if _KeptSync.depth == 0:
                worker_group.SynchronizationActor, state._shutdown_sync_actor = _KeptSync.real, _KeptSync.kill


def asking_no_one(scaling_policy):
    """Ray Train's fixed scaling policy without its requests to Ray's autoscaler, for a Ray with none (one this
    process started): the same decisions, and no calls of ``_AutoscalingCoordinatorActor``, the detached actor Ray
    starts at a Ray's first request (a process: about 3 CPU-s and 3 s of that run's start) and calls at each run's
    start, every few seconds, and at its end. Ray Data asks it too (a run that decodes image files with Ray Data
    starts it all the same); pixel data and the built-in sets use no Ray Data. An elastic policy (it reads what the
    coordinator reserved) is left as is."""
    fixed, asking = _policy_classes()
    return asking(scaling_policy.scaling_config) if type(scaling_policy) is fixed else scaling_policy


def _policy_classes() -> tuple[type, type]:
    """(Ray Train's FixedScalingPolicy, the same without requests to the autoscaling coordinator)."""
    from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy

    class AskingNoOne(FixedScalingPolicy):
        def after_controller_start(self, train_run_context):
            self._requester_id = f"train-{train_run_context.run_id}"

        def _maybe_send_resource_request(self):
            pass

        def _send_resource_request(self):
            pass

        def _cancel_resource_request(self):
            pass

    return FixedScalingPolicy, AskingNoOne


def coordinator_callers() -> list[str]:
    """Methods of Ray Train's fixed scaling policy that reach the autoscaling coordinator besides those
    ``asking_no_one`` overrides (``_ray.check``: there should be none)."""
    import inspect

    fixed, asking = _policy_classes()
    found = []
    for cls in fixed.__mro__[:-1]:
        for name, member in vars(cls).items():
            fn = getattr(member, "fget", member)
            if (name not in (*vars(asking), "__init__", "_autoscaling_coordinator") and inspect.isfunction(fn)
                    and "coordinator" in inspect.getsource(fn)):
                found.append(f"{cls.__name__}.{name}")
    return found


def trainer_class(policy: Callable, *, controller: LocalController | None = None, autoscaler: bool = True) -> type:
    """Ray Train V2's DataParallelTrainer whose controller gets ``policy(failure_config)`` as its failure policy
    (V2 has no public way to pass one: ``_initialize_and_run_controller`` builds the controller), that runs its
    controller in ``controller`` (a ``LocalController``) when given one, whose runs ask Ray's autoscaler for their
    workers only when ``autoscaler`` (``asking_no_one``), and that starts two helper actors fewer per run:

    - no DatasetManager: Ray's DatasetsCallback starts one per run even when no Ray Dataset is passed (ours never
      pass one: workers read their own units), and it cost a trial about a third of a core while it lived;
    - no PlacementGroupCleaner: a detached actor per run, started as a new process (measured: 4.6 CPU-s of a
      1-epoch trial's 13 helper CPU-s), that asks the State API every second whether the controller lives, to
      remove the worker group's placement group if it died. The product's drivers already release the groups of
      dead controllers (training/progress.py: the sweep's callback every RELEASE_EVERY_S, a train run while it
      waits), and a job's groups go when the job ends. What it trades: a group left by a dead controller is
      released by the driver's next look while a sweep runs, not by a watcher within 1 s."""
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    class Trainer(DataParallelTrainer):
        def _create_default_callbacks(self):
            unwanted = PlacementGroupCleanerCallback if self.datasets else (DatasetsCallback,
                                                                              PlacementGroupCleanerCallback)
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unwanted)]

        interrupted = False   # Ctrl-C asked Ray's handler to abort the run (``fit`` then raises SystemExit)

        def _register_sigint_handler(self, controller_handle):   # Ray's handler, the first Ctrl-C noticed
            import signal

            super()._register_sigint_handler(controller_handle)
            ray_handler = signal.getsignal(signal.SIGINT)

            def noticed(signum, frame):
                self.interrupted = True
                ray_handler(signum, frame)

            signal.signal(signal.SIGINT, noticed)

        def _initialize_and_run_controller(self, **controller_kwargs):  # Ray's signature: its keywords pass through
            controller_kwargs["failure_policy"] = policy(self.run_config.failure_config)
            if not autoscaler:
                controller_kwargs["scaling_policy"] = asking_no_one(controller_kwargs["scaling_policy"])
            if controller is None:
                return super()._initialize_and_run_controller(**controller_kwargs)
            return controller.run(controller_kwargs)

    return Trainer


def failure_policy_base() -> tuple[type, type]:
    """(DefaultFailurePolicy, FailureDecision) of Ray Train V2: retry worker failures up to ``max_failures``."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision

    return DefaultFailurePolicy, FailureDecision
