"""Loss weighting: DWA's, RLW's and FAMO's formulas; uncertainty weighting learns to down-weight a noisy task."""
import math

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.config import parse_config
from orchestrator.model.weighting import dwa_weights, famo_logits, famo_weights, rlw_weights

from factories import experiment, merged, small_table, write_parquet


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


def test_augmentation_draws_are_keyed_on_seed_rank_epoch_and_batch(tmp_path):
    """Keras's random layers drew from stateful seed generators in a parallel map: which batch got which draw
    followed thread timing (augmented runs were not reproducible), and a resumed run restarted the draws. Each
    batch's draws are now a function of (train.seed, rank, epoch, batch): two builds give the same epochs, a run
    resumed at epoch 3 gets epoch 3's draws, and another rank other draws."""
    from orchestrator.data.pipeline import ArrayData, load_arrays

    plain = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(96)),
                                    train={"batch_size": 8}))
    cfg = plain.with_values({"data.augment": {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}})
    train, val, spec = load_arrays(cfg)

    def epochs(cfg, which, *, rank=0):
        data = ArrayData(cfg, spec, train, val, rank=rank, world=2)   # both ranks given the same rows here
        data.agree_steps(8, lambda v: np.full_like(v, v.max()))
        ds = data.train_dataset(8)
        data.start_at(which[0], ds)
        out = []
        for epoch in which:
            data.set_epoch(epoch)
            out.append([(x.numpy(), y["left"].numpy()) for x, y in ds])
        return out

    straight, again, resumed = epochs(cfg, range(3)), epochs(cfg, range(3)), epochs(cfg, [2])
    for a, b in zip(straight, again):
        for (xa, ya), (xb, yb) in zip(a, b):
            assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    for (xa, ya), (xr, yr) in zip(straight[2], resumed[0]):
        assert np.array_equal(ya, yr) and np.array_equal(xa, xr)
    unaugmented = epochs(plain, [2])[0]
    assert all(np.array_equal(ya, yp) and not np.allclose(xa, xp) for (xa, ya), (xp, yp) in zip(straight[2], unaugmented))
    other_rank = epochs(cfg, [2], rank=1)[0]
    assert not all(np.allclose(xa, xo) for (xa, _), (xo, _) in zip(straight[2], other_rank))


