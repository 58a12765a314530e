"""Synchronous successive halving: the same promotions whatever order trials report in.

Rungs are at ``grace_period * reduction_factor**k`` epochs below ``max_t``. A trial that reaches a rung pauses (its
Train run stops; it gives its resources to the next trial) until every trial of the rung has reported there or
ended; then of the rung's n trials the best ``floor(n / reduction_factor)`` (at least one) resume and the rest stop.
A trial that ended before the rung (failed, diverged) ranks last, as in Syne Tune's synchronous Hyperband: a
rung's size is as planned, whatever fails. A trial whose own ``train.epochs`` (searched) ends at a rung is ranked
there but not paused: it ends, and the promotions go to trials that can train on (one among a rung's best that
ends by the next rung finishes without taking a slot). Rung 0 holds every trial of
the sweep, so the decision waits for all of them. A resumed trial is the same Tune trial: its
function starts again and its Train run (same name) continues from its own latest checkpoint.

Concurrency: trials waiting at a rung hold no slot. ``has_room`` tells the searcher when a new trial may start, and
``choose_trial_to_run`` resumes promoted trials only while fewer than ``concurrent`` run.
Ray's HyperBandScheduler is not used: its first bracket runs every trial to ``max_t`` without halving.
Resume (``tune --resume``): Tune restores this scheduler empty, as pickled at the sweep's start, and adds every trial
again (the finished ones count as ended). So the rungs' records and decisions are written to ``state`` (a file in the
sweep's folder) whenever they change and read back on first use, as MO-ASHA does: a decision made before a kill
stands. A resumed trial's first report can be past several rungs; each is judged in turn, from its run's record.
"""
from __future__ import annotations

import json
import math
from typing import Callable, Optional

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from .kept import KeptRecords


