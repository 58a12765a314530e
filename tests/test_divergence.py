"""Diverged trials: non-finite model outputs or losses make a trial ``diverged``, never a finite score; diverged and
failed rows are left out of every ranking (best, top, confirm, warm starts, Pareto fronts)."""
import numpy as np
import pyarrow as pa
import pytest

from factories import experiment, small_table, write_parquet
from orchestrator.config import parse_config
from orchestrator.data.spec import DataSpec

TASKS = {"left": {"type": "classification"}, "big": {"type": "binary"}, "sum": {"type": "regression"}}


def three_tasks(tmp_path, **sections) -> dict:
    """The embedded MultiDigits canvases with a classification, a binary (left digit >= 7) and a regression task."""
    table = small_table(160)
    table = table.append_column("big", pa.array((table.column("left").to_numpy() >= 7).astype(np.int64)))
    return experiment(tmp_path, write_parquet(tmp_path / "three.parquet", table), tasks=TASKS, **sections)


def spec() -> DataSpec:
    return DataSpec(image_shape=(4, 4, 1), image_kind="pixels", pixel_dtype="float32",
                    classes={"left": [5, 6, 7, 8, 9]}, label_mean={"sum": 14.0}, label_std={"sum": 2.0},
                    n_train=8, n_val=8, fingerprint="fp")


def constant_model(outputs: dict):
    """A stand-in for the model: the same outputs (per task, per example) for any batch of 4 images."""
    import tensorflow as tf

    return lambda x, training=False: {t: tf.constant(v, tf.float32) for t, v in outputs.items()}


BATCH = (np.zeros((4, 4, 4, 1), np.float32),
         {"left": np.array([0, 0, 1, 2]), "big": np.array([0, 1, 1, 0]), "sum": np.array([13.0, 15.0, 14.0, 12.0])})


def sums_to_metrics(outputs: dict) -> dict:
    from orchestrator.model.multitask import eval_sums, metrics_from_sums

    cfg = parse_config({"name": "d", "data": {"train": "x.parquet"}, "tasks": TASKS})
    return metrics_from_sums(cfg, eval_sums(cfg, spec(), constant_model(outputs), [BATCH]))


FINE = {"left": np.tile([[3.0, 0, 0, 0, 0]], (4, 1)), "big": [[2.0], [2.0], [-2.0], [-2.0]],
        "sum": [[-0.5], [0.5], [0.0], [-1.0]]}


def test_finite_outputs_give_the_exact_metrics():
    m = sums_to_metrics(FINE)
    assert m["left_accuracy"] == 0.5 and m["big_accuracy"] == 0.5 and m["sum_mae"] == 0.0
    assert m["nonfinite_outputs"] == 0 and np.isfinite(m["objective"])


