"""Leaderboard rows: a pure function from a trial's config and per-epoch history to one row.

The Tune callback, baselines, confirmation runs and the tests all build rows here, so the schema
lives in one place. Column names and types: README, "Leaderboard".
"""
from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from .. import metrics, storage
from ..config import schema
from ..config.freezing import hashes_of_same_work
from ..config.schema import ExperimentConfig
from ..config.space import hp_columns, inactive_columns


def trial_status(cfg: ExperimentConfig, history: list[dict], error: Optional[str], *,
                 n_blocks: int) -> tuple[str, Optional[str]]:
    """(status, reason): failed, diverged, stopped (fewer epochs than this trial's own budget) or completed. The
    workers' config hash is one of ``hashes_of_same_work`` (a checkpoint from before a depth ran as 'all')."""
    last = history[-1] if history else {}
    epochs = int(last.get("epoch", 0))
    if error:
        return "failed", error
    trained = last.get("config_hash")
    if trained and trained not in hashes_of_same_work(cfg, n_blocks):   # the row would record values never trained
        return "failed", (f"the workers trained another config (hash {trained}) than the row records "
                          f"({cfg.config_hash()}): the workers run other orchestrator code than the driver, or a "
                          f"bug; the row is not ranked")
    if last.get("status") == "diverged":
        return "diverged", f"non-finite loss or model outputs at epoch {epochs}"
    if epochs < cfg.train.epochs:
        return "stopped", f"stopped early by the scheduler after epoch {epochs}"
    return "completed", None


def backbone_key(cfg: ExperimentConfig) -> str:
    b = cfg.backbone
    what = storage.redact(b.path) if b.kind == "file" else b.name
    return f"{b.kind}:{what}:{storage.redact(b.weights)}"


ABLATION_REFERENCE = "reference"   # an ablation row's ablation_dim for the winner's own values (sweep.ablate)


def ablated(extra: dict) -> str:
    """What an ablation run trains (its row's ablation columns), as its console line names it."""
    if extra["ablation_dim"] == ABLATION_REFERENCE:
        return "the winner's config"
    value = json.loads(extra["ablation_value"])   # stored as JSON: a string alternative is shown as written
    return f"{extra['ablation_dim']}={value if isinstance(value, str) else json.dumps(value)}"


def _finite(v) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class RowContext:
    """What every row of one Tune run shares: its sweep, the backbone's block count (freeze depth 'all' is stored
    as a number), the row kind, the data fingerprint, package versions, single-task baselines (for Δm%) and the
    code that made it."""
    sweep_id: str
    n_blocks: int
    kind: str = "trial"
    fingerprint: Optional[str] = None
    versions: Optional[dict] = None
    baselines: Optional[dict[str, float]] = None
    code: Optional[dict] = None            # code_version and git_commit (``sweep.provenance.provenance``)
    backbone_digest: Optional[str] = None  # the backbone or weights file the config names, by content


@dataclass(frozen=True)
class TrialFacts:
    """What the driver knows of one ended trial besides its config and history."""
    trial_id: str
    searched: dict[str, Any] = field(default_factory=dict)   # its searched values by dotted path
    error: Optional[str] = None
    wall_time_s: Optional[float] = None
    started_at: Optional[datetime] = None
    checkpoint: Optional[str] = None
    extra: Optional[dict] = None                               # kind-specific columns (baseline_task, confirm_of)


