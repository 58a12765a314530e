"""The sweep's Tune callback, on the driver: a console people can read, and one leaderboard row per trial.

By default a sweep prints one line when a trial starts, at most one progress line per trial every
few seconds, one line when it ends, and a waiting line every 30 s for a trial that waits for
resources. Rows are built by the pure ``rows.trial_row`` and appended with retries.

No hook ever raises: Tune turns an exception in ``on_trial_complete`` into ``on_trial_error``, which would
relabel a completed trial ``failed``. Rows that storage refuses wait in a local spool file
(``layout.spool_file``) and are tried again each time a trial ends; when the Tune run is over, ``close`` raises
``LeaderboardWriteError`` naming the spool if rows are still unwritten (``tune --resume`` appends them). A rerun
of an errored trial (a resumed sweep) writes a row that supersedes the trial's stale ``failed`` row.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import Optional

from ray import tune

from .. import layout, storage
from ..config.freezing import hashes_of_same_work
from ..config.schema import ExperimentConfig
from ..config.sampling import materialize
from ..config.space import hp_columns
from ..errors import ConfigError, LeaderboardWriteError
from ..leaderboard import spool
from ..leaderboard.ranking import done_work
from ..leaderboard.rows import RowContext, TrialFacts, ablated, trial_row
from ..training.lease import one_at_a_time
from ..training.progress import (WAIT_LINE_EVERY_S, attempt_records, judged_history, read_progress,
                                 release_now_and_then, waiting_line)

__all__ = ["LeaderboardWriteError", "SweepCallback", "recorded"]


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
    sweep skips them); ``stale``: trial id -> row id of its ``failed`` row, which a rerun's row supersedes;
    ``configs``/``extra``: explicit configurations (params ``{"index": i}``) and their extra columns; ``request``:
    one worker's resources, for the waiting line."""

    def __init__(self, cfg: ExperimentConfig, *, context: RowContext, written: set | None = None,
                 stale: dict | None = None, configs: list | None = None, extra: list | None = None,
                 request: dict | None = None, out=print):
        self.cfg, self.context = cfg, context
        self.written, self.stale = set(written or ()), dict(stale or {})
        self.pending: list[dict] = []       # rows not written yet (also in the spool file)
        self.unmade: list[str] = []         # trials whose row could not even be built
        self.said: set[str] = set()          # callback errors already printed
        self.spool = layout.spool_file(cfg.storage, cfg.name, context.sweep_id)
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

    # -- Tune hooks (none raises: see the module's doc) -------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        self.began = time.monotonic()

    def on_experiment_end(self, trials, **info):
        self._guarded(lambda: self._budget_spent(trials), None)

    def _budget_spent(self, trials):
        """A sweep ended by ``search.time_budget_s``: its unfinished trials that trained get their rows (stopped).
        Ray marks them TERMINATED (no on_trial_complete); a trial that ended has its row already. Not after an
        interrupt (within the budget): those trials continue on ``--resume``."""
        budget = self.cfg.search.time_budget_s if self.cfg.search is not None else None
        if budget is None or time.monotonic() - getattr(self, "began", time.monotonic()) < budget:
            return
        for trial in trials:
            if trial.trial_id not in self.written and trial.status != "ERROR" and self.history.get(trial.trial_id):
                self._finish(trial, None, cut=f"cut by search.time_budget_s ({budget:g} s)")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guarded(lambda: self._started(trial), trial)

    def on_step_begin(self, iteration, trials, **info):
        self._guarded(lambda: self._waiting(trials), None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guarded(lambda: self._result(trial, result), trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guarded(lambda: self._finish(trial, None), trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guarded(lambda: self._finish(trial, error_line(trial)), trial)

    def _guarded(self, hook, trial) -> None:
        try:
            hook()
        except Exception as e:  # noqa: BLE001 - an exception here would relabel the trial (see the module's doc)
            who = f"[{trial.trial_id}] " if trial is not None else ""
            line = f"{who}sweep callback error (the sweep goes on): {storage.first_line(e, 200)}"
            if line not in self.said:      # once each: on_step_begin runs many times a second
                self.said.add(line)
                self.out(line)

    def _started(self, trial):
        self.started.setdefault(trial.trial_id, datetime.now(timezone.utc))
        self.last_print[trial.trial_id] = time.monotonic()
        cfg, values = self._config(trial)
        kind = self.context.kind
        what = short_values(values, self.context.n_blocks) if values else (
            f"{kind} {', '.join(cfg.tasks)}" if kind == "baseline" else
            f"seed {cfg.train.seed}" if kind == "confirm" else
            f"{ablated(self.extra[trial.config['index']])}, seed {cfg.train.seed}" if kind == "ablation" else
            "base config")
        self._say(f"[{trial.trial_id}] started: {what}")

    def _waiting(self, trials):
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

    def _result(self, trial, result):
        self.history.setdefault(trial.trial_id, []).append(_plain(result))
        obj = result.get("objective")
        self._detail(f"[{trial.trial_id}] epoch {result.get('epoch')}: objective {obj:.4f} "
                     f"{scores_text(self.cfg, result)}" if isinstance(obj, float) else
                     f"[{trial.trial_id}] epoch {result.get('epoch')}")

    def _detail(self, line: str) -> None:
        """Per-epoch lines: the full log only (``out.detail``; on the console with --verbose)."""
        getattr(self.out, "detail", self.out)(line)

    def _say(self, line: str) -> None:
        """A trial's start and end: on the console, except for baselines (their caller sums them up in one line)."""
        (self._detail if self.context.kind == "baseline" else self.out)(line)

    # -- rows ---------------------------------------------------------------------------------
    def _config(self, trial) -> tuple[ExperimentConfig, dict]:
        """(this trial's config, its searched values by dotted path)."""
        if self.configs is not None:
            return self.configs[trial.config["index"]], {}
        values = materialize(self.cfg.search, trial.config, list(self.cfg.tasks), seed=self.cfg.train.seed,
                             n_blocks=self.context.n_blocks)
        return self.cfg.with_values(values), values

    def _run_dir(self, trial) -> str:
        return layout.run_dir(self.cfg.storage, layout.trial_run_name(self.context.sweep_id, trial.trial_id))

    def _finish(self, trial, error, *, cut: Optional[str] = None):
        """The trial's row, written with every row still pending; a row that can't be built is named at the end.
        ``cut``: what ended an unfinished trial, when not its scheduler."""
        if trial.trial_id in self.written:
            return
        self.written.add(trial.trial_id)
        reused = self._reused(trial)
        # the look for the same work (_done) and the write as one step: two drivers finishing the same work at once
        # each looked before the other wrote, and neither row named the other (no such lock on object stores)
        with one_at_a_time(layout.leaderboard(self.cfg.storage)):
            try:
                row = self._row(trial, error, reused=reused, cut=cut)
            except Exception:
                self.unmade.append(trial.trial_id)
                raise
            self.rows.append(row)
            self.pending.append(row)
            self.flush()
        if reused:
            return
        obj, dm = row["objective"], row.get("delta_m_pct")
        self._say(f"[{trial.trial_id}] {row['status']}" + (f" ({row['reason']})" if row["reason"] else "") +
                 f": {row['epochs']} epochs, objective " + (f"{obj:.4f}" if isinstance(obj, float) else "n/a") +
                 (f", Δm {dm:+.2f}%" if isinstance(dm, float) else "") + f" {scores_text(self.cfg, row)}".rstrip())

    def flush(self) -> bool:
        """Write every pending row (one file, retried). Rows storage still refuses stay pending and in the spool
        file, tried again when the next trial ends. Never raises; True when nothing is left pending."""
        from ..leaderboard.leaderboard import Leaderboard

        if not self.pending:
            return True
        try:
            Leaderboard(self.cfg.storage).append(self.pending)
        except Exception as e:  # noqa: BLE001 - any storage failure: keep the rows, never lose or relabel them
            try:
                spool.keep(self.spool, self.pending)
                kept = f"kept in {self.spool}"
            except OSError as spool_error:
                kept = f"and not spooled to {self.spool} ({storage.first_line(spool_error)}): kept in memory"
            self.out(f"could not write {len(self.pending)} row(s) to the leaderboard in {storage.redact(self.cfg.storage)}"
                     f" ({storage.first_line(e)}); {kept}; tried again when the next trial ends")
            return False
        self.pending = []
        spool.drop(self.spool)
        return True

    def close(self) -> None:
        """After the Tune run: a last write of the pending rows; LeaderboardWriteError (one line) naming the spool
        file if some rows are still unwritten or could not be made."""
        if self.flush() and not self.unmade:
            return
        if self.pending:
            raise LeaderboardWriteError(
                f"{len(self.pending)} leaderboard row(s) could not be written to {storage.redact(self.cfg.storage)}; "
                f"they are kept in {self.spool}: " + ("run the same command with --resume (resume=True)"
                                                      if self.context.kind == "trial"
                                                      else f"run `orchestrator tune` of experiment {self.cfg.name} "
                                                           f"with --resume") + " once storage works to append them")
        raise LeaderboardWriteError(f"the leaderboard rows of trial(s) {', '.join(self.unmade)} could not be made "
                                    f"(see the lines above)")

    def _reused(self, trial) -> Optional[dict]:
        """A trial whose config and seed match a completed row of the experiment (not rerun): the last result it
        reported, naming that row (``reused_row``, ``reused_from``, ``reused_checkpoint``); else None."""
        hist = self.history.get(trial.trial_id, [])
        if not (hist and hist[-1].get("reused_row")):
            return None
        self.reused.append(hist[-1]["reused_row"])
        obj = hist[-1]["reused_history"][-1].get("objective")   # the work's, whatever a scheduler did with its replay
        self.out(f"[{trial.trial_id}] same config and seed as completed trial {hist[-1]['reused_from']}: not "
                 f"rerun, its row is reused (objective " + (f"{obj:.4f})" if isinstance(obj, float) else "n/a)"))
        return hist[-1]

    def _row(self, trial, error, *, reused: Optional[dict] = None, cut: Optional[str] = None) -> dict:
        cfg, values = self._config(trial)
        # The run's own record (rank 0, every epoch) also holds epochs from before a resume; a stopped trial's row
        # ends at the last epoch Tune received. A reused row's: the work's, though a scheduler stopped its replay.
        received = self.history.get(trial.trial_id, [])
        hist = reused["reused_history"] if reused else judged_history(
            received, read_progress(self._run_dir(trial)), failed=error is not None)
        extra = self.extra[trial.config["index"]] if self.extra is not None else None
        started = self.started.get(trial.trial_id)
        if started and not reused:   # a resumed trial's epochs from before: up to where its first start here resumed
            first = attempt_records(self._run_dir(trial), since=started.timestamp() - 1)[:1]
            done = first[0].get("start_epoch", 0) if first else 0
            before = [m.get("epoch_seconds") or 0 for m in hist if (m.get("epoch") or 0) <= done]
            started -= timedelta(seconds=sum(before))
        wall = reused.get("reused_wall_time_s") if reused else (   # a reused row's: the work's (its replay trained
            (datetime.now(timezone.utc) - started).total_seconds() if started else None)   # nothing)
        checkpoint = reused.get("reused_checkpoint") if reused else storage.redact(
            layout.checkpoints(self._run_dir(trial)))
        facts = TrialFacts(trial.trial_id, values, error=error, wall_time_s=wall, started_at=started, extra=extra,
                           checkpoint=checkpoint)
        row = trial_row(cfg, hist, context=self.context, trial=facts)
        if cut and row["status"] == "stopped":
            row["reason"] = f"{cut} after epoch {row['epochs']}"
        if reused:   # this sweep's row of a work done before: rankings over the experiment count that work once
            row["reused_from"], row["duplicate_of"] = reused["reused_from"], reused["reused_row"]
        elif self.context.kind == "trial" and row["status"] in ("completed", "stopped"):   # its twin ran at once, or,
            row["duplicate_of"] = self._done(row, cfg)   # stopped after as many epochs, before (only completed reused)
        if trial.trial_id in self.stale:      # a rerun of an errored trial: its row replaces the failed one
            row["supersedes"] = self.stale[trial.trial_id]
        return row

    def _done(self, row: dict, cfg: ExperimentConfig) -> Optional[str]:
        """The same work's row id (a hash of its work, ``hashes_of_same_work``, and its epochs), if done before
        ``row`` (of ``cfg``): among this driver's rows (some spooled), then the board's."""
        from ..leaderboard.leaderboard import Leaderboard

        key = (row["experiment"], hashes_of_same_work(cfg, self.context.n_blocks))
        fingerprint, epochs = row["data_fingerprint"], row["epochs"]
        try:
            done = done_work(self.rows, *key, fingerprint=fingerprint, epochs=epochs) or Leaderboard(
                self.cfg.storage).done(*key, fingerprint=fingerprint, epochs=epochs)
            return done["row_id"] if done else None
        except (OSError, ConfigError):
            return None


def _plain(result: dict) -> dict:
    """A result's values, without Tune's nested ones (config, ...); a reused trial's epochs kept (``_row``)."""
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None
            or k == "reused_history"}


def error_line(trial) -> str:
    """The last meaningful line of a failed trial's error file (our errors are one line already)."""
    path = getattr(trial, "error_file", None) or ""
    line = ""
    if path and os.path.exists(path):
        with open(path) as f:
            line = storage.line_of(f.read(), last=True, limit=400)
        for prefix in ("orchestrator.errors.", "orchestrator.sweep.runner.", "ray.train.v2.api.exceptions."):
            line = line.replace(prefix, "")
    return line[:300] or "trial failed"


def recorded(board, sweep_id: str) -> tuple[set, dict]:
    """What a resumed sweep finds in the leaderboard: (trial ids whose row is final, {trial id: row id} of trials
    whose row says ``failed``: Tune reruns those, and the rerun's row supersedes the failed one)."""
    rows = board.table(sweep_id=sweep_id, kind=None, columns=["trial_id", "status", "row_id"]).to_pylist()
    stale = {r["trial_id"]: r["row_id"] for r in rows if r.get("status") == "failed"}
    return {r["trial_id"] for r in rows} - set(stale), stale
