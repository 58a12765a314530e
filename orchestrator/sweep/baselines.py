"""Single-task baselines, for Δm%: each task trained alone with the same backbone, data, budget,
freeze depth and learning rates as the experiment's base config.

Baseline rows (kind ``baseline``) are keyed by ``rows.baseline_key`` (data fingerprint, backbone,
budget, freeze depth, learning rates, seed) and reused by any later sweep with the same key, so they
are trained once. They run as one small Tune run (one trial per task), like any sweep.
"""
from __future__ import annotations

from ..config.schema import ExperimentConfig
from ..errors import UserError
from ..leaderboard.rows import baseline_key


def single_task(cfg: ExperimentConfig, task: str) -> ExperimentConfig:
    d = cfg.model_dump(mode="json")
    d["tasks"] = {task: d["tasks"][task]}
    d["train"]["loss_weights"] = None
    d["train"]["loss_weighting"] = "static"
    d["objective"] = {"metric": "mean_score", "mode": None}
    d["search"] = None
    return ExperimentConfig.model_validate(d)


def recorded(cfg: ExperimentConfig, key: str) -> dict[str, float]:
    """task -> its baseline score already in the leaderboard (the latest with this key)."""
    from ..leaderboard.leaderboard import Leaderboard

    table = Leaderboard(cfg.storage).table(kind="baseline")
    if table.num_rows == 0 or "baseline_key" not in table.column_names:
        return {}
    out = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["created_at"]):
        task = row.get("baseline_task")
        if row.get("baseline_key") == key and task in cfg.tasks and row.get("status") == "completed":
            value = row.get(f"{task}_{cfg.tasks[task].score_metric}")
            if isinstance(value, float):
                out[task] = value
    return out


def baselines_for(session, *, out=print) -> dict[str, float]:
    """Baseline scores for every task of the session's config: reused when recorded, trained (once) when not."""
    cfg = session.cfg
    key = baseline_key(cfg, session.prepared.spec.fingerprint)
    have = recorded(cfg, key)
    missing = [t for t in cfg.tasks if t not in have]
    if have:
        out("single-task baselines reused: " + ", ".join(f"{t} {v:.4f}" for t, v in have.items()))
    if missing:
        from .runner import run_configs

        out(f"training single-task baselines for {', '.join(missing)} (same backbone, budget, freeze depth, rates)")
        configs = [single_task(cfg, t) for t in missing]
        run_configs(session, configs, kind="baseline", out=out,
                    extra=[{"baseline_task": t, "baseline_key": key} for t in missing])
        have = recorded(cfg, key)
        if have:
            out("single-task baselines: " + ", ".join(f"{t} {have[t]:.4f}" for t in missing if t in have))
    lost = [t for t in cfg.tasks if t not in have]
    if lost and cfg.objective.metric == "delta_m":   # every trial's objective would be NaN: stop before the sweep
        raise UserError(f"the single-task baselines of {', '.join(lost)} failed: objective delta_m needs them, so the "
                        f"sweep stops; see `orchestrator leaderboard --kind baseline -e {cfg.name} --format json` "
                        f"for the error, fix it and run again, or use objective.metric: mean_score")
    if lost:
        out(f"no baseline for {', '.join(lost)} (its run failed): Δm% is left empty")
        return {}
    return have
