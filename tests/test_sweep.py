"""Real Ray Tune + Ray Train + TensorFlow sweeps on tiny budgets (slow)."""
import csv
import io
import json

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config import load_config, parse_config
from orchestrator.leaderboard import Leaderboard
from orchestrator.run import train
from orchestrator.tune import tune

pytestmark = pytest.mark.slow


def sweep(storage, name, space, *, epochs=4, searcher="grid", scheduler=None, optimizer="adam", samples=1):
    return parse_config({
        "name": name,
        "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
                  "sum": {"type": "regression", "metric": "r2"}},
        "backbone": {"kind": "builtin", "weights": "pretrained"},
        "heads": {"hidden_units": 32},
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": optimizer, "head_lr": 3e-3, "seed": 0},
        "resources": {"workers": 1, "cpus_per_worker": 0.9},
        "storage": storage,
        "search": {"space": space, "searcher": searcher, "num_samples": samples,
                   "scheduler": scheduler or {"type": "asha", "grace_period": 1, "reduction_factor": 2}},
    })


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    """Two experiments in one storage: a grid with ASHA, and a grid x sampled loss weights with a diverging lr."""
    storage = str(tmp_path_factory.mktemp("sweep"))
    a = tune(sweep(storage, "grid-a", {"train.freeze_depth": {"choice": [0, "all"]},
                                       "train.head_lr": {"choice": [3e-3, 1e-5]}}))
    b = tune(sweep(storage, "rand-b", {"train.head_lr": {"choice": [1e-2, 1e9]},
                                       "train.loss_weights": {"simplex": {"concentration": 1.0}}},
                   epochs=2, searcher="grid", optimizer="sgd", samples=1, scheduler={"type": "none"}))
    return storage, a, b


def test_every_trial_lands_in_one_shared_leaderboard(swept):
    storage, a, b = swept
    board = Leaderboard(storage)
    assert set(board.experiments()) == {"grid-a", "rand-b"}
    rows_a = board.table(experiment="grid-a").to_pylist()
    rows_b = board.table(experiment="rand-b").to_pylist()
    assert len(rows_a) == 4 and len(rows_b) == 2 and a["trials"] == 4 and b["trials"] == 2
    assert len({r["config_hash"] for r in rows_a}) == 4                      # distinct configs
    for r in rows_a + rows_b:
        assert r["worker_config_hash"] == r["config_hash"]                  # the worker trained that config
        assert r["status"] in {"completed", "stopped", "diverged", "failed"}
        assert r["data_fingerprint"] and r["versions"]
    # ASHA can stop trials mid-training: stopped rows ran fewer epochs
    stopped = [r for r in rows_a if r["status"] == "stopped"]
    assert stopped and all(r["epochs"] < 4 for r in stopped), [(r["status"], r["epochs"]) for r in rows_a]
    assert any(r["status"] == "completed" and r["epochs"] == 4 for r in rows_a)
    # per-task metric columns and searched hyperparameters as typed columns
    assert {"left_accuracy", "right_accuracy", "sum_r2", "best_sum_r2", "freeze_depth", "head_lr"} <= set(rows_a[0])
    assert {r["freeze_depth"] for r in rows_a} == {0, 5}
    # the diverging learning rate is recorded as diverged, and the sweep went on
    assert any(r["status"] == "diverged" and "non-finite" in r["reason"] for r in rows_b)
    assert any(r["status"] == "completed" for r in rows_b)
    for r in rows_b:
        assert r["weight_left"] + r["weight_right"] + r["weight_sum"] == pytest.approx(1.0)
    # freeze depth matters on the embedded default: fine-tuning beats heads-only at the good lr (best epoch,
    # so a trial ASHA stopped early still counts)
    good = {r["freeze_depth"]: r["best_objective"] for r in rows_a if r["head_lr"] == 3e-3}
    assert set(good) == {0, 5} and good[0] > good[5], good


def test_cli_queries(swept, capsys):
    storage, _, _ = swept
    main(["leaderboard", "--storage", storage, "--experiment", "rand-b", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and {r["experiment"] for r in rows} == {"rand-b"}
    main(["leaderboard", "--storage", storage, "--where", "freeze_depth == 0 and status == 'completed'",
          "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["freeze_depth"] == "0" and r["status"] == "completed" for r in rows)
    main(["leaderboard", "--storage", storage, "--sort", "sum_mae", "--top", "2"])
    assert "trial_id" in capsys.readouterr().out


def test_best_then_train_reproduces_the_winner(swept, tmp_path, capsys):
    storage, _, _ = swept
    out = str(tmp_path / "best.yaml")
    main(["best", "--storage", storage, "--experiment", "grid-a", "-o", out])
    best = Leaderboard(storage).best(experiment="grid-a")
    text = open(out).read()
    assert "search" not in yaml.safe_load(text)
    summary = train(load_config(out), name="retrain-best")
    assert summary["status"] == "completed"
    assert abs(summary["objective"] - best["objective"]) <= 0.02, (summary["objective"], best["objective"])


def test_optuna_sweep_with_simplex_weights_and_a_warm_start(swept):
    """A real Optuna sweep (TPE) over loss weights (simplex) and freeze depth, warm-started from the best
    configurations of an earlier experiment, whose paths outside the new space are dropped."""
    storage, _, _ = swept
    board = Leaderboard(storage)
    earlier = board.top(2, experiment="grid-a").to_pylist()
    cfg = sweep(storage, "optuna-c", {"train.freeze_depth": {"choice": [0, 2, "all"]},
                                      "train.head_lr": {"choice": [3e-3, 1e-5, 1e-3]},
                                      "train.loss_weights": {"simplex": {"concentration": 1.0}}},
                epochs=2, searcher="optuna", samples=4, scheduler={"type": "none"})
    cfg = cfg.with_values({"search.warm_start": {"experiment": "grid-a", "top": 2}})
    lines = []
    s = tune(cfg, out=lines.append)
    rows = board.table(experiment="optuna-c").to_pylist()
    assert len(rows) == 4 == s["trials"] and all(r["status"] in ("completed", "stopped") for r in rows)
    for r in rows:
        assert r["weight_left"] + r["weight_right"] + r["weight_sum"] == pytest.approx(1.0)
    configs = [json.loads(r["config"]) for r in rows]
    base = [c for c in configs if c["train"]["loss_weights"] and
            all(abs(w - 1 / 3) < 1e-3 for w in c["train"]["loss_weights"].values())]
    assert base, "the base config (equal weights) was not evaluated first"
    for e in earlier:   # grid-a's best configurations were evaluated (freeze depth and head lr carried over)
        old = json.loads(e["config"])["train"]
        assert any(c["train"]["freeze_depth"] == old["freeze_depth"] and c["train"]["head_lr"] == old["head_lr"]
                   for c in configs), (old, [c["train"] for c in configs])
