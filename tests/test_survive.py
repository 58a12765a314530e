"""Issue 9 defects, fast: each test failed on the round-1 code (see the closing note)."""
import json
import os
import subprocess
import sys
import threading

import pytest

from orchestrator.cli import main
from orchestrator.config import parse_config
from orchestrator.leaderboard import Leaderboard

from conftest import experiment, run_cli, small_table, write_parquet, write_yaml




def minimized_rows():
    """Two trials of an experiment whose objective is sum_mae, minimized."""
    common = {"experiment": "mae", "sweep_id": "s1", "kind": "trial", "status": "completed",
              "objective_metric": "sum_mae", "objective_mode": "min"}
    return [{**common, "trial_id": "good", "objective": 0.2, "best_objective": 0.2, "sum_mae": 0.2},
            {**common, "trial_id": "bad", "objective": 0.9, "best_objective": 0.9, "sum_mae": 0.9}]


def test_best_and_top_follow_a_minimized_objective(tmp_path):
    board = Leaderboard(str(tmp_path))
    board.append(minimized_rows())
    assert board.best()["trial_id"] == "good"
    assert board.best(metric="best_objective")["trial_id"] == "good"
    assert board.top(2).column("trial_id").to_pylist() == ["good", "bad"]


def test_one_registry_gives_every_metric_its_direction():
    from orchestrator.metrics import direction

    assert direction("sum_rmse") == "min" and direction("best_sum_rmse") == "min"
    assert direction("left_accuracy") == "max" and direction("sum_r2") == "max"
    assert direction("objective", objective_mode="min") == "min"
    assert direction("delta_m_pct") == "max"


def test_optuna_accepts_the_simplex_space(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.config.space import param_space
    from orchestrator.sweep.tuner import trial_config

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={
        "searcher": "optuna", "space": {"train.loss_weights": {"simplex": {"concentration": 1.0}},
                                        "train.freeze_depth": {"choice": [0, 2]}}}))
    searcher = OptunaSearch(seed=0)
    assert searcher.set_search_properties("objective", "max", param_space(cfg.search, list(cfg.tasks)))
    params = searcher.suggest("trial-1")
    weights = trial_config(cfg, params).normalized_loss_weights()
    assert sum(weights.values()) == pytest.approx(1.0) and set(weights) == {"left", "right", "sum"}


def test_default_run_names_are_unique():
    from orchestrator.train.driver import run_name

    names = {run_name("exp") for _ in range(50)}
    assert len(names) == 50


def test_reusing_a_run_name_with_another_config_is_refused(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    ckpt = tmp_path / "runs" / "trials" / "mine" / "checkpoints" / "epoch_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "config_hash": "0123456789ab", "history": []}))
    code, err, _ = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg), "--name", "mine")
    assert code == 2 and "run 'mine' already exists" in err and "\n" not in err, err


def test_a_corrupt_leaderboard_file_is_skipped_with_one_warning(tmp_path, capsys):
    board = Leaderboard(str(tmp_path))
    board.append(minimized_rows())
    (tmp_path / "leaderboard" / "20240101T000000-deadbeef.parquet").write_bytes(b"PAR1 truncated")
    assert board.table().num_rows == 2
    assert board.best()["trial_id"] == "good"
    err = capsys.readouterr().err
    assert err.count("skipping unreadable leaderboard file") == 1, err


def test_appends_fsync_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    Leaderboard(str(tmp_path)).append(minimized_rows())
    assert "rename" in events and "fsync" in events[:events.index("rename")]


def test_a_failed_append_is_retried_then_raised(tmp_path, monkeypatch):
    from orchestrator import storage

    board = Leaderboard(str(tmp_path))
    real = storage.atomic_write
    calls = []

    def flaky(location, data):
        calls.append(location)
        if len(calls) == 1:
            raise OSError("transient storage error")
        return real(location, data)

    monkeypatch.setattr(storage, "atomic_write", flaky)
    board.append(minimized_rows())
    assert len(calls) == 2 and board.table().num_rows == 2

    monkeypatch.setattr(storage, "atomic_write", lambda location, data: (_ for _ in ()).throw(OSError("disk gone")))
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    with pytest.raises(OSError, match="disk gone"):
        board.append(minimized_rows())


