"""train.precision and train.jit_compile on CPU: float16's shared loss scale skips both optimizer groups on an
overflow; XLA's step equals the plain one; the GPU memory cap of packed trials (computed; no GPU here)."""
import numpy as np
import pytest

from orchestrator.config import parse_config
from orchestrator.training.precision import INITIAL_SCALE, configure_gpus, memory_cap_mb

from factories import experiment, small_table, write_parquet


def one_batch(tmp_path, **train):
    import tensorflow as tf

    from orchestrator.data.pipeline import load_arrays
    from orchestrator.model.multitask import standardize

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(64)),
                                  train={"optimizer": "sgd", "backbone_lr": 0.05, "head_lr": 0.05, **train}))
    (x, y), _, spec = load_arrays(cfg)
    y = standardize(cfg, spec, {t: v[:32] for t, v in y.items()})
    return cfg, spec, tf.constant(x[:32]), {t: tf.constant(v) for t, v in y.items()}


def trained_step(cfg, spec):
    import tensorflow as tf

    from orchestrator.training.loop import build
    from orchestrator.training.step import make_train_step

    strategy = tf.distribute.get_strategy()
    trainee = build(strategy, cfg, spec, backbone_file=None)
    return trainee, make_train_step(strategy, trainee.mt, cfg, trainee.weighting, trainee.optimizers, global_batch=32)


def test_float16_overflow_skips_both_groups_and_halves_the_shared_scale(tmp_path):
    cfg, spec, x, y = one_batch(tmp_path, precision="mixed_float16")
    trainee, step = trained_step(cfg, spec)
    model = trainee.mt.model
    assert model.get_layer("digits_cnn").get_layer("block1_conv").compute_dtype == "float16"
    assert model.get_layer("head_left").compute_dtype == "float32" and model.get_layer("head_sum").dtype == "float32"
    assert set(trainee.optimizers) == {"backbone", "heads"}          # two groups, one scale
    start = [w.copy() for w in model.get_weights()]
    step(x * 1e6, y)                                                  # float16 overflows (its max is 65504)
    assert all(np.array_equal(a, b) for a, b in zip(start, model.get_weights())), "a skipped step changed weights"
    assert [int(o.iterations.numpy()) for o in trainee.optimizers.values()] == [0, 0]
    assert float(step.loss_scale.scale.numpy()) == INITIAL_SCALE / 2 and int(step.loss_scale.skipped.numpy()) == 1
    step(x, y)                                                        # a normal batch: both groups step
    after = model.get_weights()
    assert [int(o.iterations.numpy()) for o in trainee.optimizers.values()] == [1, 1]
    assert max(float(np.abs(a - b).max()) for a, b in zip(start, after)) > 1e-4
    assert float(step.loss_scale.scale.numpy()) == INITIAL_SCALE / 2 and int(step.loss_scale.skipped.numpy()) == 1


def test_float32_and_bfloat16_have_no_loss_scale(tmp_path):
    for precision in ("float32", "mixed_bfloat16"):
        cfg, spec, _, _ = one_batch(tmp_path, precision=precision)
        trainee, step = trained_step(cfg, spec)
        assert step.loss_scale is None
        conv = trainee.mt.model.get_layer("digits_cnn").get_layer("block1_conv")
        assert conv.compute_dtype == precision.removeprefix("mixed_") and conv.variable_dtype == "float32"


def test_jit_compiled_step_equals_the_plain_step(tmp_path):
    results = {}
    for jit in (False, True):
        cfg, spec, x, y = one_batch(tmp_path, jit_compile=jit, loss_weighting="famo")
        trainee, step = trained_step(cfg, spec)
        start = [w.copy() for w in trainee.mt.model.get_weights()]
        losses = step(x, y).numpy()
        results[jit] = (losses, trainee.mt.model.get_weights(), trainee.weighting.logits.numpy())
    moved = max(float(np.abs(a - b).max()) for a, b in zip(start, results[True][1]))
    assert moved > 1e-4
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(results[True][1], results[False][1]))
    assert worst <= 1e-5, f"the XLA step differs from the plain one by {worst}"
    assert results[True][2] == pytest.approx(results[False][2], abs=1e-6)


