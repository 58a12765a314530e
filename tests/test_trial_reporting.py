"""How a trial hands its Train run's reports to Tune (orchestrator.sweep.runner._fit_reporting), without Ray: a stand-in
trainer whose fit() puts metrics where the Train callback would, into a one-slot queue. The real path (Ray Train +
Tune, a driver slower than the trial) is tests/test_faults.py::test_a_busy_sweep_driver_does_not_strand_a_finished_trial."""
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
            self.reports.put({"epoch": epoch})      # blocks while the slot is full, as the Ray queue does
            if epoch == self.fail_after:
                raise ValueError(f"worker failed after epoch {epoch}")


def test_every_report_reaches_tune_in_order_before_the_trial_ends():
    reports, seen = queue.Queue(1), []

    def slow_report(m):               # Tune asks for the next result late (a busy driver)
        time.sleep(0.05)
        seen.append(m["epoch"])

    _fit_reporting(Trainer(reports, 6, last_put_delay=0.2), reports, slow_report, poll_s=0.01)
    assert seen == [1, 2, 3, 4, 5, 6] and reports.empty()


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
