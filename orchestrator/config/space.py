"""Search spaces over run fields by dotted path, and what they declare. Never imports TensorFlow.

    search:
      num_samples: 12
      searcher: optuna            # optuna (TPE; the default) | random | grid (choices as a grid, the rest sampled)
      scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # or {type: sync} or {type: none}, or
      #   {type: moasha, metrics: [left_accuracy, right_accuracy]}: stops on Pareto ranks (sweep/moasha.py)
      max_concurrent_trials: null # default: what the cluster's resources fit
      seed: 0
      space:
        train.freeze_depth: {choice: [0, 1, 2, 3, all]}
        train.backbone_lr:  {loguniform: [1.0e-4, 1.0e-2]}
        train.loss_weighting:
          choice:
            - static: {train.loss_weights: {simplex: {concentration: 1.0}}}
            - uncertainty
            - dwa: {train.dwa_temperature: {uniform: [1.0, 4.0]}}

A ``choice`` option written ``{value: {path: domain, ...}}`` is a branch: those paths are searched only in trials
that take that value (they are *inactive* elsewhere: not sampled by Optuna, not in the row, not in the config hash).
A ``simplex`` domain draws one weight per task, summing to 1 (Dirichlet(concentration)). Turning a space into
Tune's and Optuna's terms is ``config.sampling``'s job.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Literal, Optional, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KINDS = ("choice", "uniform", "loguniform", "randint", "simplex")


class _Strict(BaseModel):
    """Every config section's base: no unknown keys, frozen, and no value pydantic would quietly change."""
    # allow_inf_nan=False: YAML's .nan / .inf validate as floats but cannot train (every float must be finite)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_as_number(cls, v, info):   # lax pydantic reads true as 1: `epochs: true` trained one epoch
        if _has_bool(v) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("true/false is not a number or text here")
        return v


def _has_bool(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value))


def _takes_bool(annotation: Any) -> bool:
    """A type that admits true/false as written: bool, Any, or a nested section (which checks its own fields)."""
    if annotation is bool or annotation is Any or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    return any(_takes_bool(a) for a in get_args(annotation))


def _is_branch(option: Any) -> bool:
    return isinstance(option, dict) and len(option) == 1 and isinstance(next(iter(option.values())), dict)


