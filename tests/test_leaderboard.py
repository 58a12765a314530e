import csv
import io
import json
import os
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from factories import minimized_rows, row as trial_row, run_cli
from orchestrator import metrics
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.leaderboard import Leaderboard, NoMatchingRows, render
from orchestrator.leaderboard.columns import KNOWN_TYPES
from orchestrator.leaderboard.ranking import front

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
N_BLOCKS = 5   # freeze depth 'all' is stored as the number of backbone blocks
WIDE = 200     # a table's width (by default the terminal's: these tests ran only where it was not a narrow one)
CLASSES = {"type": "classification"}


def config(name, tasks, **sections):
    return parse_config({"name": name, "data": {"train": "builtin:multidigits/train"}, "tasks": tasks,
                         "backbone": {"kind": "builtin", "weights": "none"},
                         "train": {"epochs": 3, "batch_size": 32, "seed": 0}, **sections})


DIGITS = config("digits", {"left": CLASSES, "right": CLASSES})
SUMS = config("sums", {"sum": {"type": "regression", "metric": "r2"}})
MAE = config("mae", {"sum": {"type": "regression", "metric": "mae"}}, objective={"metric": "sum_mae"})


def trial(cfg, trial_id, final, *, epochs=3, depth=1, weights=None, error=None, sweep="sw1", diverged=False,
          wall_time_s=12.5, **kw):
    """A leaderboard row as the sweep driver builds it (``rows.trial_row``). ``final``: the last epoch's metrics;
    earlier epochs are worse (so best_* equal the final values)."""
    values = {"train.freeze_depth": depth, **({"train.loss_weights": weights} if weights else {})}
    searched = {"train.freeze_depth": depth} | ({"train.loss_weights": cfg.with_values(values)
                                                 .normalized_loss_weights()} if weights else {})

    def epoch(e):
        worse = epochs - e
        m = {k: v - 0.05 * worse * (1 if metrics.direction(k) != "min" else -1) for k, v in final.items()}
        return {"epoch": e, "world_size": 2, "config_hash": cfg.with_values(values).config_hash(), **m,
                **({"status": "diverged"} if diverged and e == epochs else {})}
    row = trial_row(cfg.with_values(values), [epoch(e) for e in range(1, epochs + 1)], sweep_id=sweep,
                    trial_id=trial_id, searched=searched, n_blocks=N_BLOCKS, error=error, fingerprint="fp",
                    wall_time_s=wall_time_s, checkpoint=f"/runs/{trial_id}/ckpt" if epochs else None,
                    versions={"keras": "3.0"}, **kw)
    row["created_at"] = T0
    return row


def digits(trial_id, objective, left, right, **kw):
    final = {} if left is None else {"objective": objective, "mean_score": objective, "left_accuracy": left,
                                     "left_loss": 1 - left, "right_accuracy": right, "right_loss": 1 - right,
                                     "train_loss": 0.25}
    return trial(DIGITS, trial_id, final, **kw)


def sums(trial_id, objective, r2, mae, **kw):
    final = {"objective": objective, "mean_score": objective, "sum_r2": r2, "sum_mae": mae, "sum_rmse": mae,
             "sum_loss": mae, "train_loss": 0.25}
    return trial(SUMS, trial_id, {k: v for k, v in final.items() if v is not None}, **kw)


@pytest.fixture
def board(tmp_path):
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([
        digits("d1", 0.91, 0.91, 0.95, weights={"left": 1.0, "right": 1.0}),
        digits("d2", 0.97, 0.97, 0.90, depth="all", weights={"left": 0.5, "right": 1.5}),
        digits("d3", None, None, None, error="boom", depth=0, weights={"left": 2.0, "right": 0.0}, epochs=0,
               wall_time_s=0.5),
    ])
    lb.append([
        sums("s1", 0.80, 0.80, 0.30),
        sums("s2", 0.85, 0.85, 0.10, epochs=2, sweep="sw2"),
        sums("s3", float("nan"), float("nan"), None, diverged=True, sweep="sw2"),
    ])
    return lb


def ids(table):
    return table.column("trial_id").to_pylist()


def test_a_trial_ending_on_a_checkpoint_of_its_config_as_written_before_is_not_failed():
    """A resumed trial may end on its restored epoch, reported by a checkpoint hashed with a depth of every block
    written as the number (before it ran as 'all'): the workers accept that checkpoint as the same work (29a03b6),
    but its row was failed as "the workers trained another config" (a review of this stop's diff)."""
    from orchestrator.config.freezing import every_block_as_all

    given = DIGITS.with_values({"train.freeze_depth": 5, "train.backbone_lr": 0.003})
    today = every_block_as_all(given, 5)
    history = [{"epoch": e, "world_size": 1, "objective": 0.9, "left_accuracy": 0.9, "right_accuracy": 0.9,
                "config_hash": given.config_hash()} for e in (1, 2, 3)]
    row = trial_row(today, history)
    assert row["status"] == "completed" and row["objective"] == 0.9, row


def test_a_row_whose_worker_trained_another_config_is_failed_not_scored():
    """The worker reports the hash of the config it trained; a row whose driver-side config hashes otherwise would
    record values that never trained (a numeric branch key lost on the way did that), so it is failed, not ranked."""
    history = [{"epoch": e, "world_size": 1, "objective": 0.9, "left_accuracy": 0.9, "right_accuracy": 0.9}
               for e in (1, 2, 3)]
    ok = trial_row(DIGITS, [{**h, "config_hash": DIGITS.config_hash()} for h in history])
    assert ok["status"] == "completed" and ok["worker_config_hash"] == ok["config_hash"]
    bad = trial_row(DIGITS, [{**h, "config_hash": "0123456789ab"} for h in history])
    assert bad["status"] == "failed" and bad["objective"] == 0.9, bad
    assert bad["reason"] == (f"the workers trained another config (hash 0123456789ab) than the row records "
                             f"({DIGITS.config_hash()}): the workers run other orchestrator code than the driver, "
                             f"or a bug; the row is not ranked"), bad["reason"]


