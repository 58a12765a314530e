"""The one runner: a Ray Tune run whose every trial fits one Ray Train run. The deciders hand it configurations: the
search space and its searcher (``tuner``), single-task baselines and confirmation runs (explicit configurations,
``run_configs``). Every trial that ends becomes one leaderboard row, written on the driver by the sweep's callback.

A Tune run's state lives in ``<storage>/sweeps/<experiment>/<sweep id>``; its trials' Train runs in
``<storage>/trials/<sweep id>-<trial id>`` (a stable name: a resumed trial continues its own checkpoints).
"""
from __future__ import annotations

import json
import os
import queue as stdqueue
import threading
import time
from dataclasses import dataclass
from typing import Optional

from .. import _ray, layout, metrics, storage
from ..layout import new_sweep_id  # noqa: F401 - tuner, confirm and ablate take it from here
from ..config.freezing import hashes_of_same_work
from ..config.schema import ExperimentConfig
from ..config.sampling import materialize
from ..errors import ConfigError, Interrupted
from ..training.driver import RunInputs, make_trainer

TRIAL_DRIVER_CPU = 0.05   # the Tune trial only drives its Train run; Ray refuses 0 CPUs here
EXPERIMENT_STATE_EVERY_S = "2"
ABORT_PATIENCE_S = 60   # how long a stopped trial waits for its Train run's abort before its thread ends anyway


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one Tune run is handed (pickled once, with the trainable): how to make its config
    (from the search space over ``base``, or ``configs[params["index"]]``) and where its inputs are."""
    sweep_id: str
    base: dict
    inputs: RunInputs
    configs: Optional[tuple] = None
    spares: bool = False   # each run starts warm spare workers for a later trial (capacity.TrialsPlan)
    n_blocks: Optional[int] = None   # the backbone's: a depth of every block is 'all' (``materialize``)

    def config(self, params: dict) -> ExperimentConfig:
        if self.configs is not None:
            return ExperimentConfig.model_validate(self.configs[params["index"]])
        return trial_config(ExperimentConfig.model_validate(self.base), params, n_blocks=self.n_blocks)


@dataclass(frozen=True)
class SweepSpec:
    """One Tune run: its trials, what they search, how many run at once, and the driver's callbacks."""
    plan: TrialPlan
    param_space: dict
    num_samples: int = 1
    searcher: object = None
    scheduler: object = None
    concurrent: int = 1
    callbacks: tuple = ()
    verbose: bool = False
    time_budget_s: Optional[float] = None


def trial_config(base: ExperimentConfig, params: dict, *, n_blocks: Optional[int] = None) -> ExperimentConfig:
    return base.with_values(materialize(base.search, params, list(base.tasks), seed=base.train.seed,
                                        n_blocks=n_blocks))


def fit(cfg: ExperimentConfig, spec: SweepSpec, *, resume: bool = False) -> bool:
    """Run the sweep's Tuner (``make_tuner``) to its end; True when Ctrl-C ended it instead: Tune then saved its
    state and stopped the trials, and its ``fit()`` returned as if the run had finished."""
    with _ray.noticing_interrupts() as interrupted:
        make_tuner(cfg, spec, resume=resume).fit()
    return interrupted()


def make_tuner(cfg: ExperimentConfig, spec: SweepSpec, *, resume: bool = False):
    """A Tuner over ``run_trial`` (or its restore, with today's callbacks)."""
    from ray import tune

    # Tune saves its experiment state at most every 10 s by default, and not when a trial ends: a lost
    # driver would then rerun finished trials. Every 2 s bounds what a resume redoes.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_EVERY_S)
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=spec.plan), {"CPU": TRIAL_DRIVER_CPU})
    fs, sweeps_path = storage.ray_filesystem(layout.sweeps(cfg.storage, cfg.name))
    run_config = tune.RunConfig(name=spec.plan.sweep_id, storage_path=sweeps_path, storage_filesystem=fs,
                                callbacks=list(spec.callbacks), failure_config=tune.FailureConfig(max_failures=0),
                                verbose=1 if spec.verbose else 0)
    if resume:
        tuner = tune.Tuner.restore(f"{sweeps_path.rstrip('/')}/{spec.plan.sweep_id}", trainable,
                                   resume_unfinished=True, resume_errored=True, storage_filesystem=fs)
        _ray.replace_run_config(tuner, run_config)   # today's callbacks (rows already written are skipped)
        return tuner
    return tune.Tuner(
        trainable, param_space=spec.param_space,
        tune_config=tune.TuneConfig(metric="objective", mode=cfg.objective_mode, num_samples=spec.num_samples,
                                    search_alg=spec.searcher, scheduler=spec.scheduler,
                                    time_budget_s=spec.time_budget_s, reuse_actors=True,
                                    max_concurrent_trials=None if spec.searcher is not None else spec.concurrent),
        run_config=run_config)