class Domain(_Strict):
    choice: Optional[list[Any]] = None
    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    randint: Optional[tuple[int, int]] = None
    simplex: Optional[dict[Literal["concentration"], float]] = None

    @model_validator(mode="after")
    def _one(self):
        set_ = [k for k in KINDS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError("each search domain needs exactly one of choice, uniform, loguniform, randint, simplex")
        kind = set_[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs a non-empty list")
            for i, option in enumerate(self.choice):
                if isinstance(option, dict) and not _is_branch(option):
                    raise ValueError(f"choice option {option!r} is neither a value nor a branch "
                                     f"{{value: {{dotted.path: domain}}}}")
                if any(same_option(self.options[i], earlier) for earlier in self.options[:i]):
                    raise ValueError(f"choice option {self.options[i]!r} appears twice: each option is one point of "
                                     f"the space; list it once")
            self.branches()   # validates every branch's domains
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
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def options(self) -> list:
        """A choice's values (a branch's value is its key)."""
        return [next(iter(o)) if _is_branch(o) else o for o in self.choice]

    def branches(self) -> list[tuple[Any, dict[str, "Domain"]]]:
        """``(value, sub-space)`` per choice option; the sub-space is empty for a plain value."""
        out = []
        for option in self.choice or ():
            if _is_branch(option):
                (value, sub), = option.items()
                out.append((value, {p: d if isinstance(d, Domain) else Domain.model_validate(d)
                                    for p, d in sub.items()}))
            else:
                out.append((option, {}))
        return out

    def branch(self, value: Any) -> dict[str, "Domain"]:
        """The sub-space searched when this choice takes ``value`` (empty if none). A branch's key may have been a
        number, bool or null before the config travelled as JSON (to a trial's worker, through sweep.json), which
        keeps object keys as strings: "64" is the branch of 64, "true" or "True" of True, "null" or "None" of None."""
        for v, sub in self.branches() if self.kind == "choice" else ():
            if same_option(v, value):
                return sub
        return {}


class SchedulerConfig(_Strict):
    type: Literal["asha", "sync", "moasha", "none"] = Field(
        "asha", description="asha: asynchronous successive halving on the objective; sync: synchronous (promotions "
                            "do not depend on report order; trials wait, paused, at each rung); moasha: on several "
                            "metrics at once (Pareto ranks); none: every trial runs to the end")
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
    num_samples: Optional[int] = Field(None, ge=1, description="trials; with grid: repeats of the whole grid, repeat "
                                                                "r with train.seed + r (default: 8 samples, or the "
                                                                "grid once)")
    searcher: Literal["random", "grid", "optuna"] = Field(
        "optuna", description="optuna: TPE (after Optuna's 10 random start-up trials); random; grid. TPE is the "
                              "default: replayed on measured curves it found the best far more often than random "
                              "from 24 trials on (bench/search_sim.py)")
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)
    base_first: bool = Field(True, description="evaluate the config as written as the first trial")
    warm_start: Union[Literal["auto"], WarmStartConfig, None] = Field(
        None, description="auto: the searcher learns from this experiment's earlier completed rows (same data, "
                          "objective and epochs; nothing retrained); {experiment, top}: retrain its K best first")
    baselines: bool = Field(False, description="train each task alone first (reused), for Δm%")
    mlflow: Optional[str] = Field(None, description="MLflow tracking URI: log the sweep live there too")
    time_budget_s: Optional[float] = Field(
        None, gt=0, description="the sweep ends (cleanly) after this many seconds; each --resume gets them again")

    @field_validator("mlflow")
    @classmethod
    def _no_credentials_in_mlflow(cls, uri: Optional[str]) -> Optional[str]:
        from ..credentials import holds_secret

        if uri and holds_secret(uri):   # it would be stored in sweep.json and Tune's state
            raise ValueError("search.mlflow holds credentials: write the URI without them and set "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in "
                             "the environment")
        return uri

    @property
    def samples(self) -> int:
        return self.num_samples or (1 if self.searcher == "grid" else 8)

    @model_validator(mode="after")
    def _check(self):
        if not self.space:
            raise ValueError("search.space is empty: add at least one dotted path, e.g. train.freeze_depth")
        if self.searcher == "grid" and not any(d.kind == "choice" for d in self.space.values()):
            raise ValueError("grid search needs at least one choice domain (the other domains are sampled)")
        if self.searcher == "grid" and self.samples > 1 and any(p == "train.seed" for p, _, _ in walk(self.space)):
            raise ValueError(f"train.seed is searched in a grid with num_samples {self.samples}: the grid's repeats "
                             f"would train the same seeds again (a point's own seed wins over the repeat's train.seed "
                             f"+ r); set num_samples: 1 (repeats then come from the seeds searched), or search no seed")
        seen = set()
        for path, _, _ in walk(self.space):
            if path in seen:
                raise ValueError(f"search path {path!r} appears twice in the space: search it in one place")
            seen.add(path)
        return self


def same_value(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, str) == isinstance(b, str)


def same_option(a: Any, b: Any) -> bool:
    """Choice options (or branch keys) that stand for one value: equal, or one the JSON form of the other's key (JSON
    keeps object keys as strings: 64 -> "64", True -> "true" or "True", None -> "null" or "None")."""
    return same_value(a, b) or any(isinstance(x, str) and not isinstance(y, str) and x in (json.dumps(y), str(y))
                                   for x, y in ((a, b), (b, a)))


def walk(space: dict[str, Domain], when: tuple = ()) -> Iterator[tuple[str, Domain, tuple]]:
    """Every domain of a space, branches included: ``(path, domain, when)``; ``when`` holds the ``(path, value)``
    choices that make it active (empty: always active)."""
    for path, d in space.items():
        yield path, d, when
        if d.kind == "choice":
            for value, sub in d.branches():
                yield from walk(sub, when + ((path, value),))


def active_values(space: dict[str, Domain], fields: dict, tasks: list[str]) -> dict[str, Any]:
    """A configuration's values (``fields``: a run's fields) at the space's active paths, by dotted path."""
    out = {}
    for path, d in space.items():
        out[path] = value_at(fields, path, tasks)
        if d.kind == "choice":
            out.update(active_values(d.branch(out[path]), fields, tasks))
    return out


def value_at(fields: dict, path: str, tasks: list[str]):
    """A run field by dotted path; loss weights as one weight per task (equal when not set)."""
    if path == "train.loss_weights":
        raw = dotted_get(fields, path) or {}
        return {t: float(raw.get(t, 0.0 if raw else 1.0)) for t in tasks}
    return dotted_get(fields, path)


def check_paths(search: SearchConfig, run_fields: dict, tasks: list[str]) -> None:
    """Every searched path must name an existing run field (ValueError otherwise)."""
    for path, domain, _ in walk(search.space):
        node: Any = run_fields
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"search path {path!r} is not a config field (e.g. train.head_lr, train.freeze_depth)")
            node = node[key]
        if path.startswith("data.") and not path.startswith("data.augment."):
            raise ValueError(f"search path {path!r} changes how the data are read and decoded, which a sweep does "
                             f"once for all trials; of data, only data.augment.* can be searched")
        if path.startswith("train.loss_weights."):
            raise ValueError(f"search path {path!r} searches one task's loss weight: the weights are searched "
                             f"together, as train.loss_weights: {{simplex: {{concentration: ...}}}}")
        if domain.kind == "simplex" and path != "train.loss_weights":
            raise ValueError(f"simplex only applies to train.loss_weights, not {path!r}")
        if path == "train.loss_weights" and domain.kind != "simplex":
            raise ValueError("search train.loss_weights with {simplex: {concentration: ...}}")
        if isinstance(node, dict) and path != "train.loss_weights":
            raise ValueError(f"search path {path!r} is a section, not a value")
        if path == "train.loss_weights" and len(tasks) < 2:
            raise ValueError("a simplex over loss weights needs at least two tasks")


