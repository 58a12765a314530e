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


def row(experiment, trial_id, objective, *, status="completed", depth="1", **extra):
    return {
        "experiment": experiment, "trial_id": trial_id, "status": status,
        "reason": None if status == "completed" else "stopped by ASHA",
        "hp_train_freeze_depth": depth, "hp_train_backbone_lr": 1e-4, "hp_train_head_lr": 1e-3,
        "objective": objective, "best_objective": objective, "epochs": 3, "wall_time_s": 12.5,
        "checkpoint": f"/runs/{trial_id}/ckpt" if objective is not None else None,
        "config": {"train": {"freeze_depth": depth, "lr": 1e-4}, "tasks": ["left"]},
        "config_hash": "abc", "data_fingerprint": "fp", "versions": {"keras": "3.0"},
        "created_at": T0, **extra,
    }


@pytest.fixture
def board(tmp_path):
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([
        row("digits", "d1", 0.91, final_left_accuracy=0.91, final_right_accuracy=0.95, hp_weight_left=1.0),
        row("digits", "d2", 0.97, depth="all", final_left_accuracy=0.97, final_right_accuracy=0.90,
            hp_weight_left=0.5),
        row("digits", "d3", None, status="failed", depth="0", final_left_accuracy=None, hp_weight_left=2.0),
    ])
    lb.append([
        row("sums", "s1", 0.80, final_sum_r2=0.80, final_sum_mae=0.30, hp_weight_sum=1.0),
        row("sums", "s2", 0.85, status="stopped", final_sum_r2=0.85, final_sum_mae=0.10, hp_weight_sum=1.0),
        row("sums", "s3", float("nan"), status="diverged", final_sum_r2=float("nan"), final_sum_mae=None,
            hp_weight_sum=3.0),
    ])
    return lb


def ids(table):
    return table.column("trial_id").to_pylist()


def test_unified_table_has_nulls_for_missing_columns(board, tmp_path):
    assert board.uri == str(tmp_path / "runs" / "leaderboard")
    t = board.table()
    assert t.num_rows == 6
    assert {"final_left_accuracy", "final_sum_mae", "hp_weight_left", "hp_weight_sum"} <= set(t.column_names)
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    assert rows["d1"]["final_left_accuracy"] == 0.91 and rows["d1"]["final_sum_mae"] is None
    assert rows["s2"]["final_sum_mae"] == 0.10 and rows["s2"]["final_left_accuracy"] is None
    assert t.schema.field("config").type == pa.string()
    assert json.loads(rows["d1"]["config"]) == {"tasks": ["left"], "train": {"freeze_depth": "1", "lr": 1e-4}}
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
    ("final_right_accuracy >= 0.9 and hp_train_freeze_depth == '1'", ["d1"]),
    ("status == 'completed' or status == 'stopped'", ["d1", "d2", "s1", "s2"]),
    ("experiment in ['sums'] and not status in ('failed', 'diverged')", ["s1", "s2"]),
    ("status not in ['completed']", ["d3", "s2", "s3"]),
    ("objective == None", ["d3"]),
    ("None != reason", ["d3", "s2", "s3"]),
    ("0.8 < objective <= 0.91", ["d1", "s2"]),
    ("(hp_weight_sum > -1) and final_sum_mae < 0.2", ["s2"]),
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
    ("hp_train_freeze_depth >= 2", "hp_train_freeze_depth is string.*quote strings"),
    ("hp_train_freeze_depth in [0, 1]", "hp_train_freeze_depth is string"),
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
    assert ids(board.top(10, metric="final_left_accuracy", experiment="digits")) == ["d2", "d1", "d3"]
    assert ids(board.top(10, ascending=True, where="objective != None"))[:2] == ["s1", "s2"]


def test_top_min_metric(board):
    assert ids(board.top(10, metric="final_sum_mae", experiment="sums")) == ["s2", "s1", "s3"]
    assert ids(board.top(1, metric="final_sum_mae")) == ["s2"]


def test_top_unknown_metric(board):
    with pytest.raises(ConfigError, match=r"unknown metric 'acc'.*'objective'"):
        board.top(metric="acc")
    with pytest.raises(ConfigError, match="numeric columns"):
        board.top(metric="status")


