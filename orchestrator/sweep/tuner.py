"""The search-space decider: a sweep's trials come from ``search.space`` through a searcher (random, grid, Optuna)
and a scheduler (ASHA), run by the one runner (``sweep.runner``); every trial that ends becomes one leaderboard row.

A sweep has an id (``sweep_id``); its Tune state lives in ``<storage>/sweeps/<experiment>/<sweep id>``
and its trials' runs in ``<storage>/trials/<sweep id>-<trial id>``. ``--resume`` restores the latest
(or a named) sweep through ``Tuner.restore``: finished trials are not rerun, unfinished ones continue
from their checkpoints, errored ones run again (their new row supersedes the ``failed`` one), rows already
written are not written again, and rows a storage failure left in the local spool are appended first.
"""
from __future__ import annotations

import itertools
import json
import time

from .. import layout, metrics, storage
from ..config.revision import TRAINING_REVISION
from ..config.freezing import frozen_blocks
from ..config.schema import ExperimentConfig
from ..config.sampling import grid_size, param_space
from ..config.space import candidate_values, dotted_get, largest, walk
from ..errors import ConfigError, Interrupted
from ..leaderboard.ranking import UNRANKED, newest_first, objective_of
from ..leaderboard.rows import RowContext
from ..training.driver import RunInputs, worker_request
from ..training.lease import acquire
from ..training.session import Prepared, check, release, start
from .callback import SweepCallback
from .capacity import check_batch_draws
from .provenance import provenance, versions
from .resume import find_sweep, recorded_rows, sweep_hash
from .runner import SweepSpec, TrialPlan, fit, new_sweep_id
from .searchers import evaluated_rows, first_points, make_searcher


def check_space(p: Prepared) -> None:
    """Every edge of the search space against config, backbone and data, before anything runs."""
    cfg = p.cfg
    if cfg.search is None:
        raise ConfigError("the experiment has no 'search' section: add one (see README, 'Sweeps') or use "
                          "`orchestrator train`")
    for path, domain, when in walk(cfg.search.space):
        refuse_unsearchable(cfg, path, when)
        for value in candidate_values(domain, list(cfg.tasks)):
            try:
                cfg.with_values({**dict(when), path: value})
            except ConfigError as e:
                raise ConfigError(f"search.space {path}: value {value!r} is invalid ({e})") from None
            if path == "train.freeze_depth":
                frozen_blocks(value, p.n_blocks, where="search.space train.freeze_depth choice")
        if domain.kind in ("uniform", "loguniform"):   # the edges may be whole numbers; the draws are not
            lo, hi = getattr(domain, domain.kind)
            inner = lo + 0.5 if lo + 0.5 < hi else (lo + hi) / 2
            try:
                cfg.with_values({**dict(when), path: inner})
            except ConfigError:
                raise ConfigError(f"search.space {path}: {domain.kind} draws fractions (e.g. {inner:g}), which this "
                                  f"field refuses: use randint: [{lo:g}, {hi:g}]") from None
    check_batch_draws(p)   # every batch size with every worker count a trial can draw with it


def max_epochs(cfg: ExperimentConfig) -> int:
    """The largest epoch budget a trial of the sweep can have: its schedulers' ``max_t``."""
    return int(largest(cfg.search, "train.epochs", cfg.train.epochs))


def check_grace(p: Prepared) -> None:
    """A new sweep's grace period within its trials' epochs (make_scheduler clamped a longer one without a word: no
    trial stopped). Not on resume: a sweep started before keeps its scheduler, and its config is its identity."""
    sch, max_t = p.cfg.search.scheduler, max_epochs(p.cfg)
    if sch.type != "none" and sch.grace_period > max_t:
        raise ConfigError(f"search.scheduler.grace_period {sch.grace_period} is more than the trials' epochs "
                          f"({max_t}): no trial could be stopped; lower it, or use scheduler type none")


CONTROLS = ("train.loss_weighting", "train.freeze_depth")   # the fields that decide which others training reads


