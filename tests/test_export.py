"""Export: flat CSV/Parquet (one column per hyperparameter and per-task metric, history in a long file), MLflow and
TensorBoard HParams. Fast tests on factory rows; a slow one exports a real sweep."""
from __future__ import annotations

import csv
import io
import json
import math
import sys

import pyarrow.parquet as pq
import pytest

from factories import embedded, read_events, row, run_cli
from orchestrator.config import parse_config
from orchestrator.leaderboard import Leaderboard
from orchestrator.leaderboard.flat import flat, hparam_columns, history_long, metric_columns

HISTORY = [{"epoch": 1, "left_accuracy": 0.5, "right_accuracy": 0.4, "objective": 0.45, "mean_score": 0.45,
            "train_loss": 1.2},
           {"epoch": 2, "left_accuracy": 0.7, "right_accuracy": 0.6, "objective": 0.65, "mean_score": 0.65,
            "train_loss": 0.8}]

def board_with_trials(tmp_path, n: int = 3) -> Leaderboard:
    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 2}))
    rows = []
    for i in range(n):
        hist = [{**h, "left_accuracy": h["left_accuracy"] + i / 10, "objective": h["objective"] + i / 10}
                for h in HISTORY]
        rows.append(row(cfg.with_values({"train.head_lr": 1e-3 * (i + 1)}), hist, trial_id=f"t{i}", sweep_id="s1",
                        searched={"train.head_lr": 1e-3 * (i + 1), "heads.dropout": 0.1 * i},
                        checkpoint=f"/ckpt/t{i}", baselines={"left": 0.5, "right": 0.5}))
    board = Leaderboard(str(tmp_path / "runs"))
    board.append(rows)
    return board

def test_flat_has_one_column_per_hyperparameter_and_task_metric_and_no_json(tmp_path):
    table = board_with_trials(tmp_path).table()
    out = flat(table)
    assert not {"config", "history", "versions"} & set(out.column_names)
    assert {"head_lr", "dropout", "freeze_depth", "weight_left", "left_accuracy", "right_accuracy"} <= set(
        out.column_names)
    for name in out.column_names:
        assert not any(isinstance(v, str) and v.startswith(("{", "[")) for v in out.column(name).to_pylist()), name
    hps = hparam_columns(table)
    assert {"head_lr", "dropout", "freeze_depth", "backbone_lr", "weight_left"} <= set(hps)
    assert not {"epochs", "kind", "left_accuracy", "trial_id", "status"} & set(hps)
    assert {"left_accuracy", "right_accuracy", "objective", "mean_score"} <= set(metric_columns(table))
    assert not set(hps) & set(metric_columns(table))

def test_history_goes_to_a_long_table(tmp_path):
    long = history_long(board_with_trials(tmp_path, n=2).table())
    assert {"row_id", "trial_id", "epoch", "metric", "value"} <= set(long.column_names)
    got = {(r["trial_id"], r["epoch"], r["metric"]): r["value"] for r in long.to_pylist()}
    assert got[("t1", 2, "left_accuracy")] == pytest.approx(0.8)
    assert got[("t0", 1, "train_loss")] == pytest.approx(1.2)
    assert long.num_rows == 2 * 2 * 5       # trials x epochs x metrics (epoch itself is not a metric)

