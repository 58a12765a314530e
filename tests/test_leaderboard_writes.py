"""Writing the leaderboard: appends retried then raised, concurrent writers, corrupt files skipped with one warning,
and every documented reader (pyarrow, pandas, DuckDB) reading it."""
import contextlib
import json
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from orchestrator.leaderboard import Leaderboard

from factories import experiment, minimized_rows, row


def test_a_corrupt_leaderboard_file_is_skipped_with_one_warning(tmp_path, capsys):
    board = Leaderboard(str(tmp_path))
    board.append(minimized_rows())
    (tmp_path / "leaderboard" / "20240101T000000-deadbeef.parquet").write_bytes(b"PAR1 truncated")
    assert board.table().num_rows == 2
    assert board.best()["trial_id"] == "good"
    err = capsys.readouterr().err
    assert err.count("skipping unreadable leaderboard file") == 1, err


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


# -- the sweep's callback: rows are never lost, relabelled, or left stale (driven directly, as Tune drives it) -----
def sweep_callback(tmp_path, lines, **kw):
    from types import SimpleNamespace

    from factories import embedded
    from orchestrator.config import parse_config
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback
    from orchestrator.sweep.provenance import provenance

    cfg = parse_config(embedded(tmp_path / "runs", train={"epochs": 2}))
    context = RowContext("s1", 5, code=provenance())                 # as the sweep makes it (tuner, runner)
    callback = SweepCallback(cfg, context=context, configs=[cfg], out=lines.append, **kw)

    def trial(trial_id):
        return SimpleNamespace(trial_id=trial_id, config={"index": 0}, status="RUNNING", error_file=None)

    def ended(trial_id, *, error=False):
        t = trial(trial_id)
        callback.on_trial_start(0, [t], t)
        for epoch in (1, 2):
            callback.on_trial_result(0, [t], t, {"epoch": epoch, "objective": 0.5 + epoch / 10, "status": "running"})
        (callback.on_trial_error if error else callback.on_trial_complete)(0, [t], t)
    return callback, ended


def test_rows_storage_refuses_wait_in_the_spool_and_are_never_relabelled(tmp_path, monkeypatch):
    """Storage refuses writes (a file stands where the leaderboard folder goes): the hook doesn't raise (Tune would
    call on_trial_error and store a completed trial as failed); rows wait in the local spool and are written when a
    later trial ends and storage works again."""
    from orchestrator import layout, storage

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    lines = []
    callback, ended = sweep_callback(tmp_path, lines)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "leaderboard").write_text("not a folder")             # storage refuses every write
    ended("a")
    ended("b")
    spool = layout.spool_file(str(tmp_path / "runs"), "t", "s1")
    assert callback.spool == spool and os.path.exists(spool), lines
    import pyarrow.parquet as pq

    spooled = pq.read_table(spool).to_pylist()
    assert [(r["trial_id"], r["status"]) for r in spooled] == [("a", "completed"), ("b", "completed")]
    assert any("could not write 2 row(s)" in ln and spool in ln for ln in lines), lines
    (tmp_path / "runs" / "leaderboard").unlink()                                # storage is back
    ended("c")
    rows = Leaderboard(str(tmp_path / "runs")).table().to_pylist()
    assert sorted((r["trial_id"], r["status"]) for r in rows) == [("a", "completed"), ("b", "completed"),
                                                                 ("c", "completed")]
    assert not os.path.exists(spool) and callback.pending == []
    callback.close()                                                            # nothing left: no error


