"""`orchestrator train` run names: unique by default; a name used by another config is refused."""
import json


from factories import experiment, run_cli, write_yaml


def test_default_run_names_are_unique():
    from orchestrator.training.driver import run_name

    names = {run_name("exp") for _ in range(50)}
    assert len(names) == 50


def test_reusing_a_run_name_with_another_config_is_refused(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    ckpt = tmp_path / "runs" / "trials" / "mine" / "checkpoints" / "epoch_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "config_hash": "0123456789ab", "history": []}))
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg), "--name", "mine")
    assert code == 2 and "run 'mine' already exists" in err and "\n" not in err, err
