"""A search space in the terms of Ray Tune and Optuna, and back: Tune's params -> ``{dotted path: value}``.
Never imports TensorFlow.

- random: every domain, branches included, is one Tune variable; a trial's inactive ones are drawn and dropped
  (``materialize`` keeps the active paths only), which leaves the distribution of the active ones unchanged.
- grid: the choices become one list of grid points (``GRID_KEY`` indexes it), a cross-product within each branch,
  repeated ``num_samples`` times (repeat r trains with ``train.seed + r``, so repeats measure seed variance);
  the other domains are sampled.
- optuna: a define-by-run space (``OptunaSpace``): a branch's domains are suggested only when it is taken.

A ``simplex`` is searched as one uniform variable per task mapped through the Gamma quantile function and
normalized, so random search and model-based searchers (Optuna) both handle it.
"""
from __future__ import annotations

import math
from typing import Any

from .freezing import PATH as FREEZE_PATH, is_every_block
from .space import Domain, SearchConfig, fits, same_value

GRID_KEY = "grid_point"          # Tune parameter: index into grid_points() x repeats
_SIMPLEX_KEY = "{path}.{task}"   # Tune parameter of one simplex coordinate (no "/": Tune flattens on it)
_U = (1e-6, 1 - 1e-6)


def _tune_domain(d: Domain):
    from ray import tune

    k = d.kind
    if k == "choice":
        return tune.choice(d.options)
    if k == "uniform":
        return tune.uniform(*d.uniform)
    if k == "loguniform":
        return tune.loguniform(*d.loguniform)
    return tune.randint(d.randint[0], d.randint[1] + 1)   # inclusive upper bound


def param_space(search: SearchConfig, tasks: list[str]) -> dict:
    """Ray Tune's param_space: one entry per searched path, branches included (simplex: one per task); a grid's
    choices as one grid over their points. Empty for Optuna, whose space is ``OptunaSpace``."""
    from ray import tune

    from .space import walk

    if search.searcher == "optuna":
        return {}
    space = {}
    if search.searcher == "grid":
        space[GRID_KEY] = tune.grid_search(list(range(len(grid_points(search.space)) * search.samples)))
    for path, d, _ in walk(search.space):
        if d.kind == "simplex":
            space.update({_SIMPLEX_KEY.format(path=path, task=t): tune.uniform(*_U) for t in tasks})
        elif d.kind != "choice" or search.searcher != "grid":
            space[path] = _tune_domain(d)
    return space


def grid_points(space: dict[str, Domain]) -> list[dict[str, Any]]:
    """Every combination of the choices, ``{path: value}``; a branch's choices combine only with its own value."""
    points: list[dict] = [{}]
    for path, d in space.items():
        if d.kind != "choice":
            continue
        options = [{path: value, **sub_point} for value, sub in d.branches() for sub_point in grid_points(sub)]
        points = [{**p, **o} for p in points for o in options]
    return points


def grid_size(search: SearchConfig) -> int:
    return len(grid_points(search.space))


class OptunaSpace:
    """Optuna's define-by-run space (``OptunaSearch(space=OptunaSpace(...))``): a branch's domains are suggested
    only in trials that take it. A plain class, so Tune can pickle the searcher with it."""

    def __init__(self, search: SearchConfig, tasks: list[str]):
        self.space, self.tasks = search.space, list(tasks)

    def __call__(self, trial) -> None:
        self._suggest(trial, self.space)

    def _suggest(self, trial, space: dict[str, Domain]) -> None:
        for path, d in space.items():
            k = d.kind
            if k == "choice":
                value = trial.suggest_categorical(path, d.options)
                self._suggest(trial, d.branch(value))
            elif k == "simplex":
                for t in self.tasks:
                    trial.suggest_float(_SIMPLEX_KEY.format(path=path, task=t), *_U)
            elif k == "randint":
                trial.suggest_int(path, *d.randint)
            else:
                trial.suggest_float(path, *getattr(d, k), log=k == "loguniform")

    def distributions(self, params: dict) -> dict:
        """Optuna distributions of these (active) params: to add an evaluated trial to a study."""
        import optuna.distributions as od

        out: dict = {}

        def add(space):
            for path, d in space.items():
                k = d.kind
                if k == "choice":
                    out[path] = od.CategoricalDistribution(d.options)
                    add(d.branch(params.get(path)))
                elif k == "simplex":
                    out.update({_SIMPLEX_KEY.format(path=path, task=t): od.FloatDistribution(*_U) for t in self.tasks})
                elif k == "randint":
                    out[path] = od.IntDistribution(*d.randint)
                else:
                    out[path] = od.FloatDistribution(*getattr(d, k), log=k == "loguniform")

        add(self.space)
        return {k: v for k, v in out.items() if k in params}