def test_export_csv_and_parquet_files(tmp_path):
    board = board_with_trials(tmp_path)
    summary = board.export(f"csv:{tmp_path / 'out.csv'}")
    assert summary["rows"] == 3 and summary["history"].endswith("out-history.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [r["trial_id"] for r in rows] and "config" not in rows[0] and float(rows[2]["head_lr"]) == 0.003
    hist = list(csv.DictReader(io.StringIO((tmp_path / "out-history.csv").read_text())))
    assert {"trial_id", "epoch", "metric", "value"} <= set(hist[0]) and len(hist) == 30
    board.export(f"parquet:{tmp_path / 'out.parquet'}", experiment="t")
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 3
    assert pq.read_table(tmp_path / "out-history.parquet").num_rows == 30

def test_leaderboard_csv_format_is_flat(tmp_path, capsys):
    board_with_trials(tmp_path)
    r = run_cli(capsys, "leaderboard", "--storage", str(tmp_path / "runs"), "--format", "csv")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert len(rows) == 3 and "history" not in rows[0] and "config" not in rows[0] and "dropout" in rows[0]

def test_export_cli_and_bad_targets(tmp_path, capsys):
    board_with_trials(tmp_path)
    r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "-e", "t", "--to", f"csv:{tmp_path / 'x.csv'}")
    assert r.code == 0, r.err
    assert "3 rows" in r.out and (tmp_path / "x-history.csv").exists()
    bad = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--to", "excel:x.xlsx")
    assert bad.code == 2 and "mlflow:URI" in bad.err and "Traceback" not in bad.err

def test_a_file_named_for_the_other_format_is_refused_and_left_as_it_was(tmp_path, capsys):
    """`export --to csv:out/shapes.parquet` wrote CSV text over an existing Parquet file (and its -history file),
    silently. A name ending in the other format's extension is refused now, and nothing is written. Found by a
    helper's audit."""
    board_with_trials(tmp_path)
    board = Leaderboard(str(tmp_path / "runs"))
    board.export(f"parquet:{tmp_path / 'shapes.parquet'}")
    before = (tmp_path / "shapes.parquet").read_bytes()
    for to, ext in ((f"csv:{tmp_path / 'shapes.parquet'}", ".parquet"), (f"parquet:{tmp_path / 'out.CSV'}", ".CSV")):
        r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--to", to)
        assert r.code == 2 and "\n" not in r.err.strip() and f"ends in {ext}" in r.err, r.err
    assert (tmp_path / "shapes.parquet").read_bytes() == before and not (tmp_path / "out.CSV").exists()
    board.export(f"csv:{tmp_path / 'plain'}")   # no extension: the format says what it is
    board.export(f"csv:{tmp_path / 'parquet'}")   # a name without a dot is no extension, whatever it says
    assert "trial_id" in (tmp_path / "plain").read_text().splitlines()[0].split(",")


def test_an_mlflow_server_that_cannot_be_reached_is_one_line_at_once(tmp_path, capsys):
    """MLflow's client retries a refused connection with backoff: an export to a server that is down printed nothing
    for 4 minutes, then called it a refusal. The server is reached first (5 s at most)."""
    from factories import free_port

    board_with_trials(tmp_path)
    url = f"http://user:pw@127.0.0.1:{free_port()}"
    r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "-e", "t", "--to", f"mlflow:{url}")
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "cannot reach MLflow at http://" in r.err, r.err
    assert "pw" not in r.err and "mlflow server" in r.err


def test_a_sweep_logging_live_to_an_mlflow_server_that_cannot_be_reached_stops_before_ray(tmp_path, capsys, no_ray):
    """`search.mlflow` pointing at a server that is down: the sweep started Ray, shipped its data (trained its
    baselines, if asked) and then hung in MLflow's retries. It is reached before anything starts."""
    from factories import experiment, free_port, write_yaml

    cfg = experiment(tmp_path, "builtin:multidigits/train", search={
        "num_samples": 1, "space": {"train.head_lr": {"choice": [1e-3]}}, "mlflow": f"http://127.0.0.1:{free_port()}"})
    r = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "cannot reach MLflow at http://127.0.0.1:" in r.err, r.err