def test_rows_still_unwritten_end_the_sweep_with_the_spool_named_and_resume_appends_them(tmp_path, monkeypatch):
    from orchestrator import storage
    from orchestrator.errors import LeaderboardWriteError
    from orchestrator.sweep.resume import recorded_rows

    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    lines = []
    callback, ended = sweep_callback(tmp_path, lines)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "leaderboard").write_text("not a folder")
    ended("a")
    with pytest.raises(LeaderboardWriteError, match=f"1 leaderboard row.*kept in {callback.spool}.*--resume") as info:
        callback.close()
    assert info.value.exit_code == 1 and "\n" not in str(info.value)
    board = Leaderboard(str(tmp_path / "runs"))
    with pytest.raises(LeaderboardWriteError, match="still cannot be written"):   # storage still down: kept
        recorded_rows(board, callback.cfg, "s1", out=lines.append)
    (tmp_path / "runs" / "leaderboard").unlink()
    written, stale = recorded_rows(board, callback.cfg, "s1", out=lines.append)      # what `tune --resume` does
    assert written == {"a"} and stale == {} and not os.path.exists(callback.spool)
    assert [(r["trial_id"], r["status"]) for r in board.table().to_pylist()] == [("a", "completed")]


@pytest.mark.parametrize("kept_by", ["this code", "older code"])
def test_a_resumed_sweep_appends_its_own_spool_not_another_running_sweeps(tmp_path, kept_by):
    """`tune --resume` of sweep s2 appended and deleted every spool file of the experiment, s1's too, while s1 may
    still run and rewrite its spool: a row s1 spooled between the read and the delete was lost. A resume takes its
    own sweep's spool and those of sweeps and runs no live driver holds."""
    from orchestrator import layout
    from orchestrator.leaderboard.spool import keep
    from orchestrator.sweep.resume import recorded_rows

    callback, _ = sweep_callback(tmp_path, [])
    board, runs = Leaderboard(str(tmp_path / "runs")), str(tmp_path / "runs")
    others = layout.spool_file(runs, callback.cfg.name, "s1")
    mine = layout.spool_file(runs, callback.cfg.name, "s2")
    keep(others, [row(callback.cfg, [{"epoch": 1, "objective": 0.5}], trial_id="theirs", sweep_id="s1")])
    keep(mine, [row(callback.cfg, [{"epoch": 1, "objective": 0.6}], trial_id="mine", sweep_id="s2")])
    from orchestrator.training import lease

    # s1 still runs; a driver of older code held its lease in the sweep's folder itself
    held = lease.acquire(layout.sweep_own(runs, callback.cfg.name, "s1") if kept_by == "this code" else
                         layout.sweep_dir(runs, callback.cfg.name, "s1"), what="sweep s1")
    written, _ = recorded_rows(board, callback.cfg, "s2", out=lambda line: None)
    assert written == {"mine"} and os.path.exists(others) and not os.path.exists(mine)
    assert [r["trial_id"] for r in board.table().to_pylist()] == ["mine"]
    held.release()
    # rows of runs that have no resume of their own (baselines, confirm, ablate) and of sweeps no longer running:
    # any resume of the experiment appends them
    done = layout.spool_file(runs, callback.cfg.name, "confirm-c1")
    keep(done, [row(callback.cfg, [{"epoch": 1, "objective": 0.7}], trial_id="confirmed", sweep_id="confirm-c1",
                    kind="confirm")])
    recorded_rows(board, callback.cfg, "s2", out=lambda line: None)
    assert not os.path.exists(others) and not os.path.exists(done)
    assert sorted(r["trial_id"] for r in board.table(kind=None).to_pylist()) == ["confirmed", "mine", "theirs"]


def test_a_resumed_sweep_reruns_an_errored_trial_and_its_row_supersedes_the_failed_one(tmp_path):
    from orchestrator.sweep.resume import recorded_rows

    lines = []
    first, ended = sweep_callback(tmp_path, lines)
    ended("ok")
    ended("flaky", error=True)                                  # the first run: a failed row
    board = Leaderboard(str(tmp_path / "runs"))
    assert board.table(where="trial_id == 'flaky'").column("status").to_pylist() == ["failed"]
    written, stale = recorded_rows(board, first.cfg, "s1")       # `tune --resume`: Tune reruns errored trials
    assert written == {"ok"} and list(stale) == ["flaky"]
    second, ended = sweep_callback(tmp_path, lines, written=written, stale=stale)
    ended("ok")                                                  # not rerun by Tune, but even so: written once
    ended("flaky")
    rows = board.table().to_pylist()
    assert sorted((r["trial_id"], r["status"]) for r in rows) == [("flaky", "completed"), ("ok", "completed")]
    assert board.best(where="trial_id == 'flaky'")["supersedes"] == stale["flaky"]
    assert board.table(kind=None, where="status == 'failed'").num_rows == 0   # the stale row is gone from every view
    assert len(board.table(columns=["trial_id"], kind=None)) == 2