def trial_row(cfg: ExperimentConfig, history: list[dict], *, context: RowContext, trial: TrialFacts) -> dict:
    """One leaderboard row. ``history``: the per-epoch metrics the worker reported, in order.

    A diverged trial's objective and task metrics are null (no score comes from non-finite outputs); its ``best_*``
    columns keep the epochs before the divergence."""
    last = history[-1] if history else {}
    status, reason = trial_status(cfg, history, trial.error, n_blocks=context.n_blocks)
    judged = [h for h in history if h.get("status") != "diverged"]   # epochs whose scores mean something
    final = {} if status == "diverged" else last
    mode = cfg.objective_mode
    row: dict[str, Any] = {
        "row_id": uuid.uuid4().hex, "kind": context.kind, "experiment": cfg.name, "sweep_id": context.sweep_id,
        "trial_id": trial.trial_id, "status": status, "reason": reason,
        "objective": _finite(final.get("objective")), "objective_metric": cfg.objective.metric,
        "objective_mode": mode, "best_objective": metrics.best_of([h.get("objective") for h in judged], mode),
    }
    row.update(_task_columns(cfg, final, judged, baselines=context.baselines))
    run = dict(
        epochs=int(last.get("epoch", 0)), train_loss=_finite(last.get("train_loss")), wall_time_s=trial.wall_time_s,
        world_size=last.get("world_size"), examples_per_s=_finite(last.get("examples_per_s")),
        checkpoint=trial.checkpoint, config=cfg.run_fields(), config_hash=cfg.config_hash(),
        training_revision=schema.TRAINING_REVISION,
        worker_config_hash=last.get("config_hash"), data_fingerprint=context.fingerprint, backbone=backbone_key(cfg),
        backbone_digest=context.backbone_digest,
        versions=context.versions or {}, code_version=(context.code or {}).get("code_version"),
        git_commit=(context.code or {}).get("git_commit"), history=[compact_epoch(h) for h in history],
        started_at=trial.started_at, supersedes=None,   # a rerun's row names the stale row it replaces (callback)
        created_at=datetime.now(timezone.utc))
    taken = {*row, *run}   # the row's own columns: a searched value named like one gets its dotted path
    row.update(_config_columns(cfg, last, n_blocks=context.n_blocks))
    row.update(hp_columns(trial.searched, n_blocks=context.n_blocks, taken=taken))
    if trial.searched and cfg.search is not None:   # searched paths this trial did not draw
        row.update(inactive_columns(cfg.search, trial.searched, cfg.run_fields(), list(cfg.tasks),
                                    n_blocks=context.n_blocks, unused=cfg.train.unused_paths(), taken=taken))
    if "train.loss_weights" in cfg.train.unused_paths():   # configured or drawn, but this method never reads them
        row.update({f"weight_{task}": None for task in cfg.tasks})
    row.update(run)
    row.update(trial.extra or {})
    return row


def _task_columns(cfg: ExperimentConfig, last: dict, history: list[dict], *, baselines: Optional[dict]) -> dict:
    """Per-task final metrics (``last``), each task's best score metric over ``history``, the mean score and Δm%."""
    row = {}
    for task, tc in cfg.tasks.items():
        for name in metrics.metrics_for(tc.type) + ("loss",):
            row[f"{task}_{name}"] = _finite(last.get(f"{task}_{name}"))
        score = f"{task}_{tc.score_metric}"
        row[f"best_{score}"] = metrics.best_of([h.get(score) for h in history], metrics.direction(score))
    row["mean_score"] = _finite(last.get("mean_score"))
    scores = {t: (tc.score_metric, row[f"{t}_{tc.score_metric}"]) for t, tc in cfg.tasks.items()}
    row["delta_m_pct"] = metrics.delta_m_pct(scores, baselines) if baselines else None
    row["baselines_id"] = metrics.baselines_id(baselines)
    return row


def _config_columns(cfg: ExperimentConfig, last: dict, *, n_blocks: int) -> dict:
    """The recipe's main values as columns (freeze depth 'all' as the number of blocks), loss weights as configured
    and as applied (learned weighting)."""
    t = cfg.train
    row = dict(freeze_depth=n_blocks if t.freeze_depth == "all" else int(t.freeze_depth), backbone_lr=t.backbone_lr,
               head_lr=t.head_lr, loss_weighting=t.loss_weighting, optimizer=t.optimizer, batch_size=t.batch_size,
               max_epochs=t.epochs, seed=t.seed)
    row.update({f"weight_{task}": w for task, w in cfg.normalized_loss_weights().items()})
    row.update({f"eff_weight_{task}": _finite(last.get(f"eff_weight_{task}")) for task in cfg.tasks})
    return row


def compact_epoch(m: dict) -> dict:
    """The per-epoch record kept in a row's ``history`` (learning curves for reports)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not metrics.is_run_field(k)
            and k not in ("examples_per_s", "time_this_iter_s", "time_total_s", "timestamp", "training_iteration",
                          "pid", "time_since_restore", "iterations_since_restore")}