def test_loss_weights_a_method_never_reads_are_null_in_its_row():
    """A dwa, uncertainty, rlw or famo row showed weight_<task> from the config (or a top-level draw), weights it never
    applied (the config hash already counts them at their default); the weights plot and fANOVA took them."""
    history = [{"epoch": 1, "world_size": 1, "objective": 0.9, "left_accuracy": 0.9, "right_accuracy": 0.9}]
    weights = {"train.loss_weights": {"left": 0.8, "right": 0.2}}
    for method in ("dwa", "uncertainty", "rlw", "famo"):
        cfg = DIGITS.with_values({**weights, "train.loss_weighting": method})
        row = trial_row(cfg, history, searched=weights)
        assert row["weight_left"] is None and row["weight_right"] is None, (method, row["weight_left"])
    static = trial_row(DIGITS.with_values(weights), history, searched=weights)
    assert static["weight_left"] == pytest.approx(0.8) and static["weight_right"] == pytest.approx(0.2)


def test_unified_table_has_nulls_for_missing_columns(board, tmp_path):
    assert board.uri == str(tmp_path / "runs" / "leaderboard")
    t = board.table()
    assert t.num_rows == 6
    assert {"left_accuracy", "best_left_accuracy", "sum_mae", "best_sum_r2", "weight_left", "weight_sum"} <= set(
        t.column_names)
    for name, type_ in KNOWN_TYPES.items():                          # every known column has its fixed type
        assert t.schema.field(name).type == type_, name
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    assert [rows[i]["status"] for i in ("d1", "d3", "s2", "s3")] == ["completed", "failed", "stopped", "diverged"]
    assert rows["d1"]["left_accuracy"] == 0.91 and rows["d1"]["sum_mae"] is None
    assert rows["s2"]["sum_mae"] == 0.10 and rows["s2"]["left_accuracy"] is None
    assert rows["s2"]["weight_sum"] == 1.0 and rows["s2"]["weight_left"] is None
    assert rows["d2"]["weight_left"] == 0.25 and rows["d2"]["weight_right"] == 0.75     # normalized
    assert rows["d3"]["left_accuracy"] is None and rows["d3"]["best_left_accuracy"] is None
    assert rows["d2"]["freeze_depth"] == N_BLOCKS and rows["d3"]["freeze_depth"] == 0
    assert json.loads(rows["d1"]["config"])["train"]["freeze_depth"] == 1
    assert json.loads(rows["d2"]["config"])["train"]["freeze_depth"] == "all"
    assert len(json.loads(rows["d1"]["history"])) == 3
    assert len({r["row_id"] for r in rows.values()}) == 6 and {r["kind"] for r in rows.values()} == {"trial"}
    assert board.experiments() == ["digits", "sums"]
    assert board.to_pandas(experiment="sums").shape[0] == 3
    assert board.table(columns=["trial_id", "objective"]).column_names == ["trial_id", "objective"]
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        board.table(columns=["nope"])


def test_empty_leaderboard(tmp_path):
    lb = Leaderboard(str(tmp_path))
    assert lb.append([]) == ""
    assert lb.table().num_rows == 0 and lb.table().column("trial_id").to_pylist() == []   # known columns
    assert lb.table(columns=["trial_id", "left_accuracy"], kind=None).column_names == ["trial_id", "left_accuracy"]
    assert lb.table(where="whatever > 1").num_rows == 0
    assert lb.experiments() == []


def test_queries_refuse_a_storage_experiment_or_sweep_it_does_not_hold(board, tmp_path):
    """A typo in a storage, experiment or sweep name is an error naming it, from the Python API as from the CLI:
    not an empty answer that reads as "nothing ranked"; a filter that matches nothing stays an empty answer."""
    missing = Leaderboard(str(tmp_path / "typo"))
    queries = {"top": lambda lb, **kw: lb.top(5, **kw), "best": lambda lb, **kw: lb.best(**kw),
               "pareto": lambda lb, **kw: lb.pareto(["left_accuracy", "right_accuracy"], **kw),
               "to_pandas": lambda lb, **kw: lb.to_pandas(**kw)}
    for name, query in queries.items():
        with pytest.raises(NoMatchingRows, match="no leaderboard at .*typo/leaderboard: pass --storage"):
            query(missing)
        with pytest.raises(NoMatchingRows, match=r"no experiment 'digts' in .*\(experiments: digits, sums\)"):
            query(board, experiment="digts")
        with pytest.raises(NoMatchingRows, match="no sweep 'sw9'"):
            query(board, experiment="digits", sweep_id="sw9")
    assert not (tmp_path / "typo").exists()   # asking created nothing
    inner = Leaderboard(str(tmp_path / "runs" / "leaderboard"))   # the folder of the Parquet files, not the storage
    with pytest.raises(NoMatchingRows, match=r"runs/leaderboard holds a leaderboard's files: pass its storage, "
                                             r".*/runs"):
        inner.top(5)
    assert board.top(5, where="objective > 2").num_rows == 0    # rows of the storage that match nothing: empty
    assert board.pareto(["left_accuracy", "right_accuracy"], where="objective > 2").num_rows == 0
    assert board.to_pandas(where="objective > 2").shape[0] == 0


def test_uri_storage():
    assert Leaderboard("file:///tmp/x/").uri == "file:///tmp/x/leaderboard"
    assert Leaderboard("s3://AKID:SECRET@bucket/p?region=x").uri == "s3://bucket/p/leaderboard?region=x"


def test_experiment_sweep_and_kind_filters(board):
    assert ids(board.table(experiment="digits")) == ["d1", "d2", "d3"]
    assert board.table(experiment=["digits", "sums"]).num_rows == 6
    assert board.table(experiment="nope").num_rows == 0
    assert ids(board.table(sweep_id="sw2")) == ["s2", "s3"]
    assert sorted(ids(board.table(sweep_id=["sw1", "sw2"]))) == ["d1", "d2", "d3", "s1", "s2", "s3"]
    board.append([trial(SUMS, "b1", {"objective": 0.99, "sum_r2": 0.99}, kind="baseline")])
    assert "b1" not in ids(board.table())                              # kind="trial" by default
    assert ids(board.table(kind="baseline")) == ["b1"]
    assert len(ids(board.table(kind=None))) == 7 and len(ids(board.table(kind=["trial", "baseline"]))) == 7
    assert board.best(experiment="digits")["trial_id"] == "d2" and board.best(kind="baseline")["trial_id"] == "b1"
    with pytest.raises(ConfigError, match="rank by other objectives"):   # digits' and sums' mean scores: other tasks
        board.best()