def test_rlw_draws_a_softmax_of_standard_normals_keyed_on_seed_and_step():
    """Lin et al. 2022: lambda = softmax(z), z ~ N(0, I_K), new every step; the same (seed, step) gives the same draw
    (what keeps replicas in agreement without communicating)."""
    import tensorflow as tf

    draw = tf.function(lambda step: rlw_weights(7, step, 3))            # traced once: the step is a tensor
    draws = np.array([draw(tf.constant(step, tf.int64)).numpy() for step in range(3000)], np.float64)
    assert np.all(draws > 0) and np.allclose(draws.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(np.asarray(rlw_weights(7, 5, 3)), draws[5])                     # keyed: reproducible
    assert not np.allclose(draws[5], draws[6]) and not np.allclose(np.asarray(rlw_weights(8, 5, 3)), draws[5])
    # log(lambda_i / lambda_j) = z_i - z_j: with z standard normal these differences have variance 2 and
    # covariance 1 with each other (z_0 - z_1 and z_0 - z_2 share z_0).
    d01, d02 = np.log(draws[:, 0] / draws[:, 1]), np.log(draws[:, 0] / draws[:, 2])
    assert abs(d01.mean()) < 0.1 and abs(d02.mean()) < 0.1
    assert np.var(d01) == pytest.approx(2.0, rel=0.1) and np.var(d02) == pytest.approx(2.0, rel=0.1)
    assert np.cov(d01, d02)[0, 1] == pytest.approx(1.0, rel=0.15)
    assert draws.mean(axis=0) == pytest.approx([1 / 3] * 3, abs=0.02)                   # equal in expectation


def test_rlw_combines_with_the_draw_of_the_current_step(tmp_path):
    from orchestrator.model.weighting import LossWeighting

    cfg = parse_config(experiment(tmp_path, "d.parquet", train={"loss_weighting": "rlw", "seed": 3}))
    w = LossWeighting(cfg)
    losses = [1.0, 2.0, 4.0]
    for step in range(3):
        expected = float(np.dot(np.asarray(rlw_weights(3, step, 3)), losses))
        assert float(w.combine(losses)) == pytest.approx(expected, rel=1e-6)
        w.after_step(None, None)                                    # the step's end: the next step draws anew
    assert w.state()["draws"] == 3
    assert w.effective() == pytest.approx({"left": 1 / 3, "right": 1 / 3, "sum": 1 / 3})   # its expectation


def test_famos_reported_weights_are_the_ones_it_applies_to_the_losses(tmp_path):
    """eff_weight_<task> showed softmax(ξ), which FAMO does not apply: it scales the raw losses by z_k / (c L_k).
    With z = (0.5, 0.5) and a cross-entropy of 2.3 beside an MSE of 0.1 the step weighs about (0.04, 0.96), and the
    leaderboard and the weights plot said 0.5 / 0.5. The epoch's weights are those at its mean losses."""
    from orchestrator.model.weighting import LossWeighting

    cfg = parse_config(experiment(tmp_path, "d.parquet", train={"loss_weighting": "famo"}))
    w = LossWeighting(cfg)
    w.logits.assign(np.array([0.3, -0.2, 0.1], np.float32))
    losses = {"left": 2.3, "right": 1.1, "sum": 0.1}
    applied = famo_weights(w.logits, [losses[t] for t in w.tasks]).numpy()
    assert w.effective(losses) == pytest.approx(dict(zip(w.tasks, applied)), rel=1e-5)
    assert w.effective(losses)["sum"] > 0.8                       # the small loss carries most of the weight


def test_famo_weights_are_the_gradient_of_its_log_objective():
    """FAMO descends sum_k z_k log L_k / c with c = sum_i z_i / L_i held fixed: the gradient of sum_k w_k L_k with
    w_k = z_k / (c L_k), and the w_k sum to 1."""
    import tensorflow as tf

    logits = tf.constant([0.3, -0.2, 0.5])
    theta = tf.Variable([0.7, -1.3, 2.0])

    def task_losses():   # three positive losses of one shared parameter vector
        return tf.stack([tf.reduce_sum(theta ** 2) + 0.1, tf.reduce_sum((theta - 1.0) ** 2) + 0.2,
                         tf.reduce_sum(tf.abs(theta)) + 0.3])

    with tf.GradientTape(persistent=True) as tape:
        losses = task_losses()
        w = tf.stop_gradient(famo_weights(logits, tf.stop_gradient(losses)))
        ours = tf.reduce_sum(w * losses)
        z = tf.nn.softmax(logits)
        c = tf.stop_gradient(tf.reduce_sum(z / losses))
        paper = tf.reduce_sum(z * tf.math.log(losses)) / c
    assert float(tf.reduce_sum(w)) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(tape.gradient(ours, theta), tape.gradient(paper, theta), rtol=1e-5)


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def famo_reference(xi, steps, *, lr, decay):
    """FAMO's logit updates as its reference code makes them (github Cranial-XIX/FAMO, famo.py: ``Adam([w],
    lr=w_lr, weight_decay=gamma)`` stepping ``d = J_z(w)^T (log L - log L')``), written out with torch Adam's
    defaults (betas 0.9, 0.999, eps 1e-8; weight decay added to the gradient); J taken numerically."""
    m, v = np.zeros_like(xi), np.zeros_like(xi)
    for t, (before, after) in enumerate(steps, start=1):
        jac = np.stack([(softmax(xi + h) - softmax(xi - h)) / 2e-6 for h in np.eye(len(xi)) * 1e-6], axis=1)
        g = jac.T @ (np.log(before + 1e-8) - np.log(after + 1e-8)) + decay * xi
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        xi = xi - (lr / (1 - 0.9 ** t)) * m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** t) + 1e-8)
    return xi


def test_famo_logits_take_the_reference_codes_adam_steps():
    """Three steps from xi = 0 match the reference code's Adam; the first moves each logit by about lr (Adam's
    first step is lr * sign), where Algorithm 1's plain step moved it by lr * |J^T delta| (about 1e-4 here: FAMO
    then trained at equal weights)."""
    steps = [(np.array([1.0, 0.8, 2.0]), np.array([0.9, 0.79, 1.5])),
             (np.array([0.9, 0.79, 1.5]), np.array([0.85, 0.78, 1.4])),
             (np.array([0.85, 0.78, 1.4]), np.array([0.84, 0.70, 1.38]))]
    lr, decay = 0.025, 0.01
    xi, m, v = np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)
    for t, (before, after) in enumerate(steps):
        got, (m, v) = famo_logits(xi, (m, v), step=t, before=before.astype(np.float32),
                                  after=after.astype(np.float32), lr=lr, decay=decay)
        got, m, v = np.asarray(got), np.asarray(m), np.asarray(v)
        assert got == pytest.approx(famo_reference(np.zeros(3), steps[:t + 1], lr=lr, decay=decay), abs=1e-5)
        if t == 0:
            assert np.abs(got) == pytest.approx(np.full(3, lr), rel=1e-3)
        xi = got
    # the task whose loss fell least over these steps (task 1) gained weight, the one that fell most lost it
    assert softmax(xi)[1] > 1 / 3 > softmax(xi)[2]


