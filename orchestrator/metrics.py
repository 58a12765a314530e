"""The one registry of metrics: name -> direction -> task types. Pure Python (no TensorFlow).

Everything that ranks, stops or compares reads it: the model (which metrics a task reports), the
worker, Tune (``TuneConfig.mode``, ASHA), the leaderboard (``top``/``best``/``best_*`` columns,
Pareto fronts) and reports. A reported column is ``<task>_<metric>`` (``left_accuracy``,
``sum_mae``), a run-level name (``objective``, ``train_loss``), or either with a ``best_`` prefix.

Δm% (``delta_m_pct``) compares a multi-task trial with single-task baselines trained on the same
data, backbone and budget: the mean over tasks of the relative difference of each task's score
metric, signed so that **positive means better than single-task** (LibMTL's sign; Maninis et al.
2019 define Δm with the opposite sign, where lower is better).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

TASK_TYPES = ("classification", "binary", "regression")


@dataclass(frozen=True)
class Metric:
    name: str
    mode: str                   # "max": higher is better; "min": lower is better
    task_types: tuple[str, ...]  # task types that report it (empty: a run-level metric)
    doc: str


_TASK_METRICS = (
    Metric("accuracy", "max", ("classification", "binary"), "fraction of correct predictions"),
    Metric("auc", "max", ("binary",), "area under the ROC curve (from 16,384 bins of the logit, the same across "
                                       "workers: pairs within 0.26% of |z| of each other count half)"),
    Metric("mae", "min", ("regression",), "mean absolute error, in label units"),
    Metric("rmse", "min", ("regression",), "root mean squared error, in label units"),
    Metric("r2", "max", ("regression",), "coefficient of determination"),
    Metric("loss", "min", TASK_TYPES, "validation loss (cross-entropy, or MSE on standardized targets)"),
)
_RUN_METRICS = (
    Metric("mean_score", "max", (), "mean over tasks of each task's score (mae/rmse negated)"),
    Metric("delta_m", "max", (), "Δm% against single-task baselines (+ = better than single-task)"),
    Metric("delta_m_pct", "max", (), "Δm% against single-task baselines (+ = better than single-task)"),
    Metric("train_loss", "min", (), "weighted training loss, mean over the epoch's steps"),
    Metric("wall_time_s", "min", (), "trial wall time"),
    Metric("epochs", "max", (), "epochs trained"),
    Metric("examples_per_s", "max", (), "training throughput"),
    Metric("confirmed_mean", "max", (), "mean objective over confirmation seeds (objective's direction)"),
)
TASK_METRICS: dict[str, Metric] = {m.name: m for m in _TASK_METRICS}
RUN_METRICS: dict[str, Metric] = {m.name: m for m in _RUN_METRICS}


# What a worker reports beside its metrics: no learning curve. Matched whole: a task may be named status or ranking
_RUN_FIELDS = re.compile(r"(status|config_hash|world_size|steps_per_epoch|rank\d+_(steps|peak_rss_mb))")


def is_run_field(key: str) -> bool:
    return _RUN_FIELDS.fullmatch(key) is not None


def task_of(key: str) -> Optional[tuple[str, str]]:
    """``(task, metric)`` of a per-task metric key (``world_size_accuracy`` -> ``("world_size", "accuracy")``), split at
    a registered metric's name (a task's name may hold underscores); None for any other key."""
    for name in () if key in RUN_METRICS else TASK_METRICS:
        if key.endswith("_" + name) and len(key) > len(name) + 1:
            return key[:-len(name) - 1], name
    return None


def metrics_for(task_type: str) -> tuple[str, ...]:
    """Metric names a task of this type reports, its default score metric first."""
    return tuple(m.name for m in _TASK_METRICS if task_type in m.task_types and m.name != "loss")


def default_score(task_type: str) -> str:
    return metrics_for(task_type)[0]


def objective_identity(metric: str, tasks: Mapping[str, Mapping]) -> str:
    """What an objective measures, the one thing an experiment's trials are ranked on: its metric and, for
    mean_score, the tasks and each one's score metric (``tasks``: a config's, as a dict): mean_score over sum's MAE
    is another number than over its R2, or over other tasks. (delta_m against other single-task baselines is another
    scale, which rankings keep apart by ``baselines_id``.)"""
    if metric != "mean_score":
        return metric
    def score(tc: Mapping) -> str:
        return tc.get("metric") or (default_score(tc["type"]) if tc.get("type") in TASK_TYPES else "?")

    scores = ", ".join(f"{t} {score(tc or {})}" for t, tc in sorted(tasks.items()))
    return f"{metric} of {scores}"


def direction(column: str, *, objective_mode: Optional[str] = None) -> Optional[str]:
    """"max" or "min" for a metric column, None if the column is not a known metric.

    ``objective``/``best_objective`` take their direction from the experiment's objective
    (``objective_mode``), since the objective can be any metric."""
    name = column.removeprefix("best_")
    if name == "objective":
        return objective_mode
    if name in RUN_METRICS:
        return RUN_METRICS[name].mode
    task = task_of(name)
    return TASK_METRICS[task[1]].mode if task else None


def task_metric_columns(columns) -> list[str]:
    """The per-task metric columns (``<task>_<metric>`` for every registered metric but the loss) among ``columns``,
    in their order: what epoch lines and tables show per task."""
    suffixes = tuple(f"_{m}" for m in TASK_METRICS if m != "loss")
    return [c for c in columns if c.endswith(suffixes) and not c.startswith(("best_", "train_loss_", "eff_weight_"))
            and len(c.split("_", 1)[0]) > 0]


def known_metric_names(tasks: Mapping[str, str]) -> list[str]:
    """Every metric a run with these tasks (name -> type) reports, plus the run-level ones."""
    names = [f"{t}_{m}" for t, tt in tasks.items() for m in metrics_for(tt) + ("loss",)]
    return names + ["mean_score", "delta_m"]


def sign(mode: Optional[str]) -> float:
    """+1 where higher is better ("max", or no known direction), -1 where lower is better ("min"): the one place a
    direction becomes a sign."""
    return -1.0 if mode == "min" else 1.0


def finite(value) -> Optional[float]:
    """A finite number as float, else None (missing, NaN, inf, bool, text)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def score(metric: str, value: float) -> float:
    """Higher is better: a metric's value, negated when lower is better."""
    return sign(TASK_METRICS[metric].mode) * value