# -- reads: a transient storage error is retried, only files that fail to parse are skipped -----------------------
class Flaky(pafs.FileSystemHandler):
    """A stand-in for S3 answering 503 now and then: a local filesystem whose listing fails once and whose reads of
    each file fail ``failures`` times (``forever``: these file names always fail) before they work."""

    def __init__(self, failures: int = 2, forever: tuple = ()):
        self.local, self.failures, self.forever, self.errors = pafs.LocalFileSystem(), failures, forever, []
        self.listed = False

    def fail(self, path: str, what: str) -> None:
        name = path.rsplit("/", 1)[-1]
        if name in self.forever or sum(e == (what, name) for e in self.errors) < self.failures:
            self.errors.append((what, name))
            raise OSError(f"When reading information for key '{name}': AWS Error SLOW_DOWN during HeadObject: "
                          f"Please reduce your request rate (503)")

    # pyarrow.fs.FileSystemHandler
    def get_type_name(self):
        return "flaky"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        if not self.listed:
            self.listed = True
            raise OSError("AWS Error SERVICE_UNAVAILABLE during ListObjectsV2 operation: Service Unavailable (503)")
        return self.local.get_file_info(selector)

    def open_input_file(self, path):
        self.fail(path, "read")
        return self.local.open_input_file(path)

    def open_input_stream(self, path):
        self.fail(path, "read")
        return self.local.open_input_stream(path)

    # writes, moves, deletes: the local filesystem's
    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not here")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.local.open_append_stream(path)


def flaky_board(tmp_path, monkeypatch, **kw):
    from orchestrator import storage

    Leaderboard(str(tmp_path)).append(minimized_rows()[:1])
    Leaderboard(str(tmp_path)).append(minimized_rows()[1:])
    handler = Flaky(**kw)
    fs = pafs.PyFileSystem(handler)
    real = storage.filesystem
    monkeypatch.setattr(storage, "filesystem", lambda location: (fs, real(location)[1]))
    monkeypatch.setattr("time.sleep", lambda s: None)
    return Leaderboard(str(tmp_path)), handler


def test_a_transient_read_error_is_retried_not_taken_for_a_corrupt_file(tmp_path, monkeypatch, capsys):
    board, flaky = flaky_board(tmp_path, monkeypatch)
    assert sorted(board.table().column("trial_id").to_pylist()) == ["bad", "good"]
    assert board.best()["trial_id"] == "good" and len(board.top(5)) == 2
    assert flaky.listed and len(flaky.errors) >= 4, flaky.errors        # every file failed twice, then was read
    assert "skipping" not in capsys.readouterr().err


def test_a_read_error_that_persists_fails_the_query_in_one_line(tmp_path, monkeypatch, capsys):
    from factories import run_cli

    board, flaky = flaky_board(tmp_path, monkeypatch, failures=0)
    flaky.forever = (sorted(os.listdir(tmp_path / "leaderboard"))[0],)
    with pytest.raises(OSError, match=f"cannot read leaderboard file .*{flaky.forever[0]}.*503.*try again") as info:
        board.table()
    assert "\n" not in str(info.value)
    code, _, err = run_cli(capsys, "best", "--storage", str(tmp_path), "-o", str(tmp_path / "best.yaml"))
    assert code == 1 and err.startswith("error: cannot read leaderboard file") and "\n" not in err, err
    assert not (tmp_path / "best.yaml").exists()                 # no answer from the files it could read


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    """A group-shared leaderboard (umask 002) stays readable by the group: files are not left at mkstemp's 0600."""
    from orchestrator import storage

    old = os.umask(umask)
    try:
        board = Leaderboard(str(tmp_path))
        board.append(minimized_rows())
        storage.atomic_write(str(tmp_path / "sweeps" / "sweep.json"), b"{}")
    finally:
        os.umask(old)
    files = [*(tmp_path / "leaderboard").glob("*.parquet"), tmp_path / "sweeps" / "sweep.json"]
    assert len(files) == 2 and {oct(os.stat(f).st_mode & 0o777) for f in files} == {oct(mode)}


