"""Loss weighting: DWA's formula, uncertainty weighting learns to down-weight a noisy task."""
import math

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.config import parse_config
from orchestrator.model.weighting import dwa_weights

from factories import experiment, small_table, write_parquet


def test_dwa_matches_its_formula_on_a_known_loss_history():
    tasks = ["a", "b", "c"]
    history = [{"a": 2.0, "b": 1.0, "c": 0.5}, {"a": 1.0, "b": 0.9, "c": 0.6}]
    T = 2.0
    w = [history[1][t] / history[0][t] for t in tasks]           # w_k(t-1) = L_k(t-1) / L_k(t-2)
    e = [math.exp(v / T) for v in w]
    expected = {t: 3 * v / sum(e) for t, v in zip(tasks, e)}    # lambda_k = K softmax(w_k / T)
    got = dwa_weights(history, tasks, T)
    assert got == pytest.approx(expected, rel=1e-12)
    assert sum(got.values()) == pytest.approx(3.0)
    assert got["c"] > got["b"] > got["a"]                         # the task whose loss fell least gets most
    assert dwa_weights(history[:1], tasks, T) == {t: 1.0 for t in tasks}   # first two epochs: lambda = 1
    # higher temperature: closer to equal
    flat = dwa_weights(history, tasks, 50.0)
    assert max(flat.values()) - min(flat.values()) < max(got.values()) - min(got.values())


def test_dwa_weights_are_applied_each_epoch(tmp_path):
    """The loop feeds all-reduced epoch losses to DWA: epoch 3's applied weights follow epochs 1-2's losses."""
    import tensorflow as tf

    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.loop import fit_arrays

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(300)),
                                  train={"epochs": 3, "batch_size": 50, "loss_weighting": "dwa",
                                         "dwa_temperature": 2.0}))
    train, val, spec = load_arrays(cfg)
    _, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train, val)
    hist = state["history"]
    tasks = list(cfg.tasks)
    losses = [{t: h[f"train_loss_{t}"] for t in tasks} for h in hist]
    expected = dwa_weights(losses[:2], tasks, 2.0)                  # weights used in epoch 3
    applied = state["weighting"]["weights"]                          # after epoch 3: from epochs 2-3
    after3 = dwa_weights(losses[1:3], tasks, 2.0)
    assert applied == pytest.approx([after3[t] / len(tasks) for t in tasks], rel=1e-5)
    assert hist[2][f"eff_weight_{tasks[0]}"] == pytest.approx(expected[tasks[0]] / len(tasks), rel=1e-5)
    assert hist[0][f"eff_weight_{tasks[0]}"] == pytest.approx(1 / len(tasks))


def test_uncertainty_gives_a_noisy_task_the_lowest_weight(tmp_path):
    import tensorflow as tf

    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.loop import fit_arrays

    table = small_table(800)
    rng = np.random.default_rng(0)
    table = table.append_column("noise", pa.array(rng.normal(0, 5.0, table.num_rows).astype(np.float32)))
    cfg = parse_config(experiment(
        tmp_path, write_parquet(tmp_path / "d.parquet", table),
        tasks={"left": {"type": "classification"}, "right": {"type": "classification"},
               "sum": {"type": "regression", "metric": "r2"}, "noise": {"type": "regression", "metric": "r2"}},
        train={"epochs": 6, "batch_size": 50, "loss_weighting": "uncertainty", "head_lr": 0.01}))
    train, val, spec = load_arrays(cfg)
    _, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train, val)
    final = state["history"][-1]
    weights = {t: final[f"eff_weight_{t}"] for t in cfg.tasks}
    assert min(weights, key=weights.get) == "noise", weights
    # Both regression tasks start at the same weight (log-variance 0: 1/2); the gap is learned.
    from orchestrator.model.weighting import LossWeighting

    assert LossWeighting(cfg).effective() == {"left": 1.0, "right": 1.0, "sum": 0.5, "noise": 0.5}
    assert weights["noise"] < 0.8 * weights["sum"], weights


def test_augmentation_is_training_only_and_searchable(tmp_path):
    """data.augment: Keras preprocessing layers in the training input pipeline only; its fields are
    searchable by dotted path."""
    from orchestrator.data.pipeline import ArrayData, load_arrays
    from orchestrator.config.space import check_paths

    base = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(64)), train={"batch_size": 16})
    plain = parse_config(base)
    augmented = plain.with_values({"data.augment": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1}})
    train, val, spec = load_arrays(plain)

    def first_batch(cfg):
        data = ArrayData(cfg, spec, train, val)
        data.agree_steps(16, lambda v: v)
        return next(iter(data.train_dataset(16)))[0].numpy()

    assert np.array_equal(first_batch(plain), first_batch(plain))          # same seed, same batch
    changed = first_batch(augmented)
    assert changed.shape == first_batch(plain).shape and not np.allclose(changed, first_batch(plain))
    xv, _ = next(iter(ArrayData(augmented, spec, train, val).val_batches()))
    assert np.array_equal(xv, val[0][:len(xv)])                             # validation is never augmented
    cfg = parse_config({**base, "search": {"space": {"data.augment.rotation": {"uniform": [0.0, 0.2]},
                                                     "data.augment.flip": {"choice": ["none", "horizontal"]}}}})
    check_paths(cfg.search, cfg.run_fields(), list(cfg.tasks))              # no error: searchable
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="only data.augment"):
        parse_config({**base, "search": {"space": {"data.image_size": {"choice": [[12, 12], [16, 16]]}}}})