def test_export_to_tensorboard_without_the_extra_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """TensorFlow >= 2.20 no longer brings tensorboard; without it installed (simulated: the import is blocked,
    since this environment has it) the export says which extra to install."""
    board_with_trials(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--to", f"tensorboard:{tmp_path / 'tb'}")
    assert r.code == 2 and "orchestrator[tensorboard]" in r.err and len(r.err.splitlines()) == 1, r.err
    assert not (tmp_path / "tb").exists()


def test_history_json_is_not_needed_for_rows_without_one(tmp_path):
    board = Leaderboard(str(tmp_path / "runs"))
    board.append([{"experiment": "old", "trial_id": "a", "objective": 0.5, "history": json.dumps([])}])
    assert history_long(board.table()).num_rows == 0
    assert flat(board.table()).column("trial_id").to_pylist() == ["a"]

def test_mlflow_record_of_a_row(tmp_path):
    from orchestrator.leaderboard.export_mlflow import trial_record
    from orchestrator.leaderboard.query import rows as row_dicts

    table = board_with_trials(tmp_path).table(where="trial_id == 't1'")
    tags, params, points = trial_record(row_dicts(table)[0], params=hparam_columns(table),
                                        metrics=metric_columns(table))
    assert tags["trial_id"] == "t1" and tags["sweep_id"] == "s1" and tags["status"] == "completed"
    assert tags["checkpoint"] == "/ckpt/t1" and tags["mlflow.runName"] == "t1" and float(tags["delta_m_pct"]) > 0
    assert tags["row_id"] == table.column("row_id")[0].as_py()
    assert float(params["head_lr"]) == pytest.approx(0.002) and float(params["dropout"]) == pytest.approx(0.1)
    assert "left_accuracy" not in params and "trial_id" not in params
    curve = sorted((step, value) for step, key, value in points if key == "left_accuracy")
    assert curve == [(1, pytest.approx(0.6)), (2, pytest.approx(0.8))]      # the final value is the last epoch's
    finals = {key: step for step, key, _ in points if key in ("delta_m_pct", "best_left_accuracy")}
    assert finals == {"delta_m_pct": 2, "best_left_accuracy": 2}


def hparams_of(run_dir):
    """(experiment config, session start info) that TensorBoard's HParams plugin reads in ``run_dir``."""
    from tensorboard.plugins.hparams import metadata

    content = read_events(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = content.get(metadata.EXPERIMENT_TAG)
    session = content.get(metadata.SESSION_START_INFO_TAG)
    return (experiment and metadata.parse_experiment_plugin_data(experiment),
            session and metadata.parse_session_start_info_plugin_data(session))


def test_tensorboard_config_and_sessions_of_rows(tmp_path):
    """The protos the HParams dashboard reads, without reading files (TensorBoard's readers import TensorFlow)."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    from orchestrator.leaderboard.export_tensorboard import _config, _session
    from orchestrator.leaderboard.flat import row_points
    from orchestrator.leaderboard.query import rows as row_dicts

    table = board_with_trials(tmp_path).table()
    rows, params = row_dicts(table), hparam_columns(table)
    config = _config(rows, params, ["left_accuracy", "objective"]).value[0]
    experiment = metadata.parse_experiment_plugin_data(config.metadata.plugin_data.content)
    assert {h.name for h in experiment.hparam_infos} >= {"head_lr", "dropout", "optimizer"}
    assert [m.name.tag for m in experiment.metric_infos] == ["left_accuracy", "objective"]
    events = _session(rows[2], params, row_points(rows[2], metric_columns(table)))
    start = metadata.parse_session_start_info_plugin_data(events[0][1].value[0].metadata.plugin_data.content)
    assert start.hparams["head_lr"].number_value == pytest.approx(0.003) and start.group_name
    end = metadata.parse_session_end_info_plugin_data(events[-1][1].value[0].metadata.plugin_data.content)
    assert end.status == api_pb2.STATUS_SUCCESS
    scalars = {(step, s.value[0].tag): s.value[0].simple_value for step, s in events[1:-1]}
    assert scalars[(2, "left_accuracy")] == pytest.approx(0.9)


@pytest.mark.slow
def test_export_to_tensorboard_hparams_one_session_per_trial_next_to_its_scalars(tmp_path):
    board = board_with_trials(tmp_path)
    summary = board.export(f"tensorboard:{tmp_path / 'tb'}")
    assert summary["rows"] == 3 and summary["sessions"] == 3
    root = tmp_path / "tb" / "t"
    experiment, _ = hparams_of(root)
    hps = {h.name: h for h in experiment.hparam_infos}
    assert {"head_lr", "dropout", "freeze_depth"} <= set(hps)
    assert (hps["head_lr"].domain_interval.min_value, hps["head_lr"].domain_interval.max_value) == pytest.approx(
        (0.001, 0.003))
    assert {"left_accuracy", "objective"} <= {m.name.tag for m in experiment.metric_infos}
    sessions = sorted(p.parent for p in root.rglob("events.out.tfevents*") if p.parent != root)
    assert [s.name for s in sessions] == ["t0", "t1", "t2"]
    for i, run in enumerate(sessions):
        _, start = hparams_of(run)
        assert start.hparams["head_lr"].number_value == pytest.approx(1e-3 * (i + 1))
        assert start.hparams["optimizer"].string_value == "adam"
        curve = [(e.step, round(e.value, 6)) for e in read_events(run).Scalars("left_accuracy")]
        assert curve == [(1, round(0.5 + i / 10, 6)), (2, round(0.7 + i / 10, 6))]
    board.export(f"tensorboard:{tmp_path / 'tb'}")            # again: the same files, replaced
    assert len(list(root.rglob("events.out.tfevents*"))) == 4


@pytest.mark.slow
def test_export_to_mlflow_nests_trials_under_their_sweep_and_updates_by_row_id(tmp_path):
    import mlflow

    board = board_with_trials(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = board.export(f"mlflow:{uri}")
    assert first["rows"] == 3 and first["created"] == 3
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    parents = runs[runs["tags.orchestrator.kind"] == "sweep"]
    trials = runs[runs["tags.orchestrator.kind"] == "trial"]
    assert len(parents) == 1 and parents.iloc[0]["tags.mlflow.runName"] == "s1" and len(trials) == 3
    assert set(trials["tags.mlflow.parentRunId"]) == {parents.iloc[0]["run_id"]}
    t1 = trials[trials["tags.trial_id"] == "t1"].iloc[0]
    assert float(t1["params.head_lr"]) == pytest.approx(0.002) and float(t1["params.dropout"]) == pytest.approx(0.1)
    assert t1["metrics.left_accuracy"] == pytest.approx(0.8) and t1["tags.checkpoint"] == "/ckpt/t1"
    assert {"tags.experiment", "tags.sweep_id", "tags.status", "tags.row_id", "tags.delta_m_pct"} <= set(runs.columns)
    assert t1["tags.status"] == "completed" and t1["status"] == "FINISHED"
    curve = mlflow.MlflowClient(uri).get_metric_history(t1["run_id"], "left_accuracy")
    assert sorted((m.step, round(m.value, 6)) for m in curve) == [(1, 0.6), (2, 0.8)]
    again = board.export(f"mlflow:{uri}")          # again: the same runs, found by row_id, nothing duplicated
    assert again["created"] == 0 and again["updated"] == 3
    runs = mlflow.search_runs(experiment_names=["t"])
    assert len(runs) == 4 and sorted(runs["tags.row_id"].dropna()) == sorted(board.table().column("row_id").to_pylist())
    curve = mlflow.MlflowClient(uri).get_metric_history(t1["run_id"], "left_accuracy")
    assert len(curve) == 2


def test_a_run_another_export_is_writing_is_left_to_it_and_a_killed_exports_is_written_again(tmp_path):
    """An export deleted every trial run without its `complete` tag, to write it again: meant for runs a killed
    export left, it also deleted the runs a concurrent export was still writing. A run now says when its writing
    began; one begun within the last minutes is left to its writer (counted `in_progress`), an older one (or one
    of an export before this tag) is a killed export's, deleted and written again."""
    import time

    import mlflow

    from orchestrator.leaderboard import export_mlflow as em
    from orchestrator.leaderboard.query import rows as row_dicts

    board = board_with_trials(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = em._experiment_id(client, "t")
    rows = {r["trial_id"]: r for r in row_dicts(board.table())}
    now_ms = int(time.time() * 1000)
    for trial, begun in (("t0", now_ms), ("t1", now_ms - 3600_000), ("t2", None)):
        tags, _, _ = em.trial_record(rows[trial], params=[], metrics=[])
        client.create_run(exp_id, tags={**tags, **({"orchestrator.writing": str(begun)} if begun else {})})
    r = board.export(f"mlflow:{uri}")
    assert (r["created"], r["in_progress"]) == (3 - 1, 1), r
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    trials = runs[runs["tags.orchestrator.kind"] == "trial"]
    assert sorted(trials["tags.trial_id"]) == ["t0", "t1", "t2"]          # one run each
    done = trials.set_index("tags.trial_id")["tags.orchestrator.complete"]
    assert done["t1"] == "1" and done["t2"] == "1" and done.isna()["t0"]  # t0 still its writer's


@pytest.mark.slow
def test_a_real_sweep_logged_live_then_exported_to_mlflow_and_tensorboard(ray_session, tmp_path):
    import mlflow

    from orchestrator.sweep.tuner import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_config(embedded(tmp_path / "runs", name="live", train={"epochs": 2},
                                search={"space": {"train.head_lr": {"choice": [3e-3, 1e-3]}}, "searcher": "grid",
                                        "scheduler": {"type": "none"}, "mlflow": uri}))
    s = tune(cfg, out=lambda line: None)
    mlflow.set_tracking_uri(uri)
    live = mlflow.search_runs(experiment_names=["live"])
    assert len(live) == 2 and set(live["tags.sweep_id"]) == {s["sweep_id"]}          # Ray's MLflowLoggerCallback
    assert live["metrics.left_accuracy"].notna().all()
    # the values each trial trained with, not Tune's grid point index (the runs' only param before)
    assert sorted(live["params.train.head_lr"].astype(float)) == [1e-3, 3e-3] and "params.grid_point" not in live
    board = Leaderboard(str(tmp_path / "runs"))
    assert board.export(f"mlflow:{uri}", experiment="live")["created"] == 2
    runs = mlflow.search_runs(experiment_names=["live"])
    trials = runs[runs["tags.orchestrator.kind"] == "trial"]
    assert len(trials) == 2 and sorted(trials["params.head_lr"].astype(float)) == [1e-3, 3e-3]
    assert set(trials["tags.row_id"]) == set(board.table().column("row_id").to_pylist())
    curve = mlflow.MlflowClient(uri).get_metric_history(trials.iloc[0]["run_id"], "left_accuracy")
    assert sorted(m.step for m in curve) == [1, 2]
    assert board.export(f"mlflow:{uri}", experiment="live")["created"] == 0
    assert len(mlflow.search_runs(experiment_names=["live"])) == 2 + 1 + 2               # live, sweep, trials
    board.export(f"tensorboard:{tmp_path / 'tb'}", experiment="live")
    experiment, _ = hparams_of(tmp_path / "tb" / "live")
    assert "head_lr" in {h.name for h in experiment.hparam_infos}
    sessions = [p.parent for p in (tmp_path / "tb" / "live").rglob("events.out.tfevents*")
                if p.parent != tmp_path / "tb" / "live"]
    assert len(sessions) == 2
    for run in sessions:
        _, start = hparams_of(run)
        assert start.hparams["head_lr"].number_value in (pytest.approx(1e-3), pytest.approx(3e-3))
        assert [e.step for e in read_events(run).Scalars("left_accuracy")] == [1, 2]


def test_a_diverged_or_failed_trial_is_a_failed_mlflow_run_whose_objective_is_not_its_last_good_epoch(tmp_path):
    """A diverged trial's row has no objective, but its MLflow run was FINISHED, and MLflow shows a run's latest
    metric value: the epoch before it diverged (0.95). Sorted by objective, it came first, above a completed 0.80.
    Now it is FAILED and its metrics end on NaN at the epoch it did not finish (MLflow sorts NaN last)."""
    import mlflow

    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 3}))

    def epoch(e, v, **more):
        return {"epoch": e, "objective": v, "mean_score": v, "left_accuracy": v, "right_accuracy": v,
                "train_loss": 0.3, "config_hash": cfg.config_hash(), **more}

    nan = float("nan")
    board = Leaderboard(str(tmp_path / "runs"))
    board.append([row(cfg, [epoch(1, .70), epoch(2, .75), epoch(3, .80)], trial_id="ok", sweep_id="s1"),
                  row(cfg, [epoch(1, .90), epoch(2, .95), {**epoch(3, nan), "train_loss": nan, "status": "diverged"}],
                      trial_id="div", sweep_id="s1"),
                  row(cfg, [epoch(1, .93)], trial_id="bad", sweep_id="s1", error="worker lost")])
    assert [r["status"] for r in board.table().to_pylist()] == ["completed", "diverged", "failed"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    board.export(f"mlflow:{uri}", experiment=None, sweep_id=None, kind="trial")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[cfg.name], order_by=["metrics.objective DESC"])
    trials = runs[runs["tags.mlflow.runName"] != "s1"]
    assert trials["tags.mlflow.runName"].tolist()[0] == "ok", trials[["tags.mlflow.runName", "metrics.objective"]]
    status = dict(zip(trials["tags.mlflow.runName"], trials["status"]))
    assert status == {"ok": "FINISHED", "div": "FAILED", "bad": "FAILED"}, status
    for name, diverged_at in (("div", 3), ("bad", 2)):
        run_id = trials[trials["tags.mlflow.runName"] == name]["run_id"].iloc[0]
        curve = mlflow.MlflowClient(uri).get_metric_history(run_id, "objective")
        assert [m.step for m in curve][-1] == diverged_at and math.isnan(curve[-1].value), (name, curve)


