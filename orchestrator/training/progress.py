"""A run as the driver sees it: rank 0's ``progress.json`` (the epochs so far, and when its start-up steps ended),
the record of its (re)starts, and ``watch``, which follows a run from the driver: a line per epoch, and while the run
waits for resources, one line every 30 s saying what it waits for (after releasing resources that killed trials
left reserved).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Callable, Optional

from .. import _ray, layout, storage

WAIT_LINE_EVERY_S = 30.0
RELEASE_EVERY_S = 2.0   # how often a waiting driver looks for placement groups left by killed trials


def attempts(run_dir: str) -> list[int]:
    """The epoch each (re)start of a run resumed from, in order (0: from scratch)."""
    return [record["start_epoch"] for record in attempt_records(run_dir)]


def attempt_records(run_dir: str, *, since: float = 0.0) -> list[dict]:
    """Each (re)start's record, in order: ``start_epoch``, ``pid`` and ``notes`` (corrupt checkpoints passed over);
    ``since``: of the starts at or after that time (a record's name is its time)."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(layout.attempts(run_dir))
    infos = sorted((i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                    if i.base_name.endswith(".json") and float(i.base_name[:-5]) >= since),
                   key=lambda i: float(i.base_name[:-5]))
    return [json.loads(storage.read_bytes(storage.join(layout.attempts(run_dir), i.base_name))) for i in infos]


def read_progress(run_dir: str) -> Optional[dict]:
    try:
        return json.loads(storage.read_bytes(layout.progress_file(run_dir)))
    except (OSError, ValueError):
        return None


def write_progress(run_dir: str, history: list[dict], *, marks: Optional[dict] = None) -> None:
    """Rank 0's record of a run: epochs so far, and when its start-up steps ended (``marks``)."""
    storage.atomic_write(layout.progress_file(run_dir),
                         json.dumps({"epoch": history[-1]["epoch"] if history else 0, "history": history,
                                     "time": time.time(), "marks": marks or {}}, default=float).encode())


def judged_history(received: list[dict], record: Optional[dict], *, failed: bool) -> list[dict]:
    """The epochs a trial's row holds. ``received``: the results Tune had of this trial (this driver's); ``record``:
    the run's ``progress.json``, written before each report, so it also holds epochs from before a resume, and
    epochs Tune never received (a stopped run can be a report ahead). A trial that ended without error (completed,
    or stopped by the scheduler) keeps the record's epochs up to the last one Tune received; a failed one, the
    longer of the two (its last report may be lost)."""
    # an epoch redone after a worker failure (resumed from an earlier checkpoint) reached Tune twice: the redo counts
    received = list({m.get("epoch"): m for m in received}.values())
    own = (record or {}).get("history", [])
    if not received or (failed and len(own) > len(received)):
        return own or received
    if failed:
        return received
    kept = [m for m in own if m.get("epoch", 0) <= received[-1]["epoch"]]
    return kept if len(kept) >= len(received) else received


def waiting_line(what: str, request: dict, *, workers: int) -> Optional[str]:
    """A line saying what a run waits for, or None if none of this job's placement groups is pending (it is
    starting; another job's pending groups on a shared cluster are not this run's wait)."""
    import ray

    pending = _ray.pending_placement_groups(ray.get_runtime_context().get_job_id())
    if not pending:
        return None
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU") or k in request}
    return (f"{what} waits for resources: {workers} worker(s) x {request}; free now {free or 'nothing'}; "
            f"{pending} placement group(s) pending (an autoscaler adds nodes if it can)")


def release_orphaned_placement_groups() -> list[str]:
    """Remove this job's placement groups whose creating actor is dead; returns their ids (hex). Other jobs' groups on a
    shared cluster are left alone (their creators are theirs to judge, and their job's end releases them).

    Ray ties a placement group made by an actor to its job, not to the actor: it outlives a dead creator
    until the job ends. Ray Train's controller makes its worker group's, and hands it to a cleaner actor only
    once the workers have started. When Tune stops a trial (ASHA, the end of a sweep) the trial's actors die
    in turn; a controller that sees its workers die first restarts them with a new placement group and is
    killed before it registers it. That group then holds its CPUs/GPUs for the rest of the sweep, and a later
    trial waits for them forever (measured: 4 x 0.45 CPU held on 2 CPUs, a sweep stuck)."""
    import ray
    from ray.util.placement_group import PlacementGroup

    removed = []
    for group in _ray.placement_groups_with_dead_creators(ray.get_runtime_context().get_job_id()):
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group["id"]))))
        removed.append(group["id"])
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
    until rank 0 has started. Once ``stop`` is set it reads the file one last time, then ends."""
    def loop():
        seen, started, t0 = 0, False, time.monotonic()
        last_wait, last_release = t0, float("-inf")
        while True:
            finished = stop.is_set()
            progress = read_progress(run_dir)
            if progress is not None:
                started = True
                for m in progress["history"][seen:]:
                    on_epoch(m)
                seen = max(seen, len(progress["history"]))
            if finished:
                return
            if not started:   # an earlier sweep in this process may have left reserved resources behind
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
