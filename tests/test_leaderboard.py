import csv
import io
import json
import os
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import ConfigError
from orchestrator.leaderboard import Leaderboard, metric_mode, render

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


N_BLOCKS = 5   # freeze depth 'all' is stored as the number of backbone blocks


def row(experiment, trial_id, objective, *, status="completed", depth=1, tasks=("left",), **extra):
    """A leaderboard row as the sweep driver (``orchestrator.tune``, ``_append``) writes it: searched
    hyperparameters and final per-task metrics under plain names, ``best_<task>_<score metric>`` twins."""
    return {
        "experiment": experiment, "trial_id": trial_id, "status": status,
        "reason": None if status == "completed" else "stopped by ASHA",
        "freeze_depth": N_BLOCKS if depth == "all" else depth, "backbone_lr": 1e-4, "head_lr": 1e-3,
        "objective": objective, "best_objective": objective,
        "epochs": 3, "train_loss": 0.25, "wall_time_s": 12.5, "world_size": 2, "seed": 0,
        "checkpoint": f"/runs/{trial_id}/ckpt" if objective is not None else None,
        "objective_metric": "objective",
        "config": {"train": {"freeze_depth": depth, "backbone_lr": 1e-4}, "tasks": list(tasks)},
        "config_hash": "abc", "data_fingerprint": "fp", "versions": {"keras": "3.0"},
        "created_at": T0, **extra,
    }


def digits(trial_id, objective, left, right, **kw):
    """A MultiDigits trial (tasks left, right; score metric accuracy)."""
    metrics = {} if left is None else {
        "left_accuracy": left, "left_loss": 1 - left, "right_accuracy": right, "right_loss": 1 - right,
        "best_left_accuracy": left, "best_right_accuracy": right}
    return row("digits", trial_id, objective, tasks=("left", "right"), **metrics, **kw)


def sums(trial_id, objective, r2, mae, **kw):
    """A regression trial (task sum; score metric r2)."""
    return row("sums", trial_id, objective, tasks=("sum",), sum_r2=r2, sum_mae=mae, sum_rmse=mae,
               sum_loss=mae, best_sum_r2=r2, **kw)


@pytest.fixture
def board(tmp_path):
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([
        digits("d1", 0.91, 0.91, 0.95, weight_left=1.0, weight_right=1.0),
        digits("d2", 0.97, 0.97, 0.90, depth="all", weight_left=0.5, weight_right=1.5),
        digits("d3", None, None, None, status="failed", depth=0, weight_left=2.0, weight_right=0.0,
               epochs=0, train_loss=None, wall_time_s=0.5),
    ])
    lb.append([
        sums("s1", 0.80, 0.80, 0.30, weight_sum=1.0),
        sums("s2", 0.85, 0.85, 0.10, status="stopped", weight_sum=1.0),
        sums("s3", float("nan"), float("nan"), None, status="diverged", weight_sum=3.0),
    ])
    return lb


def ids(table):
    return table.column("trial_id").to_pylist()


def test_unified_table_has_nulls_for_missing_columns(board, tmp_path):
    assert board.uri == str(tmp_path / "runs" / "leaderboard")
    t = board.table()
    assert t.num_rows == 6
    assert {"left_accuracy", "best_left_accuracy", "sum_mae", "best_sum_r2", "weight_left", "weight_sum"} <= set(
        t.column_names)
    assert not [c for c in t.column_names if c.startswith(("final_", "hp_"))]
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    assert rows["d1"]["left_accuracy"] == 0.91 and rows["d1"]["sum_mae"] is None
    assert rows["s2"]["sum_mae"] == 0.10 and rows["s2"]["left_accuracy"] is None
    assert rows["s2"]["weight_sum"] == 1.0 and rows["s2"]["weight_left"] is None
    assert rows["d3"]["left_accuracy"] is None and rows["d3"]["best_left_accuracy"] is None
    assert t.schema.field("freeze_depth").type == pa.int64()           # 'all' stored as the number of blocks
    assert rows["d2"]["freeze_depth"] == N_BLOCKS and rows["d3"]["freeze_depth"] == 0
    assert t.schema.field("config").type == pa.string()
    assert json.loads(rows["d1"]["config"]) == {"tasks": ["left", "right"],
                                                "train": {"backbone_lr": 1e-4, "freeze_depth": 1}}
    assert t.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert board.experiments() == ["digits", "sums"]
    assert board.to_pandas(experiment="sums").shape[0] == 3