def test_rows_without_a_kind_column_count_as_trials(tmp_path):
    folder = tmp_path / "leaderboard"
    folder.mkdir()
    pq.write_table(pa.table({"experiment": ["old"], "trial_id": ["o1"], "objective": [0.5]}), folder / "old.parquet")
    lb = Leaderboard(str(tmp_path))
    assert ids(lb.table()) == ["o1"] and lb.table(kind="baseline").num_rows == 0
    assert lb.best()["row_id"] == "old.parquet#0"                      # a stable id for rows from before ids


@pytest.mark.parametrize("where, expected", [
    ("right_accuracy >= 0.9 and freeze_depth == 1", ["d1"]),
    ("freeze_depth in [0, 5] and experiment == 'digits'", ["d2", "d3"]),
    ("freeze_depth == 5 and best_left_accuracy > 0.9", ["d2"]),
    ("status == 'completed' or status == 'stopped'", ["d1", "d2", "s1", "s2"]),
    ("experiment in ['sums'] and not status in ('failed', 'diverged')", ["s1", "s2"]),
    ("status not in ['completed']", ["d3", "s2", "s3"]),
    ("objective == None", ["d3", "s3"]),           # failed and diverged rows have no objective
    ("None != reason", ["d3", "s2", "s3"]),
    ("0.8 < objective <= 0.91", ["d1", "s2"]),
    ("(weight_sum > -1) and sum_mae < 0.2", ["s2"]),
    ("created_at >= '2024-05-01' and created_at < '2024-05-02T00:00:00+00:00'", ["d1", "d2", "d3", "s1", "s2", "s3"]),
    ("created_at < '2024-05-01'", []),
])
def test_where(board, where, expected):
    assert sorted(ids(board.table(where=where))) == expected


@pytest.mark.parametrize("where, message", [
    ("len(trial_id) > 2", r"unsupported Call `len\(trial_id\)`"),
    ("objective.real > 1", "unsupported Attribute"),
    ("objective * 2 > 1", "unsupported BinOp"),
    ("objective is None", "x == None"),
    ("accuracy > 0.9", r"unknown column 'accuracy' in --where \(where=\); available columns: row_id, kind, "
                       r"experiment, sweep_id"),
    ("status >= 2", "status is string.*quote strings"),
    ("status in [0, 1]", "status is string"),
    ("freeze_depth in [True]", "freeze_depth is int64.*bool"),        # matched freeze depth 1 (a helper's audit)
    ("freeze_depth in ['5']", "freeze_depth is int64.*str"),          # matched 5, where == '5' was refused
    ("objective in ['0.9']", "objective is double.*str"),
    ("objective >", r"--where \(where=\) 'objective >' is not a valid expression"),   # the API's name too
    ("objective > None", "None can only be compared"),
])
def test_bad_where(board, where, message):
    with pytest.raises(ConfigError, match=message) as info:
        board.table(where=where)
    assert "\n" not in str(info.value)
    assert str(info.value).count("--where") == str(info.value).count("--where (where=)"), info.value


def test_top_max_metric_nulls_and_nan_last(board):   # a listing: every status, failed and diverged last
    listed = ids(board.top(10, ranked=False))
    assert listed[:4] == ["d2", "d1", "s2", "s1"] and sorted(listed[4:]) == ["d3", "s3"]   # ties: file order
    assert ids(board.top(2, ranked=False)) == ["d2", "d1"]
    assert ids(board.top(10, metric="left_accuracy", experiment="digits", ranked=False)) == ["d2", "d1", "d3"]
    assert ids(board.top(10, metric="right_accuracy", experiment="digits", ranked=False)) == ["d1", "d2", "d3"]
    by_best_r2 = ids(board.top(10, metric="best_sum_r2", ranked=False))                  # nulls last (file order)
    assert by_best_r2[:2] == ["s2", "s1"] and sorted(by_best_r2[2:]) == ["d1", "d2", "d3", "s3"]
    assert ids(board.top(10, ascending=True, where="objective != None", ranked=False))[:2] == ["s1", "s2"]
    assert ids(board.top(3, where="experiment == 'sums'", sweep_id="sw2", ranked=False)) == ["s2", "s3"]


def test_top_min_metric_from_the_registry(board):
    assert ids(board.top(10, metric="sum_mae", experiment="sums", ranked=False)) == ["s2", "s1", "s3"]
    assert ids(board.top(1, metric="sum_mae", ranked=False)) == ["s2"]
    assert ids(board.top(1, metric="sum_rmse", ranked=False)) == ["s2"]                  # rmse: lower is better
    by_loss = ids(board.top(10, metric="left_loss", ranked=False))                        # nulls last (file order)
    assert by_loss[:2] == ["d2", "d1"] and sorted(by_loss[2:]) == ["d3", "s1", "s2", "s3"]
    assert ids(board.top(10, metric="wall_time_s", experiment="digits", ranked=False))[-1] == "d3"   # failed: last
    assert ids(board.top(10, metric="sum_mae", experiment="sums", ascending=False, ranked=False))[:2] == ["s1", "s2"]


def test_unknown_directions_sort_descending(tmp_path):
    lb = Leaderboard(str(tmp_path))
    lb.append([{"experiment": "a", "trial_id": t, "sum_mse": v, "macro_f1": v} for t, v in (("lo", 0.1), ("hi", 0.9))])
    assert metrics.direction("sum_mse") is None and metrics.direction("macro_f1") is None
    assert ids(lb.top(2, metric="sum_mse")) == ["hi", "lo"] and ids(lb.top(2, metric="macro_f1")) == ["hi", "lo"]
    assert ids(lb.top(2, metric="sum_mse", ascending=True)) == ["lo", "hi"]


def test_objective_follows_each_rows_mode(board):
    board.append([trial(MAE, "m1", {"objective": 0.4, "sum_mae": 0.4}), trial(MAE, "m2", {"objective": 0.2,
                                                                                     "sum_mae": 0.2})])
    assert MAE.objective_mode == "min"
    assert ids(board.top(2, experiment="mae")) == ["m2", "m1"]
    assert board.best(experiment="mae")["trial_id"] == "m2"
    assert board.best(experiment="mae", metric="best_objective")["trial_id"] == "m2"
    # rows of other objectives do not rank against each other: top refuses them as best does (a helper's audit: a
    # notebook's top(5) put a Δm% of 3.1 above a mean score of 0.93, and every MAE row below every accuracy row)
    for query in (lambda: board.top(10), lambda: board.pareto(["objective", "left_accuracy"]),
                  lambda: board.top(10, experiment=["digits", "mae"])):
        with pytest.raises(ConfigError, match=r"rank by other objectives.*\(experiment=, kind=, where= from Python\)"):
            query()
    assert ids(board.top(3, metric="sum_mae")) == ["s2", "m2", "s1"]   # one metric, one direction: one ranking
    assert ids(board.top(10, experiment="digits")) == ["d2", "d1"]