def run_trial(params: dict, *, plan: TrialPlan):
    """One Tune trial: fit one Ray Train run with this trial's configuration."""
    from ray import tune

    from ..training.failures import one_line

    # Tune hands this process to the next trial (reuse_actors: no process start, no imports) once this trial's thread
    # has ended. A stopped trial's thread ends after its Train run's abort (abort_run), which can outlast Tune's 2 s
    # wait; a wait that times out would fail the next trial, so it waits as long as an abort may take.
    os.environ[_ray.TRIAL_THREAD_TIMEOUT_ENV_VAR] = str(ABORT_PATIENCE_S + 5)
    cfg = plan.config(params)
    done = completed_row(cfg, fingerprint=plan.inputs.spec.fingerprint,
                         n_blocks=plan.n_blocks) if plan.configs is None else None
    if done is not None:   # the same work (config hash, seed included) was done: hand Tune its epochs again
        epochs = reused_epochs(cfg, done, baselines=plan.inputs.baselines)
        for epoch in epochs:   # a scheduler judges them as a live trial's, and may stop the replay: the row keeps all
            tune.report({**epoch, "reused_row": done["row_id"], "reused_checkpoint": done.get("checkpoint"),
                         "reused_from": f"{done['sweep_id']}/{done['trial_id']}", "reused_history": epochs,
                         "reused_wall_time_s": done.get("wall_time_s")})
        return
    trial_id = tune.get_context().get_trial_id()
    name = layout.trial_run_name(plan.sweep_id, trial_id)
    # one report in flight: the Train run waits while Tune decides (ASHA)
    reports, controller = stdqueue.Queue(1), _ray.LocalController()
    trainer = make_trainer(cfg, plan.inputs, name=name, callbacks=[_to_trial(reports)], controller=controller,
                           spares=plan.spares)
    marks = {"trial_fit_start": time.time(), "trial_pid": os.getpid()}
    try:
        _fit_reporting(trainer, reports, tune.report, controller=controller, marks=marks)
    except Exception as e:  # noqa: BLE001 - the trial's row keeps one line, not Ray's wrappers
        raise TrialFailed(one_line(e)) from None
    finally:   # where the trial's time went, beside the worker's own marks (bench/sweep_overhead.py)
        marks["trial_fit_end"] = time.time()
        storage.atomic_write(layout.trial_marks(layout.run_dir(cfg.storage, name)), json.dumps(marks).encode())


# Rank 0's metrics reach Tune from the trial's own thread, each epoch in order and all of them before the trial
# function returns. Ray's TuneReportCallback hands them to the trial actor's main thread instead; when the driver
# is slower than the trial, the last epoch and the function's end then arrive together and the actor deadlocks
# (Queue.put on a full result queue that only it reads: a sweep that never ends; tests/test_faults.py).
# The trial's Train controller runs in this process (``_ray.LocalController``), so the queue is a local one.
def _to_trial(reports):
    """A Train callback for the controller: rank 0's metrics of each report, into the trial's queue."""
    from ray.train import UserCallback

    class ToTrial(UserCallback):
        def __getstate__(self):   # Train ships its run config, callbacks too, to every worker: they never call this one
            return {}

        def after_report(self, run_context, metrics, checkpoint):
            # returns once queued: every put is done before fit() returns
            self.reports.put(dict(metrics[0]))

    callback = ToTrial()
    callback.reports = reports
    return callback


_FIT_ENDED = object()   # put by a trial's fit thread as it ends


def _fit_reporting(trainer, reports, report, *, controller=None, poll_s: float = 0.5, abort=None,
                   marks: Optional[dict] = None) -> None:
    """``trainer.fit()`` in a helper thread; this thread passes each queued report to Tune, then re-raises.

    When Tune stops the trial (ASHA, the sweep's end), its ``report`` raises (SystemExit): the Train run is aborted
    through its ``controller`` (``abort(controller, reports, done)``) and its fit has ended before this thread goes,
    so a stopped trial trains no further epoch. ``marks`` then says after which epoch, and whether the run had ended by then."""
    done, failure = threading.Event(), []

    def fit():
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the trial's thread below
            failure.append(e)
        finally:
            done.set()
            try:   # wakes this thread now, not at its next poll (a full slot: it looks at ``done`` after that report)
                reports.put_nowait(_FIT_ENDED)
            except stdqueue.Full:
                pass

    threading.Thread(target=fit, name="train-fit", daemon=True).start()
    while not (done.is_set() and reports.empty()):   # no put can follow fit()'s end
        try:
            metrics = reports.get(timeout=poll_s)
        except stdqueue.Empty:
            continue
        if metrics is _FIT_ENDED:
            break
        try:
            report(metrics)   # blocks until Tune asks for the next result
        except BaseException:
            (abort or abort_run)(controller, reports, done)
            if marks is not None:
                marks.update(stopped_after_epoch=metrics.get("epoch"), run_ended=done.is_set())
            raise
    if failure:
        raise failure[0]


