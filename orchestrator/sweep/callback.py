"""The sweep's Tune callback, on the driver: a console people can read, and one leaderboard row per trial.

By default a sweep prints one line when a trial starts, at most one progress line per trial every
few seconds, one line when it ends, and a waiting line every 30 s for a trial that waits for
resources. Rows are built by the pure ``rows.trial_row`` and appended with retries; a row that cannot
be written stops the sweep loudly (``LeaderboardWriteError``) rather than being dropped.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from importlib import metadata

from ray import tune

from .. import layout, storage
from ..config.schema import ExperimentConfig
from ..config.sampling import materialize
from ..config.space import hp_columns
from ..leaderboard.rows import RowContext, TrialFacts, trial_row
from ..training.progress import WAIT_LINE_EVERY_S, read_progress, release_now_and_then, waiting_line

PROGRESS_EVERY_S = 10.0


class LeaderboardWriteError(RuntimeError):
    """A trial's row could not be written after retries: the sweep stops rather than lose it."""


def short_values(values: dict, n_blocks: int) -> str:
    parts = []
    for k, v in hp_columns(values, n_blocks=n_blocks).items():
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def scores_text(cfg: ExperimentConfig, m: dict) -> str:
    parts = []
    for t, tc in cfg.tasks.items():
        v = m.get(f"{t}_{tc.score_metric}")
        if isinstance(v, (int, float)):
            parts.append(f"{t}_{tc.score_metric}={v:.3f}")
    return " ".join(parts)


