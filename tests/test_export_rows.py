"""What an export says of each row: the same facts the leaderboard's queries use (found by a helper's audit of
`export`, each test seen failing before its fix). Real MLflow (SQLite) and TensorBoard's own event reader."""
import math

import pytest

from factories import embedded, read_events, row, run_cli
from orchestrator.config import parse_config
from orchestrator.leaderboard import Leaderboard


def _epoch(cfg, e, v, **more):
    return {"epoch": e, "objective": v, "mean_score": v, "left_accuracy": v, "right_accuracy": v, "left_loss": 0.5,
            "train_loss": 0.3, "config_hash": cfg.config_hash(), **more}


def _board(tmp_path):
    """ok: completed; div: diverged at epoch 3, where its left_loss was still finite; copy: ok's work again."""
    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 3}))
    nan = float("nan")
    ok = row(cfg, [_epoch(cfg, 1, .70), _epoch(cfg, 2, .75), _epoch(cfg, 3, .80)], trial_id="ok", sweep_id="s1")
    div = row(cfg, [_epoch(cfg, 1, .90), _epoch(cfg, 2, .95),
                    {**_epoch(cfg, 3, nan), "left_accuracy": nan, "right_accuracy": nan, "status": "diverged"}],
              trial_id="div", sweep_id="s1")
    copy = {**ok, "row_id": "copy-row", "trial_id": "again", "sweep_id": "s2", "duplicate_of": ok["row_id"],
            "reused_from": "s1/ok"}
    board = Leaderboard(str(tmp_path / "runs"))
    board.append([ok, div, copy])
    return cfg, board, ok


def test_tensorboard_shows_a_diverged_trials_curves_ending_on_nan_not_its_last_good_epoch(tmp_path):
    cfg, board, _ = _board(tmp_path)
    board.export(f"tensorboard:{tmp_path / 'tb'}", kind="trial")
    acc = read_events(tmp_path / "tb" / cfg.name / "s1" / "div")
    last = acc.Scalars("objective")[-1]
    assert last.step == 3 and math.isnan(last.value), acc.Scalars("objective")


def test_mlflow_marks_a_diverged_trial_at_the_epoch_it_diverged_even_where_a_loss_was_finite(tmp_path):
    """The NaN marker went one step past the largest step of any curve: epoch 4 of a 3-epoch trial, because its
    left_loss was finite at epoch 3."""
    import mlflow

    cfg, board, _ = _board(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    board.export(f"mlflow:{uri}", kind="trial")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[cfg.name])
    run_id = runs[runs["tags.mlflow.runName"] == "div"]["run_id"].iloc[0]
    client = mlflow.MlflowClient(uri)
    curve = client.get_metric_history(run_id, "objective")
    assert [m.step for m in curve] == [1, 2, 3] and math.isnan(curve[-1].value), curve
    assert max(m.step for m in client.get_metric_history(run_id, "left_loss")) == 3


def test_exports_say_which_rows_repeat_work_another_row_holds(tmp_path):
    """A sweep's reuse of completed work (duplicate_of, reused_from) was a second identical FINISHED run in MLflow
    and a second session in TensorBoard, with nothing telling it apart: comparisons there counted the work twice."""
    import mlflow

    cfg, board, ok = _board(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    board.export(f"mlflow:{uri}", kind="trial")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[cfg.name])
    again = runs[runs["tags.mlflow.runName"] == "again"].iloc[0]
    assert again["tags.duplicate_of"] == ok["row_id"] and again["tags.reused_from"] == "s1/ok"
    board.export(f"tensorboard:{tmp_path / 'tb'}", kind="trial")
    session = read_events(tmp_path / "tb" / cfg.name / "s2" / "again")
    from tensorboard.plugins.hparams import metadata

    start = metadata.parse_session_start_info_plugin_data(
        session.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
    assert start.hparams["duplicate_of"].string_value == ok["row_id"]


def test_exporting_a_sweep_id_that_matches_nothing_is_refused_and_writes_nothing(tmp_path, capsys):
    """`export --sweep nope --to csv:x.csv` said "exported 0 rows", exit 0, and replaced x.csv with a header."""
    _, board, _ = _board(tmp_path)
    out = tmp_path / "x.csv"
    out.write_text("kept\n")
    code, _, err = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--sweep", "nope", "--to",
                           f"csv:{out}")
    assert code == 2 and "\n" not in err and "nope" in err and "s1" in err, err
    assert out.read_text() == "kept\n" and not (tmp_path / "x-history.csv").exists()


def test_an_export_to_a_new_mlflow_database_prints_no_log_lines(tmp_path, capfd):
    """MLflow logged "INFO mlflow.store.db.utils: Creating initial MLflow database tables..." (and alembic's INFO
    lines) on stderr: the client was made outside the quieting that the export itself runs in."""
    _, board, _ = _board(tmp_path)
    capfd.readouterr()
    board.export(f"mlflow:sqlite:///{tmp_path / 'fresh.db'}", kind="trial")
    err = capfd.readouterr().err
    assert "INFO" not in err, err


