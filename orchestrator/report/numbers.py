"""The report's numbers: pure functions of an experiment's leaderboard rows (no files, no plots)."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Optional

import numpy as np

from .. import metrics as registry
from ..errors import ConfigError
from ..leaderboard import ranking
from ..leaderboard.columns import KNOWN_TYPES, column_type
from ..leaderboard.ranking import finite

METHODS = ("static", "uncertainty", "dwa")
_NOT_HP = {"confirm_of", "baseline_task", "baseline_key", "ablation_of", "ablation_dim", "ablation_value"}
_HP = ("freeze_depth", "backbone_lr", "head_lr", "loss_weighting", "optimizer", "batch_size", "max_epochs", "seed")


def fmt(v) -> str:
    """Measured numbers with 4 significant digits (``0.9300``); "-" for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:#.4g}" if isinstance(v, float) else str(v)


def _method(row: dict) -> str:
    return row.get("loss_weighting") or "static"


def _order(method: str) -> tuple:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def task_scores(trials: list[dict]) -> list[tuple[str, str]]:
    """(task, score metric) in config order, from a row's stored config; else from the ``best_<task>_<metric>``
    columns."""
    for r in trials:
        tasks = r["config"].get("tasks") if isinstance(r.get("config"), dict) else None
        if tasks:
            return [(t, tc.get("metric") or registry.default_score(tc["type"])) for t, tc in tasks.items()]
    cols = dict.fromkeys(k[5:] for r in trials for k in r if k.startswith("best_") and k != "best_objective")
    return [tuple(c.rsplit("_", 1)) for c in cols]


def pareto_metrics(trials: list[dict], chosen: Optional[list[str]]) -> Optional[list[str]]:
    """The two Pareto metrics: ``chosen`` (checked: a value in some trial and a known direction) or the first two
    tasks' score metrics; None when the experiment has one task and nothing was chosen."""
    if not chosen:
        scores = [f"{t}_{m}" for t, m in task_scores(trials)]
        return scores[:2] if len(scores) >= 2 else None
    chosen = list(dict.fromkeys(chosen))
    if len(chosen) != 2:
        raise ConfigError(f"--metrics needs exactly two metrics for the Pareto plot, got {chosen}")
    having = [c for c in dict.fromkeys(k for r in trials for k in r) if any(finite(r.get(c)) is not None for r in trials)
              and (c in ("objective", "best_objective") or registry.direction(c) is not None)]
    for m in chosen:
        if m not in having:
            raise ConfigError(f"unknown metric {m!r} for this experiment's trials; choose two of: {', '.join(having)}")
    return chosen


def summarize(rows: list[dict], *, best: Optional[dict], front: list[dict], pair: Optional[list[str]]) -> dict:
    """The report's numbers from the experiment's rows (every kind), the best trial and the Pareto front rows.
    Failed trials and trials without a finite objective are left out of the freeze-depth summary (and counted)."""
    trials = [r for r in rows if ranking.kind_of(r) == "trial"]
    mode = next((r["objective_mode"] for r in trials if r.get("objective_mode")), "max")
    tasks = task_scores(trials)
    by_depth, dm = defaultdict(list), defaultdict(list)
    for r in plotted(trials):
        by_depth[r["freeze_depth"]].append(r)
    measured = delta_m_rows(trials)
    other_baselines = len(_with_delta_m(trials)) - len(measured)
    for r in measured:
        dm[_method(r)].append(r["delta_m_pct"])
    originals = {r["trial_id"]: r for r in trials}
    confirm = ranking.confirmed(rows, originals=originals)
    best_info = None if best is None else {
        "trial_id": best["trial_id"], "sweep_id": best.get("sweep_id"), "status": best.get("status"),
        "objective": best.get("objective"), "delta_m_pct": finite(best.get("delta_m_pct")),
        "metrics": {k: best[k] for t, _ in tasks for k in sorted(best) if k.startswith(f"{t}_") and
                    finite(best[k]) is not None}, "hyperparameters": hyperparameters(best)}
    return {
        "sweep_ids": sorted({r["sweep_id"] for r in trials if r.get("sweep_id")}),   # the trials' (not baselines')
        "counts": dict(Counter(r["status"] for r in trials)),
        "kinds": {**Counter(ranking.kind_of(r) for r in rows),   # confirmation runs: those ranked (no merged copy,
                  "confirm": sum(c["n"] + len(c["diverged"]) + len(c["failed"]) for c in confirm)},   # no older data)
        "objective_metric": next((r["objective_metric"] for r in trials if r.get("objective_metric")), "objective"),
        "objective_mode": mode, "tasks": tasks, "best": best_info,
        "freeze": {d: {"n": len(g), "completed": sum(r["status"] == "completed" for r in g),
                       "mean": float(np.mean([r["objective"] for r in g])),
                       "best": registry.best_of([r["objective"] for r in g], mode)} for d, g in sorted(by_depth.items())},
        "left_out": {"failed": sum(r["status"] == "failed" for r in trials),
                     "no_objective": sum(r["status"] != "failed" and finite(r.get("objective")) is None
                                         for r in trials),
                     "other_baselines": other_baselines},
        "pareto": {"metrics": pair, "trial_ids": [r["trial_id"] for r in front],
                   "rows": [{"trial_id": r["trial_id"], "status": r.get("status"), "epochs": r.get("epochs"),
                             **{m: r.get(m) for m in pair or ()}} for r in front],
                   "n_trials": len(front_candidates(trials, pair)) if pair else 0},
        "delta_m": {m: {"mean": float(np.mean(dm[m])), "n": len(dm[m])} for m in sorted(dm, key=_order)},
        "confirm": confirm,
        "baselines": [{"task": t, "trial_id": r["trial_id"], "status": r.get("status"), "seed": r.get("seed"),
                       "metric": m, "value": r.get(f"{t}_{m}")}
                      for r in rows if r.get("kind") == "baseline" for t, m in tasks if t == r.get("baseline_task")],
    }


