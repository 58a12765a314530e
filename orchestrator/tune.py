"""Driver of a sweep: Ray Tune runs trials, each trial is one Ray Train run (``run.make_trainer``),
and every trial that ends becomes one leaderboard row, written here on the driver.
"""
from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from importlib import metadata

from .config import ExperimentConfig, frozen_blocks
from .errors import ConfigError
from .leaderboard import Leaderboard
from .run import Prepared, init_ray, prepare_run
from .search import candidate_values, hp_columns, materialize, param_space

TRIAL_DRIVER_CPU = 0.1   # the Tune trial only drives its TensorflowTrainer; Ray refuses 0 CPUs here


def prepare_sweep(cfg: ExperimentConfig, *, out=print) -> Prepared:
    """Checks config, data and every edge of the search space before Ray starts."""
    if cfg.search is None:
        raise ConfigError("the experiment has no 'search' section: add one (see README, 'Sweeps') or use "
                          "`orchestrator train`")
    p = prepare_run(cfg, out=out)
    for path, domain in cfg.search.space.items():
        for value in candidate_values(domain, list(cfg.tasks)):
            try:
                p.cfg.with_values({path: value})
            except ConfigError as e:
                raise ConfigError(f"search.space {path}: value {value!r} is invalid ({e})") from None
            if path == "train.freeze_depth":
                frozen_blocks(value, p.n_blocks, where="search.space train.freeze_depth choice")
    return p


def trial_config(base: ExperimentConfig, params: dict) -> ExperimentConfig:
    return base.with_values(materialize(base.search, params, list(base.tasks)))