def test_top_unknown_metric(board):
    with pytest.raises(ConfigError, match=r"unknown metric 'acc'.*'objective'"):
        board.top(metric="acc")
    with pytest.raises(ConfigError, match="numeric columns"):
        board.top(metric="status")


def test_best(board):
    best = board.best(experiment="digits")
    assert best["trial_id"] == "d2"
    assert best["config"]["train"]["freeze_depth"] == "all" and best["config"]["name"] == "digits"
    assert best["freeze_depth"] == N_BLOCKS and best["best_left_accuracy"] == 0.97
    assert best["versions"] == {"keras": "3.0"}
    assert [h["epoch"] for h in best["history"]] == [1, 2, 3]
    assert board.best(metric="sum_mae")["trial_id"] == "s2"
    assert board.best(metric="best_right_accuracy")["trial_id"] == "d1"
    assert board.best(experiment="sums", where="status == 'completed'")["trial_id"] == "s1"
    assert board.best(sweep_id="sw2")["trial_id"] == "s2"
    with pytest.raises(NoMatchingRows, match=r"no leaderboard rows.*experiments: \['digits', 'sums'\]"):
        board.best(where="status == 'nope'")
    with pytest.raises(NoMatchingRows):
        board.best(experiment="digits", where="status == 'failed'")


def test_duplicate_row_ids_are_read_once(board, tmp_path):
    row = board.table(where="trial_id == 'd1'").to_pylist()[0]
    folder = tmp_path / "runs" / "leaderboard"
    pq.write_table(pq.read_table(next(folder.glob("*.parquet"))), folder / "zz-copy.parquet")   # a second copy
    assert board.table().num_rows == 6 and ids(board.top(2, experiment="digits")) == ["d2", "d1"]
    assert ids(board.table(where="trial_id == 'd1'")) == ["d1"] and board.best(experiment="digits")["trial_id"] == "d2"
    assert board.table(where="trial_id == 'd1'").to_pylist()[0]["row_id"] == row["row_id"]


def test_pareto_front(tmp_path):
    lb = Leaderboard(str(tmp_path))
    points = {"a": (0.9, 0.5), "b": (0.8, 0.8), "c": (0.8, 0.8), "d": (0.7, 0.7), "e": (0.5, 0.9),
              "f": (0.9, 0.4), "g": (None, 0.99), "h": (0.6, 0.9)}
    lb.append([trial(DIGITS, t, {"objective": r, "left_accuracy": l, "right_accuracy": r} if l is not None
                     else {"right_accuracy": r}) for t, (l, r) in points.items()])
    # a beats f; b and c tie (both kept); d is dominated by b; h beats e; g has no left_accuracy
    assert ids(lb.pareto(["left_accuracy", "right_accuracy"])) == ["a", "b", "c", "h"]
    assert ids(lb.pareto(["right_accuracy", "left_accuracy"])) == ["h", "b", "c", "a"]   # best first by the first
    assert ids(lb.pareto(["left_accuracy", "right_accuracy"], where="left_accuracy < 0.9")) == ["b", "c", "h"]
    front3 = lb.pareto(["left_accuracy", "right_accuracy", "wall_time_s"])       # 3 metrics, time: lower
    assert ids(front3) == ["a", "b", "c", "h"] and json.loads(front3.column("config")[0].as_py())["name"] == "digits"


def test_pareto_with_a_minimized_metric(tmp_path):
    lb = Leaderboard(str(tmp_path))
    points = {"p": (0.9, 0.30), "q": (0.8, 0.10), "r": (0.7, 0.20), "s": (0.9, 0.30), "t": (0.95, 0.50)}
    lb.append([trial(SUMS, t, {"objective": r2, "sum_r2": r2, "sum_mae": mae}) for t, (r2, mae) in points.items()])
    assert metrics.direction("sum_mae") == "min"
    assert ids(lb.pareto(["sum_r2", "sum_mae"])) == ["t", "p", "s", "q"]      # r: worse than q on both
    assert ids(lb.pareto(["sum_mae", "sum_r2"], where="trial_id != 'q'")) == ["r", "p", "s", "t"]
    for bad, message in [(["sum_r2"], "two or more"), (["sum_r2", "nope"], "unknown Pareto metric 'nope'"),
                         (["sum_r2", "status"], "numeric columns"), (["sum_r2", "max_epochs"], "no known direction")]:
        with pytest.raises(ConfigError, match=message):
            lb.pareto(bad)


@pytest.mark.parametrize("d", [2, 3])
def test_front_matches_brute_force(d):
    rng = np.random.default_rng(d)
    values = rng.integers(0, 6, size=(300, d)).astype(float)          # many ties
    dominated = [any((o >= v).all() and (o > v).any() for o in values) for v in values]
    got = front(values)
    assert sorted(got.tolist()) == [i for i, x in enumerate(dominated) if not x]
    assert list(values[got, 0]) == sorted(values[got, 0], reverse=True)


def test_render_json(board):
    out = json.loads(render(board.top(10, ranked=False), fmt="json"))
    assert [r["trial_id"] for r in out][:4] == ["d2", "d1", "s2", "s1"]
    nan_row = next(r for r in out if r["trial_id"] == "s3")
    assert nan_row["objective"] is None and nan_row["sum_r2"] is None and nan_row["best_sum_r2"] is None
    assert out[0]["config"]["train"]["freeze_depth"] == "all"
    assert out[0]["freeze_depth"] == N_BLOCKS and out[0]["right_accuracy"] == 0.90
    assert {"right_accuracy", "weight_left", "backbone_lr", "wall_time_s"} <= set(out[0])   # full names
    assert out[0]["created_at"].startswith("2024-05-01T12:00:00")
    assert json.loads(render(board.top(1, ranked=False), fmt="json", columns=["trial_id"])) == [{"trial_id": "d2"}]