def materialize(search: SearchConfig, params: dict, tasks: list[str], *, seed: int = 0,
                n_blocks: int | None = None) -> dict[str, Any]:
    """Tune's params -> the trial's active values, ``{dotted path: value}``, for ``ExperimentConfig.with_values``.
    ``seed``: the base config's train.seed (a grid's repeat r trains with seed + r). ``n_blocks``: the backbone's; a
    depth of every block drawn from a choice is 'all' (``every_block_as_all``: a searcher restored from a sweep that
    began before its space read it so still draws the number), its branch with it."""
    fixed: dict = {}
    values: dict[str, Any] = {}
    if GRID_KEY in params:
        points = grid_points(search.space)
        fixed = points[params[GRID_KEY] % len(points)]
        repeat = params[GRID_KEY] // len(points)
        if repeat:
            values["train.seed"] = seed + repeat

    def take(space: dict[str, Domain]) -> None:
        for path, d in space.items():
            if d.kind == "simplex":
                u = {t: params[_SIMPLEX_KEY.format(path=path, task=t)] for t in tasks}
                values[path] = simplex_weights(u, d.simplex.get("concentration", 1.0))
            else:
                values[path] = fixed[path] if path in fixed else params[path]
                if d.kind == "choice" and path == FREEZE_PATH and n_blocks is not None and is_every_block(
                        values[path], n_blocks):   # a range's numbers stay numbers (every_block_as_all)
                    values[path] = "all"
                if d.kind == "choice":
                    take(d.branch(values[path]))

    take(search.space)
    return values


def simplex_weights(u: dict[str, float], concentration: float) -> dict[str, float]:
    """Uniforms -> Gamma(concentration) quantiles -> normalized: a Dirichlet draw summing to 1."""
    if concentration == 1.0:
        g = {t: -math.log1p(-v) for t, v in u.items()}   # Exponential(1) = Gamma(1)
    else:
        from scipy.special import gammaincinv

        g = {t: float(gammaincinv(concentration, v)) for t, v in u.items()}
    total = sum(g.values())
    if total == 0.0:   # every quantile underflowed (a tiny concentration): Dirichlet's limit there is a corner
        top = max(u, key=u.get)
        return {t: float(t == top) for t in u}
    return {t: v / total for t, v in g.items()}


def simplex_uniforms(weights: dict[str, float], concentration: float) -> dict[str, float]:
    """The inverse of ``simplex_weights``: uniforms that map back to these (normalized) weights. Any common scale
    of the Gamma values normalizes away; the one used is their expected sum (``concentration`` × tasks), so the
    uniforms sit in the middle of Gamma's CDF (normalized weights, each <= 1, fed to Gamma(8)'s CDF all fell to
    the clipping floor: equal weights came back)."""
    total = sum(weights.values()) or 1.0
    w = {t: v / total * concentration * len(weights) for t, v in weights.items()}
    if concentration == 1.0:
        u = {t: -math.expm1(-v) for t, v in w.items()}
    else:
        from scipy.special import gammainc

        u = {t: float(gammainc(concentration, v)) for t, v in w.items()}
    return {t: min(max(v, _U[0]), _U[1]) for t, v in u.items()}


def point_for(search: SearchConfig, values: dict[str, Any], tasks: list[str], *, say=None) -> dict:
    """Tune params for a known configuration (its active values, ``{dotted path: value}``), for
    ``points_to_evaluate``. A path missing from ``values`` or outside the space is left out (Tune samples it),
    with one line."""
    from .space import walk

    point = {}
    for path, d, when in walk(search.space):
        if path not in values or not all(same_value(values.get(p), v) for p, v in when):
            continue
        value = values[path]
        if not fits(d, value):
            if say:
                say(f"{path}={value!r} is outside the search space: dropped from the warm start")
            continue
        if d.kind == "simplex":
            c = d.simplex.get("concentration", 1.0)
            u = simplex_uniforms({t: float(value.get(t, 0.0)) for t in tasks}, c)
            back = simplex_weights(u, c)
            total = sum(float(value.get(t, 0.0)) for t in tasks) or 1.0
            if say and max(abs(back[t] - float(value.get(t, 0.0)) / total) for t in tasks) > 1e-3:
                say(f"{path}={value!r} is beyond what simplex concentration {c:g} reaches: the warm start trains "
                    f"{ {t: round(v, 4) for t, v in back.items()} }")
            point.update({_SIMPLEX_KEY.format(path=path, task=t): v for t, v in u.items()})
        else:
            point[path] = value
    return point