def _trial(params: dict, *, base: dict, spec, n_blocks: int, train, val, storage_path: str):
    """One Tune trial: fit one TensorflowTrainer with this trial's configuration."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = trial_config(ExperimentConfig.model_validate(base), params)
    trial_id = tune.get_context().get_trial_id()
    trainer_run = Prepared(cfg, spec, train, val, n_blocks)
    from .run import make_trainer

    result = make_trainer(trainer_run, name=f"train-{trial_id}", storage_path=storage_path,  # stable: resumable
                          callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error


def max_concurrent(cfg: ExperimentConfig, resources: dict) -> int:
    """How many trials the cluster fits at once (Tune can't see the workers' placement groups)."""
    r = cfg.resources
    fits = [resources.get("CPU", 0) / (r.workers * r.cpus_per_worker + TRIAL_DRIVER_CPU)]
    if r.use_gpu:
        fits.append(resources.get("GPU", 0) / (r.workers * r.gpus_per_worker))
    return max(1, math.floor(min(fits) + 1e-9))


def versions() -> dict:
    out = {}
    for pkg in ("orchestrator", "ray", "tensorflow", "keras", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _leaderboard_callback(*args, **kwargs):
    from ray import tune

    class LeaderboardCallback(tune.Callback):
        """Runs on the driver: one leaderboard row per trial, written when the trial ends."""

        def __init__(self, cfg: ExperimentConfig, *, n_blocks: int, fingerprint: str):
            # Tune pickles callbacks with its experiment state: keep only small, plain state here.
            self.cfg, self.n_blocks, self.fingerprint = cfg, n_blocks, fingerprint
            self.history: dict[str, list[dict]] = {}
            self.started: dict[str, datetime] = {}
            self.rows: list[dict] = []
            self.versions = versions()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = datetime.now(timezone.utc)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.history.setdefault(trial.trial_id, []).append(result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = (self.history.get(trial.trial_id) or [trial.last_result or {}])[-1]
            epochs = int(last.get("epoch", 0))
            if last.get("status") == "diverged":
                self._write(trial, "diverged", f"non-finite training loss at epoch {epochs}")
            elif epochs < self.cfg.train.epochs:
                self._write(trial, "stopped", f"stopped early by the scheduler after epoch {epochs}")
            else:
                self._write(trial, "completed", None)

        def on_trial_error(self, iteration, trials, trial, **info):
            reason = "trial failed"
            if trial.error_file and os.path.exists(trial.error_file):
                with open(trial.error_file) as f:
                    lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
                reason = lines[-1][:300] if lines else reason
            self._write(trial, "failed", reason)

        def _write(self, trial, status: str, reason: str | None):
            try:  # a callback that raises would end the whole sweep
                self._append(trial, status, reason)
            except Exception as e:  # noqa: BLE001
                print(f"[leaderboard] could not record trial {trial.trial_id}: {type(e).__name__}: {e}")

        def _append(self, trial, status: str, reason: str | None):
            values = materialize(self.cfg.search, trial.config, list(self.cfg.tasks))
            cfg = self.cfg.with_values(values)
            hist = self.history.get(trial.trial_id, [])
            last = hist[-1] if hist else {}
            row = {"experiment": cfg.name, "trial_id": trial.trial_id, "status": status, "reason": reason,
                   **hp_columns(values, n_blocks=self.n_blocks)}
            mode = cfg.objective_mode
            objectives = [h["objective"] for h in hist if isinstance(h.get("objective"), float)
                          and math.isfinite(h["objective"])]
            row["objective"] = last.get("objective")
            row["best_objective"] = (max if mode == "max" else min)(objectives) if objectives else None
            for task, tc in cfg.tasks.items():
                for key, value in last.items():
                    if key.startswith(f"{task}_") and isinstance(value, (int, float)):
                        row[key] = float(value)
                score = f"{task}_{tc.score_metric}"
                values = [h[score] for h in hist if isinstance(h.get(score), float)]
                if values:
                    better = max if tc.score_metric in ("accuracy", "auc", "r2") else min
                    row[f"best_{score}"] = better(values)
            row.update(epochs=int(last.get("epoch", 0)), train_loss=last.get("train_loss"),
                       wall_time_s=float(last.get("time_total_s", 0.0)), world_size=last.get("world_size"),
                       checkpoint=last.get("checkpoint_path"), seed=cfg.train.seed,
                       objective_metric=cfg.objective.metric, config=cfg.run_fields(),
                       config_hash=cfg.config_hash(), worker_config_hash=last.get("config_hash"),
                       data_fingerprint=self.fingerprint,
                       versions=self.versions, started_at=self.started.get(trial.trial_id),
                       created_at=datetime.now(timezone.utc))
            Leaderboard(cfg.storage).append([row])
            self.rows.append(row)
            obj = row["objective"]
            print(f"[leaderboard] trial {trial.trial_id} {status}"
                     + (f" ({reason})" if reason else "") + f": epochs {row['epochs']}, objective "
                     + (f"{obj:.4f}" if isinstance(obj, float) else "n/a"), flush=True)

    return LeaderboardCallback(*args, **kwargs)


def _searcher(cfg: ExperimentConfig, concurrent: int):
    s = cfg.search
    if s.searcher == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=s.seed), max_concurrent=concurrent)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=s.seed, max_concurrent=concurrent)


def _scheduler(cfg: ExperimentConfig):
    sch = cfg.search.scheduler
    if sch.type == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", max_t=cfg.train.epochs, grace_period=min(sch.grace_period, cfg.train.epochs),
                         reduction_factor=sch.reduction_factor)


def _reporter(cfg: ExperimentConfig, searched: list[str]):
    from ray.tune import CLIReporter

    metrics = {"epoch": "epoch", "objective": "objective",
               **{f"{t}_{tc.score_metric}": f"{t}_{tc.score_metric}" for t, tc in cfg.tasks.items()}}
    return CLIReporter(metric_columns=metrics, parameter_columns=searched, max_report_frequency=20,
                       sort_by_metric=True, max_progress_rows=12)


def tune(cfg: ExperimentConfig, *, name: str | None = None, address: str | None = None, out=print) -> dict:
    """`orchestrator tune`: run the sweep, write one leaderboard row per trial, return a summary."""
    from ray import tune as rtune

    if name:
        cfg = cfg.with_values({"name": name})
    p = prepare_sweep(cfg, out=out)
    cfg = p.cfg
    out("resolved config: " + json.dumps(cfg.model_dump(mode="json"), sort_keys=True))
    init_ray(address)
    import ray

    concurrent = cfg.search.max_concurrent_trials or max_concurrent(cfg, ray.cluster_resources())
    out(f"experiment {cfg.name}: {cfg.search.samples} samples, searcher {cfg.search.searcher}, scheduler "
        f"{cfg.search.scheduler.type}, up to {concurrent} trials at once")
    storage = cfg.storage.rstrip("/")
    board = Leaderboard(storage)
    callback = _leaderboard_callback(cfg, n_blocks=p.n_blocks, fingerprint=p.spec.fingerprint)
    trainable = rtune.with_parameters(_trial, base=cfg.model_dump(mode="json"), spec=p.spec, n_blocks=p.n_blocks,
                                      train=p.train, val=p.val, storage_path=f"{storage}/trials")
    space = param_space(cfg.search, list(cfg.tasks))
    # Ray's new console output ignores custom reporters; the classic one shows per-task metrics.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tuner = rtune.Tuner(
        rtune.with_resources(trainable, {"CPU": TRIAL_DRIVER_CPU}),
        param_space=space,
        tune_config=rtune.TuneConfig(metric="objective", mode=cfg.objective_mode, num_samples=cfg.search.samples,
                                     search_alg=_searcher(cfg, concurrent), scheduler=_scheduler(cfg),
                                     max_concurrent_trials=concurrent),
        run_config=rtune.RunConfig(name=cfg.name, storage_path=f"{storage}/sweeps", callbacks=[callback],
                                   failure_config=rtune.FailureConfig(max_failures=0),
                                   progress_reporter=_reporter(cfg, list(space)), verbose=1),
    )
    t0 = time.perf_counter()
    tuner.fit()
    return {"experiment": cfg.name, "trials": len(callback.rows), "leaderboard": board.uri,
            "statuses": {s: sum(r["status"] == s for r in callback.rows) for s in {r["status"] for r in callback.rows}},
            "wall_time_s": round(time.perf_counter() - t0, 1), "storage": storage}