def test_rows_record_the_code_that_made_them(tmp_path):
    """Next to the package versions: the project's version and the git commit of the code (this checkout here),
    null where the code is not a git checkout (an installed wheel)."""
    from importlib import metadata

    import orchestrator
    from orchestrator.sweep.provenance import provenance

    package = os.path.dirname(orchestrator.__file__)
    head = subprocess.run(["git", "-C", package, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    lines = []
    callback, ended = sweep_callback(tmp_path, lines)
    ended("a")
    (row,) = Leaderboard(str(tmp_path / "runs")).table().to_pylist()
    assert row["code_version"] == metadata.version("orchestrator") and len(head) == 40
    assert row["git_commit"] in (head, head + "-dirty"), (row["git_commit"], head)
    assert provenance(str(tmp_path)) == {"code_version": metadata.version("orchestrator"), "git_commit": None}


def test_a_callback_error_is_one_line_once_and_never_raised(tmp_path):
    from types import SimpleNamespace

    lines = []
    callback, ended = sweep_callback(tmp_path, lines)
    broken = SimpleNamespace(trial_id="x", config={"index": 7}, status="RUNNING", error_file=None)   # no such config
    for _ in range(3):
        callback.on_trial_start(0, [broken], broken)
    callback.on_trial_complete(0, [broken], broken)
    errors = [ln for ln in lines if "sweep callback error" in ln]
    assert len(errors) == 1 and errors[0].startswith("[x] ") and "\n" not in errors[0], lines   # once, same line
    with pytest.raises(Exception, match="trial\\(s\\) x could not be made"):
        callback.close()


def test_per_epoch_lines_go_to_the_log_only_trial_starts_and_ends_to_the_console(tmp_path, capsys):
    """A sweep's console is one line per trial start and end; its per-epoch lines are in the full log (and on the
    console with --verbose). Baseline runs are summed up by their caller, so theirs are in the log only too."""
    from orchestrator.console import console
    from orchestrator.leaderboard.rows import RowContext

    log = tmp_path / "logs" / "tune.log"
    with console(str(log)) as out:
        callback, ended = sweep_callback(tmp_path, [])
        callback.out = out
        ended("a")
        callback.context = RowContext("s1", 5, kind="baseline", code=callback.context.code)
        ended("b")
    shown = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in shown] == ["[a] started", "[a] completed"], shown
    logged = log.read_text()
    assert "[a] epoch 1: objective 0.6000" in logged and "[b] started" in logged and "[b] completed" in logged
    with console(str(log), verbose=True) as out:
        out.detail("one epoch line")
    assert "one epoch line" in capsys.readouterr().out


def test_a_reused_trial_is_its_sweeps_row_and_counts_once_in_the_experiment(tmp_path):
    """A trial whose config and seed match a completed row is not rerun (runner.completed_row): Tune gets that row's
    epochs. The sweep still has a row for it, pointing at the one it reused: `best --sweep` finds it, and the
    experiment's rankings count the work once."""
    from factories import row
    from orchestrator.leaderboard import Leaderboard

    lines = []
    callback, _ = sweep_callback(tmp_path, lines)
    board = Leaderboard(callback.cfg.storage)
    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    old = row(callback.cfg, history, trial_id="old", sweep_id="s0")
    board.append([old, row(callback.cfg.with_values({"train.seed": 3}), history[:1], trial_id="other", sweep_id="s1")])
    from types import SimpleNamespace

    t = SimpleNamespace(trial_id="r", config={"index": 0}, status="RUNNING", error_file=None)
    callback.on_trial_start(0, [t], t)
    for h in history:
        callback.on_trial_result(0, [t], t, {**h, "reused_row": old["row_id"], "reused_from": "s0/old",
                                             "reused_checkpoint": old["checkpoint"], "reused_history": history})
    callback.on_trial_complete(0, [t], t)
    mine = board.best(sweep_id="s1")
    assert mine["trial_id"] == "r" and mine["reused_from"] == "s0/old" and mine["objective"] == old["objective"]
    assert board.top(10).column("trial_id").to_pylist() == ["old", "other"]     # the work once
    assert sum("not rerun" in ln for ln in lines) == 1 and callback.reused == [old["row_id"]]


def test_confirm_ablate_and_baseline_runs_hold_their_sweeps_lease_while_they_train(tmp_path, monkeypatch):
    """confirm, ablate and baselines (run_configs) took no lease on their sweep folder, so a `tune --resume` of the
    experiment saw their spool as no live driver's, appended it and deleted it while they still rewrote it. Their
    Tune run now holds the lease; it is gone when they end. (Tune's fit is replaced by a probe that reads the lease
    mid-run, and the concurrency plan, which asks Ray, by a fixed one: this is about the driver's folder, and a real
    fit is a slow test's minute.)"""
    from orchestrator import layout
    from orchestrator.config import parse_config
    from orchestrator.sweep import capacity, runner
    from orchestrator.training import lease
    from orchestrator.training.session import Session, check

    p = check(parse_config(experiment(tmp_path, "builtin:multidigits/train")))
    seen = {}

    class Probe:
        def fit(self):
            seen["holder"] = lease.read(layout.sweep_own(p.cfg.storage, p.cfg.name, "confirm-x"))

    monkeypatch.setattr(runner, "make_tuner", lambda cfg, spec, **kw: Probe())
    monkeypatch.setattr(capacity, "plan_concurrency", lambda cfg, **kw: capacity.TrialsPlan(1, spares=False))
    runner.run_configs(Session(p, {}, None), [p.cfg], kind="confirm", sweep_id="confirm-x", out=lambda line: None)
    assert seen["holder"] is not None and seen["holder"]["pid"] == os.getpid(), seen
    assert lease.read(layout.sweep_own(p.cfg.storage, p.cfg.name, "confirm-x")) is None


def test_confirm_and_ablation_runs_hand_their_workers_the_baselines_their_objective_needs(tmp_path, monkeypatch):
    """Under objective delta_m the workers compute Δm% from the baselines they are handed. run_configs gave its rows
    the baselines but its workers none: every confirm and ablation run's objective was NaN, `confirm` ranked nothing
    and `ablate`'s "What mattered" was empty, exit 0. And `confirm` handed none at all: its rows had no Δm% either.
    Each run gets the baselines its original trial's sweep measured against. (Tune's fit is a probe that reads what
    the trials are handed; the workers' use of it is the sweep's, tested end to end.) Found by a helper's audit."""
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.leaderboard.leaderboard import Leaderboard
    from orchestrator.sweep import capacity, confirm, runner
    from orchestrator.training import session as sessions

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", objective={"metric": "delta_m"}))
    p = sessions.check(cfg)
    handed = []

    class Probe:
        def __init__(self, spec):
            self.spec = spec

        def fit(self):
            handed.append(self.spec.plan.inputs.baselines)

    monkeypatch.setattr(runner, "make_tuner", lambda cfg, spec, **kw: Probe(spec))
    monkeypatch.setattr(capacity, "plan_concurrency", lambda cfg, **kw: capacity.TrialsPlan(1, spares=False))
    baselines = {"left": 0.9, "right": 0.8, "sum": 0.5}
    runner.run_configs(sessions.Session(p, {}, None), [cfg], kind="ablation", sweep_id="ablation-x",
                       out=lambda line: None, baselines=baselines)
    assert handed == [baselines]

    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, "s1"), json.dumps({"baselines": baselines}).encode())
    Leaderboard(cfg.storage).append([{"experiment": cfg.name, "sweep_id": "s1", "kind": "trial", "trial_id": "t1",
                                      "status": "completed", "objective": 3.0, "objective_mode": "max",
                                      "config": cfg.run_fields(public=False)}])
    monkeypatch.setattr(sessions, "check", lambda c: p)
    monkeypatch.setattr(sessions, "describe", lambda *a, **k: None)
    monkeypatch.setattr(sessions, "one_off", lambda *a, **k: contextlib.nullcontext(sessions.Session(p, {}, None)))
    confirm.confirm(cfg.storage, cfg.name, top=1, seeds=1, out=lambda line: None)
    assert handed[1:] == [baselines]


