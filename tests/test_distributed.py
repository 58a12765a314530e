"""Real Ray Train + TensorFlow: data-parallel math and one full `train` run (slow)."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.config import parse_config
from orchestrator.data.pipeline import load_arrays

from factories import experiment, small_table, write_parquet

pytestmark = pytest.mark.slow


def one_step_per_worker(payload):
    """For each case: build the real model (seeded) and take ONE real train step on this worker's slice of a global
    batch. All cases in one Train run per world size: a run's start (processes, TensorFlow import) costs more than
    the cases' steps."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import ray.train
    from orchestrator.config import ExperimentConfig
    from orchestrator.data.spec import DataSpec
    from orchestrator.model.multitask import build, make_optimizer, standardize
    from orchestrator.model.weighting import LossWeighting
    from orchestrator.training.step import make_train_step

    spec = DataSpec.from_dict(payload["data_spec"])
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    x = np.asarray(payload["x"], np.float32)
    per = len(x) // world
    part = slice(rank * per, (rank + 1) * per)   # the global batch, split explicitly
    for case, config in payload["configs"].items():
        cfg = ExperimentConfig.model_validate(config)
        keras.utils.set_random_seed(cfg.train.seed)
        with strategy.scope():
            mt = build(cfg, spec)
            weighting = LossWeighting(cfg, num_replicas=strategy.num_replicas_in_sync)
            mt.extra_variables = weighting.trainable_variables
            bb, heads = mt.variable_groups()
            opt_b, opt_h = make_optimizer(cfg, cfg.train.backbone_lr), make_optimizer(cfg, cfg.train.head_lr)
            opt_b.build(bb)
            opt_h.build(heads)
        y = standardize(cfg, spec, {t: np.asarray(v) for t, v in payload["y"].items()})
        step = make_train_step(strategy, mt, cfg, weighting, {"backbone": opt_b, "heads": opt_h}, global_batch=len(x))
        step(tf.constant(x[part]), {t: tf.constant(v[part]) for t, v in y.items()})
        if rank == 0:
            extra = [v.numpy() for v in weighting.learned]   # uncertainty's log-variances, FAMO's logits
            np.savez(f"{payload['out']}-{case}.npz", *mt.model.get_weights(), *extra)
    ray.train.report({"done": 1})


def run_one_step(tmp_path, cfgs: dict, spec, x, y, world) -> dict:
    import ray.cloudpickle
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests/
    out = str(tmp_path / f"w{world}")
    payload = {"configs": {case: cfg.model_dump(mode="json") for case, cfg in cfgs.items()},
               "data_spec": spec.to_dict(), "out": out, "x": x.tolist(), "y": {t: v.tolist() for t, v in y.items()}}
    TensorflowTrainer(one_step_per_worker, train_loop_config=payload,
                      scaling_config=ray.train.ScalingConfig(num_workers=world, resources_per_worker={"CPU": 1}),
                      run_config=ray.train.RunConfig(name=f"onestep-{world}", storage_path=str(tmp_path / "ray"))).fit()
    weights = {}
    for case in cfgs:
        with np.load(f"{out}-{case}.npz") as f:
            weights[case] = [f[k] for k in f.files]
    return weights


# 16-bit math: the 2-worker step sums half-batch gradients, rounded differently from the 1-worker step's
# whole-batch ones (bfloat16 keeps 8 significant bits, float16 11), so the two updates agree to within 5% of the
# largest update, not to 1e-5.
ONE_STEP = {"static": {}, "uncertainty": {"loss_weighting": "uncertainty"}, "rlw": {"loss_weighting": "rlw"},
            "famo": {"loss_weighting": "famo"}, "famo-xla": {"loss_weighting": "famo", "jit_compile": True},
            "bfloat16": {"precision": "mixed_bfloat16"}, "float16": {"precision": "mixed_float16"}}


def one_step_differences(case, cfg, spec, w1, w2) -> str | None:
    """What is wrong with this case's 1-worker and 2-worker updates, or None."""
    import keras
    from orchestrator.model.multitask import build

    keras.utils.set_random_seed(cfg.train.seed)
    init = build(cfg, spec).model.get_weights()
    moved = max(float(np.abs(a - b).max()) for a, b in zip(w1, init))
    if moved <= 1e-3:
        return f"{case}: the step did not change the weights: the comparison would prove nothing"
    learned = cfg.train.loss_weighting in ("uncertainty", "famo")
    if len(w1) != len(init) + (1 if learned else 0):
        return f"{case}: {len(w1)} arrays saved, expected {len(init) + (1 if learned else 0)}"
    if learned and float(np.abs(w1[-1]).max()) <= 1e-6:
        return f"{case}: the log-variances or logits did not move"
    worst = max(float(np.abs(a - b).max()) for a, b in zip(w1, w2))
    tolerance = 0.05 * moved if cfg.train.precision != "float32" else 1e-5
    if worst > tolerance:
        return f"{case}: 2-worker step differs from 1-worker step by {worst} (largest update {moved})"
    return None


def test_two_workers_one_step_equals_one_worker(ray_session, tmp_path):
    """Every loss weighting and precision (and XLA): one step on 2 workers = the same step on 1 worker."""
    data = write_parquet(tmp_path / "d.parquet", small_table(64))
    cfgs = {case: parse_config(experiment(tmp_path, data, heads={"hidden_units": 16, "dropout": 0.0},
                                          train={"optimizer": "sgd", "backbone_lr": 0.1, "head_lr": 0.1, **extra}))
            for case, extra in ONE_STEP.items()}
    (x, y), _, spec = load_arrays(cfgs["static"])
    x, y = x[:32], {t: v[:32] for t, v in y.items()}
    w1 = run_one_step(tmp_path, cfgs, spec, x, y, world=1)
    w2 = run_one_step(tmp_path, cfgs, spec, x, y, world=2)
    wrong = [d for case in ONE_STEP if (d := one_step_differences(case, cfgs[case], spec, w1[case], w2[case]))]
    assert not wrong, wrong


