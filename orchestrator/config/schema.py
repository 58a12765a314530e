"""Experiment config: YAML -> one frozen, validated pydantic object.

The driver validates it once; workers receive ``model_dump()`` and validate it again. Every
field a sweep may search is a plain value, addressable by dotted path (``train.freeze_depth``)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .. import metrics
from ..errors import ConfigError
from .paths import check_model_file, redact_paths, set_dotted
from .revision import TRAINING_REVISION, task_order   # in the config hash (read here at each call: tests patch it here)
from .explain import one_line
from .space import SearchConfig, _Strict, check_paths


class AugmentConfig(_Strict):
    """Training-only augmentation with Keras preprocessing layers (run on the workers)."""
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(0.0, ge=0.0, le=1.0, description="max rotation, fraction of a full turn")
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="max zoom in/out, fraction of the size")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="max contrast change, fraction")

    @property
    def active(self) -> bool:
        return self.flip != "none" or bool(self.rotation or self.zoom or self.contrast)


class DataConfig(_Strict):
    train: str = Field(description="Parquet data, or a manifest (Parquet/CSV with a column of image paths), "
                                   "local path or URI (s3://...), or builtin:NAME")
    validation: Union[float, str] = Field(0.2, description="fraction of train held out, or a path/URI like train")
    split_seed: int = Field(0, ge=0, lt=2**32, description="seed of the train/validation split (train.seed does not move it, so "
                                           "runs with other seeds are judged on the same validation rows)")
    image_column: str = "image"
    image_shape: Optional[tuple[int, int, int]] = Field(None, description="(height, width, channels) of flat pixel lists")
    image_size: Optional[tuple[int, int]] = Field(None, description="(height, width): resize every image on decode")
    color_mode: Literal["keep", "rgb", "grayscale"] = Field("keep", description="convert decoded images' channels")
    augment: AugmentConfig = AugmentConfig()
    cache: Literal["auto", "memory", "disk", "stream", "none"] = Field(
        "auto", description="memory: decode once, keep each worker's shard in memory; disk: decode once per node "
                            "into cache_dir, read memory-mapped; stream: decode every epoch ('none' is its old name); "
                            "auto: memory when a worker's decoded shard fits cache_budget_mb, else disk when the "
                            "node's free disk holds the data set, else stream")
    cache_budget_mb: float = Field(1024.0, gt=0, description="auto: largest decoded shard per worker kept in memory")
    cache_dir: Optional[str] = Field(None, description="disk: each node's cache folder (default "
                                                       "~/.cache/orchestrator/decoded; a disk, not tmpfs)")
    allow_outside: bool = Field(True, description="false: a manifest's image paths must be relative and stay in its "
                                                  "folder (no '..', absolute paths or URIs): for manifests from others")

    @field_validator("validation")
    @classmethod
    def _fraction(cls, v):
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("validation fraction must be between 0 and 1 (exclusive)")
        return v

    @field_validator("image_size", "image_shape")
    @classmethod
    def _size(cls, v, info):
        if v is not None and min(v) < 1:
            sizes = "[height, width], both" if info.field_name == "image_size" else "[height, width, channels], each"
            raise ValueError(f"{info.field_name} must be {sizes} >= 1")
        return v


class TaskConfig(_Strict):
    type: Literal["classification", "binary", "regression"]
    label: Optional[str] = Field(None, description="label column; defaults to the task name")
    metric: Optional[str] = Field(None, description="score used by the objective")
    classes: Optional[list[Union[int, str]]] = Field(
        None, description="classification: allowed labels, in index order (default: sorted labels seen in train)")

    @model_validator(mode="after")
    def _check(self):
        allowed = metrics.metrics_for(self.type)
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} is not available for {self.type} tasks; use one of {list(allowed)}")
        if self.classes is not None and self.type != "classification":
            raise ValueError("'classes' only applies to classification tasks")
        if self.classes is not None and len(set(map(str, self.classes))) != len(self.classes):
            raise ValueError("'classes' has duplicates")
        return self

    @property
    def score_metric(self) -> str:
        return self.metric or metrics.default_score(self.type)


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
        check_model_file(self.path, self.weights if self.kind == "application" else None)
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
    loss_weighting: Literal["static", "uncertainty", "dwa", "rlw", "famo"] = Field(
        "static", description="static: loss_weights; uncertainty: Kendall et al. 2018; dwa: Liu et al. 2019; "
                              "rlw: random weights each step, Lin et al. 2022; famo: Liu et al. 2023")
    dwa_temperature: float = Field(2.0, gt=0, description="DWA's softmax temperature T")
    famo_lr: float = Field(0.025, gt=0, description="FAMO's Adam step size β for its task logits (as its reference code)")
    famo_decay: float = Field(0.01, ge=0, description="FAMO's decay γ of its task logits")
    weight_decay: float = Field(0.0, ge=0)
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="the backbone's Keras mixed-precision policy (heads and losses stay float32); "
                               "mixed_float16 adds a dynamic loss scale")
    jit_compile: bool = Field(False, description="XLA-compile the training step's forward and backward pass")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints (the last epoch always); a lost "
                                                       "worker redoes at most this many epochs")
    seed: int = Field(0, ge=0, lt=2**32)

    def unused_paths(self) -> set[str]:
        """Fields this config's training never reads (what a trial that differs only there trains is the same)."""
        by_method = {"loss_weights": "static", "dwa_temperature": "dwa", "famo_lr": "famo", "famo_decay": "famo"}
        unused = {f"train.{name}" for name, method in by_method.items() if self.loss_weighting != method}
        return unused | ({"train.backbone_lr"} if self.freeze_depth == "all" else set())

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
    use_gpu: bool = False
    gpus_per_worker: float = Field(None, ge=0, validate_default=True, description="default: 1 with use_gpu, else 0")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how a trial's workers are placed on nodes (Ray placement group strategy)")

    @field_validator("gpus_per_worker", mode="before")
    @classmethod
    def _one_gpu_by_default(cls, v, info):   # use_gpu validated first, as its field reads it ("false" is False)
        return v if v is not None else 1.0 if info.data.get("use_gpu") else 0.0

    @model_validator(mode="after")
    def _check(self):
        if (self.gpus_per_worker > 0) != self.use_gpu:
            raise ValueError("gpus_per_worker > 0 needs use_gpu: true" if self.gpus_per_worker else "gpus_per_worker "
                             "0 with use_gpu: true: give each worker a GPU or a share (e.g. 0.5), or use_gpu: false")
        if self.gpus_per_worker > 1:   # MultiWorkerMirroredStrategy would make a replica per GPU, each a batch
            raise ValueError(f"gpus_per_worker {self.gpus_per_worker}: a worker trains on one GPU (or a share of one); "
                             f"for more GPUs per trial, raise resources.workers")
        return self


