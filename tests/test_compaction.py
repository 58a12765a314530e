"""Compaction never loses or duplicates a row: two compactors at once, a compactor killed midway, appends and
reads during a compaction (real processes), and files from before row ids existed."""
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.leaderboard import compaction
from orchestrator.leaderboard import columns
from orchestrator.leaderboard import Leaderboard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def row(i, experiment="e"):
    return {"experiment": experiment, "trial_id": f"t{i:04d}", "objective": (i % 97) / 97, "sum_mae": (i % 13) / 13,
            "config": {"train": {"seed": i}}, "history": [{"epoch": e, "objective": e / 10} for e in range(1, 4)]}


def fill(storage, n, start=0):
    board = Leaderboard(storage)
    for i in range(start, start + n):
        board.append([row(i)])
    return board


def files(storage):
    return sorted(p for p in os.listdir(os.path.join(storage, "leaderboard")) if p.endswith(".parquet")
                  and not p.startswith("."))


def physical_ids(storage):
    """Every row id in every file (copies counted)."""
    folder = os.path.join(storage, "leaderboard")
    return [i for f in files(storage) for i in pq.read_table(os.path.join(folder, f), columns=["row_id"])
            .column("row_id").to_pylist()]


def trial_ids(board):
    return sorted(board.table(columns=["trial_id"]).column("trial_id").to_pylist())


def expected(n, start=0):
    return [f"t{i:04d}" for i in range(start, start + n)]


def spawn(code, *args, **options):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=ENV, cwd=ROOT, **options)


def test_compact_merges_everything_into_one_file_and_keeps_whole_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "ROW_GROUP_ROWS", 16)        # several row groups: fetches pick the right one
    storage = str(tmp_path)
    board = fill(storage, 120)
    board.append([row(i) for i in range(120, 150)])                # one file of 30 rows
    before = board.top(5, metric="sum_mae")
    everything = board.table()                                     # whole rows from 121 files at once
    assert sorted((int(r["trial_id"][1:]), json.loads(r["config"])["train"]["seed"]) for r in everything.to_pylist()) \
        == [(i, i) for i in range(150)]
    t0 = time.perf_counter()
    result = board.compact()
    elapsed = time.perf_counter() - t0
    assert result["files_before"] == 121 and result["files_after"] == 1 and result["rows"] == 150
    assert result["files_merged"] == 121 and result["duplicates"] == 0
    assert 0 < result["seconds"] <= elapsed + 1e-3        # the time it reports is the time it took
    (name,) = files(storage)
    assert name.startswith("compact-") and pq.ParquetFile(tmp_path / "leaderboard" / name).num_row_groups > 5
    fresh = Leaderboard(storage)
    assert trial_ids(fresh) == expected(150)
    after = fresh.top(5, metric="sum_mae")
    assert after.column("row_id").to_pylist() == before.column("row_id").to_pylist()
    for r in after.to_pylist():                                    # heavy columns belong to their row
        i = int(r["trial_id"][1:])
        assert json.loads(r["config"]) == {"train": {"seed": i}} and len(json.loads(r["history"])) == 3
    assert fresh.best()["config"]["train"]["seed"] in (96, 96 + 97)
    assert fresh.compact()["files_after"] == 1                     # nothing left to merge


def test_full_files_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "ROWS_PER_FILE", 40)
    storage = str(tmp_path)
    board = fill(storage, 90)
    assert board.compact()["files_after"] == 3                     # 40 + 40 + 10 rows
    sizes = sorted(pq.ParquetFile(tmp_path / "leaderboard" / f).metadata.num_rows for f in files(storage))
    assert sizes == [10, 40, 40]
    full = {f for f in files(storage) if pq.ParquetFile(tmp_path / "leaderboard" / f).metadata.num_rows == 40}
    fill(storage, 5, start=90)
    assert board.compact()["rows"] == 15 and full <= set(files(storage)) and len(files(storage)) == 3
    assert trial_ids(board) == expected(95)


def test_maybe_compact_waits_for_enough_files(tmp_path):
    storage = str(tmp_path)
    board = fill(storage, 5)
    assert board.maybe_compact(threshold_files=5) is None and len(files(storage)) == 5
    assert board.compact(min_files=6)["files_after"] == 5
    fill(storage, 1, start=5)
    assert board.maybe_compact(threshold_files=5)["files_after"] == 1
    fill(storage, 5, start=6)                                      # merged files don't count as appended ones
    assert board.maybe_compact(threshold_files=5) is None
    assert trial_ids(board) == expected(11)


