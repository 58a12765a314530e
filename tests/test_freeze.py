"""Freezing is a pure mask over backbone blocks, applied in one place."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from orchestrator.model.backbones import apply_freeze, blocks, digits_cnn, freeze_mask
from orchestrator.config import parse_config
from orchestrator.data.pipeline import load_arrays
from orchestrator.errors import ConfigError
from orchestrator.training.loop import fit_arrays

from factories import experiment, small_table, write_parquet


def test_freeze_mask_is_pure():
    assert freeze_mask(0, 5) == [False] * 5
    assert freeze_mask(2, 5) == [True, True, False, False, False]
    assert freeze_mask("all", 5) == [True] * 5
    with pytest.raises(ConfigError, match="beyond the backbone's 5 blocks"):
        freeze_mask(6, 5)


def tiny_bn_model():
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, name="stem_conv")(inp)
    h = keras.layers.Conv2D(4, 1, name="block1_conv")(h)
    h = keras.layers.BatchNormalization(name="block1_bn")(h)
    h = keras.layers.Conv2D(4, 1, name="block2_conv")(h)
    h = keras.layers.GlobalAveragePooling2D(name="block2_pool")(h)
    h = keras.layers.Dense(3, name="top_dense")(h)
    return keras.Model(inp, h)


def test_blocks_group_by_name_and_by_prefixes():
    m = tiny_bn_model()
    assert blocks(m) == [["stem_conv"], ["block1_conv", "block1_bn"], ["block2_conv", "top_dense"]]
    assert blocks(m, ["stem", "block1", "block2", "top"]) == [["stem_conv"], ["block1_conv", "block1_bn"],
                                                             ["block2_conv"], ["top_dense"]]
    assert len(blocks(digits_cnn((12, 12, 1)))) == 5
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    assert len(blocks(plain)) == 2  # one block per weighted layer
    with pytest.raises(ConfigError, match="matches no weighted layer"):
        blocks(m, ["nothing"])
    # every weighted layer in exactly one block: else freeze_depth 'all' would leave stem_conv and top_dense training
    with pytest.raises(ConfigError, match="leave 'stem_conv' .* in no block"):
        blocks(m, ["block1", "block2"])
    with pytest.raises(ConfigError, match="'block1_conv' in two blocks"):
        blocks(m, ["stem", "block1", "block1_c", "block2", "top"])


def test_keras_applications_blocks():
    m = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    groups = blocks(m)
    assert groups[0][0] == "Conv1" and any(g[0].startswith("block_16") for g in groups)
    assert sum(len(g) for g in groups) == len([la for la in m.layers if la.weights])


def test_inception_resnet_blocks_hold_their_own_branches():
    """InceptionResNetV2 names a block's projection (block35_3_conv) but not its branch convolutions (conv2d_N),
    which come first: grouped by name, the ten block35 repeats were one block and each block's branches sat in the
    block before it (freeze_depth 1 froze block35_1's branches and trained its projection). A block ends at its
    projection (block35_3_conv) or a concatenation (mixed_5b)."""
    m = keras.applications.InceptionResNetV2(include_top=False, weights=None, input_shape=(75, 75, 3), pooling="avg")
    groups = blocks(m)
    assert len(groups) == 1 + 10 + 1 + 20 + 1 + 10      # stem, block35 x10, mixed_6a, block17 x20, mixed_7a, block8 x10
    assert sum(len(g) for g in groups) == len([la for la in m.layers if la.weights])
    by_layer = {name: i for i, g in enumerate(groups) for name in g}
    # a block: its branch convolutions with their BatchNorms (block35: 6, block17 and block8: 4), then its projection
    for end, size in (("block35_1", 13), ("block35_2", 13), ("block17_7", 9), ("block8_9", 9)):
        group = groups[by_layer[f"{end}_conv"]]
        assert group[-1] == f"{end}_conv" and len(group) == size, group
        assert all(not n.startswith(("block", "mixed")) for n in group[:-1]), group
    assert by_layer["conv2d"] == 0 and by_layer["block35_1_conv"] == 1
    assert by_layer["conv_7b"] == len(groups) - 1    # the last convolution joins the last block


@pytest.mark.parametrize("name, shape, n, first", [
    # Inception modules end at their concatenation (mixed0..mixed10); the stem joins the first
    ("InceptionV3", (75, 75, 3), 11, None),
    # a depthwise and a pointwise convolution with their BatchNorms are one unit (conv_dw_1, conv_pw_1)
    ("MobileNet", (32, 32, 3), 14, "conv_pw_1_bn"),
    ("MobileNetV3Small", (32, 32, 3), 12, "expanded_conv_project_bn"),
])
def test_applications_without_block_names_get_their_units_not_one_block_per_layer(name, shape, n, first):
    """These four families name no 'block': each weighted layer was a block, so freeze_depth 1 froze InceptionV3's
    first convolution and left its BatchNorm training on batch statistics."""
    m = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=shape, pooling="avg")
    groups = blocks(m)
    weighted = [la.name for la in m.layers if la.weights]
    assert len(groups) == n and sorted(sum(groups, [])) == sorted(weighted), [g[-1] for g in groups]
    by_layer = {layer: i for i, g in enumerate(groups) for layer in g}
    assert by_layer[weighted[0]] == 0 and (first is None or by_layer[first] == 1), groups[:2]
    for g in groups:   # a convolution and its BatchNorm are frozen together
        kinds = [type(m.get_layer(layer)).__name__ for layer in g]
        if name == "InceptionV3":   # auto-named layers: every convolution has its BatchNorm
            assert kinds.count("Conv2D") == kinds.count("BatchNormalization"), g
        else:
            assert all(f"{layer}_bn" not in by_layer or by_layer[f"{layer}_bn"] == by_layer[layer] for layer in g)


def test_an_application_whose_units_are_unknown_asks_for_blocks():
    m = keras.applications.NASNetMobile(include_top=False, weights=None, input_shape=(224, 224, 3), pooling="avg")
    with pytest.raises(ConfigError, match="nasnet_mobile names no blocks orchestrator knows: give backbone.blocks"):
        blocks(m, application=True)
    assert len(blocks(m, ["stem_", "reduction_", "separable_", "adjust_", "normal_"], application=True)) == 5


def test_frozen_batchnorm_runs_in_inference_mode():
    m = tiny_bn_model()
    apply_freeze(m, blocks(m), 2)
    bn = m.get_layer("block1_bn")
    assert not bn.trainable and m.get_layer("block2_conv").trainable
    before = [w.numpy().copy() for w in bn.weights]
    m(np.random.default_rng(0).normal(5, 3, (8, 6, 6, 1)).astype("float32"), training=True)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, bn.weights))  # moving stats untouched


NOISE = {"Dropout": "rate", "SpatialDropout2D": "rate", "GaussianDropout": "rate", "AlphaDropout": "rate",
         "GaussianNoise": "stddev"}


@pytest.mark.parametrize("noise", list(NOISE))
def test_dropout_inside_a_frozen_block_is_off_like_its_batchnorm(noise):
    """EfficientNet's drop-connect layers (block2a_drop) have no weights, so freezing skipped them and a frozen
    backbone kept dropping features at training time: not the fixed feature extractor freezing promises. The same
    holds for every Keras layer that adds noise only in training (a user's .keras backbone may hold any of them)."""
    layer, attr = getattr(keras.layers, noise), NOISE[noise]
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(4, 3, name="block1_conv")(inp)
    h = layer(0.5, name="block1_drop")(h)
    h = keras.layers.Conv2D(4, 1, name="block2_conv")(h)
    h = layer(0.5, name="block2_drop")(h)
    m = keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="block2_pool")(h))
    apply_freeze(m, blocks(m), 1)
    assert getattr(m.get_layer("block1_drop"), attr) == 0.0 and getattr(m.get_layer("block2_drop"), attr) == 0.5
    apply_freeze(m, blocks(m), 0)
    assert getattr(m.get_layer("block1_drop"), attr) == 0.5   # unfrozen again: its own rate back
    x = np.ones((2, 6, 6, 1), "float32")
    apply_freeze(m, blocks(m), "all")
    assert np.array_equal(m(x, training=True).numpy(), m(x, training=True).numpy())   # no dropout left