def test_identical_trials_that_ran_at_once_count_as_one_work(tmp_path):
    """Reuse sees completed rows only: a random draw equal to the base config ran beside it, both trained, and every
    ranking, the report's means and its front counted that work twice. The row written second names the first
    (``duplicate_of``), as a reuse does. Found by a helper's audit."""
    from orchestrator.leaderboard import Leaderboard

    callback, ended = sweep_callback(tmp_path, [])
    ended("a")
    ended("b")                                       # the same config and seed (configs[0]), ended after a
    board = Leaderboard(callback.cfg.storage)
    rows = {r["trial_id"]: r for r in board.table(sweep_id="s1").to_pylist()}
    assert rows["b"]["duplicate_of"] == rows["a"]["row_id"] and rows["a"].get("duplicate_of") is None
    assert board.top(5).column("trial_id").to_pylist() == ["a"]


def test_a_resumed_trials_wall_time_counts_its_epochs_before_the_interruption(tmp_path):
    """A sweep killed mid-trial and resumed: the trial's row counted its wall time (and start) from the resume, so a
    trial that trained 3 epochs of 40 s said 41 s. The epochs the run trained before (its record, which the resumed
    driver never received) add their time. Left in stop 35's note."""
    import json
    import time
    from types import SimpleNamespace

    from orchestrator import layout, storage
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.training.progress import write_progress

    lines = []
    callback, _ = sweep_callback(tmp_path, lines)
    t = SimpleNamespace(trial_id="r", config={"index": 0}, status="RUNNING", error_file=None)
    callback.on_trial_start(0, [t], t)
    epochs = [{"epoch": e, "objective": 0.5 + e / 10, "epoch_seconds": 40.0, "status": "running"} for e in (1, 2)]
    run = layout.run_dir(callback.cfg.storage, layout.trial_run_name("s1", "r"))
    storage.atomic_write(storage.join(layout.attempts(run), f"{time.time():.3f}.json"),
                         json.dumps({"start_epoch": 1, "pid": 2, "notes": []}).encode())   # its start here: at epoch 1
    write_progress(run, epochs)
    callback.on_trial_result(0, [t], t, epochs[-1])      # the resumed driver receives the last epoch only
    callback.on_trial_complete(0, [t], t)
    (row,) = Leaderboard(callback.cfg.storage).table().to_pylist()
    assert row["epochs"] == 2 and row["wall_time_s"] >= 40.0, row["wall_time_s"]
    assert (row["created_at"] - row["started_at"]).total_seconds() >= 40.0