class ObjectiveConfig(_Strict):
    metric: str = Field("mean_score", description="'mean_score', 'delta_m' or any reported metric, e.g. left_accuracy")
    mode: Optional[Literal["max", "min"]] = Field(None, description="optional; must agree with the metric registry")


RESERVED_TASK_NAMES = ("best", "train", "objective", "eff", "weight", "mean", "delta")   # prefixes of row columns


class ExperimentConfig(_Strict):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
    data: DataConfig
    tasks: dict[str, TaskConfig]
    backbone: BackboneConfig = BackboneConfig()
    heads: HeadsConfig = HeadsConfig()
    train: TrainConfig = TrainConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: str = Field("runs", min_length=1, description="local directory or URI (s3://...) for checkpoints, leaderboard, cache")
    search: Optional[SearchConfig] = Field(None, description="sweep definition, see orchestrator.search")

    def __init__(self, **fields):   # ExperimentConfig(**d), the exported class: one ConfigError line, as parse_config
        try:
            super().__init__(**fields)
        except ValidationError as e:
            raise ConfigError(one_line(e)) from None

    @model_validator(mode="after")
    def _check(self):
        if not self.tasks:
            raise ValueError("define at least one task under 'tasks'")
        for name in self.tasks:
            if not name.isidentifier():
                raise ValueError(f"task name {name!r} must be a plain identifier (letters, digits, _)")
            if name.split("_")[0] in RESERVED_TASK_NAMES:   # its columns would read as others' (best_mae)
                raise ValueError(f"task name {name!r} starts like the leaderboard's own columns "
                                 f"({', '.join(RESERVED_TASK_NAMES)}): rename the task (its label column may keep "
                                 f"the name: tasks.<name>.label)")
        if self.train.loss_weights is not None:
            unknown = set(self.train.loss_weights) - set(self.tasks)
            if unknown:
                raise ValueError(f"train.loss_weights names unknown task(s) {sorted(unknown)}; tasks are {sorted(self.tasks)}")
            missing = [t for t in self.tasks if t not in self.train.loss_weights]
            if missing:
                raise ValueError(f"train.loss_weights leaves out task(s) {missing}: give every task a weight (0 "
                                 f"turns one off)")
        known = metrics.known_metric_names({t: tc.type for t, tc in self.tasks.items()})
        if self.objective.metric not in known:
            raise ValueError(f"objective.metric {self.objective.metric!r} is not reported; use one of {known}")
        registered = metrics.direction(self.objective.metric)
        if self.objective.mode is not None and self.objective.mode != registered:
            raise ValueError(f"objective.mode {self.objective.mode} contradicts {self.objective.metric} "
                             f"({'higher' if registered == 'max' else 'lower'} is better): remove objective.mode")
        if self.train.loss_weighting == "dwa" and len(self.tasks) < 2:
            raise ValueError("train.loss_weighting dwa needs at least two tasks")
        if self.search is not None:
            check_paths(self.search, self.run_fields(), list(self.tasks))
            for name in self.search.scheduler.metrics or ():
                if name not in known or name == "delta_m":
                    raise ValueError(f"search.scheduler.metrics: {name!r} is not reported; use some of {known[:-1]}")
        return self

    # -- derived values -------------------------------------------------------------------
    def label_of(self, task: str) -> str:
        return self.tasks[task].label or task

    def normalized_loss_weights(self) -> dict[str, float]:
        raw = self.train.loss_weights or {}
        w = {t: float(raw[t]) if raw else 1.0 for t in self.tasks}   # every task named (_check)
        total = sum(w.values())
        return {t: v / total for t, v in w.items()}

    @property
    def objective_mode(self) -> str:
        """The objective's direction, from the metric registry (the one place it is written)."""
        return metrics.direction(self.objective.metric)

    def run_fields(self, *, public: bool = True) -> dict:
        """Everything but the search block: what one trial trains (and what `best` writes); ``public``: credentials in
        URIs redacted, for anything printed or stored."""
        d = self.model_dump(mode="json")
        d.pop("search", None)
        if public:
            d = redact_paths(d)
        return d

    def public_dump(self) -> dict:
        """The whole config, credentials redacted: what `resolved config` prints."""
        return redact_paths(self.model_dump(mode="json"))

    def work_fields(self) -> dict:
        """What this config trains (``run_fields``, the config hash's and merge's work key's one source). A field its
        training never reads (loss weights of a dwa trial, searched or not) at its default, static weights
        normalized, so configs that differ only there are the same work; a field it reads (backbone_lr with the
        backbone not frozen) at its value."""
        fields = self.run_fields()
        for path in self.train.unused_paths():
            set_dotted(fields, path, _default_at(type(self), path, dotted=fields))
        if "train.loss_weights" not in self.train.unused_paths():   # 12 digits: a simplex point drifts in its last
            fields["train"]["loss_weights"] = {t: float(f"{w:.12g}") for t, w in self.normalized_loss_weights().items()}
        if fields["train"]["optimizer"] == "adamw":   # Keras 3 decays decoupled for every optimizer: AdamW is Adam
            fields["train"]["optimizer"] = "adam"
        return fields

    def config_hash(self) -> str:
        """What this config trains (``work_fields``, the task order, the code's revision), as 12 hex digits."""
        blob = json.dumps({**self.work_fields(), **task_order(self.tasks), "training_revision": TRAINING_REVISION},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_values(self, values: dict[str, Any]) -> "ExperimentConfig":
        """A copy with dotted-path values set (``{"train.freeze_depth": 2}``), re-validated. Python values, not JSON's:
        JSON keeps object keys as strings, and a search space's branch key 0 would become "0"."""
        d = self.model_dump()
        for path, value in values.items():
            set_dotted(d, path, value)
        return parse_config(d)


def _default_at(model: type[BaseModel], path: str, *, dotted: dict):
    """The schema's default of a dotted field (its current value in ``dotted`` if it has none)."""
    from .space import dotted_get

    *sections, name = path.split(".")
    for key in sections:
        model = model.model_fields[key].annotation
    field = model.model_fields[name]
    if field.is_required():
        return dotted_get(dotted, path)
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def parse_config(data: Any) -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError("the experiment config must be a YAML mapping (key: value)")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(one_line(e)) from None
    except RecursionError:
        raise ConfigError("the experiment config is nested too deep to read: write its values flatter") from None
