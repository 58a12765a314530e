"""Model files from users: only ``.keras`` archives (loaded with safe_mode on a Keras without published bypasses);
searched backbone files are refused; `confirm` prepares the backbone of every configuration it retrains."""
import pytest

from factories import experiment, row, run_cli, small_table, write_parquet, write_yaml

pytestmark = pytest.mark.usefixtures("no_ray")


@pytest.mark.parametrize("backbone, expected", [
    ({"kind": "file", "path": "model.h5"}, "model.h5 is not a .keras archive"),
    ({"kind": "file", "path": "model.hdf5"}, "model.hdf5 is not a .keras archive"),
    ({"kind": "file", "path": "saved_model_dir"}, "saved_model_dir is not a .keras archive"),
    ({"kind": "application", "name": "MobileNetV2", "weights": "w.h5"},
     "w.h5 is not a .weights.h5 or .keras file"),
])
def test_only_keras_archives_are_loaded(tmp_path, capsys, backbone, expected):
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n")
    (tmp_path / "saved_model_dir").mkdir()
    (tmp_path / "saved_model_dir" / "saved_model.pb").write_bytes(b"")
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)), backbone=backbone)
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "backbone." in err and expected in err and "\n" not in err, err


def test_keras_versions_with_safe_mode_bypasses_are_refused():
    import keras

    from orchestrator.errors import ConfigError
    from orchestrator.model.backbones import check_keras

    for bad in ("3.10.0", "3.11.3", "3.12.0", "3.9.2"):
        with pytest.raises(ConfigError, match=r"keras>=3\.12\.1"):
            check_keras(bad)
    check_keras("3.12.1")
    check_keras("3.13.0rc1")
    check_keras(keras.__version__)                # the installed one is safe


def tiny_backbone(path, units: int) -> str:
    """A one-block .keras backbone for 12x12x1 images."""
    import keras

    inp = keras.Input((12, 12, 1))
    keras.Model(inp, keras.layers.Dense(units, name="block1_dense")(keras.layers.Flatten(name="flatten")(inp))).save(
        str(path))
    return str(path)


@pytest.mark.parametrize("path, backbone", [
    ("backbone.path", {"kind": "file", "weights": "none"}),
    ("backbone.weights", {"kind": "application", "name": "MobileNetV2", "weights": "none"})])
def test_searched_backbone_files_are_refused(tmp_path, capsys, path, backbone):
    """Each trial would train the base config's file while its row names another."""
    files = [tiny_backbone(tmp_path / f"{n}.keras", 8) for n in ("a", "b")]
    if backbone["kind"] == "file":
        backbone["path"] = files[0]
    size = {"data": {"image_size": [32, 32]}} if backbone["kind"] == "application" else {}   # MobileNetV2's least
    cfg = experiment(tmp_path, write_parquet(tmp_path / "train.parquet", small_table(60)), backbone=backbone,
                     search={"space": {path: {"choice": files}}}, **size)
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and f"search.space {path}: searched backbone files" in err and "\n" not in err, err


def test_confirm_prepares_every_configurations_backbone(tmp_path, monkeypatch):
    """Two sweeps of one experiment on two backbone files: each confirmation run trains its own backbone."""
    from orchestrator.config.schema import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep import confirm as confirm_module
    from orchestrator.training import session

    files = [tiny_backbone(tmp_path / f"bb{units}.keras", units) for units in (8, 16)]
    data = write_parquet(tmp_path / "train.parquet", small_table(80))
    board = Leaderboard(str(tmp_path / "runs"))
    for i, f in enumerate(files):
        cfg = parse_config(experiment(tmp_path, data, backbone={"kind": "file", "path": f, "weights": "none"}))
        board.append([row(cfg, [{"epoch": 1, "objective": 0.5 + i, "left_accuracy": 0.5}], trial_id=f"t{i}",
                          n_blocks=1)])
    shipped = []
    monkeypatch.setattr(session, "start", lambda p, **_: session.Session(p, {}, p.cfg.backbone.path))
    monkeypatch.setattr("orchestrator.sweep.runner.run_configs",
                        lambda s, configs, **_: shipped.append((s.backbone, [c.backbone.path for c in configs])))
    monkeypatch.setattr(confirm_module, "confirmed", lambda board, experiment: [])
    confirm_module.confirm(str(tmp_path / "runs"), "t", top=2, seeds=1, out=lambda m: None)
    assert sorted(shipped) == sorted([(f, [f]) for f in files])


@pytest.mark.parametrize("saved, configured", [("mixed_float16", "float32"), ("float32", "mixed_bfloat16")])
def test_a_backbone_file_whose_precision_is_not_train_precision_is_refused(tmp_path, capsys, saved, configured):
    """A .keras file keeps each layer's dtype policy and Keras restores it on load, whatever the global policy
    train.precision sets: a float32 file trained under mixed_bfloat16 computed in float32 (the row said 16-bit; a
    precision sweep compared identical math), and a file saved under mixed_float16 trained with precision float32
    computed in float16 with no loss scale. One line before anything starts. Found by a helper's audit."""
    import keras

    from orchestrator.model.backbones import digits_cnn

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(saved)
    try:
        digits_cnn((12, 12, 1), seed=0).save(tmp_path / "bb.keras")
    finally:
        keras.config.set_dtype_policy(previous)
    data = write_parquet(tmp_path / "train.parquet", small_table(80))
    cfg = experiment(tmp_path, data, backbone={"kind": "file", "path": str(tmp_path / "bb.keras")},
                     train={"precision": configured})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and f"computes in {saved}" in err and f"train.precision is {configured}" in err, err
    cfg["train"]["precision"] = saved
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err
