"""Leaderboard rows: a pure function from a trial's config and per-epoch history to one row.

The Tune callback, baselines, confirmation runs and the tests all build rows here, so the schema
lives in one place. Column names and types: README, "Leaderboard".
"""
from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

from .. import metrics
from ..config.schema import ExperimentConfig
from ..config.space import hp_columns

HISTORY_SKIP = ("rank", "status", "config_hash", "world_size", "steps_per_epoch", "examples_per_s")


def trial_status(cfg: ExperimentConfig, history: list[dict], error: Optional[str]) -> tuple[str, Optional[str]]:
    """(status, reason): failed, diverged, stopped (fewer epochs than this trial's own budget) or completed."""
    last = history[-1] if history else {}
    epochs = int(last.get("epoch", 0))
    if error:
        return "failed", error
    if last.get("status") == "diverged":
        return "diverged", f"non-finite training loss at epoch {epochs}"
    if epochs < cfg.train.epochs:
        return "stopped", f"stopped early by the scheduler after epoch {epochs}"
    return "completed", None


def backbone_key(cfg: ExperimentConfig) -> str:
    b = cfg.backbone
    what = b.path if b.kind == "file" else b.name
    return f"{b.kind}:{what}:{b.weights}"


def baseline_key(cfg: ExperimentConfig, fingerprint: str) -> str:
    """What makes single-task baselines comparable: data, backbone and training budget."""
    t = cfg.train
    return (f"{fingerprint}|{backbone_key(cfg)}|epochs={t.epochs}|batch={t.batch_size}|freeze={t.freeze_depth}|"
            f"bb_lr={t.backbone_lr:g}|head_lr={t.head_lr:g}|opt={t.optimizer}|heads={cfg.heads.hidden_units}|"
            f"seed={t.seed}")


def _finite(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def trial_row(cfg: ExperimentConfig, history: list[dict], *, sweep_id: str, trial_id: str, searched: dict[str, Any],
              n_blocks: int, kind: str = "trial", error: Optional[str] = None, fingerprint: Optional[str] = None,
              wall_time_s: Optional[float] = None, started_at: Optional[datetime] = None,
              checkpoint: Optional[str] = None, versions: Optional[dict] = None,
              baselines: Optional[dict[str, float]] = None, extra: Optional[dict] = None) -> dict:
    """One leaderboard row. ``history``: the per-epoch metrics the worker reported, in order."""
    last = history[-1] if history else {}
    status, reason = trial_status(cfg, history, error)
    mode = cfg.objective_mode
    row: dict[str, Any] = {
        "row_id": uuid.uuid4().hex, "kind": kind, "experiment": cfg.name, "sweep_id": sweep_id, "trial_id": trial_id,
        "status": status, "reason": reason,
        "objective": _finite(last.get("objective")), "objective_metric": cfg.objective.metric, "objective_mode": mode,
        "best_objective": metrics.best_of([h.get("objective") for h in history], mode),
    }
    for task, tc in cfg.tasks.items():
        for name in metrics.metrics_for(tc.type) + ("loss",):
            row[f"{task}_{name}"] = _finite(last.get(f"{task}_{name}"))
        score = f"{task}_{tc.score_metric}"
        row[f"best_{score}"] = metrics.best_of([h.get(score) for h in history], metrics.direction(score))
    row["mean_score"] = _finite(last.get("mean_score"))
    scores = {t: (tc.score_metric, row[f"{t}_{tc.score_metric}"]) for t, tc in cfg.tasks.items()}
    row["delta_m_pct"] = metrics.delta_m_pct(scores, baselines) if baselines else None
    t = cfg.train
    row.update(freeze_depth=n_blocks if t.freeze_depth == "all" else int(t.freeze_depth), backbone_lr=t.backbone_lr,
               head_lr=t.head_lr, loss_weighting=t.loss_weighting, optimizer=t.optimizer, batch_size=t.batch_size,
               max_epochs=t.epochs, seed=t.seed)
    row.update({f"weight_{task}": w for task, w in cfg.normalized_loss_weights().items()})
    row.update({f"eff_weight_{task}": _finite(last.get(f"eff_weight_{task}")) for task in cfg.tasks})
    row.update(hp_columns(searched, n_blocks=n_blocks))
    row.update(
        epochs=int(last.get("epoch", 0)), train_loss=_finite(last.get("train_loss")),
        wall_time_s=wall_time_s, world_size=last.get("world_size"), examples_per_s=_finite(last.get("examples_per_s")),
        checkpoint=checkpoint, config=cfg.run_fields(), config_hash=cfg.config_hash(),
        worker_config_hash=last.get("config_hash"), data_fingerprint=fingerprint, backbone=backbone_key(cfg),
        versions=versions or {}, history=[compact_epoch(h) for h in history], started_at=started_at,
        created_at=datetime.now(timezone.utc))
    row.update(extra or {})
    return row


def compact_epoch(m: dict) -> dict:
    """The per-epoch record kept in a row's ``history`` (learning curves for reports)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith(HISTORY_SKIP)
            and k not in ("time_this_iter_s", "time_total_s", "timestamp", "training_iteration", "pid",
                          "time_since_restore", "iterations_since_restore")}