def _train_in_process(tmp_path, depth):
    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(160)),
                                  train={"freeze_depth": depth, "epochs": 1}))
    train, val, spec = load_arrays(cfg)
    init = digits_cnn(spec.image_shape, seed=cfg.train.seed).get_weights()
    mt, _ = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train, val)
    return init, mt.backbone.get_weights(), mt


def test_freeze_all_keeps_backbone_bit_identical_and_zero_changes_it(tmp_path):
    init, after, mt = _train_in_process(tmp_path, "all")
    assert all(np.array_equal(a, b) for a, b in zip(init, after))
    assert mt.variable_groups()[0] == []  # no backbone variables reach an optimizer
    init, after, _ = _train_in_process(tmp_path, 0)
    assert all(not np.array_equal(a, b) for a, b in zip(init, after))


def test_partial_freeze_changes_only_unfrozen_blocks(tmp_path):
    init, after, _ = _train_in_process(tmp_path, 2)
    # digits-cnn: kernel+bias per block; blocks 1-2 frozen, 3-5 trained
    assert all(np.array_equal(a, b) for a, b in zip(init[:4], after[:4]))
    assert all(not np.array_equal(a, b) for a, b in zip(init[4:], after[4:]))


def test_a_backbone_file_saved_frozen_trains_at_backbone_lr_when_unfrozen(tmp_path):
    """Saving a base after `model.trainable = False` is the usual Keras transfer-learning step, and Keras restores that
    flag on load: the backbone had no trainable variables, no backbone optimizer was built, and its variables trained
    in the heads' group at head_lr (freeze depth 0, backbone_lr ignored; a sweep over backbone_lr trained one thing
    under many hashes). The freeze mask decides, whatever the file says. Found by a helper's audit."""
    from orchestrator.training.loop import build

    data = write_parquet(tmp_path / "d.parquet", small_table(64))
    _, _, spec = load_arrays(parse_config(experiment(tmp_path, data)))
    m = digits_cnn(spec.image_shape, seed=0)
    m.trainable = False
    m.save(tmp_path / "frozen.keras")
    for depth, trained in ((0, 10), (2, 6)):
        cfg = parse_config(experiment(tmp_path, data, backbone={"kind": "file", "path": str(tmp_path / "frozen.keras")},
                                      train={"freeze_depth": depth}))
        backbone_vars, head_vars = build(tf.distribute.get_strategy(), cfg, spec, backbone_file=None).mt.variable_groups()
        assert len(backbone_vars) == trained and all(v.path.startswith("head") or "weighting" in v.path
                                                     for v in head_vars), (depth, [v.path for v in head_vars])