@pytest.mark.parametrize("command", [["leaderboard"], ["pareto", "-m", "left_accuracy,right_accuracy"]])
def test_a_query_of_a_sweep_id_that_matches_nothing_is_refused(tmp_path, capsys, command):
    """`leaderboard --sweep nope` said "no matching rows", exit 0, as an -e typo no longer does."""
    _board(tmp_path)
    code, _, err = run_cli(capsys, *command, "--storage", str(tmp_path / "runs"), "--sweep", "nope")
    assert code == 2 and "\n" not in err and "nope" in err and "s1" in err, err
    # beside a sweep that matches: s1's rows were listed without a word about the typo (found reviewing this change)
    code, _, err = run_cli(capsys, *command, "--storage", str(tmp_path / "runs"), "--sweep", "s1", "--sweep", "nope")
    assert code == 2 and "nope" in err, err


def test_a_sweeps_check_of_a_new_mlflow_database_prints_no_log_lines(tmp_path, capfd):
    """Live logging's check before a sweep made its client outside the quieting: MLflow's INFO lines on stderr."""
    from orchestrator.leaderboard.export_mlflow import check_experiment

    capfd.readouterr()
    check_experiment(f"sqlite:///{tmp_path / 'live.db'}", "x")
    assert "INFO" not in capfd.readouterr().err


def test_a_python_export_of_an_experiment_it_does_not_hold_is_refused_and_writes_nothing(tmp_path):
    """`Leaderboard.export(..., experiment="typo")` wrote a header-only file and returned rows 0; with a sweep id too,
    it blamed the sweep ("no sweep 's1' of experiment typo ... its sweeps: none"). The CLI checked -e itself before
    calling it (found by a review)."""
    from orchestrator.errors import ConfigError

    _, board, _ = _board(tmp_path)
    out = tmp_path / "x.csv"
    for sweep in (None, "s1"):
        with pytest.raises(ConfigError, match="no experiment 'typo' in .* \\(experiments: t\\)"):
            board.export(f"csv:{out}", experiment="typo", sweep_id=sweep)
    assert not out.exists()
    with pytest.raises(ConfigError, match="no leaderboard at"):
        Leaderboard(str(tmp_path / "elsewhere")).export(f"csv:{out}")
    assert not out.exists()


def test_an_mlflow_export_after_two_reruns_keeps_only_the_trials_current_run(tmp_path):
    """Trial x failed (exported), was rerun and failed again, then completed, both before the next export: the
    export deleted the run of the row the completed one names (never exported) and left the first FAILED run beside
    the FINISHED one, where every query shows one row (found by a helper's audit of merge and export)."""
    import mlflow

    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 3}))
    board = Leaderboard(str(tmp_path / "runs"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    x = row(cfg, [_epoch(cfg, 1, .5)], trial_id="x", sweep_id="s1", error="boom")
    board.append([x])
    board.export(f"mlflow:{uri}")
    y = {**row(cfg, [_epoch(cfg, 1, .5)], trial_id="x", sweep_id="s1", error="boom"), "supersedes": x["row_id"]}
    board.append([y])
    board.append([{**row(cfg, [_epoch(cfg, 1, .8)], trial_id="x", sweep_id="s1"), "supersedes": y["row_id"]}])
    board.export(f"mlflow:{uri}")
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id], filter_string="tags.trial_id = 'x'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"], [r.info.status for r in runs]


def test_an_export_that_matches_no_row_or_fails_halfway_leaves_the_last_export_as_it_was(tmp_path, capsys):
    """A helper's audit: `export --kind confirm` before any confirm run replaced the last export with a header, exit 0;
    and an export whose history file could not be written (a folder of that name) had already replaced the main
    file (exit 2: the pair no longer matched). Both leave what was there."""
    from orchestrator.errors import ConfigError

    _, board, _ = _board(tmp_path)
    out = tmp_path / "x.csv"
    out.write_text("kept\n")
    code, _, err = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--kind", "confirm", "--to",
                           f"csv:{out}")
    assert code == 2 and "\n" not in err and "no confirm rows" in err and "nothing exported" in err, err
    assert out.read_text() == "kept\n" and not (tmp_path / "x-history.csv").exists()
    for target in ("mlflow:sqlite:///" + str(tmp_path / "m.db"), f"tensorboard:{tmp_path / 'tb'}"):
        with pytest.raises(ConfigError, match="no baseline rows in .*: nothing exported"):
            board.export(target, kind="baseline")
    (tmp_path / "x-history.csv").mkdir()
    code, _, err = run_cli(capsys, "export", "--storage", str(tmp_path / "runs"), "--to", f"csv:{out}")
    assert code == 2 and "x-history.csv" in err, err
    assert out.read_text() == "kept\n"
