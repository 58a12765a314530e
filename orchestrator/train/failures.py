"""Failure policy and watching a run from the driver.

- A worker that dies (SIGKILL, lost node) is retried from the latest checkpoint
  (``FailureConfig(max_failures)``); a user error raised in a worker (``UserError``: bad data,
  config, shape, file) is never retried: the run fails at once with that error's one line.
  Ray Train V2 retries every worker error alike, so the trainer (``orchestrator.trainer``) gives its
  controller a failure policy that tells the two apart.
- ``watch`` prints a run's progress from the driver: a line per epoch (from the run's
  ``progress.json``, written by rank 0), and while the run waits for resources, one line every
  30 s saying what it waits for.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Callable, Optional

from .. import storage
from ..errors import UserError

WAIT_LINE_EVERY_S = 30.0


def find_user_error(exc: Optional[BaseException], _depth: int = 0) -> Optional[UserError]:
    """The UserError inside a worker failure, through Ray's and Ray Train's wrappers."""
    if exc is None or _depth > 12:
        return None
    if isinstance(exc, UserError):
        return exc
    for inner in (getattr(exc, "_base_exc", None), getattr(exc, "health_check_failure", None),
                  getattr(exc, "cause", None), exc.__cause__, exc.__context__):
        found = find_user_error(inner, _depth + 1)
        if found is not None:
            return found
    if hasattr(exc, "worker_failures"):
        for e in exc.worker_failures.values():
            found = find_user_error(e, _depth + 1)
            if found is not None:
                return found
    return None


def one_line(exc: BaseException) -> str:
    """What a failed run reports: the user error's line, or the first line of the crash."""
    user = find_user_error(exc)
    if user is not None:
        return str(user)
    failures = getattr(exc, "worker_failures", None)
    if failures:
        rank, e = sorted(failures.items())[0]
        text = (str(getattr(e, "_base_exc", e)).strip().splitlines() or [type(e).__name__])[-1]
        return storage.redact_text(f"worker {rank} failed: {text}"[:300])
    return storage.redact_text((str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300])


def failure_policy(failure_config):
    """Ray Train V2's default policy (retry worker failures up to max_failures), except that a
    UserError in any worker is raised at once."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    class NoRetryOnUserError(DefaultFailurePolicy):
        def make_decision(self, training_failed_error):
            if isinstance(training_failed_error, WorkerGroupError) and any(
                    find_user_error(e) for e in training_failed_error.worker_failures.values()):
                return FailureDecision.RAISE
            return super().make_decision(training_failed_error)

    return NoRetryOnUserError(failure_config)


def attempts(run_dir: str) -> list[int]:
    """The epoch each (re)start of a run resumed from, in order (0: from scratch)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(storage.join(run_dir, "attempts"))
    infos = sorted((i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                    if i.base_name.endswith(".json")), key=lambda i: float(i.base_name[:-5]))
    return [json.loads(storage.read_bytes(storage.join(run_dir, "attempts", i.base_name)))["start_epoch"]
            for i in infos]


def read_progress(run_dir: str) -> Optional[dict]:
    try:
        return json.loads(storage.read_bytes(storage.join(run_dir, "progress.json")))
    except (OSError, ValueError):
        return None


def write_progress(run_dir: str, history: list[dict], *, marks: Optional[dict] = None) -> None:
    """Rank 0's record of a run: epochs so far, and when its start-up steps ended (``marks``)."""
    storage.atomic_write(storage.join(run_dir, "progress.json"),
                         json.dumps({"epoch": history[-1]["epoch"] if history else 0, "history": history,
                                     "time": time.time(), "marks": marks or {}}, default=float).encode())


def waiting_line(what: str, request: dict, *, workers: int) -> Optional[str]:
    """A line saying what a run waits for, or None if no placement group is pending (it is starting)."""
    import ray
    from ray.util import placement_group_table

    pending = [pg for pg in placement_group_table().values() if pg.get("state") in ("PENDING", "RESCHEDULING")]
    if not pending:
        return None
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU") or k in request}
    return (f"{what} waits for resources: {workers} worker(s) x {request}; free now {free or 'nothing'}; "
            f"{len(pending)} placement group(s) pending (an autoscaler adds nodes if it can)")


RELEASE_EVERY_S = 5.0   # how often a waiting driver looks for placement groups left by killed trials


def release_orphaned_placement_groups() -> int:
    """Remove placement groups whose creating actor is dead; returns how many.

    Ray ties a placement group made by an actor to its job, not to the actor: it outlives a dead creator
    until the job ends. Ray Train's controller makes its worker group's, and hands it to a cleaner actor only
    once the workers have started. When Tune stops a trial (ASHA, the end of a sweep) the trial's actors die
    in turn; a controller that sees its workers die first restarts them with a new placement group and is
    killed before it registers it. That group then holds its CPUs/GPUs for the rest of the sweep, and a later
    trial waits for them forever (measured: 4 x 0.45 CPU held on 2 CPUs, a sweep stuck). Groups made by the
    driver (Tune's trial groups) have no creator actor and are left alone."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    removed = 0
    table = gcs_pb2.PlacementGroupTableData
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        pg = table.FromString(raw)
        if pg.state == table.REMOVED or pg.is_detached or ray.ActorID(pg.creator_actor_id).is_nil():
            continue
        # GCS marks creator_actor_dead on some deaths only: a controller destroyed with its trial's own
        # placement group leaves it False, so ask the actor table too.
        if not pg.creator_actor_dead and state.actor_table(pg.creator_actor_id.hex()).get("State") != "DEAD":
            continue
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
        removed += 1
    return removed


def release_now_and_then(last: float) -> float:
    """``release_orphaned_placement_groups`` at most every RELEASE_EVERY_S, best effort (a status check must never
    break a run); returns the time of the latest try, to pass back next time."""
    now = time.monotonic()
    if now - last < RELEASE_EVERY_S:
        return last
    try:
        release_orphaned_placement_groups()
    except Exception:  # noqa: BLE001 - the waiting line still says what is missing
        pass
    return now


def watch(run_dir: str, *, request: dict, workers: int, on_epoch: Callable[[dict], None], out=print,
          stop: threading.Event, poll_s: float = 1.0, what: str = "the run") -> threading.Thread:
    """Follow ``progress.json`` in a thread: ``on_epoch`` for each new epoch; a waiting line every 30 s
    until rank 0 has started."""
    def loop():
        seen, started, t0 = 0, False, time.monotonic()
        last_wait, last_release = t0, float("-inf")
        while not stop.is_set():
            progress = read_progress(run_dir)
            if progress is not None:
                started = True
                for m in progress["history"][seen:]:
                    on_epoch(m)
                seen = max(seen, len(progress["history"]))
            elif not started:   # an earlier sweep in this process may have left reserved resources behind
                last_release = release_now_and_then(last_release)
            if not started and time.monotonic() - last_wait >= WAIT_LINE_EVERY_S:
                last_wait = time.monotonic()
                try:
                    line = waiting_line(what, request, workers=workers)
                except Exception:  # noqa: BLE001 - a status line must never break the run
                    line = None
                if line:
                    out(line)
            stop.wait(poll_s)

    thread = threading.Thread(target=loop, daemon=True, name="orchestrator-watch")
    thread.start()
    return thread