def best_of(values, mode: str) -> Optional[float]:
    """The best finite value, None if there is none."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if mode == "max" else min(finite)


def delta_m_of(score_metrics: Mapping[str, str], record: Mapping[str, float], baselines: Mapping[str, float]) -> float:
    """Δm% of one epoch's (or row's) ``<task>_<metric>`` values against ``baselines``; NaN where it has none.
    ``score_metrics``: task -> its score metric."""
    dm = delta_m_pct({t: (m, record.get(f"{t}_{m}")) for t, m in score_metrics.items()}, baselines)
    return float("nan") if dm is None else dm


def baselines_id(baselines: Optional[Mapping[str, float]]) -> Optional[str]:
    """What a Δm% was measured against, as 12 hex digits (None without baselines): Δm% values of two ids are two
    scales."""
    if not baselines:
        return None
    import hashlib
    import json

    blob = json.dumps({t: float(v) for t, v in baselines.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def delta_m_pct(scores: Mapping[str, tuple[str, float]], baselines: Mapping[str, float]) -> Optional[float]:
    """Δm% = (100 / K) Σ_k s_k (M_k − B_k) / |B_k|, s_k = +1 if higher is better else −1.

    ``scores``: task -> (score metric, multi-task value); ``baselines``: task -> single-task value
    of the same metric. None when a task has no baseline (or a value is missing or zero)."""
    terms = []
    for task, (metric, value) in scores.items():
        base = baselines.get(task)
        if base is None or value is None or not math.isfinite(value) or not math.isfinite(base) or base == 0:
            return None
        terms.append(sign(TASK_METRICS[metric].mode) * (value - base) / abs(base))
    return 100.0 * sum(terms) / len(terms) if terms else None
