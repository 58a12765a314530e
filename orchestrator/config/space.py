"""Search spaces over run fields by dotted path. Never imports TensorFlow.

    search:
      num_samples: 12
      searcher: random            # random | grid (choices as a grid, the rest sampled) | optuna
      scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # or {type: none}, or
      #   {type: moasha, metrics: [left_accuracy, right_accuracy]}: stops on Pareto ranks (sweep/moasha.py)
      max_concurrent_trials: null # default: what the cluster's resources fit
      seed: 0
      space:
        train.freeze_depth: {choice: [0, 1, 2, 3, all]}
        train.backbone_lr:  {loguniform: [1.0e-4, 1.0e-2]}
        train.loss_weights: {simplex: {concentration: 1.0}}

A ``simplex`` domain draws one weight per task, summing to 1 (Dirichlet(concentration)). It is
searched as one uniform variable per task mapped through the Gamma quantile function and
normalized, so random search and model-based searchers (Optuna) both handle it.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

_SIMPLEX_KEY = "{path}.{task}"   # Tune parameter of one simplex coordinate (no "/": Tune flattens on it)


class _Strict(BaseModel):
    # allow_inf_nan=False: YAML's .nan / .inf validate as floats but cannot train (every float must be finite)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Domain(_Strict):
    choice: Optional[list[Any]] = None
    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    randint: Optional[tuple[int, int]] = None
    simplex: Optional[dict[Literal["concentration"], float]] = None

    @model_validator(mode="after")
    def _one(self):
        set_ = [k for k in ("choice", "uniform", "loguniform", "randint", "simplex") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError("each search domain needs exactly one of choice, uniform, loguniform, randint, simplex")
        kind = set_[0]
        if kind == "choice" and not self.choice:
            raise ValueError("choice needs a non-empty list")
        if kind in ("uniform", "loguniform", "randint"):
            lo, hi = getattr(self, kind)
            if not lo < hi:
                raise ValueError(f"{kind} bounds must be [low, high] with low < high, got [{lo}, {hi}]")
            if kind == "loguniform" and lo <= 0:
                raise ValueError(f"loguniform bounds must be > 0, got [{lo}, {hi}]")
        if kind == "simplex" and self.simplex.get("concentration", 1.0) <= 0:
            raise ValueError("simplex concentration must be > 0")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "loguniform", "randint", "simplex") if getattr(self, k) is not None)


class SchedulerConfig(_Strict):
    type: Literal["asha", "moasha", "none"] = Field(
        "asha", description="asha: on the objective; moasha: on several metrics at once (Pareto ranks); none")
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    metrics: Optional[tuple[str, ...]] = Field(None, description="moasha: the reported metrics it ranks trials by")

    @model_validator(mode="after")
    def _metrics(self):
        if self.type == "moasha" and not self.metrics:
            raise ValueError("scheduler moasha needs metrics, e.g. metrics: [left_accuracy, right_accuracy]")
        if self.type != "moasha" and self.metrics:
            raise ValueError(f"scheduler metrics only apply to moasha, not {self.type}: remove them or use "
                             f"type: moasha")
        return self


class WarmStartConfig(_Strict):
    experiment: str = Field(description="an earlier experiment in the same storage")
    top: int = Field(3, ge=1, description="its K best configurations are evaluated first")


class SearchConfig(_Strict):
    space: dict[str, Domain]
    num_samples: Optional[int] = Field(None, ge=1, description="trials; with grid: repeats of the whole grid "
                                                                "(default: 8 samples, or the grid once)")
    searcher: Literal["random", "grid", "optuna"] = "random"
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    seed: int = 0
    base_first: bool = Field(True, description="evaluate the config as written as the first trial")
    warm_start: Optional[WarmStartConfig] = None
    baselines: bool = Field(False, description="train each task alone first (reused), for Δm%")
    mlflow: Optional[str] = Field(None, description="MLflow tracking URI: log the sweep live there too")

    @property
    def samples(self) -> int:
        return self.num_samples or (1 if self.searcher == "grid" else 8)

    @model_validator(mode="after")
    def _check(self):
        if not self.space:
            raise ValueError("search.space is empty: add at least one dotted path, e.g. train.freeze_depth")
        if self.searcher == "grid" and not any(d.kind == "choice" for d in self.space.values()):
            raise ValueError("grid search needs at least one choice domain (the other domains are sampled)")
        return self


def check_paths(search: SearchConfig, run_fields: dict, tasks: list[str]) -> None:
    """Every searched path must name an existing run field (ValueError otherwise)."""
    for path, domain in search.space.items():
        node: Any = run_fields
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"search path {path!r} is not a config field (e.g. train.head_lr, train.freeze_depth)")
            node = node[key]
        if path.startswith("data.") and not path.startswith("data.augment."):
            raise ValueError(f"search path {path!r} changes how the data are read and decoded, which a sweep does "
                             f"once for all trials; of data, only data.augment.* can be searched")
        if domain.kind == "simplex" and path != "train.loss_weights":
            raise ValueError(f"simplex only applies to train.loss_weights, not {path!r}")
        if path == "train.loss_weights" and domain.kind != "simplex":
            raise ValueError("search train.loss_weights with {simplex: {concentration: ...}}")
        if isinstance(node, dict) and path != "train.loss_weights":
            raise ValueError(f"search path {path!r} is a section, not a value")
    if "train.loss_weights" in search.space and len(tasks) < 2:
        raise ValueError("a simplex over loss weights needs at least two tasks")


def largest(search: SearchConfig, path: str, default):
    """The largest value a searched numeric path can take (e.g. train.epochs for ASHA's max_t)."""
    d = search.space.get(path)
    if d is None:
        return default
    if d.kind == "choice":
        return max(d.choice)
    return getattr(d, d.kind)[1]


def candidate_values(domain: Domain, tasks: list[str]) -> list:
    """Values a domain can produce at its edges: substituted into the config to validate them."""
    k = domain.kind
    if k == "choice":
        return list(domain.choice)
    if k == "simplex":
        return [{t: 1.0 / len(tasks) for t in tasks}]
    lo, hi = getattr(domain, k)
    return [lo, hi]


def param_space(search: SearchConfig, tasks: list[str]) -> dict:
    """Ray Tune's param_space: one entry per searched path (simplex: one per task)."""
    from ray import tune

    space = {}
    for path, d in search.space.items():
        k = d.kind
        if k == "choice":
            space[path] = tune.grid_search(d.choice) if search.searcher == "grid" else tune.choice(d.choice)
        elif k == "uniform":
            space[path] = tune.uniform(*d.uniform)
        elif k == "loguniform":
            space[path] = tune.loguniform(*d.loguniform)
        elif k == "randint":
            space[path] = tune.randint(d.randint[0], d.randint[1] + 1)  # inclusive upper bound
        else:
            for task in tasks:
                space[_SIMPLEX_KEY.format(path=path, task=task)] = tune.uniform(1e-6, 1 - 1e-6)
    return space


def simplex_weights(u: dict[str, float], concentration: float) -> dict[str, float]:
    """Uniforms -> Gamma(concentration) quantiles -> normalized: a Dirichlet draw summing to 1."""
    if concentration == 1.0:
        g = {t: -math.log1p(-v) for t, v in u.items()}   # Exponential(1) = Gamma(1)
    else:
        from scipy.special import gammaincinv

        g = {t: float(gammaincinv(concentration, v)) for t, v in u.items()}
    total = sum(g.values())
    return {t: v / total for t, v in g.items()}


def materialize(search: SearchConfig, params: dict, tasks: list[str]) -> dict[str, Any]:
    """Tune's sampled params -> ``{dotted path: value}`` for ``ExperimentConfig.with_values``."""
    values = {}
    for path, d in search.space.items():
        if d.kind == "simplex":
            u = {t: params[_SIMPLEX_KEY.format(path=path, task=t)] for t in tasks}
            values[path] = simplex_weights(u, d.simplex.get("concentration", 1.0))
        else:
            values[path] = params[path]
    return values


def hp_columns(values: dict[str, Any], *, n_blocks: int) -> dict[str, Union[float, int, str]]:
    """Leaderboard columns for searched values: short names (``freeze_depth``, ``head_lr``,
    ``weight_<task>``); freeze depth 'all' is stored as the number of blocks, so it sorts and filters."""
    cols: dict[str, Any] = {}
    for path, value in values.items():
        short = path.rsplit(".", 1)[-1]
        name = short if short not in cols else path.replace(".", "_")
        if path == "train.loss_weights":
            cols.update({f"weight_{t}": float(w) for t, w in value.items()})
        elif path == "train.freeze_depth":
            cols[name] = n_blocks if value == "all" else int(value)
        else:
            cols[name] = value
    return cols


def fits(domain: Domain, value: Any) -> bool:
    """Can ``domain`` produce ``value``?"""
    k = domain.kind
    if k == "choice":
        return any(value == c and isinstance(value, str) == isinstance(c, str) for c in domain.choice)
    if k == "simplex":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    lo, hi = getattr(domain, k)
    return lo <= value <= hi and (k != "randint" or float(value).is_integer())


def simplex_uniforms(weights: dict[str, float], concentration: float) -> dict[str, float]:
    """The inverse of ``simplex_weights``: uniforms that map back to these (normalized) weights."""
    total = sum(weights.values()) or 1.0
    w = {t: v / total for t, v in weights.items()}
    if concentration == 1.0:
        u = {t: -math.expm1(-v) for t, v in w.items()}
    else:
        from scipy.special import gammainc

        u = {t: float(gammainc(concentration, v)) for t, v in w.items()}
    return {t: min(max(v, 1e-6), 1 - 1e-6) for t, v in u.items()}


def point_for(search: SearchConfig, values: dict[str, Any], tasks: list[str], *, say=None) -> dict:
    """Tune params for a known configuration (``{dotted path: value}``), for ``points_to_evaluate``.
    A path missing from ``values`` or outside the space is left out (Tune samples it), with one line."""
    point = {}
    for path, d in search.space.items():
        if path not in values:
            continue
        value = values[path]
        if not fits(d, value):
            if say:
                say(f"{path}={value!r} is outside the search space: dropped from the warm start")
            continue
        if d.kind == "simplex":
            u = simplex_uniforms({t: float(value.get(t, 0.0)) for t in tasks}, d.simplex.get("concentration", 1.0))
            point.update({_SIMPLEX_KEY.format(path=path, task=t): v for t, v in u.items()})
        else:
            point[path] = value
    return point


def dotted_get(d: dict, path: str, default=None):
    node = d
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
