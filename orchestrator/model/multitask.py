"""Multi-task model: backbone + one head per task, losses, and exact validation metrics.

Knows nothing of Ray or Tune. Metrics are computed from additive sums (correct counts, absolute
and squared errors, score histograms), so sums from several workers combine into the exact
metric over the whole validation set.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .backbones import apply_freeze, block_model, blocks, build_backbone  # quiet TensorFlow first

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .. import metrics as registry  # noqa: E402
from ..config.schema import ExperimentConfig  # noqa: E402
from ..data.spec import DataSpec  # noqa: E402

# AUC from histograms of the binary head's *logit* (sums that add up exactly across workers); a positive and a
# negative in one bin count half. The bins are even in asinh(z / AUC_LOGIT_UNIT): 2.6e-6 logit units wide near 0 (an
# untrained head's logits), 0.26% of |z| beyond 0.01, up to |z| = 1e6 (one bin each way for the rest). Bins of the
# probability (200 over [0, 1]) put a rare-event model's examples nearly all in the first bin (AUC 0.80 for an exact
# 0.84), and bins of the logit clipped to [-16, 16] a confident model's in the last (0.62 for 0.92).
AUC_BINS, AUC_LOGIT_UNIT = 16384, 1e-3
_AUC_EDGE = float(np.arcsinh(1e6 / AUC_LOGIT_UNIT))   # 21.4: 2 * 21.4 / 16384 = 0.0026 per bin


@dataclass
class MultiTaskModel:
    model: keras.Model          # image -> {task: logits or standardized value}
    backbone: keras.Model
    blocks: list[list[str]]
    extra_variables: list = field(default_factory=list)   # e.g. learned loss weights: trained with the heads

    def variable_groups(self) -> tuple[list, list]:
        """(trainable backbone variables, trainable head variables): separate learning rates."""
        ids = {id(v) for v in self.backbone.trainable_variables}
        heads = [v for v in self.model.trainable_variables if id(v) not in ids]
        return list(self.backbone.trainable_variables), heads + list(self.extra_variables)


def output_units(cfg: ExperimentConfig, spec: DataSpec, task: str) -> int:
    return len(spec.classes[task]) if cfg.tasks[task].type == "classification" else 1


def build(cfg: ExperimentConfig, spec: DataSpec, *, backbone_file: str | None = None) -> MultiTaskModel:
    """Build in the caller's strategy scope. Freezing is applied here, once. The backbone computes in
    ``train.precision`` (Keras's mixed-precision policy: float32 variables, float16/bfloat16 math); heads and
    losses stay float32, where the small differences between tasks' logits and losses live."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.train.precision)   # the policy of the layers built now; restored after
    try:
        backbone = build_backbone(cfg.backbone, spec.image_shape, storage=cfg.storage, seed=cfg.train.seed,
                                  file=backbone_file, precision=cfg.train.precision)
    finally:
        keras.config.set_dtype_policy(previous)
    inner = block_model(backbone)
    groups = blocks(inner, cfg.backbone.blocks, application=cfg.backbone.kind == "application")
    apply_freeze(inner, groups, cfg.train.freeze_depth)
    inp = keras.Input(spec.image_shape, name="image")
    features = backbone(inp)
    outputs = {}
    for i, task in enumerate(cfg.tasks):
        h = features
        if cfg.heads.hidden_units:
            init = keras.initializers.GlorotUniform(seed=cfg.train.seed + 100 + i)
            h = keras.layers.Dense(cfg.heads.hidden_units, activation="relu", kernel_initializer=init,
                                   dtype="float32", name=f"head_{task}_hidden")(h)
        if cfg.heads.dropout:
            h = keras.layers.Dropout(cfg.heads.dropout, seed=cfg.train.seed + i, name=f"head_{task}_dropout")(h)
        init = keras.initializers.GlorotUniform(seed=cfg.train.seed + 200 + i)
        outputs[task] = keras.layers.Dense(output_units(cfg, spec, task), kernel_initializer=init, dtype="float32",
                                           name=f"head_{task}")(h)
    return MultiTaskModel(keras.Model(inp, outputs, name="multitask"), backbone, groups)


def make_optimizer(cfg: ExperimentConfig, lr: float) -> keras.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=t.weight_decay or None)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=t.weight_decay or None)


