"""The searchers that pick a sweep's trials (random, grid, Optuna TPE), what they see first, and what they learn.

- The first trials: the base config as written, then a warm start's K best configs (retrained).
- ``warm_start: auto``: Optuna learns from this experiment's earlier completed rows (same data, objective and epoch
  budget) as already evaluated trials; nothing is retrained. Random search and grids learn nothing, so it is a no-op
  there (said once).
- Failed and diverged trials reach the searcher as the worst objective seen so far, not as missing values: a model
  learns to avoid what breaks.
- ``gate``: under the synchronous scheduler, trials waiting (paused) at a rung do not hold a slot; the scheduler
  says when a new trial may start.
"""
from __future__ import annotations

import copy
import json
from typing import Callable, Optional, Sequence

from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from .. import _ray, storage
from ..config.sampling import OptunaSpace, grid_points, point_for
from ..config.schema import ExperimentConfig
from ..config.space import active_values, fits, same_option
from ..errors import ConfigError
from ..leaderboard.ranking import data_of
from ..metrics import delta_m_of, finite

BAD = 1e9   # the worst objective when none has been seen yet (sign follows the objective's direction)


def make_searcher(cfg: ExperimentConfig, concurrent: int, points: list[dict], *, evaluated: tuple = (),
                  gate: Optional[Callable[[], bool]] = None):
    """``evaluated``: ``(params, objective)`` pairs Optuna learns from before its first trial."""
    s = cfg.search
    limit = s.samples if gate is not None else concurrent
    if s.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSpace(s, list(cfg.tasks))
        if s.scheduler.type == "moasha":   # Optuna searches MO-ASHA's metrics multi-objectively
            from ..metrics import direction

            return Limiter(pareto_optuna(cfg, space, points), concurrent, metrics=list(s.scheduler.metrics),
                           mode=[direction(m) for m in s.scheduler.metrics])
        searcher = OptunaSearch(space=space, metric="objective", mode=cfg.objective_mode, seed=s.seed,
                                points_to_evaluate=points or None, storage=_study_with(space, cfg, evaluated))
        return Limiter(searcher, limit, mode=cfg.objective_mode, gate=gate)

    return GatedVariants(gate, random_state=s.seed, max_concurrent=0 if gate is not None else concurrent,
                         points_to_evaluate=points or None)


def pareto_optuna(cfg: ExperimentConfig, space: OptunaSpace, points: list[dict]):
    """OptunaSearch on the MO-ASHA scheduler's metrics, each direction from the metric registry."""
    from ray.tune.search.optuna import OptunaSearch

    from .. import metrics

    sch = cfg.search.scheduler

    class ParetoOptuna(OptunaSearch):
        def set_search_properties(self, metric, mode, config, **spec):   # keep its metrics, not TuneConfig's one
            return super().set_search_properties(None, None, config)

    return ParetoOptuna(space=space, metric=list(sch.metrics), mode=[metrics.direction(m) for m in sch.metrics],
                        seed=cfg.search.seed, points_to_evaluate=points or None)


class GatedVariants(BasicVariantGenerator):
    """Random and grid trials (Ray's generator) that start only when ``gate()`` allows (if a gate is given)."""

    def __init__(self, gate: Optional[Callable[[], bool]], *, random_state: int, max_concurrent: int,
                 points_to_evaluate: Optional[list]):
        super().__init__(random_state=random_state, max_concurrent=max_concurrent,
                         points_to_evaluate=points_to_evaluate)
        self.gate = gate

    def next_trial(self):
        gate = getattr(self, "gate", None)
        return None if gate is not None and not gate() else super().next_trial()

    def get_state(self):
        state = super().get_state()
        return state and {k: v for k, v in state.items() if k != "gate"}   # the scheduler's: not saved twice


def _study_with(space: OptunaSpace, cfg: ExperimentConfig, evaluated: tuple):
    """An in-memory Optuna storage whose study (OptunaSearch's default name) holds the evaluated trials."""
    if not evaluated:
        return None
    import optuna

    store = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=store, study_name="optuna",
                                direction="minimize" if cfg.objective_mode == "min" else "maximize")
    for params, value in evaluated:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space.distributions(params),
                                                  value=value))
    return store


