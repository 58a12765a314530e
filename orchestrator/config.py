"""Experiment config: YAML -> one frozen, validated pydantic object.

The driver validates it once; workers receive ``model_dump()`` and validate it again. Every
field a sweep may search is a plain value, addressable by dotted path (``train.freeze_depth``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .search import SearchConfig, check_paths


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    train: str = Field(description="Parquet file/directory (local path or URI like s3://...) or builtin:NAME")
    validation: Union[float, str] = Field(0.2, description="fraction of train held out, or a Parquet path/URI")
    image_column: str = "image"
    image_shape: Optional[tuple[int, int, int]] = Field(None, description="(height, width, channels)")

    @field_validator("validation")
    @classmethod
    def _fraction(cls, v):
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("validation fraction must be between 0 and 1 (exclusive)")
        return v


TASK_METRICS = {
    "classification": ("accuracy",),
    "binary": ("accuracy", "auc"),
    "regression": ("mae", "rmse", "r2"),
}


class TaskConfig(_Strict):
    type: Literal["classification", "binary", "regression"]
    label: Optional[str] = Field(None, description="label column; defaults to the task name")
    metric: Optional[str] = Field(None, description="score used by the objective")
    classes: Optional[list[Union[int, str]]] = Field(
        None, description="classification: allowed labels, in index order (default: sorted labels seen in train)")

    @model_validator(mode="after")
    def _check(self):
        allowed = TASK_METRICS[self.type]
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} is not available for {self.type} tasks; use one of {list(allowed)}")
        if self.classes is not None and self.type != "classification":
            raise ValueError("'classes' only applies to classification tasks")
        if self.classes is not None and len(set(map(str, self.classes))) != len(self.classes):
            raise ValueError("'classes' has duplicates")
        return self

    @property
    def score_metric(self) -> str:
        return self.metric or TASK_METRICS[self.type][0]


class BackboneConfig(_Strict):
    kind: Literal["builtin", "application", "file"] = "builtin"
    name: str = Field("digits-cnn", description="builtin name, or keras.applications class (e.g. MobileNetV2)")
    weights: str = Field("pretrained", description="builtin: pretrained|none; application: imagenet|none|<file>")
    path: Optional[str] = Field(None, description="kind=file: a .keras model file (local path or URI)")
    blocks: Optional[list[str]] = Field(
        None, description="layer-name prefixes, one per block, in input order (default: derived from layer names)")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "file" and not self.path:
            raise ValueError("backbone.kind 'file' needs backbone.path (a .keras file)")
        if self.kind != "file" and self.path:
            raise ValueError("backbone.path is only used with backbone.kind 'file'")
        if self.kind == "builtin" and self.name != "digits-cnn":
            raise ValueError(f"unknown builtin backbone {self.name!r}; the builtin is 'digits-cnn'")
        if self.kind == "builtin" and self.weights not in ("pretrained", "none"):
            raise ValueError("builtin backbone weights must be 'pretrained' or 'none'")
        return self


class HeadsConfig(_Strict):
    hidden_units: int = Field(64, ge=0, description="0 = a linear head")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class TrainConfig(_Strict):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1, description="global batch size, split across workers")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    backbone_lr: float = Field(1e-3, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    freeze_depth: Union[int, Literal["all"]] = Field(0, description="backbone blocks kept frozen, from the input")
    loss_weights: Optional[dict[str, float]] = Field(None, description="per task; normalized to sum 1; default equal")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    @field_validator("freeze_depth", mode="before")
    @classmethod
    def _depth(cls, v):
        if isinstance(v, str) and v.isdigit():
            v = int(v)
        if isinstance(v, bool) or not (v == "all" or (isinstance(v, int) and v >= 0)):
            raise ValueError(f"freeze_depth must be >= 0 or 'all', not {v!r}")
        return v

    @field_validator("loss_weights")
    @classmethod
    def _weights(cls, v):
        if v is not None:
            if any(w < 0 for w in v.values()):
                raise ValueError("loss weights must be >= 0")
            if sum(v.values()) <= 0:
                raise ValueError("loss weights must not all be 0")
        return v


class ResourcesConfig(_Strict):
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how a trial's workers are placed on nodes (Ray placement group strategy)")

    @model_validator(mode="after")
    def _check(self):
        if self.use_gpu and self.gpus_per_worker == 0:
            return self.model_copy(update={"gpus_per_worker": 1.0})
        if self.gpus_per_worker > 0 and not self.use_gpu:
            raise ValueError("gpus_per_worker > 0 needs use_gpu: true")
        return self


class ObjectiveConfig(_Strict):
    metric: str = Field("mean_score", description="'mean_score' or any reported metric, e.g. left_accuracy")
    mode: Optional[Literal["max", "min"]] = None


class ExperimentConfig(_Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    data: DataConfig
    tasks: dict[str, TaskConfig]
    backbone: BackboneConfig = BackboneConfig()
    heads: HeadsConfig = HeadsConfig()
    train: TrainConfig = TrainConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: str = Field("runs", description="local directory or URI (s3://...) for checkpoints, leaderboard, cache")
    search: Optional[SearchConfig] = Field(None, description="sweep definition, see orchestrator.search")

    @model_validator(mode="after")
    def _check(self):
        if not self.tasks:
            raise ValueError("define at least one task under 'tasks'")
        for name in self.tasks:
            if not name.isidentifier():
                raise ValueError(f"task name {name!r} must be a plain identifier (letters, digits, _)")
        if self.train.loss_weights is not None:
            unknown = set(self.train.loss_weights) - set(self.tasks)
            if unknown:
                raise ValueError(f"train.loss_weights names unknown task(s) {sorted(unknown)}; tasks are {sorted(self.tasks)}")
        known = {f"{t}_{m}" for t, tc in self.tasks.items() for m in TASK_METRICS[tc.type] + ("loss",)}
        if self.objective.metric != "mean_score" and self.objective.metric not in known:
            raise ValueError(f"objective.metric {self.objective.metric!r} is not reported; use mean_score or one of "
                             f"{sorted(known)}")
        if self.objective.metric != "mean_score" and self.objective.mode is None:
            raise ValueError("objective.mode (max|min) is required when objective.metric is not mean_score")
        if self.search is not None:
            check_paths(self.search, self.run_fields(), list(self.tasks))
        return self

    # -- derived values -------------------------------------------------------------------
    def label_of(self, task: str) -> str:
        return self.tasks[task].label or task

    def normalized_loss_weights(self) -> dict[str, float]:
        raw = self.train.loss_weights or {}
        w = {t: float(raw.get(t, 0.0 if raw else 1.0)) for t in self.tasks}
        total = sum(w.values())
        return {t: v / total for t, v in w.items()}

    @property
    def objective_mode(self) -> str:
        return self.objective.mode or "max"

    def run_fields(self) -> dict:
        """Everything but the search block: what one trial trains (and what `best` writes)."""
        d = self.model_dump(mode="json")
        d.pop("search", None)
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.run_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_values(self, values: dict[str, Any]) -> "ExperimentConfig":
        """A copy with dotted-path values set (``{"train.freeze_depth": 2}``), re-validated."""
        d = self.model_dump(mode="json")
        for path, value in values.items():
            set_dotted(d, path, value)
        return parse_config(d)


def frozen_blocks(depth: Union[int, str], n_blocks: int, *, where: str = "train.freeze_depth") -> int:
    """How many blocks a freeze depth freezes ('all' = every block); ConfigError if out of range."""
    n = n_blocks if depth == "all" else int(depth)
    if not 0 <= n <= n_blocks:
        raise ConfigError(f"{where} {depth} is beyond the backbone's {n_blocks} blocks; use 0..{n_blocks} or 'all'")
    return n


def set_dotted(d: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = d
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {} if node.get(k) is None else node[k]
        node = node[k]
    node[keys[-1]] = value


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{loc}': remove it or check the spelling (see README, 'Experiment config')"
    if first["type"] == "missing":
        return f"missing config key '{loc}': add it (see README, 'Experiment config')"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    where = f"'{loc}': " if loc else ""
    return f"invalid config {where}{msg}{more}"


def parse_config(data: Any) -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError("the experiment config must be a YAML mapping (key: value)")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read YAML, apply dotted-path overrides (``--set train.epochs=3``), validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found: pass the path to an experiment YAML")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p} is not valid YAML{at}: fix the syntax") from None
    if isinstance(data, dict):
        for k, v in (overrides or {}).items():
            set_dotted(data, k, v)
    return parse_config(data)