def per_example_losses(cfg: ExperimentConfig, y: dict, out: dict) -> dict:
    """Unreduced loss per task (classification: cross-entropy; binary: logistic; regression:
    squared error on the standardized target)."""
    losses = {}
    for task, tc in cfg.tasks.items():
        if tc.type == "classification":
            losses[task] = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y[task], tf.int32), out[task])
        elif tc.type == "binary":
            losses[task] = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(y[task], tf.float32), out[task][:, 0])
        else:
            losses[task] = tf.square(tf.cast(y[task], tf.float32) - out[task][:, 0])
    return losses


def standardize(cfg: ExperimentConfig, spec: DataSpec, y: dict) -> dict:
    """Regression targets to zero mean, unit variance (train statistics): comparable loss scales."""
    return {t: ((v - spec.label_mean[t]) / spec.label_std[t]).astype(np.float32) if cfg.tasks[t].type == "regression"
            else v for t, v in y.items()}


# -- exact metrics from additive sums ---------------------------------------------------------
def _sum_layout(cfg: ExperimentConfig) -> list[tuple[str, str, int]]:
    layout = []
    for task, tc in cfg.tasks.items():
        layout += [(task, "n", 1), (task, "nonfinite", 1), (task, "loss", 1)]
        if tc.type in ("classification", "binary"):
            layout.append((task, "correct", 1))
        if tc.type == "binary":
            layout += [(task, "pos_hist", AUC_BINS), (task, "neg_hist", AUC_BINS)]
        if tc.type == "regression":
            layout += [(task, k, 1) for k in ("abs_err", "sq_err", "y", "y2")]
    return layout


def eval_sums(cfg: ExperimentConfig, spec: DataSpec, model: keras.Model, batches) -> np.ndarray:
    """Additive validation sums over ``batches`` of ``(images, {task: labels})``, as one float64 vector
    (see ``metrics_from_sums``): sums from several workers add up to the whole validation set's. Examples whose
    outputs or loss are not finite are only counted (``nonfinite``): argmax of NaN logits is 0, and NaN scores
    cannot be binned."""
    acc = {(t, k): np.zeros(n) for t, k, n in _sum_layout(cfg)}
    for x, y in batches:
        out = {t: v.numpy() for t, v in _predict(model, tf.cast(tf.constant(x), tf.float32)).items()}
        yb = standardize(cfg, spec, y)
        losses = per_example_losses(cfg, yb, out)
        for task, tc in cfg.tasks.items():
            loss = np.asarray(losses[task], np.float64)
            ok = np.isfinite(out[task].reshape(len(loss), -1)).all(axis=1) & np.isfinite(loss)
            acc[task, "n"] += len(loss)
            acc[task, "nonfinite"] += float(np.sum(~ok))
            acc[task, "loss"] += float(np.sum(loss[ok]))
            _add_task(acc, task, tc.type, out=out[task][ok], y=np.asarray(y[task])[ok], yb=np.asarray(yb[task])[ok],
                      spec=spec)
    return np.concatenate([acc[t, k] for t, k, _ in _sum_layout(cfg)])