def abort_run(controller, reports, done: threading.Event, *, patience_s: float = ABORT_PATIENCE_S) -> None:
    """Ray Train's own abort (the worker group shut down, the controller's run ended), waiting until ``fit`` has
    returned; reports put meanwhile are dropped (a full queue would block the controller). Past ``patience_s`` the
    trial goes anyway: its Train workers are this process's actors and end with it."""
    if controller is None:
        return
    controller.abort()
    deadline = time.monotonic() + patience_s
    while not done.is_set() and time.monotonic() < deadline:
        while True:
            try:
                reports.get_nowait()
            except stdqueue.Empty:
                break
        done.wait(0.2)


def completed_row(cfg: ExperimentConfig, *, fingerprint: Optional[str], n_blocks: Optional[int]) -> Optional[dict]:
    """Done work of this config (``Leaderboard.done``, under any hash of its work); None where there is no readable
    leaderboard yet."""
    from ..leaderboard.leaderboard import Leaderboard

    hashes = hashes_of_same_work(cfg, n_blocks) if n_blocks is not None else (cfg.config_hash(),)
    try:
        return Leaderboard(cfg.storage).done(cfg.name, hashes, fingerprint=fingerprint)
    except (OSError, ConfigError):   # no readable leaderboard (or no config_hash column yet): nothing to reuse
        return None


def reused_epochs(cfg: ExperimentConfig, row: dict, *, baselines: Optional[dict]) -> list[dict]:
    """A reused row's epochs with their Δm% (and a ``delta_m`` objective) measured against ``baselines``, this
    sweep's: an earlier sweep of another base config measured them against its own."""
    if not baselines:
        return row["history"]
    tasks = {t: tc.score_metric for t, tc in cfg.tasks.items()}
    out = []
    for epoch in row["history"]:
        dm = metrics.delta_m_of(tasks, epoch, baselines)
        out.append({**epoch, "delta_m": dm, **({"objective": dm} if cfg.objective.metric == "delta_m" else {})})
    return out


class TrialFailed(RuntimeError):
    """A trial's run failed; the message is one line."""


def run_configs(session, configs: list[ExperimentConfig], *, kind: str, sweep_id: str | None = None, out=print,
                extra: list[dict] | None = None, verbose: bool = False, baselines: dict | None = None) -> list:
    """Train explicit configurations as one Tune run (baselines, confirmation runs); rows of ``kind``, with Δm%
    against ``baselines`` (task -> score) when given."""
    from ray import tune

    from ..leaderboard.rows import RowContext
    from ..training.lease import acquire
    from .callback import SweepCallback
    from .provenance import provenance, versions
    from .capacity import plan_concurrency

    p = session.prepared
    sweep_id = sweep_id or f"{kind}-{new_sweep_id()}"
    callback = SweepCallback(p.cfg, out=out, configs=configs, extra=extra,
                             context=RowContext(sweep_id, p.n_blocks, kind=kind, fingerprint=p.spec.fingerprint,
                                                versions=versions(), code=provenance(), baselines=baselines,
                                                backbone_digest=session.backbone_digest))
    trials = plan_concurrency(configs[0], trials=len(configs), say=lambda m: None)
    plan = TrialPlan(sweep_id, p.cfg.model_dump(mode="json"), RunInputs.of(session, baselines=baselines),
                     configs=tuple(c.model_dump(mode="json") for c in configs), spares=trials.spares)
    spec = SweepSpec(plan, {"index": tune.grid_search(list(range(len(configs))))}, verbose=verbose,
                     concurrent=min(len(configs), trials.concurrent), callbacks=(callback,))
    # One live driver per sweep folder, as `tune` holds: a `tune --resume` appends spools no live driver holds
    with acquire(layout.sweep_own(p.cfg.storage, p.cfg.name, sweep_id), what=f"{kind} runs {sweep_id}"):
        interrupted = fit(p.cfg, spec)
        callback.close()
    if interrupted:
        raise Interrupted(f"{len(callback.rows)} of {len(configs)} {kind} runs done",
                          "run the same command again (the runs done are reused)")
    return callback.rows