def test_an_mlflow_uri_mlflow_refuses_is_one_line(tmp_path, capsys):
    """`export --to mlflow:foo` (a file-store path MLflow 3 refuses) came out as a 56-line traceback, exit 1: the
    client was made outside the export's error handling. Found by a helper's audit."""
    board_with_trials(tmp_path)
    r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--to", f"mlflow:{tmp_path / 'store'}")
    assert r.code == 2 and r.err.startswith("error: ") and "\n" not in r.err and "Traceback" not in r.err, r.err


def test_mlflow_export_of_rows_without_a_sweep_and_of_a_rerun_keeps_one_run_each(tmp_path):
    """Rows without a sweep id got a new empty parent run on every export (looked up as None, tagged ""); a rerun
    that supersedes a failed row left the failed run beside its own in MLflow, where every query shows the rerun
    only. Found by a helper's audit."""
    import mlflow

    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 2}))
    board = Leaderboard(str(tmp_path / "runs"))
    failed = row(cfg, HISTORY[:1], trial_id="x", sweep_id=None, error="worker died")
    board.append([failed])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    board.export(f"mlflow:{uri}")
    board.append([{**row(cfg, HISTORY, trial_id="x", sweep_id=None), "supersedes": failed["row_id"]}])
    board.export(f"mlflow:{uri}")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    assert (runs["tags.orchestrator.kind"] == "sweep").sum() == 1
    trials = runs[runs["tags.orchestrator.kind"] == "trial"]
    assert list(trials["tags.status"]) == ["completed"], list(trials["tags.status"])


