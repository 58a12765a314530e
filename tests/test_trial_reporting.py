"""How a trial hands its Train run's reports to Tune (orchestrator.sweep.runner._fit_reporting), without Ray: a stand-in
trainer whose fit() puts metrics where the Train callback would, into a one-slot queue. The real path (Ray Train +
Tune, a driver slower than the trial) is tests/test_faults.py::test_a_busy_sweep_driver_does_not_strand_a_finished_trial."""
import json
import queue
import threading
import time

import pytest

from orchestrator.sweep.runner import _fit_reporting


class Trainer:
    def __init__(self, reports, epochs, *, fail_after=None, last_put_delay=0.0):
        self.reports, self.epochs, self.fail_after, self.delay = reports, epochs, fail_after, last_put_delay

    def fit(self):
        for epoch in range(1, self.epochs + 1):
            if epoch == self.epochs:
                time.sleep(self.delay)
            self.reports.put({"epoch": epoch})   # blocks while the slot is full, as the trial's queue does
            if epoch == self.fail_after:
                raise ValueError(f"worker failed after epoch {epoch}")


def test_every_report_reaches_tune_in_order_before_the_trial_ends():
    reports, seen = queue.Queue(1), []

    def slow_report(m):               # Tune asks for the next result late (a busy driver)
        time.sleep(0.05)
        seen.append(m["epoch"])

    _fit_reporting(Trainer(reports, 6, last_put_delay=0.2), reports, slow_report, poll_s=0.01)
    assert seen == [1, 2, 3, 4, 5, 6] and reports.empty()


def test_the_trial_ends_when_its_run_does_not_at_its_next_poll():
    """The reporting thread waits for reports with a timeout (``poll_s``), but fit()'s end wakes it: a trial's end
    (and its row) does not wait for the next poll. A liveness check, not a timing one: the poll here is 600 s."""
    reports, seen = queue.Queue(1), []
    trial = threading.Thread(target=_fit_reporting, args=(Trainer(reports, 2), reports, lambda m: seen.append(m["epoch"])),
                             kwargs={"poll_s": 600.0}, daemon=True)
    trial.start()
    trial.join(timeout=60)
    assert not trial.is_alive() and seen == [1, 2]


def test_a_failed_run_is_raised_in_the_trial_after_its_reports():
    reports, seen = queue.Queue(1), []
    with pytest.raises(ValueError, match="after epoch 2"):
        _fit_reporting(Trainer(reports, 5, fail_after=2), reports, lambda m: seen.append(m["epoch"]), poll_s=0.01)
    assert seen == [1, 2]


def test_the_fit_runs_beside_the_reporting_thread():
    reports, threads = queue.Queue(1), set()

    class Probe(Trainer):
        def fit(self):
            threads.add(threading.current_thread().name)
            super().fit()

    _fit_reporting(Probe(reports, 2), reports, lambda m: threads.add(threading.current_thread().name), poll_s=0.01)
    assert threads == {"train-fit", threading.current_thread().name}


def test_a_trial_that_tune_stops_aborts_its_run_and_waits_for_it():
    """Tune stops a trial by raising SystemExit from its report (ASHA): the trial aborts its Train run through the
    run's controller, and goes only once fit() has ended."""
    reports, seen, aborted = queue.Queue(1), [], []

    class Endless(Trainer):
        def fit(self):
            epoch = 0
            while not self.stop.is_set():
                epoch += 1
                try:
                    self.reports.put({"epoch": epoch}, timeout=0.01)
                except queue.Full:
                    epoch -= 1

    trainer = Endless(reports, 0)
    trainer.stop = threading.Event()

    def stopping_report(m):
        seen.append(m["epoch"])
        if m["epoch"] == 2:
            raise SystemExit(0)      # what Tune's report does once the trial is stopped

    def abort(controller, pending, done):
        aborted.append(controller)
        trainer.stop.set()
        assert done.wait(10)

    with pytest.raises(SystemExit):
        _fit_reporting(trainer, reports, stopping_report, controller="the run's controller", poll_s=0.01, abort=abort)
    assert seen == [1, 2] and aborted == ["the run's controller"]


def test_a_row_holds_the_epochs_tune_received():
    from orchestrator.training.progress import judged_history

    record = {"history": [{"epoch": e} for e in range(1, 6)]}          # the run went on after Tune's last result
    after_resume = [{"epoch": 3, "tune": True}]                      # this driver saw epoch 3 only
    assert [m["epoch"] for m in judged_history(after_resume, record, failed=False)] == [1, 2, 3]
    assert [m["epoch"] for m in judged_history([{"epoch": 1}], record, failed=True)] == [1, 2, 3, 4, 5]
    assert [m["epoch"] for m in judged_history([], record, failed=False)] == [1, 2, 3, 4, 5]
    assert judged_history([{"epoch": 1}], None, failed=False) == [{"epoch": 1}]