def test_best(board):
    best = board.best()
    assert best["trial_id"] == "d2"
    assert best["config"] == {"tasks": ["left"], "train": {"freeze_depth": "all", "lr": 1e-4}}
    assert best["versions"] == {"keras": "3.0"}
    assert board.best(metric="final_sum_mae")["trial_id"] == "s2"
    assert board.best(experiment="sums", where="status == 'completed'")["trial_id"] == "s1"
    with pytest.raises(ConfigError, match=r"no leaderboard rows.*experiments: \['digits', 'sums'\]"):
        board.best(where="status == 'nope'")
    with pytest.raises(LookupError):                   # NoMatchingRows is a ConfigError and a LookupError
        board.best(experiment="digits", where="status == 'failed'")


def test_render_json(board):
    out = json.loads(render(board.top(10), fmt="json"))
    assert [r["trial_id"] for r in out] == ["d2", "d1", "s2", "s1", "s3", "d3"]
    nan_row = out[4]
    assert nan_row["objective"] is None and nan_row["final_sum_r2"] is None
    assert out[0]["config"]["train"]["freeze_depth"] == "all"
    assert out[0]["created_at"].startswith("2024-05-01T12:00:00")
    assert json.loads(render(board.top(1), fmt="json", columns=["trial_id"])) == [{"trial_id": "d2"}]


def test_render_csv(board):
    text = render(board.top(3), fmt="csv", columns=["trial_id", "objective", "reason"])
    assert text.splitlines()[0] == "trial_id,objective,reason"
    assert list(csv.DictReader(io.StringIO(text)))[0] == {"trial_id": "d2", "objective": "0.97", "reason": ""}
    assert render(board.table(), fmt="csv").splitlines()[0].startswith("experiment,trial_id,status")


def test_render_table(board):
    text = render(board.top(10))
    for trial in ["d1", "d2", "d3", "s1", "s2", "s3"]:
        assert trial in text
    header = text.splitlines()[0].split()
    for column in ["rank", "experiment", "objective", "left_accuracy", "sum_mae",  # final_ / hp_(train_) dropped
                   "freeze_depth", "backbone_lr", "weight_sum", "epochs", "wall_time_s"]:
        assert column in header
    assert "config" not in header and "best_objective" not in header and "…" not in text
    assert "0.0001" in text and "0.97 " in text
    digits_only = render(board.top(10, experiment="digits"))
    assert "sum_mae" not in digits_only                # all-null columns are left out
    assert render(board.table(), columns=["trial_id", "final_sum_r2"]).splitlines()[0].split() == [
        "trial_id", "┃", "sum_r2"]
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
    lb.append([{"experiment": "a", "trial_id": "t1", "hp_train_freeze_depth": 2}])
    lb.append([{"experiment": "b", "trial_id": "t2", "hp_train_freeze_depth": "all"}])
    assert sorted(lb.table().column("hp_train_freeze_depth").to_pylist()) == ["2", "all"]


def test_files_readable_without_orchestrator(board, tmp_path):
    folder = tmp_path / "runs" / "leaderboard"
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == 2
    by_experiment = {t.column("experiment")[0].as_py(): t for t in map(pq.read_table, files)}
    assert by_experiment["digits"].num_rows == 3 and "final_left_accuracy" in by_experiment["digits"].column_names
    assert "final_left_accuracy" not in by_experiment["sums"].column_names
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(frame) == 6 and set(frame["experiment"]) == {"digits", "sums"}
    assert isinstance(frame.loc[0, "config"], str)


@pytest.mark.parametrize("name, mode", [
    ("objective", "max"), ("best_objective", "max"), ("final_left_accuracy", "max"),
    ("best_left_accuracy", "max"), ("val_auc", "max"), ("final_sum_r2", "max"), ("macro_f1", "max"),
    ("final_sum_mae", "min"), ("best_sum_rmse", "min"), ("sum_mse", "min"), ("val_loss", "min"),
    ("train_loss", "min"), ("final_train_loss", "min"), ("wall_time_s", "min"), ("epochs", "max"),
])
def test_metric_mode(name, mode):
    assert metric_mode(name) == mode