def test_the_log_of_a_command_on_remote_storage_outlives_a_jobs_working_directory(tmp_path, monkeypatch):
    """With s3:// storage the full log went to ./orchestrator-logs/, in a Ray job the job's unpacked working
    directory, which Ray shares between jobs of the same upload and deletes: the log was lost. It goes beside the
    spool, ~/.orchestrator/logs/<hash of the storage>/. Found by a helper's audit."""
    import os

    from orchestrator import layout

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    where = layout.log_file("s3://bucket/runs?endpoint_override=h:1", "tune", "exp")
    assert where.startswith(str(tmp_path / "home" / ".orchestrator" / "logs")) and where.endswith(".log")
    assert os.path.dirname(where) == os.path.dirname(layout.log_file("s3://bucket/runs?endpoint_override=h:1", "train",
                                                                     "exp"))
    assert layout.log_file(str(tmp_path / "runs"), "tune", "exp").startswith(str(tmp_path / "runs" / "logs"))


def test_a_failed_trials_lost_last_report_is_not_counted_as_time_before_a_resume(tmp_path):
    """A failed trial's row takes its run's record when the last report was lost: that epoch ran after this driver
    started the trial, and counting it as time from before a resume counted it twice. Found by a helper's review."""
    from types import SimpleNamespace

    from orchestrator import layout
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.training.progress import write_progress

    callback, _ = sweep_callback(tmp_path, [])
    t = SimpleNamespace(trial_id="f", config={"index": 0}, status="RUNNING", error_file=None)
    callback.on_trial_start(0, [t], t)
    epochs = [{"epoch": e, "objective": 0.5, "epoch_seconds": 40.0, "status": "running"} for e in (1, 2)]
    write_progress(layout.run_dir(callback.cfg.storage, layout.trial_run_name("s1", "f")), epochs)
    callback.on_trial_result(0, [t], t, epochs[0])            # epoch 2's report was lost, then the trial failed
    callback.on_trial_error(0, [t], t)
    (row,) = Leaderboard(callback.cfg.storage).table(kind=None).to_pylist()
    assert row["epochs"] == 2 and row["wall_time_s"] < 40.0, row["wall_time_s"]