def refuse_unsearchable(cfg: ExperimentConfig, path: str, when: tuple) -> None:
    """A searched path (active ``when``) that a sweep cannot vary: ConfigError."""
    if path in ("backbone.path", "backbone.weights"):
        raise ConfigError(f"search.space {path}: searched backbone files are not shipped to the trials (each "
                          f"would train the base backbone): run one sweep per backbone file")
    if path.startswith("backbone."):   # n_blocks, freeze_depth 'all' in rows, the edges above: the base's
        raise ConfigError(f"search.space {path}: a sweep counts blocks and checks freeze depths on one backbone: "
                          f"run one sweep per backbone")
    if path in ("name", "storage") or path.startswith(("objective.", "tasks.")):
        raise ConfigError(f"search.space {path}: what a sweep measures and ranks by (name, storage, objective, "
                          f"tasks) is one for all its trials, or their scores would not compare: run one sweep per "
                          f"setting")
    space = cfg.search.space   # a control searched at the top is always drawn (the base trial draws nothing else)
    taken = {c: ([] if c in space else [dotted_get(cfg.run_fields(), c)])
             + [o for q, d, _ in walk(space) if q == c and d.kind == "choice" for o in d.options] for c in CONTROLS}
    fixed = dict(when)
    for setting in itertools.product(*[[fixed[c]] if c in fixed else taken[c] for c in CONTROLS]):
        update = {c.split(".", 1)[1]: v for c, v in zip(CONTROLS, setting)}
        if path not in cfg.train.model_copy(update=update).unused_paths():
            return
    raise ConfigError(f"search.space {path}: no trial of this space reads it (every trial would be the same work): "
                      f"training reads it only under a {' or '.join(CONTROLS)} this space never takes; search it "
                      f"in the branch that does, e.g. train.loss_weighting: {{choice: [{{dwa: "
                      f"{{train.dwa_temperature: ...}}}}, static]}}, or drop it")


def check_objective(p: Prepared) -> None:
    """An experiment compares its trials on one objective (best, top, report, confirm, warm starts): a sweep on
    another is refused before anything runs."""
    from ..leaderboard.leaderboard import Leaderboard

    cfg = p.cfg
    rows = Leaderboard(cfg.storage).table(experiment=cfg.name,
                                          columns=["objective_metric", "objective_mode", "config"]).to_pylist()
    mine = (metrics.objective_identity(cfg.objective.metric, cfg.model_dump(mode="json")["tasks"]), cfg.objective_mode)
    held = sorted({(objective_of(r), r["objective_mode"]) for r in rows if r.get("objective_metric")} - {mine})
    if held:
        metric, mode = held[0]
        theirs = metric.split(" of ")[0]   # the metric; what follows is each task's score metric it averages
        fix = (f"objective.metric: {theirs}" if theirs != cfg.objective.metric
               else "score the same tasks the same way as its trials")
        raise ConfigError(f"experiment {cfg.name!r} ranks its trials by {metric} ({mode}) and this config's objective "
                          f"is {mine[0]} ({mine[1]}): give this sweep an experiment of its own (tune --name NEW, "
                          f"--set name=NEW, or name= in Python) or {fix}")


def make_scheduler(cfg: ExperimentConfig, *, trials: int = 1, concurrent: int = 1, sweep_id: str | None = None,
                   n_blocks: int | None = None):
    """ASHA, synchronous successive halving or MO-ASHA on the reported epoch; ``max_t`` is the largest epoch budget
    a trial can have; ``trials``: how many the sweep runs (sync: its first rung waits for them all). Each keeps its
    rungs in the sweep's folder, for ``--resume`` (sweep/kept.py)."""
    sch = cfg.search.scheduler
    if sch.type == "none":
        return None
    max_t = max_epochs(cfg)
    grace = min(sch.grace_period, max_t)   # longer: a sweep from before check_grace, resumed
    if sch.type == "sync":
        from .syncsha import RunHistory, SyncHalving, TrialEpochs

        searched = any(path == "train.epochs" for path, _, _ in walk(cfg.search.space))
        return SyncHalving(max_t=max_t, grace_period=grace, reduction_factor=sch.reduction_factor, trials=trials,
                           concurrent=concurrent, mode=cfg.objective_mode,
                           history=RunHistory(cfg.storage, sweep_id) if sweep_id else None,
                           state=layout.scheduler_state(cfg.storage, cfg.name, sweep_id, "sync") if sweep_id else None,
                           epochs_of=TrialEpochs(cfg.model_dump(mode="json"), n_blocks=n_blocks) if searched else None)
    if sch.type == "moasha":
        from .moasha import MOASHA

        state = layout.scheduler_state(cfg.storage, cfg.name, sweep_id) if sweep_id else None
        return MOASHA(list(sch.metrics), max_t=max_t, grace_period=grace, reduction_factor=sch.reduction_factor,
                      state=state)
    from .kept import KeptASHA

    return KeptASHA(max_t=max_t, grace_period=grace, reduction_factor=sch.reduction_factor,
                    state=layout.scheduler_state(cfg.storage, cfg.name, sweep_id, "asha") if sweep_id else None)