def test_dropout_inside_a_frozen_nested_model_is_off_too():
    """A .keras backbone that wraps a model (a Functional around EfficientNetB0, the standard Keras pattern) has that
    model as one block: freezing it put its BatchNorm in inference mode but its Dropout layers, one level down, kept
    dropping at training time. Found by a helper's audit."""
    inner_in = keras.Input((6, 6, 4))
    h = keras.layers.Dropout(0.5, name="inner_drop")(keras.layers.Conv2D(4, 1, name="inner_conv")(inner_in))
    inner = keras.Model(inner_in, h, name="block2_inner")
    inp = keras.Input((6, 6, 1))
    h = inner(keras.layers.Conv2D(4, 3, padding="same", name="block1_conv")(inp))
    m = keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="block3_pool")(h))
    apply_freeze(m, blocks(m), "all")
    x = np.ones((2, 6, 6, 1), "float32")
    assert np.array_equal(m(x, training=True).numpy(), m(x, training=True).numpy())
    apply_freeze(m, blocks(m), 0)
    assert inner.get_layer("inner_drop").rate == 0.5     # unfrozen again: its own rate back


def test_a_freeze_depth_of_every_block_is_the_same_work_as_all(tmp_path):
    """Depth 5 of the 5-block built-in backbone freezes what 'all' freezes: one config hash, and a searched 5 is
    'all' in the trials (so their backbone_lr, which nothing trains with, is reset like any unused field). It was
    two hashes: a sweep trained the same work twice and confirm took the two for distinct recipes."""
    from orchestrator.config import parse_config
    from orchestrator.training.session import check

    from factories import experiment, small_table, write_parquet

    data = write_parquet(tmp_path / "train.parquet", small_table(60))
    by_number = check(parse_config(experiment(tmp_path, data, train={"freeze_depth": 5, "backbone_lr": 0.01})))
    by_name = check(parse_config(experiment(tmp_path, data, train={"freeze_depth": "all"})))
    assert by_number.cfg.train.freeze_depth == "all"
    assert by_number.cfg.config_hash() == by_name.cfg.config_hash()
    space = {"train.freeze_depth": {"choice": [0, {5: {"train.head_lr": {"choice": [0.01, 0.02]}}}]}}
    searched = check(parse_config(experiment(tmp_path, data, search={"space": space})))
    assert searched.cfg.search.space["train.freeze_depth"].options == [0, "all"]
    assert check(parse_config(experiment(tmp_path, data, train={"freeze_depth": 4}))).cfg.train.freeze_depth == 4