def _add_task(acc: dict, task: str, kind: str, *, out: np.ndarray, y: np.ndarray, yb: np.ndarray,
              spec: DataSpec) -> None:
    """One task's sums over the examples of a batch whose outputs and loss are finite."""
    if kind == "classification":
        acc[task, "correct"] += float(np.sum(out.argmax(-1) == yb))
    elif kind == "binary":
        z = out[:, 0].astype(np.float64)
        acc[task, "correct"] += float(np.sum((z > 0) == (yb > 0.5)))          # p > 0.5
        scaled = (np.clip(np.arcsinh(z / AUC_LOGIT_UNIT), -_AUC_EDGE, _AUC_EDGE) + _AUC_EDGE) / (2 * _AUC_EDGE)
        bins = np.minimum((scaled * AUC_BINS).astype(int), AUC_BINS - 1)
        acc[task, "pos_hist"] += np.bincount(bins[yb > 0.5], minlength=AUC_BINS)
        acc[task, "neg_hist"] += np.bincount(bins[yb <= 0.5], minlength=AUC_BINS)
    else:
        y64 = y.astype(np.float64)
        pred = out[:, 0].astype(np.float64) * spec.label_std[task] + spec.label_mean[task]
        acc[task, "abs_err"] += float(np.sum(np.abs(pred - y64)))
        acc[task, "sq_err"] += float(np.sum((pred - y64) ** 2))
        # SST = sum(d²) - sum(d)²/n is the same for any shift d = y - c; shifted by the training mean it keeps its
        # digits when the labels' mean is large against their spread (float32 sums of y lost them all)
        d = y64 - spec.label_mean[task]
        acc[task, "y"] += float(np.sum(d))
        acc[task, "y2"] += float(np.sum(d * d))


def array_batches(x: np.ndarray, y: dict, batch_size: int = 1024):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], {t: v[i:i + batch_size] for t, v in y.items()}


@tf.function(reduce_retracing=True, autograph=False)   # as the train step: no AutoGraph, a shorter trace
def _predict(model, x):
    return model(x, training=False)


def metrics_from_sums(cfg: ExperimentConfig, sums: np.ndarray, *, baselines: dict | None = None) -> dict[str, float]:
    """Per-task metrics (``<task>_accuracy``, ``<task>_mae`` ...), mean score, Δm% (with single-task
    ``baselines``: task -> score) and the objective."""
    parts, i = {}, 0
    for t, k, n in _sum_layout(cfg):
        parts[t, k] = sums[i:i + n] if n > 1 else float(sums[i])
        i += n
    m: dict[str, float] = {"nonfinite_outputs": float(sum(parts[t, "nonfinite"] for t in cfg.tasks))}
    for task, tc in cfg.tasks.items():
        n = max(parts[task, "n"], 1.0)
        if m["nonfinite_outputs"]:   # the model diverged: no score is computed from the examples still finite
            m.update({f"{task}_{name}": float("nan") for name in registry.metrics_for(tc.type) + ("loss",)})
            continue
        m[f"{task}_loss"] = parts[task, "loss"] / n
        if tc.type in ("classification", "binary"):
            m[f"{task}_accuracy"] = parts[task, "correct"] / n
        if tc.type == "binary":
            pos, neg = parts[task, "pos_hist"], parts[task, "neg_hist"]
            below = np.cumsum(neg) - neg
            denom = pos.sum() * neg.sum()
            m[f"{task}_auc"] = float(np.sum(pos * (below + 0.5 * neg)) / denom) if denom else float("nan")
        if tc.type == "regression":
            sse, sy, sy2 = parts[task, "sq_err"], parts[task, "y"], parts[task, "y2"]
            sst = sy2 - sy * sy / n
            m[f"{task}_mae"] = parts[task, "abs_err"] / n
            m[f"{task}_rmse"] = float(np.sqrt(sse / n))
            m[f"{task}_r2"] = float(1.0 - sse / sst) if sst > 0 else float("nan")
    m["mean_score"] = mean_score(cfg, m)
    if baselines:
        m["delta_m"] = registry.delta_m_of({t: tc.score_metric for t, tc in cfg.tasks.items()}, m, baselines)
    m["objective"] = objective(cfg, m)
    return m


def mean_score(cfg: ExperimentConfig, m: dict[str, float]) -> float:
    """Mean over tasks of each task's score metric, negated where lower is better (registry)."""
    return float(np.mean([registry.score(tc.score_metric, m[f"{t}_{tc.score_metric}"]) for t, tc in cfg.tasks.items()]))


def objective(cfg: ExperimentConfig, m: dict[str, float]) -> float:
    """The objective's value (``delta_m`` needs baselines: the driver computes it; here it is NaN)."""
    if cfg.objective.metric == "mean_score":
        return mean_score(cfg, m)
    if cfg.objective.metric == "delta_m":
        return float(m.get("delta_m", float("nan")))
    return float(m[cfg.objective.metric])
