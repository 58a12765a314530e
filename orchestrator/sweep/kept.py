"""Scheduler records kept across ``tune --resume``, and Ray's ASHA with its rungs kept.

Tune restores a scheduler as pickled at the sweep's start, empty: Ray never calls a scheduler's ``save`` or
``restore``. So a resumed sweep's scheduler would judge its trials as if nothing had been recorded before the kill:
ASHA would let every newcomer through until its rungs filled again, and the synchronous scheduler would cut its rungs
among the live trials only. Each of our schedulers keeps its records in a file of the sweep's folder instead.
"""
from __future__ import annotations

import json
from typing import Optional

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from ..metrics import finite
from .searchers import BAD


class KeptRecords:
    """Tune restores a scheduler as pickled at the sweep's start (empty) and keeps no state of it across a resume, so
    a scheduler's records live in ``state`` (a file in the sweep's folder, local or URI), written whenever they change
    and read back on first use. Subclasses give ``_records()`` (text) and ``_restore(text)``."""

    state: Optional[str] = None
    _loaded = False

    def __getstate__(self):   # Tune pickles the scheduler once, empty: the records live in ``state``
        d = dict(self.__dict__)
        d["_loaded"] = False
        return d

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        from .. import layout, storage

        if not self.state:
            return
        # a sweep started by older code kept its records in its own folder: read there, written at the new place
        for place in (self.state, layout.scheduler_state_kept_before(self.state)):
            if storage.exists(place):
                self._restore(storage.read_bytes(place).decode())
                return

    def _save(self) -> None:
        from .. import storage

        if self.state:
            storage.atomic_write(self.state, self._records().encode())

    def _records(self) -> str:
        raise NotImplementedError

    def _restore(self, text: str) -> None:
        raise NotImplementedError


class KeptASHA(KeptRecords, ASHAScheduler):
    """Ray's ASHA (the default scheduler), its rungs' recorded scores kept in ``state``: a resumed sweep judges
    newcomers against the scores recorded before the kill, as the uninterrupted sweep would."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, state: Optional[str] = None):
        ASHAScheduler.__init__(self, time_attr="epoch", max_t=max_t, grace_period=grace_period,
                               reduction_factor=reduction_factor)
        self.state = state
        self.stopped: set[str] = set()   # decided: a trial stopped once stays stopped (rerun after a resume too)

    def _records(self) -> str:
        return json.dumps({"rungs": [[{tid: float(score) for tid, score in recorded.items()}
                                      for _, recorded in bracket._rungs] for bracket in self._brackets],
                           "stopped": sorted(self.stopped)})

    def _restore(self, text: str) -> None:
        saved = json.loads(text)
        saved = saved if isinstance(saved, dict) else {"rungs": saved}   # older code kept the rungs only
        self.stopped |= set(saved.get("stopped", ()))
        for bracket, rungs in zip(self._brackets, saved["rungs"]):
            for (_, recorded), saved_rung in zip(bracket._rungs, rungs):
                recorded.update(saved_rung)

    def _count(self) -> int:
        return sum(len(recorded) for bracket in self._brackets for _, recorded in bracket._rungs)

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load()
        super().on_trial_add(tune_controller, trial)

    def _scored(self, result: dict) -> dict:
        """``result`` with a diverged trial's score (it may be finite under float16), a NaN one (an AUC of a one-class
        validation set: Ray's rung compares NaN < cutoff, False, and lets it through) or a missing one (a reused row's
        NaN epoch, kept as null) made the worst: it ranks last, as elsewhere. Finite: rungs take percentiles."""
        if self._metric in result and (result.get("status") == "diverged" or finite(result[self._metric]) is None):
            return {**result, self._metric: -self._metric_op * BAD}
        return result

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.trial_id in self.stopped:   # recorded where it was stopped: a rerun after --resume reaches no rung
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, self._scored(result))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load()
        if trial.trial_id in self.stopped:   # stopped before the driver was killed, and rerun since
            return TrialScheduler.STOP
        dead = result.get("status") == "diverged"
        result = self._scored(result)
        before = self._count()
        action = super().on_trial_result(tune_controller, trial, result)
        last = self._time_attr in result and self._metric in result and result[self._time_attr] >= self._max_t
        stops = (dead or action == TrialScheduler.STOP) and not last
        if stops:
            self.stopped.add(trial.trial_id)
        if last and trial.trial_id in self._trial_info:
            # Ray records nothing at the last epoch. A trial resumed past its last rung (the driver killed between that
            # epoch's checkpoint and its report) is recorded there now, at this score, as ASHA records a late arrival;
            # one recorded already is left as it is
            self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr],
                                                       self._metric_op * result[self._metric])
        if stops or self._count() != before:   # a decision made, or a score recorded at a rung
            self._save()
        return TrialScheduler.STOP if dead else action