def test_render_csv(board):
    text = render(board.top(3, experiment="digits"), fmt="csv", columns=["trial_id", "objective", "reason"])
    assert text.splitlines()[0] == "trial_id,objective,reason"
    assert list(csv.DictReader(io.StringIO(text)))[0] == {"trial_id": "d2", "objective": "0.97", "reason": ""}
    header = render(board.table(), fmt="csv").splitlines()[0]
    assert header.startswith("row_id,kind,experiment,sweep_id,trial_id,status")
    assert {"right_accuracy", "weight_left", "freeze_depth", "backbone_lr", "wall_time_s"} <= set(header.split(","))


def header_of(text):
    return [h for h in text.splitlines()[0].split() if h != "┃"]


def test_render_table(board):
    text = render(board.top(10, ranked=False), width=WIDE)
    for trial_id in ["d1", "d2", "d3", "s1", "s2", "s3"]:
        assert trial_id in text
    header = header_of(text)
    # rank, experiment (two shown), ids, objective, score metrics (those with a best_ twin), searched
    # hyperparameters, epochs, wall time; short headers. Columns from different files follow file order.
    assert header[:5] == ["rank", "experiment", "trial_id", "status", "objective"]
    assert sorted(header[5:8]) == ["left_acc", "right_acc", "sum_r2"]
    assert header.index("left_acc") < header.index("right_acc")
    assert header[8:11] == ["freeze", "bb_lr", "head_lr"]
    assert sorted(header[11:14]) == ["w_left", "w_right", "w_sum"]
    assert header[14:] == ["epochs", "time_s"]
    for column in ["config", "best_objective", "best_left_accuracy", "left_loss", "sum_mae", "sum_rmse",
                   "train_loss", "world_size", "seed", "checkpoint", "right_accuracy", "weight_left", "row_id",
                   "delta_m_pct", "loss_weighting", "eff_weight_left", "mean_score", "max_epochs"]:
        assert column not in header
    assert "…" not in text
    assert "0.0001" not in text and "0.001 " in text and "0.97 " in text
    digits_header = header_of(render(board.top(10, experiment="digits", ranked=False), width=WIDE))
    assert "sum_r2" not in digits_header and "w_sum" not in digits_header  # all-null columns are left out
    assert "experiment" not in digits_header                                # one experiment: no column
    assert digits_header[:6] == ["rank", "trial_id", "status", "objective", "left_acc", "right_acc"]
    assert render(board.table(), columns=["trial_id", "sum_r2"], width=WIDE).splitlines()[0].split() == [
        "trial_id", "┃", "sum_r2"]
    assert render(board.table(), columns=["right_accuracy", "weight_left", "freeze_depth", "backbone_lr",
                                          "wall_time_s"], width=WIDE).splitlines()[0].split() == [
        "right_acc", "┃", "w_left", "┃", "freeze", "┃", "bb_lr", "┃", "time_s"]
    with pytest.raises(ConfigError, match="unknown column 'nope'"):
        render(board.table(), columns=["nope"])
    with pytest.raises(ConfigError, match="unknown format"):
        render(board.table(), fmt="xml")


def test_render_table_shows_delta_m_and_varied_loss_weighting(tmp_path):
    lb = Leaderboard(str(tmp_path))
    final = {"objective": 0.9, "left_accuracy": 0.9, "right_accuracy": 0.8}
    lb.append([trial(DIGITS, "u", final, baselines={"left": 0.8, "right": 0.8}),
               trial(DIGITS.with_values({"train.loss_weighting": "uncertainty"}), "v", final)])
    rows = {r["trial_id"]: r for r in lb.table().to_pylist()}
    assert rows["u"]["delta_m_pct"] == pytest.approx(100 * (0.1 / 0.8) / 2) and rows["v"]["delta_m_pct"] is None
    header = header_of(render(lb.top(10), width=WIDE))
    assert header.index("right_acc") < header.index("delta_m_pct") < header.index("freeze")
    assert "loss_weighting" in header and header.index("loss_weighting") < header.index("epochs")
    assert "loss_weighting" not in header_of(render(lb.top(10, where="trial_id == 'u'"), width=WIDE))   # does not vary


def test_append_atomic_files(tmp_path):
    lb = Leaderboard(str(tmp_path))
    first = lb.append([digits("t1", 0.5, 0.5, 0.5)])
    second = lb.append([digits("t2", 0.6, 0.6, 0.6), digits("t3", 0.7, 0.7, 0.7)])
    names = sorted(os.listdir(tmp_path / "leaderboard"))
    assert names == sorted([os.path.basename(first), os.path.basename(second)])
    assert all(n.endswith(".parquet") and not n.startswith(".") for n in names)
    assert len(os.path.basename(first)) == len("20240501T120000-0123abcd.parquet")
    assert lb.table().num_rows == 3


def test_append_fills_defaults_and_fixes_types(tmp_path):
    lb = Leaderboard(str(tmp_path))
    path = lb.append([{"experiment": "a", "trial_id": "t1", "objective": 1, "reason": None, "freeze_depth": 2.0,
                       "left_accuracy": 1, "weight_left": 1, "config": {"b": [1, 2]}, "note": None},
                      {"experiment": "a", "trial_id": "t2", "objective": 0.5, "created_at": datetime(2024, 1, 1)}])
    schema = pq.read_schema(path)                                   # what plain readers see in the file
    assert schema.field("reason").type == pa.string() and schema.field("objective").type == pa.float64()
    assert schema.field("freeze_depth").type == pa.int64() and schema.field("left_accuracy").type == pa.float64()
    assert schema.field("weight_left").type == pa.float64() and schema.field("config").type == pa.string()
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC") and schema.field("note").type == pa.null()
    assert json.loads(schema.metadata[b"orchestrator.json_columns"]) == ["config"]
    rows = {r["trial_id"]: r for r in lb.table().to_pylist()}
    assert rows["t1"]["kind"] == "trial" and len(rows["t1"]["row_id"]) == 32 and rows["t1"]["row_id"] != rows["t2"][
        "row_id"]
    assert rows["t2"]["created_at"] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert abs((rows["t1"]["created_at"] - datetime.now(timezone.utc)).total_seconds()) < 60
    assert lb.best(metric="objective")["config"] == {"b": [1, 2]}
    with pytest.raises(TypeError, match=r"column 'freeze_depth'.*must be int64"):
        lb.append([{"experiment": "a", "trial_id": "t3", "freeze_depth": "all"}])
    with pytest.raises(TypeError, match="column 'objective'"):
        lb.append([{"experiment": "a", "trial_id": "t3", "objective": "high"}])