def _with_delta_m(trials: list[dict]) -> list[dict]:
    """Completed trials with a Δm% (a stopped trial's early score against full-budget baselines is no Δm%: methods
    stopped more often looked worse)."""
    return [r for r in trials if r["status"] == "completed" and finite(r.get("delta_m_pct")) is not None]


def delta_m_rows(trials: list[dict]) -> list[dict]:
    """The trials in "Δm% by loss weighting": ``_with_delta_m``'s, measured against the newest one's baselines
    (``baselines_id``: a sweep of another base config measures on another scale)."""
    rows = _with_delta_m(trials)
    scale = max(rows, key=ranking.newest_first).get("baselines_id") if rows else None   # the newest code's, then time
    return [r for r in rows if r.get("baselines_id") == scale]


def front_candidates(trials: list[dict], pair) -> list[dict]:
    """The trials the Pareto front is drawn from: pickable (not failed or diverged), with both metrics; with Δm% on
    an axis, those measured against the newest one's baselines (as `pareto` ranks)."""
    pool = [r for r in trials if ranking.pickable(r) and all(finite(r.get(m)) is not None for m in pair)]
    return ranking.newest_version(pool, by=pair) if pool and "delta_m_pct" in pair else pool


# what the report calls the trials that ``plotted`` leaves out beside the failed ones: a completed trial can have one
# too (an AUC on validation data of one class)
NO_OBJECTIVE = "without a finite objective (diverged, or a score the validation data leave undefined)"


def plotted(trials: list[dict]) -> list[dict]:
    """The trials in the freeze-depth plot and summary: not failed, with a finite objective."""
    return [r for r in trials if r["status"] != "failed" and finite(r.get("objective")) is not None]


def hyperparameters(row: dict) -> dict:
    """The row's fixed hyperparameter columns, its loss weights and any other searched column."""
    searched = [k for k in row if k not in KNOWN_TYPES and column_type(k) is None and k not in _NOT_HP]
    keys = [*_HP, *sorted(k for k in row if k.startswith("weight_")), *searched]
    return {k: row[k] for k in dict.fromkeys(keys) if row.get(k) is not None}


def summary_lines(result: dict) -> list[str]:
    """Three lines for a terminal: the best trial (with Δm%), the Pareto front's size, the freeze-depth summary."""
    b, p = result["best"], result["pareto"]
    if b is None:
        first = "best trial: none (no trial has an objective)"
    else:
        dm = f"Δm% {fmt(b['delta_m_pct'])}" if b["delta_m_pct"] is not None else "Δm% n/a (no single-task baselines)"
        early = " (stopped early)" if b.get("status") == "stopped" else ""   # its scores: of the epoch it stopped at
        first = f"best trial {b['trial_id']}{early}: {result['objective_metric']} {fmt(b['objective'])}, {dm}"
    second = (f"Pareto front ({p['metrics'][0]} vs {p['metrics'][1]}): {len(p['trial_ids'])} of {p['n_trials']} "
              f"trials: {', '.join(p['trial_ids']) or 'none'}" if p["metrics"] else
              "Pareto front: one task; choose two metrics with --metrics a,b")
    third = "freeze depth: " + ("; ".join(f"{d}: mean {fmt(s['mean'])} best {fmt(s['best'])} (n={s['n']})"
                                          for d, s in result["freeze"].items()) or "no trial has an objective")
    return [first, second, third]