@pytest.mark.slow
def test_trials_that_asha_stops_end_their_runs_at_the_epoch_tune_judged(ray_session, tmp_path, monkeypatch):
    """ASHA (grace 1) over 4 trials on real Ray: every trial's row holds exactly the epochs Tune received (a stopped
    run's own record can be a report ahead), and a stopped trial's Train worker is gone, having trained at most the
    one epoch that was in flight when Tune stopped it.

    A trial used to start two processes besides its Train workers: Ray Train's TrainController actor and a one-slot
    Queue actor for its reports. The controller now runs in the trial's own process (``_ray.LocalController``) and
    the reports pass through a local queue: the sweep, stopped trials' aborts included, starts neither kind of actor.
    Tune hands a stopped trial's process to a later trial once its abort has ended; no later trial fails for it.
    Ray Train's SynchronizationActor (its report barrier) was one process per run, then one per trial process
    (``_ray.kept_sync_actors``); a 1-worker run's barrier is no process now (``SoloBarrier``)."""
    from ray.util.state import list_actors

    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep import callback as sweep_callback
    from orchestrator.sweep.tuner import tune
    from orchestrator.processes import running
    from orchestrator.training.progress import attempt_records, read_progress

    from factories import embedded, wait_until
    from test_faults import train_worker_pids

    seen, seen_objective = {}, {}
    real = sweep_callback.SweepCallback.on_trial_result

    def on_trial_result(self, iteration, trials, trial, result, **info):
        seen.setdefault(trial.trial_id, []).append(result["epoch"])
        seen_objective.setdefault(trial.trial_id, []).append(result["objective"])
        return real(self, iteration, trials, trial, result, **info)

    monkeypatch.setattr(sweep_callback.SweepCallback, "on_trial_result", on_trial_result)

    def helpers():
        """Actor IDs by class. Ray names Tune's trial actor class "ImplicitFunc" in the first sweep of a session and
        "wrap_function.<locals>.ImplicitFunc" in later ones: classes are matched on the last part of the name."""
        kinds = {kind: set() for kind in ("TrainController", "_QueueActor", "SynchronizationActor", "ImplicitFunc")}
        for a in list_actors(limit=10_000, raise_on_missing_output=False):
            kinds.get(a.class_name.rsplit(".", 1)[-1], set()).add(a.actor_id)
        return kinds

    before = helpers()
    cfg = parse_config(embedded(tmp_path, name="asha-stop", train={"epochs": 4, "head_lr": 3e-3},
                                resources={"workers": 1, "cpus_per_worker": 0.45},
                                search={"num_samples": 4, "searcher": "random", "max_concurrent_trials": 2,
                                        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
                                        "space": {"train.head_lr": {"loguniform": [1e-5, 3e-2]}}}))
    tune(cfg)
    rows = Leaderboard(str(tmp_path)).table(experiment="asha-stop").to_pylist()
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert len(rows) == 4 and stopped, [(r["trial_id"], r["status"], r["epochs"]) for r in rows]
    assert {r["status"] for r in rows} <= {"stopped", "completed"}, [(r["status"], r["reason"]) for r in rows]
    new = {kind: ids - before[kind] for kind, ids in helpers().items()}
    counts = {kind: (len(before[kind]), len(ids)) for kind, ids in new.items()}   # (before, new), for the message
    assert not new["TrainController"] and not new["_QueueActor"], counts
    # 1-worker runs get no SynchronizationActor (``_ray.SoloBarrier``); several-worker runs keep one per trial process
    assert not new["SynchronizationActor"] and 0 < len(new["ImplicitFunc"]) < len(rows), counts
    for r in rows:
        history = json.loads(r["history"]) if isinstance(r["history"], str) else r["history"]
        assert [h["epoch"] for h in history] == seen[r["trial_id"]], (r["trial_id"], history, seen)
    # ASHA's rungs are kept in the sweep's folder for --resume: every trial's epoch-1 objective at the first rung
    from orchestrator import layout

    (kept,) = json.loads(open(layout.scheduler_state(str(tmp_path), "asha-stop", rows[0]["sweep_id"],
                                                       "asha")).read())["rungs"]
    first_rung = kept[-1]   # Ray lists a bracket's rungs from the last
    assert first_rung == pytest.approx({r["trial_id"]: seen_objective[r["trial_id"]][0] for r in rows}), kept
    for r in stopped:
        run = str(tmp_path / "trials" / f"{r['sweep_id']}-{r['trial_id']}")
        (rank0,) = [record["pid"] for record in attempt_records(run)]
        wait_until(lambda: not running(rank0), timeout_s=120, what=f"trial {r['trial_id']}'s worker has exited")
        assert read_progress(run)["epoch"] <= r["epochs"] + 1, (r["trial_id"], r["epochs"], read_progress(run))
    wait_until(lambda: not train_worker_pids(), timeout_s=120, what="every Train worker process has exited")


def test_an_epoch_redone_after_a_worker_failure_counts_once():
    """A worker died in epoch 4 and the run resumed from epoch 2's checkpoint: Tune received epoch 3 twice. The
    row keeps the redone epoch (the run's own record), never the discarded attempt, failed or not."""
    from orchestrator.training.progress import judged_history

    received = [{"epoch": 1, "objective": 0.5}, {"epoch": 2, "objective": 0.6}, {"epoch": 3, "objective": 0.9},
                {"epoch": 3, "objective": 0.7}, {"epoch": 4, "objective": 0.8}]
    record = {"history": [received[0], received[1], received[3], received[4]]}
    for failed in (False, True):
        kept = judged_history(received, record, failed=failed)
        assert [(m["epoch"], m["objective"]) for m in kept] == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8)], failed
    assert [m["objective"] for m in judged_history(received, None, failed=False)] == [0.5, 0.6, 0.7, 0.8]
