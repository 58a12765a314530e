"""MO-ASHA: asynchronous successive halving that ranks trials on several metrics at once (``search.scheduler:
{type: moasha, metrics: [left_accuracy, right_accuracy, sum_r2]}``). Pure Python and Ray Tune; no TensorFlow.

Ray Tune's schedulers take one metric (ray#8018), and Optuna does not prune multi-objective studies (optuna#3450),
so a trial best on one task but mediocre on the mean would be stopped by ASHA on ``mean_score``. MO-ASHA
(Schmucker et al. 2021, arXiv 2106.12639; Syne Tune's MOASHA) keeps ASHA's rungs (epochs ``grace_period * η^k``
below ``max_t``) and its asynchrony, and changes only the ranking: when a trial reaches a rung, the rung's recorded
trials (it included) are ordered by non-dominated sorting, with an ε-net inside each front (``pareto.mo_order``), and
the trial continues if it is among the first ``ceil(n / η)`` (or ties exactly with one of them, as ASHA keeps
ties), else it stops. With one metric: the top ceil(n / η) by value, it included (not Ray's ASHA, which compares it
with a percentile of the scores recorded before it).

Each metric's direction comes from the registry (``metrics.direction``). Tune does not save a scheduler's state in
its experiment state (a restored Tuner gets the scheduler it was created with, empty), so the rungs are written to
``state`` (a file in the sweep's folder, local or URI) whenever they change and read back on first use: a resumed
sweep ranks its trials against everything recorded before the interruption, and a trial already recorded at a rung
is not ranked there again.
"""
from __future__ import annotations

import json
import math
from typing import Optional

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..pareto import mo_order, signed_point
from .kept import KeptRecords
from .syncsha import rungs_for


class Rungs:
    """The rung records and the decision, without Tune: milestone -> {trial id: point (higher is better)}, each
    rung in arrival order (the ε-net's ties go to the earlier trial)."""

    def __init__(self, marks: list[int], reduction_factor: float):
        self.marks, self.rf = list(marks), float(reduction_factor)
        self.recorded: dict[int, dict[str, list[float]]] = {m: {} for m in self.marks}
        self.stopped: set[str] = set()   # decided: a trial stopped once stays stopped (after a restart too)

    def on_result(self, trial_id: str, t: float, point: tuple, *, dead: bool = False) -> tuple[bool, bool]:
        """(continue?, recorded something?) for a trial that reached epoch ``t`` with ``point``: ranked at the
        highest rung it reached and is not yet recorded at; a trial recorded there already continues, one stopped
        before does not. ``dead`` (diverged): recorded as the worst point, and stopped."""
        if trial_id in self.stopped:
            return False, False
        if dead:
            point = [-math.inf] * len(point)
        keep, changed = self._rank(trial_id, t, point)
        if dead and keep:
            keep, changed = False, True
        if not keep:
            self.stopped.add(trial_id)
        return keep, changed

    def record(self, trial_id: str, t: float, point: tuple, *, dead: bool = False) -> bool:
        """Record a trial at its last epoch (nothing left to decide) at the highest rung it reached and is not yet
        recorded at, as ASHA records a late arrival: a trial resumed past its last rung. Whether it recorded."""
        if trial_id in self.stopped:
            return False
        return self._rank(trial_id, t, [-math.inf] * len(point) if dead else point)[1]

    def _rank(self, trial_id: str, t: float, point: tuple) -> tuple[bool, bool]:
        for m in reversed(self.marks):
            if t < m:
                continue
            rung = self.recorded[m]
            if trial_id in rung:
                return True, False
            rung[trial_id] = [float(x) for x in point]
            ids = list(rung)
            order = [ids[i] for i in mo_order([tuple(rung[i]) for i in ids])]
            kept = order[:math.ceil(len(ids) / self.rf)]
            # an exact tie with a kept trial continues too, as under ASHA (value >= cutoff)
            return trial_id in kept or any(rung[k] == rung[trial_id] for k in kept), True
        return True, False

    def to_json(self) -> str:
        return json.dumps({"marks": self.marks, "rf": self.rf, "stopped": sorted(self.stopped),
                           "recorded": {str(m): r for m, r in self.recorded.items()}})

    def load(self, text: str) -> None:
        """Records saved by ``to_json`` (the same rungs), merged under today's: nothing recorded is lost."""
        saved = json.loads(text)
        self.stopped |= set(saved.get("stopped", ()))
        for m, rung in saved.get("recorded", {}).items():
            if int(m) in self.recorded:
                self.recorded[int(m)] = {**rung, **self.recorded[int(m)]}


class MOASHA(KeptRecords, FIFOScheduler):
    """A Tune scheduler: MO-ASHA over ``metrics`` on ``time_attr`` (the reported epoch)."""

    def __init__(self, metrics: list[str], *, max_t: int, grace_period: int = 1, reduction_factor: float = 2.0,
                 time_attr: str = "epoch", state: Optional[str] = None):
        super().__init__()
        self.metrics, self.max_t, self.time_attr, self.state = list(metrics), int(max_t), time_attr, state
        self.rungs = Rungs(rungs_for(self.max_t, grace_period, reduction_factor), reduction_factor)
        self.stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True   # TuneConfig's one metric (the objective) is not what MO-ASHA ranks by

    def _records(self) -> str:
        return self.rungs.to_json()

    def _restore(self, text: str) -> None:
        self.rungs.load(text)

    def decide(self, trial_id: str, result: dict) -> str:
        """CONTINUE or STOP for one reported result (Tune-free, for tests and the bench)."""
        self._load()
        if self.time_attr not in result or any(m not in result for m in self.metrics):
            return TrialScheduler.CONTINUE
        t = result[self.time_attr]
        dead = result.get("status") == "diverged"   # its metrics may be finite (float16), or missing: it ranks last
        point = signed_point([None] * len(self.metrics) if dead else [result[m] for m in self.metrics], self.metrics)
        if t >= self.max_t:   # the last epoch: nothing left to decide (ASHA does the same)
            if self.rungs.record(trial_id, t, point, dead=dead):
                self._save()
            return TrialScheduler.STOP
        keep, changed = self.rungs.on_result(trial_id, t, point, dead=dead)
        if changed:
            self._save()
        if not keep:
            self.stopped += 1
        return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP

    def on_trial_add(self, tune_controller, trial):
        self._load()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def on_trial_complete(self, tune_controller, trial, result: dict):
        pass   # a finished trial has been ranked at every rung it reached

    def debug_string(self) -> str:
        sizes = ", ".join(f"epoch {m}: {len(r)}" for m, r in self.rungs.recorded.items())
        return f"MO-ASHA over {', '.join(self.metrics)}: {self.stopped} stopped; recorded {sizes or '-'}"