COMPACT_WHEN_TOLD = """
import json, os, sys, time
from orchestrator.leaderboard import Leaderboard
board = Leaderboard(sys.argv[1])
open(sys.argv[3], "w").close()
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
print(json.dumps(board.compact()))
"""


def race_two_compactors(storage: str) -> list[dict]:
    fill(storage, 400)
    go = os.path.join(storage, "go")
    ready = [os.path.join(storage, f"ready{i}") for i in range(2)]
    procs = [spawn(COMPACT_WHEN_TOLD, storage, go, r, stdout=subprocess.PIPE) for r in ready]
    while not all(os.path.exists(r) for r in ready):
        time.sleep(0.01)
    open(go, "w").close()                                           # both start now
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    return results


def test_two_compactors_at_once(tmp_path):
    # On a loaded machine one process can finish before the other lists the files (no race): try again, up to 3 times
    for attempt in range(3):
        storage = str(tmp_path / f"attempt{attempt}")
        results = race_two_compactors(storage)
        assert trial_ids(Leaderboard(storage)) == expected(400)     # every row once, raced or not
        if all(r["files_merged"] > 0 for r in results):
            break
    assert all(r["files_merged"] > 0 for r in results), results    # they raced: both merged files
    board = Leaderboard(storage)
    assert trial_ids(board) == expected(400)                        # every row once
    board.compact()                                                 # copies from the race are merged away
    ids = physical_ids(storage)
    assert len(ids) == 400 and len(set(ids)) == 400 and trial_ids(board) == expected(400)


KILLED_AFTER_N_DELETES = """
import os, sys
from orchestrator.leaderboard import compaction
from orchestrator.leaderboard import Leaderboard
real, n = compaction._remove, int(sys.argv[2])
def remove(fs, path):
    global n
    if n == 0:
        os._exit(9)
    n -= 1
    real(fs, path)
compaction._remove = remove
Leaderboard(sys.argv[1]).compact()
"""


@pytest.mark.parametrize("deletes", [0, 37])
def test_a_compaction_killed_after_writing_the_merged_file(tmp_path, deletes):
    storage = str(tmp_path)
    fill(storage, 100)
    assert spawn(KILLED_AFTER_N_DELETES, storage, deletes).wait(timeout=120) == 9
    names = files(storage)
    assert sum(n.startswith("compact-") for n in names) == 1 and len(names) == 1 + 100 - deletes
    board = Leaderboard(storage)
    assert trial_ids(board) == expected(100)                        # the copies count once
    result = board.compact()
    assert result["duplicates"] == 100 - deletes and result["files_after"] == 1
    ids = physical_ids(storage)
    assert len(ids) == 100 and len(set(ids)) == 100


COMPACT_AND_PAUSE = """
import os, sys, time
from orchestrator.leaderboard import Leaderboard, compaction
storage, ready, phase = sys.argv[1], sys.argv[2], sys.argv[3]
target = {"reading": "_merge", "deleting": "_remove"}[phase]
real = getattr(compaction, target)

def paused(*args, **kwargs):        # the kill lands here: inside this phase of the compaction, for sure
    if not os.path.exists(ready):
        open(ready, "w").close()
        time.sleep(600)
    return real(*args, **kwargs)

setattr(compaction, target, paused)
Leaderboard(storage).compact()
"""


@pytest.mark.parametrize("phase", ["reading", "deleting"])
def test_compactions_killed_mid_compaction(tmp_path, phase):
    """A compactor killed while it reads its sources (nothing written yet) or while it deletes them (its merged file
    written, some sources still there): no row is lost or duplicated, and the next compaction finishes the job."""
    storage = str(tmp_path)
    fill(storage, 300)
    ready = tmp_path / "ready"
    proc = spawn(COMPACT_AND_PAUSE, storage, ready, phase)
    while not ready.exists() and proc.poll() is None:
        time.sleep(0.005)
    assert ready.exists(), "the compaction never reached the phase"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    merged = [f for f in files(storage) if f.startswith("compact-")]
    sources = [f for f in files(storage) if not f.startswith("compact-")]
    if phase == "reading":
        assert merged == [] and len(sources) == 300                  # killed before anything was written
    else:
        assert len(merged) == 1 and 0 < len(sources) <= 300          # mid-compaction: both copies on disk
    assert trial_ids(Leaderboard(storage)) == expected(300)          # each row counted once
    fill(storage, 20, start=300)
    board = Leaderboard(storage)
    board.compact()
    assert len(physical_ids(storage)) == 320 and trial_ids(board) == expected(320)


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    storage = str(tmp_path)
    fill(storage, 3)
    old = tmp_path / "leaderboard" / ".compact-x.parquet.abc.tmp"   # what a kill during the write leaves
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    young = tmp_path / "leaderboard" / ".compact-y.parquet.def.tmp"
    young.write_bytes(b"partial")
    Leaderboard(storage).compact()
    assert not old.exists() and young.exists()                      # a young one may still be written: an hour