def test_empty_leaderboard(tmp_path):
    lb = Leaderboard(str(tmp_path))
    assert lb.append([]) == ""
    assert lb.table().num_rows == 0
    assert lb.top(5).num_rows == 0
    assert lb.experiments() == []
    with pytest.raises(ConfigError, match="orchestrator tune"):
        lb.best()


def test_uri_storage():
    assert Leaderboard("file:///tmp/x/").uri == "file:///tmp/x/leaderboard"


def test_experiment_filter(board):
    assert ids(board.table(experiment="digits")) == ["d1", "d2", "d3"]
    assert board.table(experiment=["digits", "sums"]).num_rows == 6
    assert board.table(experiment="nope").num_rows == 0


@pytest.mark.parametrize("where, expected", [
    ("right_accuracy >= 0.9 and freeze_depth == 1", ["d1"]),
    ("freeze_depth in [0, 5] and experiment == 'digits'", ["d2", "d3"]),
    ("freeze_depth == 5 and best_left_accuracy > 0.9", ["d2"]),
    ("status == 'completed' or status == 'stopped'", ["d1", "d2", "s1", "s2"]),
    ("experiment in ['sums'] and not status in ('failed', 'diverged')", ["s1", "s2"]),
    ("status not in ['completed']", ["d3", "s2", "s3"]),
    ("objective == None", ["d3"]),
    ("None != reason", ["d3", "s2", "s3"]),
    ("0.8 < objective <= 0.91", ["d1", "s2"]),
    ("(weight_sum > -1) and sum_mae < 0.2", ["s2"]),
    ("created_at >= '2024-05-01' and created_at < '2024-05-02T00:00:00+00:00'", ["d1", "d2", "d3", "s1", "s2", "s3"]),
])
def test_where(board, where, expected):
    assert sorted(ids(board.table(where=where))) == expected


@pytest.mark.parametrize("where, message", [
    ("len(trial_id) > 2", r"unsupported Call `len\(trial_id\)`"),
    ("objective.real > 1", "unsupported Attribute"),
    ("objective * 2 > 1", "unsupported BinOp"),
    ("objective is None", "x == None"),
    ("accuracy > 0.9", r"unknown column 'accuracy'.*available columns: experiment, trial_id"),
    ("status >= 2", "status is string.*quote strings"),
    ("status in [0, 1]", "status is string"),
    ("objective >", "not a valid expression"),
    ("objective > None", "None can only be compared"),
])
def test_bad_where(board, where, message):
    with pytest.raises(ConfigError, match=message) as info:
        board.table(where=where)
    assert "\n" not in str(info.value)


def test_top_max_metric_nulls_and_nan_last(board):
    assert ids(board.top(10)) == ["d2", "d1", "s2", "s1", "s3", "d3"]
    assert ids(board.top(2)) == ["d2", "d1"]
    assert ids(board.top(10, metric="left_accuracy", experiment="digits")) == ["d2", "d1", "d3"]
    assert ids(board.top(10, metric="right_accuracy", experiment="digits")) == ["d1", "d2", "d3"]
    by_best_r2 = ids(board.top(10, metric="best_sum_r2"))                  # NaN, then nulls (file order)
    assert by_best_r2[:3] == ["s2", "s1", "s3"] and sorted(by_best_r2[3:]) == ["d1", "d2", "d3"]
    assert ids(board.top(10, ascending=True, where="objective != None"))[:2] == ["s1", "s2"]


def test_top_min_metric(board):
    assert ids(board.top(10, metric="sum_mae", experiment="sums")) == ["s2", "s1", "s3"]
    assert ids(board.top(1, metric="sum_mae")) == ["s2"]
    by_loss = ids(board.top(10, metric="left_loss"))                        # nulls last (file order)
    assert by_loss[:2] == ["d2", "d1"] and sorted(by_loss[2:]) == ["d3", "s1", "s2", "s3"]
    assert ids(board.top(10, metric="wall_time_s", experiment="digits"))[0] == "d3"