class SweepCallback(tune.Callback):
    """Runs on the driver. Keeps only small, plain state (Tune pickles callbacks with its experiment).

    ``context``: what every row of this Tune run shares; ``written``: trial ids that have a row already (a resumed
    sweep skips them); ``configs``/``extra``: explicit configurations (params ``{"index": i}``) and their extra
    columns; ``request``: one worker's resources, for the waiting line."""

    def __init__(self, cfg: ExperimentConfig, *, context: RowContext, written: set | None = None,
                 configs: list | None = None, extra: list | None = None, request: dict | None = None, out=print):
        self.cfg, self.context = cfg, context
        self.written = set(written or ())
        self.configs, self.extra = configs, extra
        self.history: dict[str, list[dict]] = {}
        self.started: dict[str, datetime] = {}
        self.last_print: dict[str, float] = {}
        self.rows: list[dict] = []
        self.reused: list[str] = []   # row ids of completed rows that trials of this run matched (not rerun)
        self.released_at = float("-inf")
        self.out = out
        self.request = request or {}

    def __getstate__(self):
        d = dict(self.__dict__)
        d["out"] = print
        return d

    # -- Tune hooks --------------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.began = time.monotonic()

    def on_experiment_end(self, trials, **info):
        """A sweep ended by ``search.time_budget_s``: its unfinished trials that trained get their rows (stopped).
        Not after an interrupt (within the budget): those trials continue on ``--resume``."""
        budget = self.cfg.search.time_budget_s if self.cfg.search is not None else None
        if budget is None or time.monotonic() - getattr(self, "began", time.monotonic()) < budget:
            return
        for trial in trials:
            if trial.trial_id not in self.written and trial.status not in ("TERMINATED", "ERROR") \
                    and self.history.get(trial.trial_id):
                self._finish(trial, None)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, datetime.now(timezone.utc))
        self.last_print[trial.trial_id] = time.monotonic()
        cfg, values = self._config(trial)
        kind = self.context.kind
        what = short_values(values, self.context.n_blocks) if values else (
            f"{kind} {', '.join(cfg.tasks)}" if kind == "baseline" else
            f"seed {cfg.train.seed}" if kind == "confirm" else "base config")
        self.out(f"[{trial.trial_id}] started: {what}")

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        # Killed trials can leave their Train worker group's resources reserved: see training/progress.py.
        self.released_at = release_now_and_then(self.released_at)
        for trial in trials:
            if trial.status != "RUNNING" or self.history.get(trial.trial_id):
                continue
            if now - self.last_print.get(trial.trial_id, now) < WAIT_LINE_EVERY_S:
                continue
            self.last_print[trial.trial_id] = now
            if read_progress(self._run_dir(trial)) is None:
                line = waiting_line(f"[{trial.trial_id}]", self.request, workers=self.cfg.resources.workers)
                if line:
                    self.out(line)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.history.setdefault(trial.trial_id, []).append(_plain(result))
        now = time.monotonic()
        if now - self.last_print.get(trial.trial_id, 0.0) >= PROGRESS_EVERY_S:
            self.last_print[trial.trial_id] = now
            obj = result.get("objective")
            self.out(f"[{trial.trial_id}] epoch {result.get('epoch')}: objective "
                     f"{obj:.4f} {scores_text(self.cfg, result)}" if isinstance(obj, float) else
                     f"[{trial.trial_id}] epoch {result.get('epoch')}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, error_line(trial))

    # -- rows ---------------------------------------------------------------------------------
    def _config(self, trial) -> tuple[ExperimentConfig, dict]:
        """(this trial's config, its searched values by dotted path)."""
        if self.configs is not None:
            return self.configs[trial.config["index"]], {}
        values = materialize(self.cfg.search, trial.config, list(self.cfg.tasks), seed=self.cfg.train.seed)
        return self.cfg.with_values(values), values

    def _run_dir(self, trial) -> str:
        return layout.run_dir(self.cfg.storage, layout.trial_run_name(self.context.sweep_id, trial.trial_id))

    def _finish(self, trial, error):
        if trial.trial_id in self.written:
            return
        cfg, values = self._config(trial)
        hist = self.history.get(trial.trial_id, [])
        if hist and hist[-1].get("reused_row"):
            self.written.add(trial.trial_id)
            self.reused.append(hist[-1]["reused_row"])
            obj = hist[-1].get("objective")
            self.out(f"[{trial.trial_id}] same config and seed as completed trial {hist[-1]['reused_from']}: not "
                     f"rerun, its row is reused (objective " + (f"{obj:.4f})" if isinstance(obj, float) else "n/a)"))
            return
        # The run's own record (rank 0, every epoch) holds epochs Tune never heard of: those before a
        # resume, or a last report lost when the run ended. Use the longer history.
        progress = read_progress(self._run_dir(trial))
        if progress and len(progress["history"]) > len(hist):
            hist = progress["history"]
        extra = self.extra[trial.config["index"]] if self.extra is not None else None
        started = self.started.get(trial.trial_id)
        wall = (datetime.now(timezone.utc) - started).total_seconds() if started else None
        facts = TrialFacts(trial.trial_id, values, error=error, wall_time_s=wall, started_at=started, extra=extra,
                           checkpoint=storage.redact(layout.checkpoints(self._run_dir(trial))))
        row = trial_row(cfg, hist, context=self.context, trial=facts)
        from ..leaderboard.leaderboard import Leaderboard

        try:
            Leaderboard(cfg.storage).append([row])
        except OSError as e:
            raise LeaderboardWriteError(f"could not write the row of trial {trial.trial_id} to "
                                        f"{storage.redact(cfg.storage)} ({e}); the sweep stops: resume it with "
                                        f"--resume once storage works") from None
        self.written.add(trial.trial_id)
        self.rows.append(row)
        obj = row["objective"]
        dm = row.get("delta_m_pct")
        self.out(f"[{trial.trial_id}] {row['status']}" + (f" ({row['reason']})" if row["reason"] else "") +
                 f": {row['epochs']} epochs, objective " + (f"{obj:.4f}" if isinstance(obj, float) else "n/a") +
                 (f", Δm {dm:+.2f}%" if isinstance(dm, float) else "") + f" {scores_text(cfg, row)}".rstrip())


def _plain(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}


def error_line(trial) -> str:
    """The last meaningful line of a failed trial's error file (our errors are one line already)."""
    path = getattr(trial, "error_file", None) or ""
    if path and os.path.exists(path):
        with open(path) as f:
            lines = [ln.strip() for ln in f.read().strip().splitlines() if ln.strip()]
        if lines:
            line = lines[-1]
            for prefix in ("orchestrator.errors.", "orchestrator.sweep.runner.", "ray.train.v2.api.exceptions."):
                line = line.replace(prefix, "")
            return storage.redact_text(line[:300])
    return "trial failed"


def versions() -> dict:
    """Package versions behind a row (its provenance)."""
    out = {}
    for pkg in ("orchestrator", "ray", "tensorflow", "keras", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