def test_clashing_column_types_read_as_string(tmp_path):
    lb = Leaderboard(str(tmp_path))
    lb.append([{"experiment": "a", "trial_id": "t1", "note": 2}])
    lb.append([{"experiment": "b", "trial_id": "t2", "note": "all"}])
    pq.write_table(pa.table({"experiment": ["c"], "trial_id": ["t3"], "freeze_depth": ["all"]}),  # by hand
                   tmp_path / "leaderboard" / "hand.parquet")
    t = lb.table()
    assert sorted(t.column("note").drop_null().to_pylist()) == ["2", "all"]
    assert sorted(t.column("freeze_depth").drop_null().to_pylist()) == ["all"]


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


# -- command line ---------------------------------------------------------------------------------------
@pytest.fixture
def with_pareto(monkeypatch):
    from orchestrator.cli.main import cli
    from orchestrator.cli.query import pareto

    monkeypatch.setitem(cli.commands, "pareto", cli.commands.get("pareto", pareto))


def test_cli_leaderboard(board, tmp_path, capsys):
    storage = str(tmp_path / "runs")
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "--format", "json", "--sweep", "sw2")
    assert code == 0 and [r["trial_id"] for r in json.loads(out)] == ["s2", "s3"]
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "-e", "sums", "--where", "sum_mae < 0.2",
                       "--format", "csv")
    assert [r["trial_id"] for r in csv.DictReader(io.StringIO(out))] == ["s2"]
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "--sort", "sum_mae", "--top", "1")
    assert code == 0 and "s2" in out and "s1" not in out
    board.append([trial(SUMS, "b1", {"objective": 0.99, "sum_r2": 0.99}, kind="baseline")])
    _, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "--kind", "baseline", "--format", "json")
    assert [r["trial_id"] for r in json.loads(out)] == ["b1"]
    _, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "--kind", "all", "--format", "json")
    assert len(json.loads(out)) == 7
    code, _, err = run_cli(capsys, "leaderboard", "--storage", storage, "--where", "accuracy > 1")
    assert code == 2 and err.startswith("error: unknown column 'accuracy'") and "\n" not in err
    code, out, _ = run_cli(capsys, "leaderboard", "compact", "--storage", storage)
    assert code == 0 and "3 -> 1 files" in out and len(os.listdir(tmp_path / "runs" / "leaderboard")) == 1
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", storage, "compact")     # the group's --storage
    assert code == 0 and "1 -> 1 files" in out


def test_cli_best_writes_the_config(board, tmp_path, capsys):
    out_file = tmp_path / "best.yaml"
    code, out, _ = run_cli(capsys, "best", "--storage", str(tmp_path / "runs"), "--sweep", "sw2", "-o", str(out_file))
    assert code == 0 and "trial s2" in out
    text = out_file.read_text()
    assert text.startswith("# best trial s2 of experiment sums (sweep sw2): objective 0.8500")
    cfg = yaml.safe_load(text)
    assert cfg["name"] == "sums" and "search" not in cfg and parse_config(cfg).train.epochs == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []      # no temporary left
    code, _, err = run_cli(capsys, "best", "--storage", str(tmp_path / "runs"), "--sweep", "nope", "-o", str(out_file))
    assert code == 2 and "no sweep 'nope'" in err and "sw2" in err and "\n" not in err


def test_cli_pareto(board, tmp_path, capsys, with_pareto):
    storage = str(tmp_path / "runs")
    code, out, _ = run_cli(capsys, "pareto", "--storage", storage, "-e", "digits", "--metrics",
                       "left_accuracy,right_accuracy", "--format", "json")
    assert code == 0 and [r["trial_id"] for r in json.loads(out)] == ["d2", "d1"]
    code, out, _ = run_cli(capsys, "pareto", "--storage", storage, "-e", "digits", "-m", "left_accuracy", "-m",
                       "right_accuracy")
    assert code == 0 and header_of(out)[:5] == ["rank", "trial_id", "status", "objective", "left_acc"]
    code, _, err = run_cli(capsys, "pareto", "--storage", storage, "-m", "left_accuracy")
    assert code == 2 and "two or more" in err
    code, _, err = run_cli(capsys, "pareto", "--storage", storage, "-m", "left_accuracy,max_epochs")
    assert code == 2 and "no known direction" in err and "\n" not in err


def test_the_table_fits_the_terminal_and_names_what_it_left_out(board):
    wide = render(board.top(10, ranked=False), width=400)
    assert "more columns" not in wide
    narrow = render(board.top(10, ranked=False), width=70)
    lines = narrow.splitlines()
    assert all(len(line) <= 70 for line in lines), max(map(len, lines))
    assert header_of(narrow)[:4] == header_of(wide)[:4]          # the first columns (ids, objective) always stay
    assert lines[-1].startswith("(") and "more columns" in lines[-1] and "--format csv" in lines[-1]
    assert len(lines) == len(wide.splitlines()) + 1              # one line per row still, plus that note


def test_cli_best_output_mistakes_are_one_line(board, tmp_path, capsys):
    """`best -o` to a folder, or below a file, gave an OSError traceback and exit 1; then, below a file, "cannot write
    .../a-file/best.yaml (File exists)": which file exists, and why that stops the write, was left to guess."""
    storage = str(tmp_path / "runs")
    (tmp_path / "a-file").write_text("x")
    for output, says in ((tmp_path, "is a folder"), (tmp_path / "a-file" / "best.yaml",
                                                     f"cannot write {tmp_path / 'a-file' / 'best.yaml'}: "
                                                     f"{tmp_path / 'a-file'}: it exists and is not a folder")):
        code, _, err = run_cli(capsys, "best", "--storage", storage, "-e", "digits", "-o", str(output))
        assert code == 2 and err.startswith("error: ") and says in err and "\n" not in err, err