def test_a_resumed_trial_that_fails_before_its_first_report_counts_its_earlier_epochs(tmp_path):
    """The epochs from before an interruption were found as those before the first epoch this driver received: a
    resumed trial that failed before any report received none, and its row (2 epochs of 40 s) said a few seconds.
    The run's own attempt records say which epoch its first start under this driver resumed from. Found by a
    helper's review."""
    import json
    import time
    from types import SimpleNamespace

    from orchestrator import layout, storage
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.training.progress import write_progress

    callback, _ = sweep_callback(tmp_path, [])
    t = SimpleNamespace(trial_id="g", config={"index": 0}, status="RUNNING", error_file=None)
    run = layout.run_dir(callback.cfg.storage, layout.trial_run_name("s1", "g"))
    storage.atomic_write(storage.join(layout.attempts(run), f"{time.time() - 100:.3f}.json"),
                         json.dumps({"start_epoch": 0, "pid": 1, "notes": []}).encode())   # before the kill
    callback.on_trial_start(0, [t], t)
    storage.atomic_write(storage.join(layout.attempts(run), f"{time.time():.3f}.json"),
                         json.dumps({"start_epoch": 2, "pid": 2, "notes": []}).encode())   # resumed here at epoch 2
    write_progress(run, [{"epoch": e, "objective": 0.5, "epoch_seconds": 40.0, "status": "running"} for e in (1, 2)])
    callback.on_trial_error(0, [t], t)                       # failed before its first report
    (row,) = Leaderboard(callback.cfg.storage).table(kind=None).to_pylist()
    assert row["epochs"] == 2 and row["wall_time_s"] >= 80.0, row["wall_time_s"]


def test_rows_whose_searched_values_differ_in_type_are_written_and_spooled_together(tmp_path):
    """A searched choice of a number and a text (``data.validation: {choice: [0.2, val.csv]}``) gives one column two
    types: one batch of such rows could be neither written nor spooled (TypeError), so after one failed write every
    later row of the sweep joined the stuck batch, kept in memory only (found by a helper's audit). Such a column is
    text, as the reader makes it of files that disagree."""
    from orchestrator.leaderboard import spool

    rows = [{"experiment": "e", "sweep_id": "s", "trial_id": t, "objective": o, "validation": v}
            for t, o, v in (("t1", 0.9, 0.2), ("t2", 0.8, "val.csv"), ("t3", 0.7, None))]
    kept = str(tmp_path / "spool" / "s.parquet")
    spool.keep(kept, rows)
    board = Leaderboard(str(tmp_path / "runs"))
    board.append(rows)
    got = {r["trial_id"]: r["validation"] for r in board.table(kind=None).to_pylist()}
    assert got == {"t1": "0.2", "t2": "val.csv", "t3": None}


def test_two_commands_started_in_the_same_second_write_logs_of_their_own(tmp_path):
    """A log's name had one-second resolution and the file is appended to: two sweeps of one experiment started in
    the same second interleaved their logs and resolved configs in one file (found by a helper's audit)."""
    from orchestrator import layout

    names = {layout.log_file(str(tmp_path / "runs"), "tune", "exp") for _ in range(20)}
    assert len(names) == 20