class Limiter(ConcurrencyLimiter):
    """Ray's ConcurrencyLimiter that hands the searcher a failed or diverged trial as the worst value seen of each of
    its ``metrics`` (``objective``; MO-ASHA's under it), and a trial stopped while paused (no final result) as its
    last one; under a ``gate``, it starts a trial only when the gate allows. ``mode``: one, or one per metric."""

    def __init__(self, searcher, max_concurrent: int, *, mode, gate: Optional[Callable[[], bool]] = None,
                 metrics: Sequence[str] = ("objective",)):
        super().__init__(searcher, max_concurrent=max_concurrent)
        modes = [mode] * len(metrics) if isinstance(mode, str) else list(mode)
        self.signs = {m: 1.0 if d == "max" else -1.0 for m, d in zip(metrics, modes)}
        self.gate = gate
        self.last: dict[str, dict] = {}
        self.worst_of: dict[str, float] = {}

    def suggest(self, trial_id: str):
        gate = getattr(self, "gate", None)
        if gate is not None and not gate():
            return None
        return super().suggest(trial_id)

    def get_state(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("searcher", "gate")})

    def __setstate__(self, state: dict) -> None:
        """Unpickled on ``--resume``: older code's Limiter held one objective's ``sign`` and ``worst``."""
        if "signs" not in state:
            state = {**state, "signs": {"objective": state.get("sign", 1.0)},
                     "worst_of": {} if state.get("worst") is None else {"objective": state["worst"]}}
        self.__dict__.update(state)

    def _scored(self, result: dict) -> bool:
        return result.get("status") != "diverged" and all(finite(result.get(m)) is not None for m in self.signs)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not self._scored(result):
            return
        for m, sign in self.signs.items():
            seen = self.worst_of.get(m)
            self.worst_of[m] = result[m] if seen is None else min(seen, result[m], key=lambda v: sign * v)
        result = {**result, "training_iteration": int(result.get("epoch", result.get("training_iteration", 0)))}
        self.last[trial_id] = result
        if not _ray.optuna_ended(self.searcher, trial_id):   # a rerun's epochs: Optuna has its trial ended
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        result = dict(result or self.last.get(trial_id) or {})
        failed = error or not self._scored(result)
        if failed:
            result.update({m: self.worst_of.get(m, -sign * BAD) for m, sign in self.signs.items()})
        if _ray.optuna_ended(self.searcher, trial_id):   # told as failed, rerun by tune --resume under its id
            if not failed:
                _ray.tell_optuna_again(self.searcher, trial_id, result)
            return
        super().on_trial_complete(trial_id, result=result, error=False)


def first_points(cfg: ExperimentConfig, *, say, n_blocks: Optional[int] = None) -> list[dict]:
    """Trials evaluated first: the base config as written, then the warm start's K best distinct configs, each once (a
    grid's repeats of one configuration, or the base config again, are one), read as today (``as_read_today``). A
    value an earlier config lacks, or that is outside the new space, takes the base config's value (one line each)."""
    tasks, points, s = list(cfg.tasks), [], cfg.search
    base = active_values(s.space, cfg.run_fields(public=False), tasks)
    if s.searcher == "grid":   # a grid runs its own points: said where that leaves out what the config asks first
        if s.base_first and not any(all(same_option(base.get(p), v) for p, v in point.items())
                                    for point in grid_points(s.space)):
            say("base config: not a point of the grid, not evaluated (a grid runs its own points)")
        if s.warm_start is not None and s.warm_start != "auto":
            say(f"warm start: a grid runs its own points; experiment {s.warm_start.experiment!r}'s best are not "
                f"added (use searcher random or optuna)")
        return []
    domains = _domains(s)
    if s.base_first:
        if all(fits(domains[p], v) for p, v in base.items()):
            points.append(point_for(s, base, tasks))
        else:
            say("base config: outside the search space, not evaluated first")
    if s.warm_start is not None and s.warm_start != "auto":
        from ..leaderboard.leaderboard import Leaderboard
        from ..leaderboard.query import NoMatchingRows, top_distinct

        def warm_point(row: dict, say) -> dict:
            values = active_values(s.space, as_read_today(row["config"], cfg, n_blocks), tasks)
            for p, v in values.items():
                if v is None or not fits(domains[p], v):
                    say(f"warm start {row['trial_id']}: {p}={v!r} does not fit the search space: base value used")
                    values[p] = base.get(p)
            return point_for(s, {p: v for p, v in values.items() if v is not None}, tasks)

        def key(point: dict) -> str:
            return json.dumps(point, sort_keys=True, default=str)

        try:
            rows = top_distinct(Leaderboard(cfg.storage), s.warm_start.top, experiment=s.warm_start.experiment,
                                key=lambda row: key(warm_point(row, say=lambda line: None)))   # a grid's repeats: one
        except NoMatchingRows:   # no such experiment (yet) in this storage: said below, and the sweep goes on
            rows = []
        if not rows:
            say(f"warm start: experiment {s.warm_start.experiment!r} has no rows in {storage.redact(cfg.storage)}")
        seen = {key(p) for p in points}
        for point in (warm_point(row, say) for row in rows):
            if key(point) not in seen:   # the base config again: evaluated once
                seen.add(key(point))
                points.append(point)
    return points