def test_cli_best_to_a_uri_with_credentials_neither_prints_nor_writes_them(board, tmp_path, capsys, s3_server):
    """`best -o s3://KEY:SECRET@bucket/best.yaml` echoed the URI and wrote it into the file's `# retrain:` line."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key="AKIABEST", secret_key="best/Se+cret", endpoint_override=s3_server,
                           scheme="http", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("best-bucket")
    uri = f"s3://AKIABEST:best%2FSe%2Bcret@best-bucket/best.yaml?endpoint_override={s3_server}&scheme=http"
    code, out, err = run_cli(capsys, "best", "--storage", str(tmp_path / "runs"), "-e", "digits", "-o", uri)
    with fs.open_input_stream("best-bucket/best.yaml") as f:
        text = f.read().decode()
    assert code == 0 and text.startswith("# best trial"), err
    for shown in (out, err, text):
        assert "best%2FSe%2Bcret" not in shown and "best/Se+cret" not in shown and "AKIABEST" not in shown, shown


def test_a_storage_without_a_leaderboard_is_a_mistake_not_an_empty_one(tmp_path, capsys):
    """`leaderboard --storage <typo>` printed "no matching rows" and exited 0, as if the runs had matched nothing."""
    for argv in (["leaderboard"], ["best"], ["pareto", "--metrics", "left_accuracy,right_accuracy"]):
        code, _, err = run_cli(capsys, *argv, "--storage", str(tmp_path / "typo"))
        assert code == 2 and "no leaderboard at" in err and "--storage" in err and "\n" not in err, (argv, err)


def test_best_and_top_rank_an_experiments_trials_of_its_newest_code_and_data_only(tmp_path):
    """After a data rewrite (or an upgrade that changes what a config trains), `best` still picked the old data's
    0.95 over the new data's 0.90: two measurements compared as one, the winner of data that is gone. The report
    and the confirmed ranking already held each experiment to its newest trial's training revision and data
    fingerprint; best and top (what confirm and warm starts read) now do too. Listings keep every row."""
    board = Leaderboard(str(tmp_path))
    common = {"kind": "trial", "status": "completed", "objective_mode": "max", "training_revision": 3}
    board.append([
        {**common, "experiment": "e", "trial_id": "old", "objective": 0.95, "data_fingerprint": "d1",
         "created_at": datetime(2026, 12, 1, tzinfo=timezone.utc)},
        {**common, "experiment": "e", "trial_id": "new", "objective": 0.90, "data_fingerprint": "d2",
         "created_at": datetime(2026, 12, 2, tzinfo=timezone.utc)},
        {**common, "experiment": "e", "trial_id": "older_code", "objective": 0.97, "data_fingerprint": "d2",
         "training_revision": 2, "created_at": datetime(2026, 12, 1, 12, tzinfo=timezone.utc)},
        {**common, "experiment": "f", "trial_id": "other", "objective": 0.5, "data_fingerprint": "d1",
         "created_at": datetime(2026, 12, 1, tzinfo=timezone.utc)}])
    assert board.best(experiment="e")["trial_id"] == "new"
    assert board.top(5).column("trial_id").to_pylist() == ["new", "other"]
    assert sorted(board.top(5, ranked=False).column("trial_id").to_pylist()) == ["new", "old", "older_code", "other"]


@pytest.mark.parametrize("written", ["first first", "first last"])
def test_a_tie_goes_to_the_trial_that_reached_it_first_whatever_the_file_order(tmp_path, written):
    """Accuracies on a finite validation set tie. The ranking kept the files' order, and file names are a timestamp to
    the second and a random uuid: of two trials written in the same second with one score, `best` named either,
    10 times each in 20 identical leaderboards. The earlier row wins a tie, then the lower row id."""
    from datetime import timedelta

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    first, last = ({**digits(t, 0.9, 0.9, 0.9), "created_at": t0 + timedelta(minutes=i)} for i, t in enumerate("AB"))
    board = Leaderboard(str(tmp_path / "runs"))
    for r in ([first, last] if written == "first first" else [last, first]):
        board.append([r])
    assert board.best(experiment="digits")["trial_id"] == "A"
    assert ids(board.top(5)) == ["A", "B"] and ids(board.top(5, ranked=False)) == ["A", "B"]
    assert ids(board.top(5, ascending=True, metric="left_accuracy")) == ["A", "B"]


def test_sorting_by_a_metric_no_selected_row_has_is_refused_not_an_unsorted_ranking(board, tmp_path, capsys):
    """`leaderboard -e sums --sort left_accuracy` (a metric of the digits experiment only) passed the check against
    every experiment's columns and printed sums' rows in file order, under rank numbers, exit 0."""
    storage = str(tmp_path / "runs")
    code, out, err = run_cli(capsys, "leaderboard", "--storage", storage, "-e", "sums", "--sort", "left_accuracy")
    assert code == 2 and "\n" not in err.rstrip("\n") and not out, (out, err)
    assert "no row selected has a value of left_accuracy" in err and "sum_mae" in err, err
    code, out, err = run_cli(capsys, "leaderboard", "--storage", storage, "-e", "sums", "--sort", "sum_mae")
    assert code == 0 and out.index("s2") < out.index("s1"), out   # lower error first
    code, out, err = run_cli(capsys, "leaderboard", "--storage", storage, "--where", "status == 'failed'")
    assert code == 0 and "d3" in out, (out, err)   # failed trials have no objective: listed all the same


def test_best_writes_text_that_reads_back_as_text(tmp_path, capsys):
    """best -o wrote YAML 1.1 (PyYAML's dumper) and the project reads YAML 1.2: class names '1e1' and '1.5e1' were
    written unquoted and read back as 10.0 and 15.0 (another config hash: a retrain that is not the trial), and an
    experiment named '1e3' as a number. Found by a helper's audit."""
    from orchestrator.cli.query import write_best
    from orchestrator.config import load_config

    cfg = parse_config({"name": "1e3", "data": {"train": "builtin:multidigits/train"}, "storage": str(tmp_path),
                        "tasks": {"left": {"type": "classification", "classes": ["1e1", "1.5e1", "x", "010"]}}})
    write_best({"trial_id": "t", "config": cfg.run_fields(), "objective": 0.5}, str(tmp_path / "best.yaml"))
    again = load_config(tmp_path / "best.yaml")
    assert again.name == "1e3" and again.tasks["left"].classes == ["1e1", "1.5e1", "x", "010"]
    assert again.config_hash() == cfg.config_hash()


def test_where_treats_a_missing_value_alike_however_a_condition_is_written(board):
    """--where reads as Python, where None != 0.9 is true, but `objective != x` and `not (objective == x)` left out the
    rows without an objective while `objective not in [x]` kept them: three spellings of one condition, two answers.
    A missing value equals nothing and differs from every value; an order comparison with it is false. Found by a
    helper's audit."""
    value = board.best(experiment="digits")["objective"]
    forms = [f"objective != {value!r}", f"not (objective == {value!r})", f"objective not in [{value!r}]"]
    found = [sorted(ids(board.table(where=w))) for w in forms]
    assert found[0] == found[1] == found[2] and {"d3", "s3"} <= set(found[0]), found   # d3, s3: no objective
    assert not {"d3", "s3"} & set(ids(board.table(where="objective < 10")))   # an order with nothing: false


def test_a_listing_sorted_by_a_metric_shows_that_metric(board, capsys, tmp_path):
    """`leaderboard --sort sum_mae` on the digits experiment ranked rows by a column the table left out (its default
    columns are each task's score metric, not sum_mae): the order matched nothing on screen (found by a helper's
    audit). The sort column is shown, as `pareto` shows its metrics."""
    code, out, err = run_cli(capsys, "leaderboard", "--storage", str(tmp_path / "runs"), "-e", "sums", "--sort",
                             "sum_mae")
    assert code == 0, err
    header = next(line for line in out.splitlines() if "trial" in line)
    assert "sum_mae" in header, header


def test_a_listing_of_experiments_with_other_objectives_says_its_ranks_do_not_compare(tmp_path, capsys):
    """`leaderboard` without -e numbered one ranking across a mean score and an MAE (MAE 0.2, its best, ranked 3rd
    below a mean score of 0.845), where `best` refuses the same rows (found by a helper's audit). The listing stays;
    a note says the ranks mix objectives."""
    board = Leaderboard(str(tmp_path / "runs"))
    board.append(minimized_rows())
    board.append([{"experiment": "acc", "sweep_id": "s", "kind": "trial", "status": "completed", "trial_id": "a1",
                   "objective": 0.845, "objective_metric": "mean_score", "objective_mode": "max"}])
    code, out, err = run_cli(capsys, "leaderboard", "--storage", str(tmp_path / "runs"))
    assert code == 0, err
    assert "note: these rows rank by other objectives (mean_score: acc; sum_mae: mae)" in out, out
    # the rank column still read as one ranking (a helper's audit): each objective is numbered on its own
    ranks = {line.split("│")[2].strip(): line.split("│")[0].strip() for line in out.splitlines() if "│" in line}
    assert (ranks["good"], ranks["bad"], ranks["a1"]) == ("1", "2", "1"), out
    assert "ranks are within each objective" in out, out
    # a row without a config (its tasks unknown) ranks with the rows of its metric that have one (a review)
    from factories import embedded

    cfg = parse_config(embedded(str(tmp_path / "runs"), name="acc2"))
    board.append([trial_row(cfg, [{"epoch": 1, "objective": 0.8, "mean_score": 0.8}], trial_id="c1", sweep_id="s")])
    code, out, err = run_cli(capsys, "leaderboard", "--storage", str(tmp_path / "runs"))
    ranks = {line.split("│")[2].strip(): line.split("│")[0].strip() for line in out.splitlines() if "│" in line}
    assert (ranks["a1"], ranks["c1"], ranks["good"], ranks["bad"]) == ("1", "2", "1", "2"), out
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", str(tmp_path / "runs"), "-e", "mae")
    assert "note:" not in out


def test_the_mixed_objectives_note_names_what_to_narrow(tmp_path, capsys):
    """With -e given, the note still said "list one experiment with -e" where the rows mixed kinds (the review of
    a7cee3e)."""
    from factories import embedded
    from orchestrator.config import parse_config
    from orchestrator.sweep.baselines import single_task

    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs, name="exp"))
    hist = lambda v: [{"epoch": 1, "objective": v, "mean_score": v}]   # noqa: E731
    Leaderboard(runs).append([trial_row(cfg, hist(0.9), trial_id="t1", sweep_id="s"),
                              trial_row(single_task(cfg, "left"), hist(0.95), trial_id="b-left", kind="baseline",
                                        extra={"baseline_task": "left", "baseline_key": "k"})])
    code, out, _ = run_cli(capsys, "leaderboard", "--storage", runs, "-e", "exp", "--kind", "all")
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert note.endswith("list one kind with --kind; ranks are within each objective"), note
    ranks = {line.split("│")[1].strip(): line.split("│")[0].strip() for line in out.splitlines() if "│" in line}
    assert (ranks["t1"], ranks["b-left"]) == ("1", "1"), out   # a trial and a baseline: each its own ranking