def largest(search: SearchConfig, path: str, default):
    """The largest value a numeric path takes in a trial (train.epochs: ASHA's max_t), over its domains in every
    branch, and ``default`` (the base config's) where some trial does not draw it."""
    found, always = [], False
    for p, d, when in walk(search.space):
        if p == path:
            found.append(max(d.options) if d.kind == "choice" else getattr(d, d.kind)[1])
            always = always or not when
    return max(found) if always else max([*found, default])


def candidate_values(domain: Domain, tasks: list[str]) -> list:
    """Values a domain can produce at its edges: substituted into the config to validate them."""
    k = domain.kind
    if k == "choice":
        return domain.options
    if k == "simplex":
        return [{t: 1.0 / len(tasks) for t in tasks}]
    lo, hi = getattr(domain, k)
    return [lo, hi]


def column_name(path: str, *, taken=()) -> str:
    """A searched path's column: its short name, or the dotted path with underscores where the short name is
    ``taken`` (the row's own columns: backbone.kind must not become the row's ``kind``)."""
    short = path.rsplit(".", 1)[-1]
    return short if short not in taken else path.replace(".", "_")


def hp_columns(values: dict[str, Any], *, n_blocks: int, taken=frozenset()) -> dict[str, Union[float, int, str]]:
    """Leaderboard columns for searched values: short names (``freeze_depth``, ``head_lr``,
    ``weight_<task>``) unless ``taken``; freeze depth 'all' is stored as the number of blocks, so it sorts and
    filters."""
    cols: dict[str, Any] = {}
    for path, value in values.items():
        name = column_name(path, taken={*taken, *cols})
        if path == "train.loss_weights":
            cols.update({f"weight_{t}": float(w) for t, w in value.items()})
        elif path == "train.freeze_depth":
            cols[name] = n_blocks if value == "all" else int(value)
        else:
            cols[name] = value
    return cols


def inactive_columns(search: SearchConfig, values: dict[str, Any], fields: dict, tasks: list[str], *, n_blocks: int,
                     unused: set[str], taken=frozenset()) -> dict[str, Any]:
    """A trial's inactive searched paths: null where its training never reads one (``unused``: dwa's temperature for a
    static trial), else the value it trained with (``fields``: a head_lr searched under sgd only, for adam)."""
    cols: dict[str, Any] = {}
    for path in [p for p, _, _ in walk(search.space) if p not in values]:   # not drawn: not in its (active) values
        if path not in unused:
            cols.update(hp_columns({path: value_at(fields, path, tasks)}, n_blocks=n_blocks, taken=taken))
        elif path == "train.loss_weights":
            cols.update({f"weight_{t}": None for t in tasks})
        else:
            cols[column_name(path, taken=taken)] = None
    return cols


def fits(domain: Domain, value: Any) -> bool:
    """Can ``domain`` produce ``value``? (A branch key read from JSON, "0", stands for 0: ``same_option``.)"""
    k = domain.kind
    if k == "choice":
        return any(same_option(value, c) for c in domain.options)
    if k == "simplex":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    lo, hi = getattr(domain, k)
    return lo <= value <= hi and (k != "randint" or float(value).is_integer())


def dotted_get(d: dict, path: str, default=None):
    node = d
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