def test_a_trials_depth_of_every_block_is_all_with_its_branch(tmp_path):
    """A searcher restored from a sweep started before its space read 5 as 'all' still draws 5, and a randint over
    depths draws 5 any time: the trial matched 5 against the rewritten space, found no branch, and trained the
    branch's searched values at their defaults, under a depth-5 hash (this session's second review). The trial and
    its row's writer read it as 'all', with its branch."""
    from orchestrator.config import parse_config
    from orchestrator.config.freezing import every_block_as_all
    from orchestrator.config.sampling import materialize
    from orchestrator.sweep.runner import TrialPlan

    from factories import experiment

    space = {"train.freeze_depth": {"choice": [0, {5: {"train.head_lr": {"choice": [0.01, 0.02]}}}]}}
    cfg = every_block_as_all(parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                                     search={"space": space})), 5)
    drawn = {"train.freeze_depth": 5, "train.head_lr": 0.02}
    assert materialize(cfg.search, drawn, list(cfg.tasks), n_blocks=5) == {"train.freeze_depth": "all",
                                                                           "train.head_lr": 0.02}
    trial = TrialPlan("s", cfg.model_dump(mode="json"), inputs=None, n_blocks=5).config(drawn)
    assert (trial.train.freeze_depth, trial.train.head_lr) == ("all", 0.02)
    # a randint (or any range) over depths keeps its numbers, the base's too: 'all' is no value a range can hold, and
    # the base config then fell outside its own space (not evaluated first) and warm starts skipped such rows (the
    # third review)
    ranged = every_block_as_all(parse_config(experiment(tmp_path, "builtin:multidigits/train", train={
        "freeze_depth": 5}, search={"space": {"train.freeze_depth": {"randint": [0, 5]}}})), 5)
    assert ranged.train.freeze_depth == 5
    assert materialize(ranged.search, {"train.freeze_depth": 5}, list(ranged.tasks), n_blocks=5) == \
        {"train.freeze_depth": 5}
    from orchestrator.sweep.syncsha import TrialEpochs

    epochs_in_branch = {"train.freeze_depth": {"choice": [0, {5: {"train.epochs": {"choice": [2, 3]}}}]}}
    synced = every_block_as_all(parse_config(experiment(tmp_path, "builtin:multidigits/train", search={
        "space": epochs_in_branch})), 5)
    trial = type("T", (), {"trial_id": "t1", "config": {"train.freeze_depth": 5, "train.epochs": 3}})()
    assert TrialEpochs(synced.model_dump(mode="json"), n_blocks=5)(trial) == 3