def evaluated_rows(cfg: ExperimentConfig, fingerprint: Optional[str], *, say,
                   baselines: Optional[dict] = None, n_blocks: Optional[int] = None) -> tuple:
    """``warm_start: auto``: ``(params, objective)`` of this experiment's earlier completed, non-diverged rows on the
    same data, objective and epoch budget whose values fit today's space; a ``delta_m`` objective measured against
    ``baselines``, this sweep's (an earlier sweep's may differ). Each row's config read as today reads it
    (``as_read_today``: a depth of ``n_blocks`` written before it ran as 'all')."""
    s = cfg.search
    if s.warm_start != "auto":
        return ()
    if s.searcher != "optuna":
        say(f"warm start auto: searcher {s.searcher} does not learn from earlier trials (use optuna); ignored")
        return ()
    if s.scheduler.type == "moasha":   # pareto_optuna's multi-objective study starts empty
        say("warm start auto: the multi-objective Optuna search under scheduler moasha starts from no earlier "
            "trials; ignored")
        return ()
    from ..leaderboard.leaderboard import Leaderboard
    from ..leaderboard.query import rows as row_dicts

    tasks, domains, out = list(cfg.tasks), _domains(s), []
    rows = row_dicts(Leaderboard(cfg.storage).table(experiment=cfg.name))
    for row in rows:   # a row's epoch budget is its own train.epochs: same_recipe and the space judge it
        row = {**row, "config": as_read_today(row["config"], cfg, n_blocks)}
        if (row["status"] != "completed" or data_of(row) != fingerprint or finite(row["objective"]) is None
                or row.get("duplicate_of")   # the same work's own row is there: each point once
                or row["objective_metric"] != cfg.objective.metric):
            continue
        values = active_values(s.space, row["config"], tasks)
        if all(v is not None and fits(domains[p], v) for p, v in values.items()) and same_recipe(cfg, values, row):
            told = float(row["objective"]) if cfg.objective.metric != "delta_m" or not baselines else delta_m_of(
                {t: tc.score_metric for t, tc in cfg.tasks.items()}, row, baselines)
            if finite(told) is not None:
                out.append((point_for(s, values, tasks), told))
    say(f"warm start auto: the searcher starts from {len(out)} earlier trial(s) of experiment {cfg.name} "
        f"(of {len(rows)} rows; same data, objective, epoch budget and recipe outside the space, nothing "
        f"retrained)")
    return tuple(out)


def as_read_today(config, cfg: ExperimentConfig, n_blocks: Optional[int]):
    """A row's config with a depth of every one of ``n_blocks`` blocks as today's sweep ``cfg`` runs it
    (``every_block_as_all`` under today's space: 'all', or a range's number); as stored otherwise."""
    from ..config.freezing import every_block_as_all, is_every_block
    from ..config.schema import parse_config

    depth = ((config or {}).get("train") or {}).get("freeze_depth") if isinstance(config, dict) else None
    if n_blocks is None or not is_every_block(depth, n_blocks):
        return config
    try:
        today = every_block_as_all(parse_config({**config, "search": cfg.search.model_dump(exclude_none=True)}),
                                   n_blocks)
    except ConfigError:
        return config
    return {**config, "train": {**config["train"], "freeze_depth": today.train.freeze_depth}}


def same_recipe(cfg: ExperimentConfig, values: dict, row: dict) -> bool:
    """Did ``row`` train what today's config trains at its searched ``values``: the same config outside where it ran
    (storage, name, resources: ``merge.work_key``'s view), by code of today's training revision?"""
    from ..config import schema
    from ..config.revision import revision_of
    from ..leaderboard.merge import work_key

    if revision_of(row) != schema.TRAINING_REVISION:
        return False
    try:
        today = cfg.with_values(values).run_fields()
    except ConfigError:
        return False
    same_place = lambda location, image_column: location   # noqa: E731 (the data fingerprint already matched)
    return work_key(_recipe(today), same_place) == work_key(_recipe(row["config"]), same_place)


def _recipe(config: dict) -> dict:
    """A config without what changes a result only by chance or not at all: the seed (a grid repeat's is seed + r),
    how often it checkpoints, where it caches decoded data."""
    out = copy.deepcopy(config)
    (out.get("train") or {}).pop("seed", None)
    (out.get("train") or {}).pop("checkpoint_every", None)
    (out.get("data") or {}).pop("cache_dir", None)
    return out


def _domains(search) -> dict:
    from ..config.space import walk

    return {p: d for p, d, _ in walk(search.space)}