@pytest.mark.parametrize("task", ["left", "big", "sum"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_outputs_give_no_score(task, bad):
    outputs = {t: np.array(v, np.float32) for t, v in FINE.items()}
    outputs[task][1:] = bad                 # argmax of NaN is 0: a class-0 share, if anyone computed it
    m = sums_to_metrics(outputs)            # and a binary task must not crash np.bincount
    assert m["nonfinite_outputs"] == 3
    for name in ("left_accuracy", "big_accuracy", "big_auc", "sum_mae", "sum_r2", "mean_score", "objective"):
        assert np.isnan(m[name]), (name, m[name])


def test_a_diverged_row_has_no_score_and_keeps_its_best_epochs(tmp_path):
    """Epoch 3 diverged; its numbers (a worker from before this fix: the class-0 share) must not reach the row."""
    from factories import row
    from orchestrator.leaderboard import Leaderboard

    cfg = parse_config({"name": "d", "data": {"train": "x.parquet"}, "tasks": TASKS, "train": {"epochs": 5}})
    epoch = {"left_accuracy": 0.5, "big_accuracy": 0.6, "big_auc": 0.7, "sum_mae": 2.0, "sum_rmse": 2.5,
             "sum_r2": 0.1, "mean_score": 0.3, "objective": 0.3, "train_loss": 1.0, "status": "running"}
    history = [{**epoch, "epoch": 1}, {**epoch, "epoch": 2, "objective": 0.35, "left_accuracy": 0.55},
               {**epoch, "epoch": 3, "objective": 0.9, "left_accuracy": 0.9, "train_loss": float("nan"),
                "status": "diverged"}]
    r = row(cfg, history)
    assert r["status"] == "diverged" and "epoch 3" in r["reason"]
    for name in ("objective", "mean_score", "left_accuracy", "big_accuracy", "big_auc", "sum_mae", "sum_r2",
                 "left_loss", "delta_m_pct"):
        assert r[name] is None, name
    assert r["best_objective"] == 0.35 and r["best_left_accuracy"] == 0.55 and r["epochs"] == 3
    board = Leaderboard(str(tmp_path))
    board.append([r, row(cfg, history[:2], trial_id="ok")])
    assert board.best()["trial_id"] == "ok" and board.best(metric="best_objective")["trial_id"] == "ok"


@pytest.mark.slow
def test_a_diverging_learning_rate_gives_diverged_rows_that_best_skips(ray_session, tmp_path):
    """A sweep on the embedded digits with a classification, a binary and a regression task: the trial whose heads
    learn at 1e9 produces NaN. Its row says ``diverged`` (not ``failed`` with a numpy message), holds no score, and
    ``best`` picks the sane trial."""
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    cfg = parse_config(three_tasks(tmp_path, name="nan", resources={"workers": 1, "cpus_per_worker": 0.9},
                                   train={"epochs": 2, "batch_size": 32, "seed": 0, "optimizer": "sgd"},
                                   search={"space": {"train.head_lr": {"choice": [1e-2, 1e9]}}, "searcher": "grid",
                                           "num_samples": 1, "scheduler": {"type": "none"}}))
    summary = tune(cfg, out=lambda line: None)
    assert summary["statuses"] == {"completed": 1, "diverged": 1}, summary
    board = Leaderboard(cfg.storage)
    (bad,) = board.table(experiment="nan", where="head_lr > 1").to_pylist()
    assert bad["status"] == "diverged" and "non-finite" in bad["reason"], bad["reason"]
    for name in ("objective", "left_accuracy", "big_accuracy", "big_auc", "sum_mae", "sum_r2", "mean_score"):
        assert bad[name] is None, (name, bad[name])
    assert board.best(experiment="nan")["head_lr"] == 1e-2
    assert board.top(5, experiment="nan").column("head_lr").to_pylist() == [1e-2]


@pytest.mark.slow
def test_a_sweep_whose_every_trial_diverged_exits_1_and_so_does_a_retrain_of_it(ray_session, tmp_path, capsys):
    """`orchestrator tune` exited 0 (and a Ray job SUCCEEDED) when no trial completed; the demo's retrain of a
    winner that then diverged printed "retrained nan" and exited 0 (one that failed before its first epoch: a
    TypeError traceback, its objective None)."""
    from factories import run_cli, write_yaml
    from orchestrator.cli.run import retrain
    from orchestrator.leaderboard import Leaderboard

    cfg = three_tasks(tmp_path, name="allnan", resources={"workers": 1, "cpus_per_worker": 0.9},
                      train={"epochs": 1, "batch_size": 32, "seed": 0, "optimizer": "sgd"},
                      search={"space": {"train.head_lr": {"choice": [1e9]}}, "searcher": "grid", "num_samples": 1,
                              "scheduler": {"type": "none"}})
    code, out, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 1 and "{'diverged': 1}" in out, out
    assert err.startswith("error: no trial of sweep ") and "nothing to rank" in err and "\n" not in err, err
    from orchestrator.leaderboard.query import rows

    (row,) = rows(Leaderboard(str(tmp_path / "runs")).table(experiment="allnan"))   # config parsed, as best gives it
    with pytest.raises(SystemExit) as e:
        retrain(row, workers=1, output="best.yaml", sweep_id=row["sweep_id"])
    out = capsys.readouterr().out
    assert e.value.code == 1 and ": diverged" in out and "objective: n/a" in out and "retrained" not in out, out


def test_a_run_resumed_at_its_diverged_epoch_trains_no_further(tmp_path):
    """A diverged epoch is checkpointed (it is the run's last); a run restored there (`train --name` again, or Ray
    Train retrying a worker lost after the checkpoint) reported it, then trained another epoch from the NaN weights
    and reported that as the divergence: the row said one epoch more and the wrong epoch (a helper's audit)."""
    import json

    import tensorflow as tf

    from orchestrator.data.pipeline import ArrayData, load_arrays
    from orchestrator.training.loop import Worker, fit

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(96)), train={
        "epochs": 5, "batch_size": 8, "optimizer": "sgd", "backbone_lr": 50.0, "head_lr": 50.0}))
    train, val, spec = load_arrays(cfg)
    saved, epochs = {}, []
    (tmp_path / "ckpt").mkdir()

    def keep_diverged(m, state, save):
        if m["status"] == "diverged":
            save(str(tmp_path / "ckpt"))
            saved.update(json.loads(json.dumps(state, default=float)))

    fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, train, val), worker=Worker(on_epoch=keep_diverged))
    assert saved, "the learning rate did not diverge"

    def restore(load, check):
        check(saved)
        load(str(tmp_path / "ckpt"))
        return saved

    _, state = fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, train, val),
                   worker=Worker(restore=restore, on_epoch=lambda m, s, _save: epochs.append(m["epoch"])))
    assert epochs == [] and state["epoch"] == saved["epoch"], (epochs, state["epoch"], saved["epoch"])