def trial_count(cfg: ExperimentConfig) -> int:
    """Trials a sweep runs: num_samples, or for a grid its points x num_samples (the repeats)."""
    s = cfg.search
    return grid_size(s) * s.samples if s.searcher == "grid" else s.samples


def tune(cfg: ExperimentConfig, *, name: str | None = None, address: str | None = None, resume: bool = False,
         sweep_id: str | None = None, verbose: bool = False, out=print, reserved_cpu: float = 0.0) -> dict:
    """`orchestrator tune`: run (or resume) a sweep; one leaderboard row per trial; returns a summary."""
    if name:
        cfg = cfg.with_values({"name": name})
    p = check(cfg, also=[check_space, check_objective, *([] if resume else [check_grace])])
    cfg = p.cfg
    sweep_id = (find_sweep(cfg, sweep_id, fingerprint=p.spec.fingerprint, say=out, n_blocks=p.n_blocks) if resume
                else sweep_id or new_sweep_id())
    # One live driver per sweep: a second `tune --resume` while this one runs would write the same trials' runs.
    with acquire(layout.sweep_own(cfg.storage, cfg.name, sweep_id), what=f"sweep {sweep_id}",
                 kept_before=layout.sweep_lease_kept_before(cfg.storage, cfg.name, sweep_id)):
        return _sweep(p, sweep_id, address=address, resume=resume, verbose=verbose, out=out, reserved_cpu=reserved_cpu)


def _baselines(session, *, out) -> dict | None:
    """The single-task baselines the sweep's Δm% is measured against, when it asks for them."""
    cfg = session.cfg
    if not (cfg.search.baselines or cfg.objective.metric == "delta_m"):
        return None
    from ..leaderboard.leaderboard import Leaderboard
    from .baselines import baselines_for

    baselines = baselines_for(session, out=out) or None
    _say_new_scale(Leaderboard(cfg.storage), cfg, baselines, out=out)
    return baselines


def _say_new_scale(board, cfg: ExperimentConfig, baselines: dict | None, *, out) -> None:
    """Under objective delta_m, a sweep measured against other baselines than the experiment's newest trials (its base
    config trains other ones) starts another scale: rankings then compare its trials only
    (``ranking.newest_version``)."""
    if cfg.objective.metric != "delta_m" or not baselines:
        return
    try:
        table = board.table(experiment=cfg.name, kind="trial", columns=["baselines_id", "created_at",
                                                                        "training_revision"])
    except ConfigError:   # rows of older code: no baselines recorded
        return
    if not table.num_rows:
        return
    newest = max(table.to_pylist(), key=newest_first)["baselines_id"]   # the newest code's, then time
    if newest is not None and newest != metrics.baselines_id(baselines):   # None: rows of older code, not known
        out(f"this sweep's Δm% is measured against other single-task baselines than {cfg.name}'s earlier trials (its "
            f"base config differs): rankings of {cfg.name} compare the trials measured against these from now on; "
            f"give the sweep its own experiment name (--name, or name=) to keep the two apart")


def _record_sweep(p: Prepared, sweep_id: str, *, baselines: dict | None) -> None:
    """The sweep's record (sweep.json): its config and what its Δm% is measured against (ablate measures against them
    too)."""
    cfg = p.cfg
    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, sweep_id), json.dumps(
        {"sweep_id": sweep_id, "config_hash": sweep_hash(cfg), "config": cfg.public_dump(),
         "data_fingerprint": p.spec.fingerprint, "training_revision": TRAINING_REVISION,
         "baselines": baselines}).encode())


def _interrupted(callback, sweep_id: str, *, recorded: int) -> None:
    """After Ctrl-C: the rows still pending written (or named), then one line saying how to continue."""
    callback.close()
    raise Interrupted(f"sweep {sweep_id} stopped with {recorded} trial(s) recorded",
                      "continue it with the same command and --resume (Python: resume=True)")