def test_two_writers_append_at_once_and_every_row_arrives_whole(tmp_path):
    code = ("import sys; from orchestrator.leaderboard import Leaderboard; b = Leaderboard(sys.argv[1]);\n"
            "[b.append([{'experiment': sys.argv[2], 'trial_id': str(i), 'objective': float(i), 'kind': 'trial',"
            " 'config': {'x': 'y' * 2000}}]) for i in range(40)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = Leaderboard(str(tmp_path)).table().to_pylist()
    assert len(rows) == 80 and {r["experiment"] for r in rows} == {"a", "b"}
    assert all(json.loads(r["config"]) == {"x": "y" * 2000} for r in rows)


def test_atomic_write_has_no_shared_temporary_name(tmp_path):
    """Two first-time writers of one cache file: both succeed and the file is one of theirs, whole."""
    from orchestrator.storage import atomic_write

    target = str(tmp_path / "cache" / "backbone.keras")
    payloads = [bytes([i]) * (4 << 20) for i in (1, 2)]
    errors = []

    def write(p):
        try:
            for _ in range(5):
                atomic_write(target, p)
        except Exception as e:  # noqa: BLE001 - any failure is the defect
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    with open(target, "rb") as f:
        assert f.read() in payloads
    assert os.listdir(tmp_path / "cache") == ["backbone.keras"]


def test_validate_checks_the_search_space(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, err, _ = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "choice 50 is beyond the backbone's 5 blocks" in err


def test_tune_checks_the_space_before_pretraining(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "builtin", "weights": "pretrained"},
                     search={"space": {"train.freeze_depth": {"choice": [0, 50]}}})
    code, err, _ = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "beyond the backbone" in err
    assert not (tmp_path / "runs" / "backbones").exists()


def test_validate_checks_the_global_batch_against_a_worker_shard(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(80)),
                     train={"batch_size": 64}, resources={"workers": 2})
    code, err, _ = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "train.batch_size 64" in err and "\n" not in err, err


def test_validate_loads_the_backbone_file(tmp_path, capsys, no_ray):
    (tmp_path / "broken.keras").write_bytes(b"not a keras file")
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "broken.keras"})
    code, err, _ = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "broken.keras" in err and "\n" not in err, err


def test_an_error_after_tensorflow_loads_is_one_line(tmp_path):
    """A missing backbone file is found while building the backbone (TensorFlow loaded): stderr is one line."""
    cfg = experiment(tmp_path, "builtin:multidigits/train", backbone={"kind": "file", "path": "missing.keras"})
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", write_yaml(tmp_path / "e.yaml", cfg)],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.keras" in proc.stderr, proc.stderr


def test_credentials_are_redacted_everywhere(tmp_path, capsys, no_ray):
    from orchestrator.storage import redact

    uri = "s3://AKIDEXAMPLE:wJalrSECRETKEY@bucket/prefix?region=us-east-1&secret_key=wJalrSECRETKEY"
    assert "SECRET" not in redact(uri) and redact(uri).startswith("s3://bucket/prefix") and "region=us-east-1" in redact(uri)
    cfg = experiment(tmp_path, "builtin:multidigits/train", storage=uri)
    code = None
    try:
        main(["validate", write_yaml(tmp_path / "e.yaml", cfg)])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    assert code in (None, 0), out.err
    assert "resolved config" in out.out and "SECRET" not in out.out + out.err and "AKIDEXAMPLE" not in out.out


def test_searched_epochs_set_the_scheduler_and_the_status(tmp_path):
    from orchestrator.leaderboard.rows import trial_row
    from orchestrator.sweep.tuner import make_scheduler

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2},
                                  search={"space": {"train.epochs": {"choice": [2, 6]}}}))
    assert make_scheduler(cfg)._max_t == 6
    trial = cfg.with_values({"train.epochs": 6})
    history = [{"epoch": e, "objective": 0.5, "status": "running"} for e in (1, 2)]
    row = trial_row(trial, history, sweep_id="s", trial_id="t", searched={"train.epochs": 6}, n_blocks=5)
    assert row["status"] == "stopped"
    row = trial_row(cfg, history, sweep_id="s", trial_id="t", searched={"train.epochs": 2}, n_blocks=5)
    assert row["status"] == "completed"


def test_use_gpu_built_in_python_gets_one_gpu_per_worker():
    from orchestrator.config.schema import ResourcesConfig

    assert ResourcesConfig(use_gpu=True).gpus_per_worker == 1.0


def test_set_into_a_value_is_one_line(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    code, err, _ = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg), "--set", "train.epochs.x=1")
    assert code == 2 and "train.epochs" in err and "\n" not in err, err


def readme_reader_lines():
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = text.split("Readable without this package", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    return [ln for ln in block.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_every_documented_reader_line_runs(tmp_path, monkeypatch):
    board = Leaderboard(str(tmp_path / "runs"))
    board.append([{"experiment": "a", "trial_id": "t1", "status": "completed", "reason": None, "objective": 0.5}])
    board.append([{"experiment": "b", "trial_id": "t2", "status": "failed", "reason": "boom", "objective": None,
                   "left_accuracy": 0.3}])
    monkeypatch.chdir(tmp_path)
    lines = readme_reader_lines()
    assert lines
    for line in lines:
        scope = {}
        exec(line, scope)  # noqa: S102 - the README's own lines
        frame = scope["df"]
        assert len(frame) == 2 and set(frame["experiment"]) == {"a", "b"}, line