def test_export_takes_every_kind_the_queries_take(tmp_path, capsys):
    board_with_trials(tmp_path)
    r = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--kind", "ablation",
                "--to", f"csv:{tmp_path / 'x.csv'}")
    assert r.code == 2 and "no ablation rows" in r.err, r.err   # the kind is taken: none of that kind to export
    assert not (tmp_path / "x.csv").exists()


def test_an_mlflow_experiment_someone_deleted_is_not_brought_back(tmp_path):
    """The export restored a deleted MLflow experiment of the experiment's name, whoever deleted it, and wrote into
    it. It is refused in one line now. Found by a helper's audit."""
    import mlflow

    from orchestrator.errors import ConfigError

    board = board_with_trials(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.delete_experiment(client.create_experiment("t"))
    with pytest.raises(ConfigError, match="MLflow experiment 't' is deleted"):
        board.export(f"mlflow:{uri}")
    assert client.get_experiment_by_name("t").lifecycle_stage == "deleted"


def test_a_sweep_logging_live_to_a_deleted_mlflow_experiment_stops_before_ray(tmp_path, capsys, no_ray):
    """search.mlflow into an MLflow experiment someone deleted: MLflow refused the runs mid-sweep. Said before anything
    starts, as the export says it. Found by a helper's review."""
    import mlflow

    from factories import experiment, write_yaml

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    client.delete_experiment(client.create_experiment("t"))
    capsys.readouterr()                       # MLflow's own lines as the test made its store
    cfg = experiment(tmp_path, "builtin:multidigits/train", search={
        "num_samples": 1, "space": {"train.head_lr": {"choice": [1e-3]}}, "mlflow": uri})
    r = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg))
    assert r.code == 2 and "MLflow experiment 't' is deleted" in r.err and len(r.err.splitlines()) == 1, r.err