def _sweep(p: Prepared, sweep_id: str, *, address: str | None, resume: bool, verbose: bool, out,
           reserved_cpu: float) -> dict:
    from ..leaderboard.leaderboard import Leaderboard
    from ..leaderboard.query import rows as row_dicts
    from .capacity import plan_concurrency
    from ..config.edges import edge_hints
    from .loggers import live_loggers

    cfg = p.cfg
    loggers = live_loggers(cfg, sweep_id, n_blocks=p.n_blocks)   # an MLflow server that can't be reached: before it
    trials, plans = trial_count(cfg), []   # planned once Ray is up, before any cost: a trial may never fit
    session = start(p, owner=f"sweep {sweep_id}", record=layout.sweep_dir(cfg.storage, cfg.name, sweep_id),
                    address=address, verbose=verbose, keep=True, out=out,
                    ready=lambda: plans.append(plan_concurrency(cfg, trials=trials, say=out, reserved_cpu=reserved_cpu)))
    trials_plan, concurrent = plans[0], plans[0].concurrent
    board = Leaderboard(cfg.storage)
    written, stale = recorded_rows(board, cfg, sweep_id, out=out) if resume else (set(), {})
    t0 = time.perf_counter()
    baselines = _baselines(session, out=out)
    context = RowContext(sweep_id, p.n_blocks, fingerprint=p.spec.fingerprint, versions=versions(), baselines=baselines,
                         code=provenance(), backbone_digest=session.backbone_digest)
    callback = SweepCallback(cfg, context=context, written=written, stale=stale, out=out,
                             request=worker_request(cfg))
    if resume:
        out(f"resuming sweep {sweep_id} of experiment {cfg.name} ({len(written)} trials already recorded"
            + (f", {len(stale)} failed: run again)" if stale else ")"))
    else:
        _record_sweep(p, sweep_id, baselines=baselines)
        out(f"experiment {cfg.name}, sweep {sweep_id}: {trials} trials, searcher {cfg.search.searcher}, "
            f"scheduler {cfg.search.scheduler.type}, up to {concurrent} at once"
            + (", each trial starting warm workers for a later one" if trials_plan.spares else ""))
        if cfg.search.searcher == "grid":
            out(f"grid: {grid_size(cfg.search)} points x num_samples {cfg.search.samples} (num_samples repeats the "
                f"grid; repeat r trains with train.seed + r, so repeats measure seed variance)")
    scheduler = make_scheduler(cfg, trials=trials, concurrent=concurrent, sweep_id=sweep_id, n_blocks=p.n_blocks)
    gate = getattr(scheduler, "has_room", None)
    searcher = None if resume else make_searcher(   # earlier rows read as today reads a config (n_blocks)
        cfg, concurrent, first_points(cfg, say=out, n_blocks=p.n_blocks), gate=gate,
        evaluated=evaluated_rows(cfg, p.spec.fingerprint, say=out, baselines=baselines, n_blocks=p.n_blocks))
    spec = SweepSpec(TrialPlan(sweep_id, cfg.model_dump(mode="json"), RunInputs.of(session, baselines=baselines),
                               spares=trials_plan.spares, n_blocks=p.n_blocks),
                     param_space(cfg.search, list(cfg.tasks)), num_samples=1 if cfg.search.searcher == "grid" else
                     cfg.search.samples, searcher=searcher, scheduler=scheduler, concurrent=concurrent,
                     callbacks=(callback, *loggers), verbose=verbose,
                     time_budget_s=cfg.search.time_budget_s)
    if fit(cfg, spec, resume=resume):   # Ctrl-C: Tune saved its state; the rows of trials that ended are written
        _interrupted(callback, sweep_id, recorded=len(callback.rows) + len(written))
    release(session)   # a sweep that ended (not one killed: --resume reuses its disk cache)
    callback.close()   # rows storage still refuses: one line naming the spool file, exit code 1
    board.maybe_compact()
    rows = row_dicts(board.table(experiment=cfg.name, sweep_id=sweep_id, columns=["status", "objective", "config"]))
    hints = edge_hints(cfg.search, rows, tasks=list(cfg.tasks), mode=cfg.objective_mode)
    return {"experiment": cfg.name, "sweep_id": sweep_id, "trials": len(callback.rows) + len(written),
            "reused": list(callback.reused),
            "leaderboard": storage.redact(board.uri), "storage": cfg.storage, "baselines": baselines,
            "statuses": {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},   # resumed too
            "ranked": sum(r["status"] not in UNRANKED for r in rows),   # rows a ranking may pick, resumed ones too
            "wall_time_s": round(time.perf_counter() - t0, 1), "hints": hints}