def rungs_for(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which trials are compared (SyncHalving's and MO-ASHA's rungs): grace_period * reduction_factor**k,
    below max_t, ascending."""
    rungs, k = [], 0
    while (r := int(round(grace_period * reduction_factor ** k))) < max_t:
        if not rungs or r > rungs[-1]:
            rungs.append(r)
        k += 1
    return rungs


class RunHistory:
    """A trial's per-epoch record, read from its Train run's progress file (a plain class: Tune pickles it)."""

    def __init__(self, storage_location: str, sweep_id: str):
        self.storage_location, self.sweep_id = storage_location, sweep_id

    def __call__(self, trial_id: str) -> list:
        from .. import layout
        from ..training.progress import read_progress

        progress = read_progress(layout.run_dir(self.storage_location, layout.trial_run_name(self.sweep_id, trial_id)))
        return progress["history"] if progress else []


class TrialEpochs:
    """A trial's own ``train.epochs`` from its params (where the sweep searches it), once per trial."""

    def __init__(self, base: dict, *, n_blocks: int | None = None):
        self.base, self.n_blocks, self.seen = base, n_blocks, {}

    def __call__(self, trial: Trial) -> int:
        if trial.trial_id not in self.seen:
            from ..config.schema import ExperimentConfig
            from .runner import trial_config

            cfg = trial_config(ExperimentConfig.model_validate(self.base), trial.config, n_blocks=self.n_blocks)
            self.seen[trial.trial_id] = cfg.train.epochs
        return self.seen[trial.trial_id]


class SyncHalving(KeptRecords, FIFOScheduler):
    """One synchronous successive-halving bracket over all ``trials`` of a sweep (see the module doc)."""

    _supports_buffered_results = False   # decide on every epoch's result as it comes (as Ray's HyperBand does)

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, trials: int, concurrent: int,
                 mode: str, history: Optional[Callable[[str], list]] = None, state: Optional[str] = None,
                 epochs_of: Optional[Callable[[Trial], int]] = None):
        super().__init__()
        self.history = history   # trial id -> its run's per-epoch record (for a rung its reports skipped)
        self.epochs_of = epochs_of   # a trial's own train.epochs, where it is searched (else max_t for all)
        self.state = state   # where the rungs are kept across a resume (KeptRecords)
        self._metric, self.mode, self.time_attr = "objective", mode, "epoch"   # what every trial reports
        self.rungs = rungs_for(max_t, grace_period, reduction_factor)
        self.eta, self.trials, self.concurrent = reduction_factor, trials, concurrent
        self.added: dict[str, Trial] = {}
        self.next_rung: dict[str, int] = {}                         # rung index each trial heads for
        self.values: list[dict[str, float]] = [{} for _ in self.rungs]
        self.promoted: list[Optional[set]] = [None for _ in self.rungs]   # None: undecided
        self.waiting: set[str] = set()                                # paused, awaiting a decision
        self.to_resume: set[str] = set()                              # paused, promoted
        self.ended: set[str] = set()
        self.finishing: set[str] = set()                              # at a rung that is their last epoch
        self.stalls = 0                                               # Tune steps with nothing running

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True   # metric and mode are ours (the sweep's objective)

    def _records(self) -> str:
        return json.dumps({"trials": self.trials, "values": self.values,
                           "promoted": [None if p is None else sorted(p) for p in self.promoted]})

    def _restore(self, text: str) -> None:
        saved = json.loads(text)
        self.trials, self.values = saved["trials"], saved["values"]
        self.promoted = [None if p is None else set(p) for p in saved["promoted"]]

    # -- what the searcher and Tune ask ---------------------------------------------------
    def has_room(self) -> bool:
        """May a new trial start? (trials paused at a rung hold no slot)"""
        return self._running() < self.concurrent

    def _running(self) -> int:
        return len(self.added) - len(self.ended) - len(self.waiting) - len(self.to_resume)

    def choose_trial_to_run(self, tune_controller) -> Optional[Trial]:
        self._unstall(tune_controller)
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING and trial.trial_id not in self.to_resume:
                return trial
        for tid in sorted(self.to_resume):
            trial = self.added[tid]
            if trial.status != Trial.PAUSED:
                self.to_resume.discard(tid)   # Tune took it (PENDING, then RUNNING)
            elif self._running() < self.concurrent:
                self.to_resume.discard(tid)
                return trial
        return None

    def _unstall(self, tune_controller) -> None:
        """Fewer trials than expected (the searcher ran out, the time budget): once nothing runs or waits to start
        for a few of Tune's steps (each asks the searcher first), rung 0 decides with the trials it has."""
        if self.promoted[0] is None and self.added and self._running() <= 0:
            self.stalls += 1
            if self.stalls >= 3:
                self.trials = len(self.added)
                self._decide(tune_controller, 0)
        else:
            self.stalls = 0

    # -- Tune's notifications ------------------------------------------------------------
    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._load()
        self.added[trial.trial_id] = trial
        self.next_rung.setdefault(trial.trial_id, 0)
        if trial.status == Trial.TERMINATED:   # `--resume` adds finished trials again, to a scheduler that starts empty
            self._end(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        tid = trial.trial_id
        while (k := self.next_rung[tid]) < len(self.rungs) and result.get(self.time_attr, 0) >= self.rungs[k]:
            new = tid not in self.values[k]   # else recorded before a resume: kept
            if new:
                self.values[k][tid] = self._score(self._at_rung(tid, result, self.rungs[k]))
            self.next_rung[tid] = k + 1
            if self.epochs_of is not None and self.rungs[k] >= self.epochs_of(trial):
                self.finishing.add(tid)   # its budget ends here: ranked at the rung, it ends, it is not promoted
            if not self._decide(tune_controller, k) and new:   # a decision saves the new score with it
                self._save()
            if tid in self.finishing:
                return TrialScheduler.CONTINUE
            if self.promoted[k] is None:
                self.waiting.add(tid)
                return TrialScheduler.PAUSE
            if tid not in self.promoted[k]:
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._end(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._end(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._end(tune_controller, trial)

    # -- decisions -------------------------------------------------------------------------
    def _score(self, result: dict) -> float:
        v = result.get(self._metric)
        ok = isinstance(v, (int, float)) and math.isfinite(v) and result.get("status") != "diverged"
        return (v if self.mode == "max" else -v) if ok else -math.inf

    def _at_rung(self, tid: str, result: dict, epoch: int) -> dict:
        """The trial's metrics at the rung's epoch. A paused Train run can train a little further before it stops;
        resumed from that later checkpoint, its first report is past the rung: the run's own record has the rung."""
        if result.get(self.time_attr) == epoch or self.history is None:
            return result
        try:
            return next((h for h in self.history(tid) if h.get(self.time_attr) == epoch), result)
        except (OSError, ValueError, TypeError):
            return result

    def _end(self, tune_controller, trial: Trial) -> None:
        tid = trial.trial_id
        self.ended.add(tid)
        self.waiting.discard(tid)
        self.to_resume.discard(tid)
        for k in range(len(self.rungs)):
            self._decide(tune_controller, k)

    def _participants(self, k: int) -> Optional[set]:
        if k == 0:
            return set(self.added) if len(self.added) >= self.trials else None
        return self.promoted[k - 1]

    def _decide(self, tune_controller, k: int) -> bool:
        """Rung k's promotions, once every participant reported there or ended; True when it decided (and saved)."""
        who = self._participants(k)
        if self.promoted[k] is not None or who is None or any(
                t not in self.values[k] and t not in self.ended for t in who):
            return False
        alive = sorted((t for t in who if t not in self.ended and t not in self.finishing),
                       key=lambda t: (-self.values[k][t], t))
        keep = max(1, int(len(who) / self.eta)) if alive else 0
        self.promoted[k] = self._promote(alive, keep, k)
        self._save()
        for tid in sorted(who & self.waiting):
            self.waiting.discard(tid)
            if tid in self.promoted[k]:
                self.to_resume.add(tid)
            else:
                tune_controller.stop_trial(self.added[tid])
        return True

    def _promote(self, alive: list[str], keep: int, k: int) -> set:
        """Rung k's promotions from ``alive`` (best first): the best ``keep`` that train past the next rung, and the
        trials among the best ``keep`` whose own ``train.epochs`` ends by then, which finish without a slot (a slot
        given to each would leave the next rung no trial that trains on)."""
        if self.epochs_of is None or k + 1 >= len(self.rungs):
            return set(alive[:keep])
        ends = {t for t in alive if self.epochs_of(self.added[t]) <= self.rungs[k + 1]}
        return set([t for t in alive if t not in ends][:keep]) | (set(alive[:keep]) & ends)

    def debug_string(self) -> str:
        decided = sum(p is not None for p in self.promoted)
        return f"SyncHalving: rungs {self.rungs}, {decided} decided, {len(self.waiting)} waiting"