def test_two_sweeps_finishing_the_same_work_at_once_mark_one_a_duplicate(tmp_path, monkeypatch):
    """A finishing trial looks for a row of the same work, then writes its own: two sweeps finishing the same work at
    once both looked before either wrote, and neither row named the other, so rankings counted the work twice (found
    by a helper's audit, with a harness). On local storage, looking and writing are one step under a lock on the
    leaderboard folder. Here the look takes 0.5 s, so without the lock both look before either writes."""
    import threading
    import time
    from types import SimpleNamespace

    from orchestrator.config import parse_config
    from orchestrator.leaderboard import leaderboard as leaderboard_module
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                  search={"space": {"train.head_lr": {"choice": [0.002]}}}))
    real = leaderboard_module.Leaderboard.done

    def slow_done(self, *args, **kwargs):
        time.sleep(0.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(leaderboard_module.Leaderboard, "done", slow_done)
    history = [{"epoch": 1, "objective": 0.8, "left_accuracy": 0.8, "status": "running",
                "config_hash": cfg.with_values({"train.head_lr": 0.002}).config_hash()}]

    def finish(sweep):
        cb = SweepCallback(cfg, context=RowContext(sweep, 5, fingerprint="fp"), out=lambda line: None)
        trial = SimpleNamespace(trial_id=f"{sweep}_00000", config={"train.head_lr": 0.002}, status="TERMINATED",
                                error_file=None)
        cb.history[trial.trial_id] = history
        cb._finish(trial, None)

    threads = [threading.Thread(target=finish, args=(s,)) for s in ("s1", "s2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    rows = Leaderboard(cfg.storage).table(experiment=cfg.name).to_pylist()
    assert len(rows) == 2 and sorted(r["duplicate_of"] is None for r in rows) == [False, True], rows
    assert Leaderboard(cfg.storage).top(10, experiment=cfg.name).num_rows == 1


def test_a_sweep_writing_the_same_work_during_a_merge_marks_one_a_duplicate(tmp_path, monkeypatch):
    """merge read the destination's rows at its start and wrote at its end: a sweep's row of the same work written in
    between was seen by neither side (found by a helper's audit, with a merge slowed as a large one is). On local
    storage the merge holds the leaderboard folder's lock, and the sweep's look-and-write waits for it."""
    import threading
    import time
    from types import SimpleNamespace

    from factories import row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import merge as merge_module
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    space = {"search": {"space": {"train.head_lr": {"choice": [0.002]}}}}
    here = parse_config(experiment(tmp_path / "here", "builtin:multidigits/train", **space))
    there = parse_config(experiment(tmp_path / "there", "builtin:multidigits/train", **space))
    history = [{"epoch": 1, "objective": 0.8, "left_accuracy": 0.8, "status": "running",
                "config_hash": here.with_values({"train.head_lr": 0.002}).config_hash()}]
    far = [{**history[0], "config_hash": there.with_values({"train.head_lr": 0.002}).config_hash()}]
    Leaderboard(there.storage).append([row(there.with_values({"train.head_lr": 0.002}), far, trial_id="far",
                                           sweep_id="away", fingerprint="fp")])
    real = merge_module.merged_rows
    reading = threading.Event()

    def slow_merged_rows(*args, **kwargs):
        reading.set()
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_module, "merged_rows", slow_merged_rows)
    merging = threading.Thread(target=lambda: Leaderboard(here.storage).merge(there.storage))
    merging.start()
    reading.wait(10)
    cb = SweepCallback(here, context=RowContext("s1", 5, fingerprint="fp"), out=lambda line: None)
    trial = SimpleNamespace(trial_id="s1_00000", config={"train.head_lr": 0.002}, status="TERMINATED", error_file=None)
    cb.history[trial.trial_id] = history
    cb._finish(trial, None)
    merging.join(30)
    rows = Leaderboard(here.storage).table(experiment=here.name).to_pylist()
    assert len(rows) == 2 and sorted(r["duplicate_of"] is None for r in rows) == [False, True], rows