def batchnorm_per_worker(payload):
    """Each rank: a BatchNormalization layer updated on its own data in training mode (its moving statistics, made
    by Keras 3 with aggregation "none", move on this rank only), saved before and after ``sync_batchnorm``."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import ray.train
    from orchestrator.training.step import make_allreduce_sum, sync_batchnorm

    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    with strategy.scope():
        inp = keras.Input((3,))
        model = keras.Model(inp, keras.layers.BatchNormalization(momentum=0.5, name="bn")(inp))
    x = tf.constant(np.full((4, 3), 10.0 * (rank + 1)) + np.arange(12.0).reshape(4, 3), tf.float32)
    strategy.run(tf.function(lambda v: model(v, training=True)), args=(x,))
    bn = model.get_layer("bn")
    before = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
    sync_batchnorm(model, make_allreduce_sum(strategy, world), world)
    # Dropout in the same run (a Train run's start costs more than this): its mask as Keras draws it, then with own_draws
    from orchestrator.training.step import own_draws

    masks = []
    for own in (False, True):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inp = keras.Input((256,))
            dropped = keras.Model(inp, keras.layers.Dropout(0.5, seed=1)(inp))
        if own:
            own_draws(dropped, rank)
        out = strategy.run(tf.function(lambda v: dropped(v, training=True)), args=(tf.ones((2, 256)),))
        masks.append(out.numpy() != 0)
    np.savez(f"{payload['out']}-{rank}.npz", *before, bn.moving_mean.numpy(), bn.moving_variance.numpy(), *masks)
    ray.train.report({"done": 1})


def test_workers_hold_one_models_batchnorm_statistics_and_draw_their_own_dropout_masks(ray_session, tmp_path):
    """Unfrozen BatchNormalization kept per-worker moving statistics (each from its own shard): validation summed
    the scores of two models, and the checkpoint (rank 0's) was neither. After ``sync_batchnorm`` (called by the
    training loop before each epoch's validation) every worker holds the mean of the workers' statistics, which is
    what averaging every update gives (a moving average is linear in its updates).

    Dropout drew the same mask on every worker (its seed generator's state is mirrored), each applied to its own
    examples: less noise than the configured rate means. With ``own_draws`` (called by the training loop after
    the model is built) each worker draws its own, and rank 0 draws what one worker draws."""
    import ray.cloudpickle
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = str(tmp_path / "bn")
    TensorflowTrainer(batchnorm_per_worker, train_loop_config={"out": out},
                      scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                      run_config=ray.train.RunConfig(name="bn-sync", storage_path=str(tmp_path / "ray"))).fit()
    ranks = []
    for rank in range(2):
        with np.load(f"{out}-{rank}.npz") as f:
            ranks.append([f[k] for k in f.files])
    assert not np.allclose(ranks[0][0], ranks[1][0])          # the defect: each worker's own statistics
    for i in (0, 1):                                           # moving mean, moving variance
        mean = (ranks[0][i] + ranks[1][i]) / 2
        assert np.allclose(ranks[0][2 + i], mean) and np.array_equal(ranks[0][2 + i], ranks[1][2 + i])
    keras_masks, own_masks = [r[4] for r in ranks], [r[5] for r in ranks]
    assert np.array_equal(keras_masks[0], keras_masks[1])     # the defect: one mask on both workers
    assert not np.array_equal(own_masks[0], own_masks[1]) and np.array_equal(own_masks[0], keras_masks[0])
    assert 0.3 < own_masks[1].mean() < 0.7                    # still the configured rate


@pytest.fixture
def pretrained_storage(pretrained_backbone, tmp_path):
    from factories import seeded_storage

    return seeded_storage(tmp_path / "storage", pretrained_backbone)


def test_train_two_workers_end_to_end(ray_session, pretrained_storage, tmp_path):
    from orchestrator.training.driver import train

    cfg = parse_config({**experiment(tmp_path, "builtin:multidigits/train"),
                        "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
                        "backbone": {"kind": "builtin", "weights": "pretrained"},
                        "train": {"epochs": 2, "batch_size": 64, "freeze_depth": 2, "head_lr": 0.003},
                        "resources": {"workers": 2}, "storage": pretrained_storage})
    s = train(cfg, name="e2e")
    assert s["status"] == "completed" and s["world_size"] == 2 and s["epochs"] == 2
    assert s["rank_steps"][0] == s["rank_steps"][1] > 0          # both workers trained, in lockstep
    assert s["tasks"]["left"]["accuracy"] > 0.5 and s["tasks"]["right"]["accuracy"] > 0.5   # chance is 0.2
    assert s["tasks"]["sum"]["r2"] > 0.2
    assert os.path.isdir(s["checkpoint"])
    with open(s["summary_file"]) as f:
        assert json.load(f)["config"]["train"]["freeze_depth"] == 2
    # TensorBoard event files: per-task metrics per epoch, under <storage>/trials/<run>/tb
    from factories import scalar_steps

    tb = Path(s["checkpoint"]).parent / "tb"
    assert len(list(tb.glob("events.out.tfevents*"))) == 1
    tags = scalar_steps(tb)
    assert {("left/accuracy", 1), ("left/accuracy", 2), ("sum/r2", 2), ("run/objective", 2)} <= tags
