"""Single-task baselines, for Δm%: each task trained alone with the same backbone, data, budget,
freeze depth and learning rates as the experiment's base config.

Baseline rows (kind ``baseline``) are keyed by ``baseline_key`` (the data by content, and everything the task's
single-task run trains with) and reused by any later sweep with the same key, so they are trained once. They run as
one small Tune run (one trial per task), like any sweep.
"""
from __future__ import annotations

import hashlib
import json

from ..config import schema
from ..config.schema import ExperimentConfig
from ..errors import UserError
from ..leaderboard.ranking import data_of


def single_task(cfg: ExperimentConfig, task: str) -> ExperimentConfig:
    d = cfg.model_dump(mode="json")
    d["tasks"] = {task: d["tasks"][task]}
    d["train"]["loss_weights"] = None
    d["train"]["loss_weighting"] = "static"
    d["objective"] = {"metric": "mean_score", "mode": None}
    d["search"] = None
    return ExperimentConfig.model_validate(d)


def baseline_key(cfg: ExperimentConfig, task: str, fingerprint: str, *, revision: int | None = None) -> str:
    """What makes ``task``'s baseline the same work: the data by content (``fingerprint``) and every field its
    single-task run trains with (the task, backbone, heads, data options, augmentation, budget, rates, freeze depth,
    optimizer, weight decay, precision, seed) and the code's training revision (``revision``: an earlier sweep's,
    as its record gives it; default this code's), not the experiment's name, storage or resources."""
    fields = single_task(cfg, task).run_fields()
    for where in ("name", "storage", "resources"):
        fields.pop(where, None)
    fields["training_revision"] = revision or schema.TRAINING_REVISION
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{fingerprint}|{task}|{digest}"


def recorded(cfg: ExperimentConfig, keys: dict[str, str]) -> dict[str, float]:
    """task -> its baseline score already in the leaderboard (the latest with its key in ``keys``)."""
    from ..leaderboard.leaderboard import Leaderboard

    table = Leaderboard(cfg.storage).table(kind="baseline")
    if table.num_rows == 0 or "baseline_key" not in table.column_names:
        return {}
    out = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["created_at"]):
        task = row.get("baseline_task")
        if task in keys and row.get("baseline_key") == keys[task] and row.get("status") == "completed":
            value = row.get(f"{task}_{cfg.tasks[task].score_metric}")
            if isinstance(value, float):
                out[task] = value
    return out


def recorded_for(p) -> dict[str, float] | None:
    """For one run (`train`, the demo's retrain) of a config on objective delta_m: the baselines its Δm% is measured
    against (None for another objective). A trial of a sweep (best.yaml, whatever its resources) keeps its sweep's
    (keyed on the sweep's base config); any other config, the ones recorded for its own key. A UserError naming the
    command that trains them when there are none."""
    cfg = p.cfg
    if cfg.objective.metric != "delta_m":
        return None
    have = _of_its_sweep(cfg, p.spec.fingerprint)
    if have is None:
        have = recorded(cfg, {t: baseline_key(cfg, t, p.spec.fingerprint) for t in cfg.tasks})
    if len(have) < len(cfg.tasks):
        raise UserError(f"objective delta_m needs single-task baselines of {', '.join(cfg.tasks)} on this data and "
                        f"budget: run `orchestrator baselines CONFIG` first (they are reused), or use "
                        f"objective.metric: mean_score")
    return have


def _of_its_sweep(cfg: ExperimentConfig, fingerprint: str) -> dict[str, float] | None:
    """The baselines of the newest sweep of this experiment that trained this config (resources aside) on this
    data, by this code; None without one."""
    from ..config.revision import revision_of
    from ..leaderboard.leaderboard import Leaderboard
    from ..leaderboard.query import rows as row_dicts
    from .confirm import sweep_baselines

    def recipe(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "resources"}

    try:
        rows = row_dicts(Leaderboard(cfg.storage).table(experiment=cfg.name))
    except (OSError, UserError):   # no readable leaderboard: no sweep trained it
        return None
    mine = recipe(cfg.run_fields())
    found = [r for r in rows if isinstance(r.get("config"), dict) and recipe(r["config"]) == mine
             and data_of(r) == fingerprint and revision_of(r) == schema.TRAINING_REVISION]
    for row in sorted(found, key=lambda r: str(r.get("created_at") or ""), reverse=True):
        baselines = sweep_baselines(row)
        if baselines:
            return baselines
    return None


def baselines_for(session, *, out=print) -> dict[str, float]:
    """Baseline scores for every task of the session's config: reused when recorded, trained (once) when not; {}
    when one failed (Δm% needs every task's), a UserError under objective delta_m."""
    cfg, have = session.cfg, measured(session, out=out)
    lost = [t for t in cfg.tasks if t not in have]
    if lost and cfg.objective.metric == "delta_m":   # every trial's objective would be NaN: stop before the sweep
        raise UserError(f"the single-task baselines of {', '.join(lost)} failed: objective delta_m needs them, so the "
                        f"sweep stops; see `orchestrator leaderboard --kind baseline -e {cfg.name} --format json` "
                        f"for the error, fix it and run again, or use objective.metric: mean_score")
    if lost:
        out(f"no baseline for {', '.join(lost)} (its run failed): Δm% is left empty")
        return {}
    return have


def measured(session, *, out=print) -> dict[str, float]:
    """task -> its baseline score, for the tasks whose baseline is recorded or trained now (a failed run's task is
    missing)."""
    cfg = session.cfg
    keys = {t: baseline_key(cfg, t, session.prepared.spec.fingerprint) for t in cfg.tasks}
    have = recorded(cfg, keys)
    missing = [t for t in cfg.tasks if t not in have]
    if have:
        out("single-task baselines reused: " + ", ".join(f"{t} {v:.4f}" for t, v in have.items()))
    if missing:
        from .runner import run_configs

        out(f"training single-task baselines for {', '.join(missing)} (same backbone, budget, freeze depth, rates)")
        configs = [single_task(cfg, t) for t in missing]
        run_configs(session, configs, kind="baseline", out=out,
                    extra=[{"baseline_task": t, "baseline_key": keys[t]} for t in missing])
        have = recorded(cfg, keys)
        if have:
            out("single-task baselines: " + ", ".join(f"{t} {have[t]:.4f}" for t in missing if t in have))
    return have