APPEND_SLOWLY = """
import sys, time
from orchestrator.leaderboard import Leaderboard
board = Leaderboard(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3])):
    board.append([{"experiment": "e", "trial_id": f"t{i:04d}", "objective": 0.5, "config": {"x": i}}])
    time.sleep(0.002)
"""


def test_appends_and_reads_during_compactions(tmp_path):
    storage = str(tmp_path)
    fill(storage, 200)
    appender = spawn(APPEND_SLOWLY, storage, 200, 100)
    compactor = spawn("import sys\nfrom orchestrator.leaderboard import Leaderboard\n"
                      "for _ in range(8): Leaderboard(sys.argv[1]).compact()", storage)
    reader = Leaderboard(storage)
    reads = 0
    while appender.poll() is None or compactor.poll() is None:
        seen = trial_ids(reader)
        assert seen[:200] == expected(200) and len(seen) == len(set(seen)), "a read lost or doubled a row"
        assert reader.top(3, where="trial_id < 't0200'").column("objective").to_pylist() == [96 / 97, 96 / 97,
                                                                                           95 / 97]
        reads += 1
    assert appender.returncode == 0 and compactor.returncode == 0 and reads >= 2
    board = Leaderboard(storage)
    assert trial_ids(board) == expected(300)
    board.compact()
    assert len(physical_ids(storage)) == 300 and len(files(storage)) == 1


def test_files_from_before_row_ids_get_stable_ids(tmp_path):
    folder = tmp_path / "leaderboard"
    folder.mkdir()
    for i in range(30):
        pq.write_table(pa.table({"experiment": ["old"], "trial_id": [f"t{i:04d}"], "objective": [i / 30]}),
                       folder / f"2023{i:04d}.parquet")
    storage = str(tmp_path)
    assert spawn(KILLED_AFTER_N_DELETES, storage, 10).wait(timeout=120) == 9
    board = Leaderboard(storage)
    assert trial_ids(board) == expected(30)                         # merged copies carry the same derived ids
    board.compact()
    ids = physical_ids(storage)
    assert len(ids) == 30 and "20230000.parquet#0" in ids
    assert board.best(kind=None)["trial_id"] == "t0029"


def test_an_unreadable_file_is_neither_merged_nor_deleted(tmp_path, capsys):
    storage = str(tmp_path)
    board = fill(storage, 10)
    bad = tmp_path / "leaderboard" / "20240101T000000-deadbeef.parquet"
    bad.write_bytes(b"PAR1 not really")
    result = board.compact()
    assert result["rows"] == 10 and bad.exists() and len(files(storage)) == 2
    assert trial_ids(board) == expected(10)
    assert capsys.readouterr().err.count("skipping unreadable leaderboard file") == 1


def test_a_failed_merged_write_deletes_nothing(tmp_path, monkeypatch):
    from orchestrator import storage as store

    storage = str(tmp_path)
    board = fill(storage, 10)
    monkeypatch.setattr(store, "atomic_write", lambda location, data: (_ for _ in ()).throw(OSError("disk full")))
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    with pytest.raises(OSError, match="disk full"):
        board.compact()
    assert len(files(storage)) == 10 and trial_ids(board) == expected(10)


def test_schemas_differ_between_merged_files(tmp_path):
    storage = str(tmp_path)
    board = Leaderboard(storage)
    board.append([{"experiment": "a", "trial_id": "t0000", "left_accuracy": 0.5, "freeze_depth": 2}])
    board.append([{"experiment": "b", "trial_id": "t0001", "sum_mae": 0.1, "kind": "baseline"}])
    board.compact()
    t = Leaderboard(storage).table(kind=None)
    assert t.num_rows == 2 and t.schema.field("freeze_depth").type == pa.int64()
    rows = {r["trial_id"]: r for r in t.to_pylist()}
    assert rows["t0000"]["sum_mae"] is None and rows["t0001"]["left_accuracy"] is None
    assert rows["t0001"]["kind"] == "baseline" and columns.column_type("sum_mae") == pa.float64()