@pytest.mark.slow
def test_live_mlflow_params_are_the_values_a_trial_trains_with(ray_session, tmp_path):
    """search.mlflow logged Tune's raw trial config: every branch's draws (a dwa temperature for an uncertainty
    trial), a simplex's uniforms for its weights, a grid's point index. Real Tune and MLflow (SQLite), a stand-in
    trainable (no training). Found by a helper's audit."""
    import mlflow
    from ray import tune

    from orchestrator.config.sampling import materialize, param_space
    from orchestrator.sweep.loggers import live_loggers

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = {"train.loss_weighting": {"choice": [
        {"static": {"train.loss_weights": {"simplex": {"concentration": 8.0}}}}, "uncertainty",
        {"dwa": {"train.dwa_temperature": {"uniform": [1.0, 4.0]}}}]}}
    mlflow.set_tracking_uri(uri)
    for searcher in ("random", "grid"):
        cfg = parse_config(embedded(tmp_path / "runs", name=f"m-{searcher}", search={
            "searcher": searcher, "num_samples": 4 if searcher == "random" else 1, "space": space, "mlflow": uri}))
        seen = {}

        def trainable(config):
            tune.report({"epoch": 1, "objective": 0.5})

        class Keep(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                seen[str(trial)] = materialize(cfg.search, trial.config, list(cfg.tasks))

        tune.Tuner(trainable, param_space=param_space(cfg.search, list(cfg.tasks)),
                   tune_config=tune.TuneConfig(num_samples=cfg.search.samples if searcher == "random" else 1),
                   run_config=tune.RunConfig(name=searcher, storage_path=str(tmp_path / "tune"), verbose=0,
                                             callbacks=[Keep(), *live_loggers(cfg, "s1")])).fit()
        runs = mlflow.search_runs(experiment_names=[cfg.name])
        assert len(runs) == len(seen) >= 3, runs
        for _, r in runs.iterrows():
            params = {k[len("params."):]: v for k, v in r.items() if k.startswith("params.") and isinstance(v, str)}
            want = {}
            for path, value in seen[r["tags.trial_name"]].items():
                want.update({f"{path}.{t}": str(w) for t, w in value.items()} if isinstance(value, dict)
                            else {path: str(value)})
            assert params == want, (searcher, params, want)