def test_a_leaderboard_takes_pathlib_paths_as_train_and_tune_do(board, tmp_path):
    """A helper's audit: Leaderboard(Path(...)), .merge(Path(...)) and write_report(..., Path(...)) raised bare
    TypeErrors ("argument of type 'PosixPath' is not iterable") where train, tune and load_config take os.PathLike."""
    from orchestrator.report import write_report

    same = Leaderboard(tmp_path / "runs")
    assert same.uri == board.uri and ids(same.top(2, experiment="digits")) == ["d2", "d1"]
    into = Leaderboard(tmp_path / "copy")
    assert into.merge(tmp_path / "runs")["rows"] == 6 and into.merge([tmp_path / "runs"])["rows"] == 0
    assert write_report(board, "digits", tmp_path / "report")["report"].endswith("report.md")
    with pytest.raises(ConfigError, match="a storage is a folder path or a URI, not int"):
        Leaderboard(5)


def test_a_storage_uri_with_a_session_token_opens_and_keeps_it_secret(board, tmp_path, capsys, s3_server):
    """Temporary credentials (a key pair and its session token) in a storage URI could not be opened at all: the token
    went back into the URI pyarrow parses, which refuses it ("Unexpected query parameter"), and the line blamed
    spaces in the URI (a helper's audit). The token reaches the filesystem; it is never shown."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key="AKIATEMP", secret_key="temp/Se+cret", endpoint_override=s3_server,
                           scheme="http", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("token-bucket")
    uri = (f"s3://AKIATEMP:temp%2FSe%2Bcret@token-bucket/runs?endpoint_override={s3_server}&scheme=http"
           f"&region=us-east-1&session_token=TOKSECRET")
    assert Leaderboard(uri).merge(str(tmp_path / "runs"))["rows"] == 6
    assert ids(Leaderboard(uri).top(2, experiment="digits")) == ["d2", "d1"]
    code, out, err = run_cli(capsys, "leaderboard", "--storage", uri, "-e", "digits")
    assert code == 0 and "d2" in out, err
    for shown in (out, err, Leaderboard(uri).uri):
        assert "TOKSECRET" not in shown and "temp%2FSe%2Bcret" not in shown, shown
    from orchestrator import storage

    assert storage.filesystem(uri)[0].__reduce__()[1][0]["session_token"] == "TOKSECRET"