def test_top_unknown_metric(board):
    with pytest.raises(ConfigError, match=r"unknown metric 'acc'.*'objective'"):
        board.top(metric="acc")
    with pytest.raises(ConfigError, match="numeric columns"):
        board.top(metric="status")


def test_best(board):
    best = board.best()
    assert best["trial_id"] == "d2"
    assert best["config"] == {"tasks": ["left", "right"], "train": {"backbone_lr": 1e-4, "freeze_depth": "all"}}
    assert best["freeze_depth"] == N_BLOCKS and best["best_left_accuracy"] == 0.97
    assert best["versions"] == {"keras": "3.0"}
    assert board.best(metric="sum_mae")["trial_id"] == "s2"
    assert board.best(metric="best_right_accuracy")["trial_id"] == "d1"
    assert board.best(experiment="sums", where="status == 'completed'")["trial_id"] == "s1"
    with pytest.raises(ConfigError, match=r"no leaderboard rows.*experiments: \['digits', 'sums'\]"):
        board.best(where="status == 'nope'")
    with pytest.raises(LookupError):                   # NoMatchingRows is a ConfigError and a LookupError
        board.best(experiment="digits", where="status == 'failed'")


def test_render_json(board):
    out = json.loads(render(board.top(10), fmt="json"))
    assert [r["trial_id"] for r in out] == ["d2", "d1", "s2", "s1", "s3", "d3"]
    nan_row = out[4]
    assert nan_row["objective"] is None and nan_row["sum_r2"] is None and nan_row["best_sum_r2"] is None
    assert out[0]["config"]["train"]["freeze_depth"] == "all"
    assert out[0]["freeze_depth"] == N_BLOCKS and out[0]["right_accuracy"] == 0.90
    assert {"right_accuracy", "weight_left", "backbone_lr", "wall_time_s"} <= set(out[0])   # full names
    assert out[0]["created_at"].startswith("2024-05-01T12:00:00")
    assert json.loads(render(board.top(1), fmt="json", columns=["trial_id"])) == [{"trial_id": "d2"}]


def test_render_csv(board):
    text = render(board.top(3), fmt="csv", columns=["trial_id", "objective", "reason"])
    assert text.splitlines()[0] == "trial_id,objective,reason"
    assert list(csv.DictReader(io.StringIO(text)))[0] == {"trial_id": "d2", "objective": "0.97", "reason": ""}
    header = render(board.table(), fmt="csv").splitlines()[0]
    assert header.startswith("experiment,trial_id,status")
    assert {"right_accuracy", "weight_left", "freeze_depth", "backbone_lr", "wall_time_s"} <= set(header.split(","))


def test_render_table(board):
    text = render(board.top(10))
    for trial in ["d1", "d2", "d3", "s1", "s2", "s3"]:
        assert trial in text
    header = [h for h in text.splitlines()[0].split() if h != "┃"]
    # rank, experiment (two shown), ids, objective, score metrics (those with a best_ twin), searched
    # hyperparameters, epochs, wall time; short headers. Columns from different files follow file order.
    assert header[:5] == ["rank", "experiment", "trial_id", "status", "objective"]
    assert sorted(header[5:8]) == ["left_acc", "right_acc", "sum_r2"]
    assert header.index("left_acc") < header.index("right_acc")
    assert header[8:11] == ["freeze", "bb_lr", "head_lr"]
    assert sorted(header[11:14]) == ["w_left", "w_right", "w_sum"]
    assert header[14:] == ["epochs", "time_s"]
    for column in ["config", "best_objective", "best_left_accuracy", "left_loss", "sum_mae", "sum_rmse",
                   "train_loss", "world_size", "seed", "checkpoint", "right_accuracy", "weight_left"]:
        assert column not in header
    assert "…" not in text
    assert "0.0001" in text and "0.97 " in text
    digits_only = render(board.top(10, experiment="digits"))
    digits_header = [h for h in digits_only.splitlines()[0].split() if h != "┃"]
    assert "sum_r2" not in digits_only and "w_sum" not in digits_header   # all-null columns are left out
    assert "experiment" not in digits_header                                # one experiment: no column
    assert digits_header[:6] == ["rank", "trial_id", "status", "objective", "left_acc", "right_acc"]
    assert render(board.table(), columns=["trial_id", "sum_r2"]).splitlines()[0].split() == [
        "trial_id", "┃", "sum_r2"]
    assert render(board.table(), columns=["right_accuracy", "weight_left", "freeze_depth", "backbone_lr",
                                          "wall_time_s"]).splitlines()[0].split() == [
        "right_acc", "┃", "w_left", "┃", "freeze", "┃", "bb_lr", "┃", "time_s"]
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        render(board.table(), columns=["nope"])
    with pytest.raises(ConfigError, match="unknown format"):
        render(board.table(), fmt="xml")


