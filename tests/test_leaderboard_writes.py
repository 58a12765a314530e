"""Writing the leaderboard: appends retried then raised, concurrent writers, corrupt files skipped with one warning,
and every documented reader (pyarrow, pandas, DuckDB) reading it."""
import json
import os
import subprocess
import sys

import pytest

from orchestrator.leaderboard import Leaderboard

from factories import minimized_rows


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