def test_famo_step_updates_the_logits_from_the_losses_before_and_after_the_update(tmp_path):
    """One real step: the logits move by the reference code's Adam step from this batch's losses before the update and after it (the
    extra no-gradient forward pass); the model trained with FAMO's weights."""
    import tensorflow as tf

    from orchestrator.data.pipeline import load_arrays
    from orchestrator.model.multitask import per_example_losses, standardize
    from orchestrator.training.loop import build
    from orchestrator.training.step import make_train_step

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(64)),
                                  train={"loss_weighting": "famo", "famo_lr": 0.5, "famo_decay": 0.01,
                                         "optimizer": "sgd", "head_lr": 0.05, "backbone_lr": 0.05}))
    (x, y), _, spec = load_arrays(cfg)
    x, y = tf.constant(x[:32]), {t: tf.constant(v) for t, v in standardize(cfg, spec, {t: v[:32] for t, v in y.items()}).items()}
    strategy = tf.distribute.get_strategy()
    trainee = build(strategy, cfg, spec, backbone_file=None)

    def losses():
        out = trainee.mt.model(x, training=True)
        return np.array([float(tf.reduce_mean(v)) for v in per_example_losses(cfg, y, out).values()], np.float32)

    before, xi = losses(), trainee.weighting.logits.numpy()
    step = make_train_step(strategy, trainee.mt, cfg, trainee.weighting, trainee.optimizers, global_batch=32)
    total = step(x, y).numpy()
    after = losses()
    assert not np.allclose(before, after)
    assert total[1:] == pytest.approx(before, rel=1e-4)
    assert total[0] == pytest.approx(float(np.dot(famo_weights(xi, before), before)), rel=1e-4)
    expected = famo_reference(xi.astype(np.float64), [(before, after)], lr=0.5, decay=0.01)
    assert trainee.weighting.logits.numpy() == pytest.approx(expected, abs=1e-5)
    assert np.abs(trainee.weighting.logits.numpy()).max() > 0.1
    state = trainee.weighting.state()
    assert state["logits"] == pytest.approx(trainee.weighting.logits.numpy().tolist())
    assert state["famo_steps"] == 1 and np.abs(state["famo_moments"]).max() > 0   # Adam's moments are checkpointed


def test_rlw_and_famo_are_searchable_values_of_loss_weighting(tmp_path):
    from orchestrator.config.space import check_paths

    base = experiment(tmp_path, "d.parquet")
    cfg = parse_config({**base, "search": {"space": {
        "train.loss_weighting": {"choice": ["static", "uncertainty", "dwa", "rlw", "famo"]},
        "train.famo_lr": {"loguniform": [0.005, 0.1]}, "train.famo_decay": {"choice": [0.0, 0.01]}}}})
    check_paths(cfg.search, cfg.run_fields(), list(cfg.tasks))
    assert parse_config(base).with_values({"train.loss_weighting": "famo"}).train.famo_lr == 0.025
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="loss_weighting"):
        parse_config(merged(base, {"train": {"loss_weighting": "pcgrad"}}))


def test_rlws_draws_share_no_random_stream_with_the_models_layers(tmp_path):
    """RLW keyed its draws on (train.seed, step): the key of the first head's Dropout at that step (seeded
    train.seed + 0, its counter one per training call), so λ was a function of the bits of that head's dropout mask.
    Its stream must be none of the model's layers' streams at any step."""
    import keras
    import tensorflow as tf
    from orchestrator.data.spec import DataSpec
    from orchestrator.model.multitask import build

    cfg = parse_config(experiment(tmp_path, "d.parquet", train={"loss_weighting": "rlw", "seed": 3},
                                  heads={"dropout": 0.5}))
    spec = DataSpec(image_shape=(28, 28, 1), image_kind="pixels", pixel_dtype="float32",
                    classes={"left": list(range(10)), "right": list(range(10))}, label_mean={"sum": 9.0},
                    label_std={"sum": 4.0}, n_train=8, n_val=8, fingerprint="fp")
    keras.utils.set_random_seed(cfg.train.seed)
    model = build(cfg, spec).model
    seeds = {int(layer.seed_generator.state.numpy()[0]) for layer in model._flatten_layers(include_self=False)
             if getattr(layer, "seed_generator", None) is not None}
    assert cfg.train.seed in seeds          # the first head's Dropout: the case this test is about
    for step in range(20):
        ours = np.asarray(rlw_weights(cfg.train.seed, step, 3))
        theirs = [np.asarray(tf.nn.softmax(tf.random.stateless_normal([3], seed=tf.constant([s, step], tf.int64))))
                  for s in seeds]
        assert not any(np.allclose(ours, t) for t in theirs), f"step {step}: RLW drew from a layer's stream"