def test_packed_trials_get_a_share_of_the_card_as_a_memory_cap(monkeypatch):
    assert memory_cap_mb(0.25, 16384.0) == 4096
    assert memory_cap_mb(0.5, 24564.0) == 12282
    assert memory_cap_mb(1.0, 16384.0) is None and memory_cap_mb(2.0, 16384.0) is None   # whole cards: growth
    assert memory_cap_mb(0.25, None) is None                                              # unknown card: growth

    class FakeConfig:   # tf.config's surface that configure_gpus uses, recording the calls
        LogicalDeviceConfiguration = staticmethod(lambda memory_limit: ("limit", memory_limit))

        def __init__(self):
            self.calls = []
            self.experimental = self

        def list_physical_devices(self, kind):
            return ["GPU:0"] if kind == "GPU" else []

        def set_memory_growth(self, gpu, on):
            self.calls.append(("growth", gpu, on))

        def set_logical_device_configuration(self, gpu, configs):
            self.calls.append(("logical", gpu, configs))

    from orchestrator.training import precision

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(precision, "card_memory_mb", lambda device: {"3": 16384.0}.get(device))
    tf = type("tf", (), {"config": FakeConfig()})
    assert configure_gpus(tf, 0.25) == 4096
    assert tf.config.calls == [("logical", "GPU:0", [("limit", 4096)])]
    tf.config.calls.clear()
    asked = []   # a whole card needs no nvidia-smi (up to 30 s a call; the driver asks at every check: a review)
    monkeypatch.setattr(precision, "card_memory_mb", lambda device: asked.append(device))
    assert configure_gpus(tf, 1.0) is None and tf.config.calls == [("growth", "GPU:0", True)] and asked == []


def test_a_resumed_float16_run_continues_its_loss_scale(tmp_path):
    """The dynamic loss scale is training state: a run resumed at epoch 2 starts from the scale epoch 1 ended with,
    not from 2**15 again (which would skip steps that the uninterrupted run takes)."""
    import tensorflow as tf

    from orchestrator.data.pipeline import ArrayData, load_arrays
    from orchestrator.training.loop import Worker, fit

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(96)),
                                  train={"precision": "mixed_float16", "epochs": 2, "batch_size": 16}))
    (x, y), val, spec = load_arrays(cfg)
    # every step's float16 gradient overflows (each halves the scale) while the loss stays finite: at 1e6 the forward
    # pass overflowed too on some installs (a NaN loss: epoch 1 diverged, and a diverged run is not trained on)
    big = ((x * 1e3).astype(np.float32), y)
    assert np.abs(big[0]).max() < 65504 / 16
    seen = []

    class Killed(Exception):
        pass

    def on_epoch(metrics, state, save):
        seen.append((metrics, state))
        if len(seen) == 1:
            raise Killed   # the run dies after epoch 1's checkpoint

    with pytest.raises(Killed):
        fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, big, val), worker=Worker(on_epoch=on_epoch))
    first, state = seen[0]
    steps = first["steps_per_epoch"]
    assert first["loss_scale"] == INITIAL_SCALE / 2 ** steps and first["skipped_steps"] == steps
    assert first["status"] == "running", first["train_loss"]   # skipped steps, not a diverged epoch

    def restore(load, check):
        check(state)
        return state   # the weights stay as built: the scale is what is checked

    fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, big, val),
        worker=Worker(restore=restore, on_epoch=on_epoch))
    second = seen[1][0]
    assert second["epoch"] == 2 and second["skipped_steps"] == steps
    assert second["loss_scale"] == INITIAL_SCALE / 2 ** (2 * steps)


def test_weight_decay_leaves_uncertaintys_log_variances_alone(tmp_path):
    """Kendall et al. leave the log-variances s unregularized; with weight_decay > 0 every step shrank them toward
    sigma = 1 (they sat in the heads' optimizer, which decays every variable it is given)."""
    import tensorflow as tf

    cfg, spec, _, _ = one_batch(tmp_path, loss_weighting="uncertainty", weight_decay=0.5)
    trainee, _ = trained_step(cfg, spec)
    log_vars = trainee.weighting.trainable_variables
    assert log_vars
    for v in log_vars:
        v.assign(tf.ones_like(v))
    heads = trainee.optimizers["heads"]
    head_vars = trainee.mt.variable_groups()[1]
    kernel = next(v for v in head_vars if "kernel" in v.path)
    before = kernel.numpy().copy()
    heads.apply_gradients([(tf.zeros_like(v), v) for v in head_vars])   # no gradient: only decay moves weights
    assert all(np.array_equal(v.numpy(), np.ones(v.shape)) for v in log_vars), [v.numpy() for v in log_vars]
    assert not np.array_equal(kernel.numpy(), before)                       # the heads' own weights do decay


