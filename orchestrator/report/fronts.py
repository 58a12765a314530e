"""Each scheduler's front hypervolume, for the report: the completed trials of every sweep of the experiment, grouped
by the scheduler their sweep ran (from its ``sweep.json``), their Pareto front over the metrics MO-ASHA ranked by
(else every task's score metric), and the hypervolume it dominates above a reference point at chance level.

Chance level, per metric (stated in the report): accuracy 1/K when the task lists its K classes, else 0; AUC 0.5;
R² 0; an error metric (MAE, RMSE), which has no chance level without the labels' spread, the worst value any trial
reached. Only completed trials count: a stopped trial's metrics are from an earlier epoch.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Optional

from pydantic import ValidationError

from .. import layout, storage
from .. import metrics as registry
from ..config.edges import edge_hints
from ..config.schema import SearchConfig
from ..leaderboard import ranking
from ..pareto import first_front, hypervolume, signed_point


def sweep_search(root: str, experiment: str, sweep_id: str) -> dict:
    """The search section a sweep ran with ({} when its sweep.json is gone)."""
    try:
        record = json.loads(storage.read_bytes(layout.sweep_record(root, experiment, sweep_id)))
        return record["config"].get("search") or {}
    except (OSError, ValueError, KeyError):
        return {}


def chance_level(metric: str, tasks: dict, values: list[float]) -> tuple[float, str]:
    """(reference value, how it was chosen) for one ``<task>_<metric>`` column."""
    task, _, name = metric.rpartition("_")
    spec = tasks.get(task) or {}
    if name == "accuracy":
        k = len(spec.get("classes") or ()) or (2 if spec.get("type") == "binary" else 0)
        return (1.0 / k, f"1/{k}: {k} classes") if k else (0.0, "classes not listed in the config")
    if name == "auc":
        return 0.5, "chance"
    if name == "r2":
        return 0.0, "predicting the mean"
    worst = registry.best_of(values, "max" if registry.direction(metric) == "min" else "min")
    return (worst if worst is not None else 0.0), "the worst value reached: no chance level without the labels"


def sweep_searches(trials: list[dict], root: str, experiment: str) -> dict:
    """sweep id -> the search section it ran with, for every sweep of ``trials`` (one read of each sweep.json)."""
    return {s: sweep_search(root, experiment, s) for s in sorted({r.get("sweep_id") for r in trials} - {None})}


def sweep_hints(trials: list[dict], searches: dict) -> dict:
    """sweep id -> its hints to widen a searched range (``config.edges``), for the sweeps that have any; a sweep whose
    sweep.json is gone or no longer validates gets none."""
    out = {}
    for sweep_id, search in searches.items():
        try:
            parsed = SearchConfig.model_validate(search)
        except ValidationError:
            continue
        rows = [r for r in trials if r.get("sweep_id") == sweep_id and isinstance(r.get("config"), dict)]
        if rows:
            hints = edge_hints(parsed, rows, tasks=list(rows[0]["config"].get("tasks") or ()),
                               mode=rows[0]["objective_mode"])
            if hints:
                out[sweep_id] = hints
    return out


def scheduler_fronts(trials: list[dict], searches: dict) -> Optional[dict]:
    """{metrics, reference, how, by_scheduler: {name: {sweeps, n, front, hypervolume}}}; None when fewer than two
    metrics are there to compare. ``searches``: ``sweep_searches``'s."""
    names = next((list(s["scheduler"]["metrics"]) for s in searches.values()
                  if (s.get("scheduler") or {}).get("type") == "moasha" and s["scheduler"].get("metrics")), None)
    tasks = next((r["config"]["tasks"] for r in trials if isinstance(r.get("config"), dict)
                  and r["config"].get("tasks")), {})
    names = names or [f"{t}_{spec.get('metric') or registry.default_score(spec['type'])}" for t, spec in tasks.items()]
    done = [r for r in trials if ranking.kind_of(r) == "trial" and r.get("status") == "completed"
            and all(ranking.finite(r.get(m)) is not None for m in names)]
    if len(names) < 2:
        return None
    ref, how = {}, {}
    for m in names:
        ref[m], how[m] = chance_level(m, tasks, [r[m] for r in done])
    ref_point = signed_point([ref[m] for m in names], names)
    groups = defaultdict(list)
    sweeps = defaultdict(set)
    for r in done:
        sch = (searches.get(r.get("sweep_id")) or {}).get("scheduler") or {}
        name = sch.get("type", "asha") if searches.get(r.get("sweep_id")) else "unknown"
        groups[name].append(signed_point([r[m] for m in names], names))
        sweeps[name].add(r["sweep_id"])
    by = {name: {"sweeps": sorted(sweeps[name]), "n": len(pts), "front": len(first_front(pts)),   # ties too
                 "hypervolume": hypervolume(pts, ref_point)} for name, pts in sorted(groups.items())}
    return {"metrics": names, "reference": ref, "how": how, "by_scheduler": by}


def hint_lines(res: dict) -> list[str]:
    if not res.get("hints"):
        return []
    out = ["## Ranges that bind", "", "The best trials of these sweeps lie at one end of a searched range: the best "
           "value may lie beyond it.", ""]
    for sweep_id, hints in res["hints"].items():
        out += [f"- sweep {sweep_id}: {h}" for h in hints]
    return out + [""]


def markdown_lines(res: dict, table) -> list[str]:
    f = res.get("fronts")
    if not f:
        return []
    out = ["## Front hypervolume by scheduler", "",
           f"Completed trials only; metrics {', '.join(f'`{m}`' for m in f['metrics'])}; reference point at chance "
           f"level: " + "; ".join(f"`{m}` {f['reference'][m]:.4g} ({f['how'][m]})" for m in f["metrics"]) +
           ". Larger is better.", ""]
    out += table(["scheduler", "sweeps", "completed trials", "front size", "hypervolume"],
                 [[name, len(b["sweeps"]), b["n"], b["front"], b["hypervolume"]]
                  for name, b in f["by_scheduler"].items()])
    return out
