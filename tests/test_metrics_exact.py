"""Validation metrics from the per-worker sums (``model.multitask.eval_sums`` -> ``metrics_from_sums``) against
float64 reference formulas on the same model outputs: AUC as Mann-Whitney over every positive/negative pair, R² as
1 - SSE/SST. The sums are what workers all-reduce, so what holds for one process holds for the cluster."""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _outputs_model():
    """A model that hands its two input columns out as the binary head's logit and the regression head's output."""
    import keras

    inp = keras.Input((2,))
    return keras.Model(inp, {"b": keras.layers.Lambda(lambda t: t[:, :1])(inp),
                             "r": keras.layers.Lambda(lambda t: t[:, 1:])(inp)})


def _metrics(tmp_path, logit, yb, pred, yr):
    from orchestrator.config.schema import ExperimentConfig
    from orchestrator.data.spec import DataSpec
    from orchestrator.model import multitask as mt

    cfg = ExperimentConfig.model_validate({
        "name": "x", "data": {"train": "builtin:multidigits/train", "validation": 0.2},
        "tasks": {"b": {"type": "binary", "metric": "auc"}, "r": {"type": "regression", "metric": "r2"}},
        "storage": str(tmp_path / "runs")})
    mean, std = float(yr.mean()), float(yr.std())
    spec = DataSpec(image_shape=(2, 1, 1), image_kind="pixels", pixel_dtype="float32", classes={},
                    label_mean={"r": mean}, label_std={"r": std}, n_train=len(yr), n_val=len(yr), fingerprint="x")
    x = np.stack([logit, (pred - mean) / std], 1).astype(np.float32)
    sums = mt.eval_sums(cfg, spec, _outputs_model(), mt.array_batches(x, {"b": yb, "r": yr}, 1024))
    emitted = x[:, 1].astype(np.float64) * std + mean          # the regression output as the model emits it
    return mt.metrics_from_sums(cfg, sums), emitted


def _mann_whitney(score, y):
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    for s in np.unique(score[np.diff(np.sort(score), prepend=np.nan) == 0]):   # ties: mean rank
        ranks[score == s] = ranks[score == s].mean()
    pos = y > 0.5
    return (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


@pytest.mark.parametrize("case", ["rare positives", "confident x6", "large margin", "saturated", "untrained"])
def test_auc_follows_the_ranking_not_the_probability_scale(tmp_path, case):
    """AUC was counted over 200 equal bins of the probability: a rare-event model puts most examples in the first
    bin (ties count half), and a model with the same ranking but larger logits scored differently. Then over bins
    of the logit clipped to [-16, 16]: a confident model's logits past 16 all fell in the last bin (0.62 for an
    exact 0.92, a helper's audit)."""
    rng = np.random.default_rng(0)
    n = 20000
    yb = (rng.random(n) < (0.02 if case == "rare positives" else 0.5)).astype(np.float32)
    logit = {"rare positives": lambda: -6.0 + 1.5 * yb + rng.normal(0, 1, n),
             "confident x6": lambda: 6 * (1.2 * (2 * yb - 1) + rng.normal(0, 1, n)),
             "large margin": lambda: np.where(yb > 0.5, rng.normal(25, 10, n), rng.normal(5, 10, n)),
             "saturated": lambda: 18 + 6 * yb + rng.normal(0, 3, n),
             "untrained": lambda: rng.normal(0, 0.005, n) + 0.003 * yb}[case]()
    yr = rng.normal(0, 1, n).astype(np.float32)
    m, _ = _metrics(tmp_path, logit, yb, yr.astype(np.float64), yr)
    assert m["b_auc"] == pytest.approx(_mann_whitney(logit.astype(np.float32), yb), abs=1e-3)


@pytest.mark.parametrize("offset", [0.0, 3000.0, 30000.0])
def test_r2_keeps_its_precision_when_labels_have_a_large_mean(tmp_path, offset):
    """SST = sum(y²) - sum(y)²/n from float32 sums of y lost every digit when the labels' mean was large against their
    spread (labels 3000 ± 1 gave R² 0.68 for a true 0.75)."""
    rng = np.random.default_rng(1)
    n = 20000
    yr = (offset + rng.normal(0, 1, n)).astype(np.float32)
    pred = yr.astype(np.float64) + rng.normal(0, 0.5, n)
    m, emitted = _metrics(tmp_path, rng.normal(0, 1, n), (rng.random(n) < 0.5).astype(np.float32), pred, yr)
    y = yr.astype(np.float64)
    want = 1 - np.sum((emitted - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert m["r_r2"] == pytest.approx(want, abs=1e-3)
    assert m["r_rmse"] == pytest.approx(np.sqrt(np.mean((emitted - y) ** 2)), rel=1e-4)