def test_a_backbones_regularization_losses_are_trained(tmp_path):
    """A .keras backbone whose layers carry a kernel_regularizer trained without it: the step summed the task
    losses only (Keras's contract adds model.losses; under a strategy, scaled by the replicas in sync)."""
    import keras
    import tensorflow as tf

    inp = keras.Input((12, 12, 1))
    h = keras.layers.Conv2D(4, 3, kernel_regularizer=keras.regularizers.L2(1.0), name="block1_conv")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="block1_pool")(h)
    keras.Model(inp, h).save(tmp_path / "reg.keras")
    cfg, spec, x, y = one_batch(tmp_path, freeze_depth=0)
    cfg = cfg.with_values({"backbone.kind": "file", "backbone.path": str(tmp_path / "reg.keras")})
    trainee, step = trained_step(cfg, spec)
    reg = float(tf.add_n(trainee.mt.model.losses))
    assert reg > 0.01
    stats = step(x, y).numpy()
    tasks = float(trainee.weighting.combine(list(stats[1:]), global_losses=tf.constant(stats[1:])))
    assert stats[0] == pytest.approx(tasks + reg, rel=1e-5), (stats, reg)


def test_a_step_float16_skipped_leaves_famos_logits_and_adam_state(tmp_path):
    """An overflowing gradient with finite losses is the usual float16 skip: the weights stay, so FAMO's 'after'
    pass saw the same losses, yet its logits took an Adam step and its step count advanced."""
    cfg, spec, x, y = one_batch(tmp_path, precision="mixed_float16", loss_weighting="famo")
    trainee, step = trained_step(cfg, spec)
    w = trainee.weighting
    start = (w.logits.numpy().copy(), w.famo_adam[0].numpy().copy(), int(w.famo_adam[1].numpy()))
    step.loss_scale.scale.assign(2.0 ** 40)     # finite losses, gradients that overflow float16: a skipped step
    step(x, y)
    assert int(step.loss_scale.skipped.numpy()) == 1
    assert np.array_equal(w.logits.numpy(), start[0]) and np.array_equal(w.famo_adam[0].numpy(), start[1])
    assert int(w.famo_adam[1].numpy()) == start[2]
    step.loss_scale.scale.assign(INITIAL_SCALE)
    step(x, y)                                   # a normal step moves them
    assert int(step.loss_scale.skipped.numpy()) == 1 and int(w.famo_adam[1].numpy()) == start[2] + 1 and not np.array_equal(w.logits.numpy(), start[0])


def test_the_driver_lets_its_gpu_memory_grow_before_it_builds_the_backbone_to_count_blocks(tmp_path, monkeypatch):
    """The driver builds the backbone once to count its blocks (session.count_blocks): its TensorFlow then took, by
    default, nearly all of a GPU's memory for the whole sweep, so the workers packed on that card under their caps
    could not get their shares (a helper's audit; no GPU here: the order of the calls is what this checks). It asks
    for memory growth first, as a worker with whole cards does; a process whose TensorFlow already runs keeps it."""
    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.model import backbones
    from orchestrator.training import precision, session

    calls = []
    monkeypatch.setattr(precision, "configure_gpus", lambda tf, share: calls.append(("gpus", share)))
    build = backbones.build_backbone
    monkeypatch.setattr(backbones, "build_backbone", lambda *a, **k: calls.append(("build",)) or build(*a, **k))
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    assert session.count_blocks(cfg, (16, 16, 1)) == 5
    assert calls == [("gpus", 1.0), ("build",)], calls

    for error in (RuntimeError("Physical devices cannot be modified after being initialized"),
                  ValueError("Cannot set memory growth on device when virtual devices configured")):   # a review
        def running(tf, share, error=error):
            raise error

        monkeypatch.setattr(precision, "configure_gpus", running)
        assert session.count_blocks(cfg, (16, 16, 1)) == 5