def test_append_atomic_files(tmp_path):
    lb = Leaderboard(str(tmp_path))
    first = lb.append([row("a", "t1", 0.5)])
    second = lb.append([row("a", "t2", 0.6), row("a", "t3", 0.7)])
    names = sorted(os.listdir(tmp_path / "leaderboard"))
    assert names == sorted([os.path.basename(first), os.path.basename(second)])
    assert all(n.endswith(".parquet") and not n.startswith(".") for n in names)
    assert len(os.path.basename(first)) == len("20240501T120000-0123abcd.parquet")
    assert lb.table().num_rows == 3


def test_created_at_defaults_and_naive_datetimes_are_utc(tmp_path):
    lb = Leaderboard(str(tmp_path))
    lb.append([{"experiment": "a", "trial_id": "t1", "objective": 1}])
    lb.append([{"experiment": "a", "trial_id": "t2", "objective": 0.5, "created_at": datetime(2024, 1, 1)}])
    t = lb.table()
    assert t.schema.field("objective").type == pa.float64()       # int in one file, float in another
    assert t.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    created = {r["trial_id"]: r["created_at"] for r in t.to_pylist()}
    assert created["t2"] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert abs((created["t1"] - datetime.now(timezone.utc)).total_seconds()) < 60


def test_clashing_column_types_read_as_string(tmp_path):
    lb = Leaderboard(str(tmp_path))
    lb.append([{"experiment": "a", "trial_id": "t1", "freeze_depth": 2}])
    lb.append([{"experiment": "b", "trial_id": "t2", "freeze_depth": "all"}])   # e.g. a file written by hand
    assert sorted(lb.table().column("freeze_depth").to_pylist()) == ["2", "all"]


def test_files_readable_without_orchestrator(board, tmp_path):
    folder = tmp_path / "runs" / "leaderboard"
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == 2
    by_experiment = {t.column("experiment")[0].as_py(): t for t in map(pq.read_table, files)}
    assert by_experiment["digits"].num_rows == 3 and "left_accuracy" in by_experiment["digits"].column_names
    assert "left_accuracy" not in by_experiment["sums"].column_names
    assert "sum_r2" in by_experiment["sums"].column_names and "sum_r2" not in by_experiment["digits"].column_names
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(frame) == 6 and set(frame["experiment"]) == {"digits", "sums"}
    assert isinstance(frame.loc[0, "config"], str)


@pytest.mark.parametrize("name, mode", [
    ("objective", "max"), ("best_objective", "max"), ("left_accuracy", "max"),
    ("best_left_accuracy", "max"), ("left_auc", "max"), ("sum_r2", "max"), ("best_sum_r2", "max"),
    ("macro_f1", "max"), ("sum_mae", "min"), ("best_sum_mae", "min"), ("sum_rmse", "min"),
    ("best_sum_rmse", "min"), ("sum_mse", "min"), ("left_loss", "min"), ("train_loss", "min"),
    ("wall_time_s", "min"), ("epochs", "max"),
])
def test_metric_mode(name, mode):
    assert metric_mode(name) == mode
