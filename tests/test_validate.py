"""`orchestrator validate` and the checks every command runs first: the search space, the global batch against a
worker's share, backbone files, --set into a value, errors after TensorFlow loads are one line."""
import os
import subprocess
import sys


from factories import experiment, run_cli, small_table, write_parquet, write_yaml


def test_validate_checks_the_search_space(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "choice 50 is beyond the backbone's 5 blocks" in err


def test_tune_checks_the_space_before_pretraining(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "builtin", "weights": "pretrained"},
                     search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "beyond the backbone" in err
    assert not (tmp_path / "runs" / "backbones").exists()


def test_validate_checks_the_global_batch_against_a_worker_shard(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(80)),
                     train={"batch_size": 64}, resources={"workers": 2})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "train.batch_size 64" in err and "\n" not in err, err


def test_validate_loads_the_backbone_file(tmp_path, capsys, no_ray):
    (tmp_path / "broken.keras").write_bytes(b"not a keras file")
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "broken.keras"})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "broken.keras" in err and "\n" not in err, err


def test_an_error_after_tensorflow_loads_is_one_line(tmp_path):
    """A missing backbone file is found while building the backbone (TensorFlow loaded): stderr is one line."""
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "missing.keras"})
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", write_yaml(tmp_path / "e.yaml", cfg)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.keras" in proc.stderr, proc.stderr


def test_set_into_a_value_is_one_line(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg), "--set", "train.epochs.x=1")
    assert code == 2 and "train.epochs" in err and "\n" not in err, err


def test_use_gpu_built_in_python_gets_one_gpu_per_worker():
    from orchestrator.config.schema import ResourcesConfig

    assert ResourcesConfig(use_gpu=True).gpus_per_worker == 1.0


def test_validate_checks_every_branch_of_a_conditional_space(tmp_path, capsys, no_ray):
    space = {"train.loss_weighting": {"choice": ["uncertainty", {"static": {
        "train.freeze_depth": {"choice": [0, 50]},
        "train.loss_weights": {"simplex": {"concentration": 1.0}}}}]}}
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": space})
    code, _, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "choice 50 is beyond the backbone's 5 blocks" in err and "\n" not in err.strip(), err
    space["train.loss_weighting"]["choice"][1]["static"]["train.freeze_depth"]["choice"] = [0, 2]
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 0, err
