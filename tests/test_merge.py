"""Leaderboard merge: rows of other storages pulled in, deduplicated by row id, the same work recognized by its
work_key (config without storage or name, data by content, seed), provenance kept, idempotent and kill-safe. Fast
tests on factory rows; a slow one merges real sweeps from local disk and moto S3."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from factories import embedded, experiment, row, run_cli, small_table, write_parquet
from orchestrator import layout, storage
from orchestrator.config import parse_config
from orchestrator.config.revision import TRAINING_REVISION
from orchestrator.data.identity import data_identity
from orchestrator.leaderboard import Leaderboard
from orchestrator.leaderboard.merge import WORK_KEY, Identities, work_key

HISTORY = [{"epoch": 1, "left_accuracy": 0.5, "right_accuracy": 0.5, "objective": 0.5}]


def trial(store, *, name="t", trial_id="a", lr=1e-3, seed=0, objective=0.5, sweep_id="s", **extra) -> dict:
    cfg = parse_config(embedded(store, name=name, train={"head_lr": lr, "seed": seed}))
    r = row(cfg, [{**HISTORY[0], "objective": objective}], trial_id=trial_id, sweep_id=sweep_id)
    return {**r, **extra}


def test_work_key_ignores_storage_and_name_and_sees_seed_and_data_content(tmp_path):
    ident = Identities()
    config = parse_config(embedded(tmp_path / "a", name="x")).run_fields()
    same = parse_config(embedded("s3://bucket/b", name="y", resources={"workers": 3})).run_fields()
    seeded = parse_config(embedded(tmp_path / "a", train={"seed": 1})).run_fields()
    assert work_key(config, ident) == work_key(same, ident) != work_key(seeded, ident)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = write_parquet(tmp_path / "one" / "d.parquet", small_table(40))
    b = write_parquet(tmp_path / "two" / "d.parquet", small_table(40))        # a copy elsewhere
    c = write_parquet(tmp_path / "two" / "e.parquet", small_table(40, seed=1))
    assert data_identity(a) == data_identity(b) != data_identity(c)
    (tmp_path / "three").mkdir()
    write_parquet(tmp_path / "three" / "d.parquet", small_table(40))
    assert data_identity(str(tmp_path / "one")) == data_identity(str(tmp_path / "three")) != data_identity(
        str(tmp_path / "two"))                                                  # folders: by their files
    on = [parse_config(experiment(tmp_path, p)).run_fields() for p in (a, b, c)]
    assert work_key(on[0], ident) == work_key(on[1], ident) != work_key(on[2], ident)
    manifest = tmp_path / "m.csv"
    (tmp_path / "img.png").write_bytes(b"x" * 10)
    manifest.write_text("image,left\nimg.png,1\n")
    before = data_identity(str(manifest))
    (tmp_path / "img.png").write_bytes(b"x" * 11)                              # same manifest, other image
    assert data_identity(str(manifest)) != before
    missing = Identities()(str(tmp_path / "gone.parquet"), "image")
    assert missing.startswith("location:")


def test_merge_pulls_rows_in_once_marks_the_same_work_and_points_at_the_queried_storage(tmp_path):
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    Leaderboard(home).append([trial(home, trial_id="h1", lr=1e-3, objective=0.6),
                              trial(home, trial_id="h2", lr=2e-3, objective=0.7)])
    Leaderboard(away).append([trial(away, name="other", trial_id="w1", lr=1e-3, objective=0.9),   # h1's work
                              trial(away, name="other", trial_id="w2", lr=3e-3, objective=0.8, extra_col=7.0)])
    board = Leaderboard(dst)
    first = board.merge([home, away])
    assert (first["rows"], first["duplicates"], first["skipped"]) == (4, 1, 0)
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert set(rows) == {"h1", "h2", "w1", "w2"}
    assert rows["h1"]["duplicate_of"] is None and rows["w1"]["duplicate_of"] == rows["h1"]["row_id"]
    assert rows["w1"]["work_key"] == rows["h1"]["work_key"] != rows["w2"]["work_key"]
    assert rows["h1"]["merged_from"] == home and rows["w2"]["merged_from"] == away
    assert rows["w2"]["extra_col"] == 7.0 and rows["h1"]["extra_col"] is None              # schemas unioned
    assert {json.loads(r["config"])["storage"] for r in rows.values()} == {dst}              # best trains here
    top = board.top(10).column("trial_id").to_pylist()
    assert top == ["w2", "h2", "h1"]                                    # w1 is h1's work: counted once
    assert board.best()["trial_id"] == "w2" and len(board.table()) == 4
    again = board.merge([home, away])
    assert (again["rows"], again["skipped"]) == (0, 4) and len(board.table()) == 4
    Leaderboard(away).append([trial(away, trial_id="w3", lr=2e-3, seed=0, objective=0.1)])   # h2's work
    third = board.merge(away)
    rows = {r["trial_id"]: r for r in board.table().to_pylist()}
    assert third["rows"] == 1 and rows["w3"]["duplicate_of"] == rows["h2"]["row_id"]
    assert board.merge(dst)["rows"] == 0                                  # itself: nothing new


def test_a_finished_run_is_not_hidden_behind_a_failed_one(tmp_path):
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    Leaderboard(home).append([trial(home, trial_id="broke", objective=None, status="failed")])
    Leaderboard(away).append([trial(away, trial_id="fine", objective=0.4)])
    board = Leaderboard(dst)
    board.merge([home, away])
    rows = {r["trial_id"]: r for r in board.table().to_pylist()}
    assert rows["fine"]["duplicate_of"] is None and board.best()["trial_id"] == "fine"


def test_the_completed_run_of_a_work_counts_not_a_stopped_or_failed_one_merged_first(tmp_path):
    """A failed run keeps its last objective; a run stopped by the scheduler has one. Neither may hide a completed
    run of the same work (config and seed), in DST, in one source, or across sources: best() in DST after the merge
    is the source's best."""
    src, other, dst = (str(tmp_path / n) for n in ("src", "other", "dst"))
    Leaderboard(src).append([trial(src, trial_id="a_stopped", objective=0.55, status="stopped"),
                             trial(src, trial_id="b", lr=2e-3, objective=0.70),
                             trial(src, trial_id="a_full", objective=0.92)])
    Leaderboard(other).append([trial(other, trial_id="c_failed", lr=3e-3, objective=0.5, status="failed")])
    board = Leaderboard(dst)
    board.append([trial(dst, trial_id="c_stopped", lr=3e-3, objective=0.3, status="stopped")])
    board.merge([other, src])
    assert Leaderboard(src).best()["trial_id"] == "a_full" == board.best()["trial_id"]
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert rows["a_full"]["duplicate_of"] is None and rows["a_stopped"]["duplicate_of"] == rows["a_full"]["row_id"]
    assert rows["c_failed"]["duplicate_of"] == rows["c_stopped"]["row_id"]   # DST's stopped run beats a failed one
    Leaderboard(other).append([trial(other, trial_id="c_full", lr=3e-3, objective=0.8)])
    board.merge(other)
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert rows["c_full"]["duplicate_of"] is None    # DST's stopped run cannot be re-marked: the completed one counts


def test_runs_on_another_version_of_the_data_or_by_other_code_are_not_the_same_work(tmp_path):
    """work_key identifies data by its content at merge time, so two runs of one config on two versions of the same
    files (rewritten in place between them: another data_fingerprint at the same location) got one key, and the
    newer run was hidden behind the older. Runs by code of another training revision (rows without one: 1) are
    other work too. A copy of the work on the same data version still counts once."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    Leaderboard(src).append([trial(src, trial_id="old", objective=0.95, data_fingerprint="fp-v1"),
                             trial(src, trial_id="new", objective=0.60, data_fingerprint="fp-v2"),
                             trial(src, trial_id="new_again", objective=0.61, data_fingerprint="fp-v2"),
                             trial(src, trial_id="r1", lr=2e-3, objective=0.7, training_revision=None),
                             trial(src, trial_id="r2", lr=2e-3, objective=0.5)])
    board = Leaderboard(dst)
    board.merge(src)
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert rows["old"]["duplicate_of"] is None and rows["new"]["duplicate_of"] is None
    assert rows["new_again"]["duplicate_of"] == rows["new"]["row_id"]
    assert rows["r2"]["training_revision"] == TRAINING_REVISION
    assert rows["r1"]["duplicate_of"] is None and rows["r2"]["duplicate_of"] is None
    # none hidden as another's copy (a listing: a ranking holds the newest version's rows only, test_leaderboard)
    assert set(board.top(10, ranked=False).column("trial_id").to_pylist()) == {"old", "new", "r1", "r2"}


def test_a_sweeps_reuse_of_work_done_before_keeps_pointing_at_that_work_after_a_merge(tmp_path):
    """Sweep s2 reused s1's trial (its row: duplicate_of s1's, reused_from). When s2's row came first in the files
    (a compaction renames s1's), the merge made it the work's row and marked s1's own row a duplicate: in DST,
    s1 lost its best trial. A row of its own work now counts before a row that reused it."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    own = trial(src, trial_id="r1", objective=0.9, sweep_id="s1")
    Leaderboard(src).append([{**trial(src, trial_id="r2", objective=0.9, sweep_id="s2"),
                              "duplicate_of": own["row_id"], "reused_from": "s1/r1"}])
    Leaderboard(src).append([own, trial(src, trial_id="x", lr=5e-3, objective=0.5, sweep_id="s1")])
    folder = tmp_path / "src" / "leaderboard"
    s1_file = next(f for f in folder.glob("*.parquet") if "r1" in pq.read_table(f).column("trial_id").to_pylist())
    s1_file.rename(folder / "compact-0.parquet")            # as a compaction names it: after s2's file
    assert Leaderboard(src).table(kind=None).column("trial_id").to_pylist()[0] == "r2"
    assert Leaderboard(src).best(sweep_id="s1")["trial_id"] == "r1"
    board = Leaderboard(dst)
    board.merge(src)
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert rows["r1"]["duplicate_of"] is None and rows["r2"]["duplicate_of"] == own["row_id"]
    assert board.best(sweep_id="s1")["trial_id"] == "r1" and board.best(sweep_id="s2")["trial_id"] == "r2"


def test_merge_killed_midway_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    Leaderboard(home).append([trial(home, trial_id="h1")])
    Leaderboard(away).append([trial(away, trial_id="w1", lr=5e-3)])
    real, calls = storage.atomic_write, []

    def dies_on_the_second(location, data):
        calls.append(location)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(location, data)

    monkeypatch.setattr(storage, "atomic_write", dies_on_the_second)
    board = Leaderboard(dst)
    with pytest.raises(KeyboardInterrupt):
        board.merge([home, away])
    monkeypatch.setattr(storage, "atomic_write", real)
    assert [r["trial_id"] for r in board.table().to_pylist()] == ["h1"]    # the first file, whole
    assert board.merge([home, away])["rows"] == 1
    assert sorted(r["trial_id"] for r in board.table().to_pylist()) == ["h1", "w1"]


def test_merge_from_s3_and_local_into_s3(s3_server, tmp_path, capsys):
    """Rows on a real S3-compatible server (moto) and on local disk, merged both ways; credentials never stored."""
    import pyarrow.fs as pafs

    key, secret = "AKIAMERGEFAST", "fastMergeS3cret"
    pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("merge-fast")
    bucket = f"s3://{key}:{secret}@merge-fast/%s?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    away, shared, home = bucket % "away", bucket % "shared", str(tmp_path / "home")
    Leaderboard(away).append([trial(away, trial_id="w1", lr=1e-3), trial(away, trial_id="w2", lr=2e-3)])
    Leaderboard(home).append([trial(home, trial_id="h1", lr=1e-3)])                           # w1's work
    r = run_cli(capsys, "leaderboard", "merge", home, away, "--into", shared)
    assert r.code == 0, r.err
    board = Leaderboard(shared)
    rows = {x["trial_id"]: x for x in board.table().to_pylist()}
    assert set(rows) == {"h1", "w1", "w2"} and rows["w1"]["duplicate_of"] == rows["h1"]["row_id"]
    assert secret not in r.out + r.err and not any(secret in json.dumps(x, default=str) for x in rows.values())
    assert json.loads(rows["h1"]["config"])["storage"] == storage.redact(shared)
    assert board.merge([home, away])["rows"] == 0
    assert Leaderboard(home).merge(shared)["rows"] == 2 and len(Leaderboard(home).top(10)) == 2


def test_a_merge_into_an_empty_storage_does_not_say_work_was_there(tmp_path, capsys):
    """Merging a source that holds two runs of one work into an empty storage said "(1 of work already there, marked
    duplicate_of ...)": nothing was there; the copy was of the source's own row. Found by a helper's audit."""
    home, dst = str(tmp_path / "home"), str(tmp_path / "dst")
    Leaderboard(home).append([trial(home, trial_id="h1"), trial(home, trial_id="h2")])
    r = run_cli(capsys, "leaderboard", "merge", home, "--into", dst)
    assert r.code == 0, r.err
    last = r.out.strip().splitlines()[-1]
    assert "merged 2 rows" in last and "1 of them a copy of work another row holds, marked duplicate_of" in last, last
    assert "of work already there" not in last, last
    Leaderboard(home).append([trial(home, trial_id="h3"), trial(home, trial_id="h4")])   # two more copies
    last = run_cli(capsys, "leaderboard", "merge", home, "--into", str(tmp_path / "dst2")).out.strip().splitlines()[-1]
    assert "merged 4 rows" in last and "3 of them copies of work another row holds" in last, last


def test_a_row_two_sources_hold_is_merged_once_and_not_said_to_be_there(tmp_path, capsys):
    """Merging home and a copy of it (a storage home was merged into) into an empty storage said "0 rows merged, 1
    already there" of the copy: the row was not there, the first source brought it."""
    home, copy, dst = str(tmp_path / "home"), str(tmp_path / "copy"), str(tmp_path / "dst")
    Leaderboard(home).append([trial(home, trial_id="h1")])
    assert run_cli(capsys, "leaderboard", "merge", home, "--into", copy).code == 0
    r = run_cli(capsys, "leaderboard", "merge", home, copy, "--into", dst)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert sorted(line.split(": ", 1)[1] for line in lines[:2]) == [
        "0 rows merged, 0 already there, 1 also in another source, or given twice (merged once)", "1 rows merged, 0 already there"]
    assert "1 rows already there" not in lines[-1] and "1 copies of rows in more than one source" in lines[-1], \
        lines[-1]
    assert Leaderboard(dst).table(kind=None).num_rows == 1


def test_a_row_the_target_reran_is_already_there(tmp_path):
    """The target holds B, a rerun of A (its ``supersedes``), not A itself: merging a source that holds A skips A as
    already there (merged, it would come back), not as a row of another source (the only source)."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    Leaderboard(src).append([trial(src, trial_id="a", row_id="A")])
    Leaderboard(dst).append([trial(dst, trial_id="b", row_id="B", supersedes="A")])
    lines = []
    r = Leaderboard(dst).merge([src], out=lines.append)
    assert (r["rows"], r["skipped"], r["repeated"]) == (0, 1, 0), r
    assert lines[-1].endswith(": 0 rows merged, 1 already there"), lines


def test_cli_merge(tmp_path, capsys):
    home, dst = str(tmp_path / "home"), str(tmp_path / "dst")
    Leaderboard(home).append([trial(home, trial_id="h1")])
    r = run_cli(capsys, "leaderboard", "merge", home, "--into", dst)
    assert r.code == 0, r.err
    assert "1 rows merged" in r.out and Leaderboard(dst).best()["trial_id"] == "h1"
    again = run_cli(capsys, "leaderboard", "merge", home, "--into", dst)
    assert again.code == 0 and "0 rows merged, 1 already there" in again.out
    bad = run_cli(capsys, "leaderboard", "merge", str(tmp_path / "nowhere"), "--into", dst)
    assert bad.code == 2 and "no leaderboard" in bad.err and "Traceback" not in bad.err


def test_confirm_checks_that_merged_rows_data_and_backbone_are_reachable_here(tmp_path):
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.confirm import confirm_configs

    home, dst = str(tmp_path / "home"), str(tmp_path / "dst")
    data = write_parquet(tmp_path / "d.parquet", small_table(40))
    cfg = parse_config(experiment(tmp_path, data, storage=home))
    Leaderboard(home).append([row(cfg, HISTORY, trial_id="h1")])
    board = Leaderboard(dst)
    board.merge(home)
    configs, _ = confirm_configs(board, "t", top=1, seeds=2, workers=None, storage=dst)
    assert [c.storage for c in configs] == [dst, dst] and [c.train.seed for c in configs] == [1, 2]
    (tmp_path / "d.parquet").unlink()                            # the data stayed behind where the trial ran
    with pytest.raises(ConfigError, match=r"h1 .*d\.parquet.* not reachable from here"):
        confirm_configs(board, "t", top=1, seeds=2, workers=None, storage=dst)


@pytest.mark.slow
def test_two_sweeps_in_two_storages_merged_queried_and_merged_again(ray_session, s3_server, tmp_path, capsys):
    """A sweep on local disk and the same sweep (another name) on moto S3: merged, the same work counted once. Both
    sweeps run in this process, on the session's Ray (the S3 one with its credentials in the URI, which the driver
    adopts and publishes to its trials); the merge then reads the S3 storage by a URI holding them too."""
    import pyarrow.fs as pafs

    from orchestrator import credentials
    from orchestrator.sweep.tuner import tune

    key, secret, bucket = "AKIAMERGETEST", "mergeS3cretKey", "merge-test"
    fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    away = f"s3://{key}:{secret}@{bucket}/away?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    search = {"space": {"train.head_lr": {"choice": [3e-3, 1e-3]}}, "searcher": "grid", "scheduler": {"type": "none"}}
    local = str(tmp_path / "home")
    tune(parse_config(embedded(local, name="home", search=search)), out=lambda line: None)
    try:
        done = tune(parse_config(embedded(away, name="away", search=search)), out=lambda line: None)
    finally:
        credentials.forget()   # the merge below must find them in its URI, not in what this sweep adopted
    assert done["statuses"] == {"completed": 2}, done
    r = run_cli(capsys, "leaderboard", "merge", away, "--into", local)
    assert r.code == 0, r.err
    assert secret not in r.out + r.err
    board = Leaderboard(local)
    rows = board.table().to_pylist()
    assert len(rows) == 4 and {x["experiment"] for x in rows} == {"home", "away"}
    merged = [x for x in rows if x.get("merged_from")]
    assert len(merged) == 2 and all(secret not in x["merged_from"] and x["duplicate_of"] for x in merged)
    assert all(json.loads(x["config"])["storage"] == local for x in merged)
    assert len(board.top(10)) == 2                                      # each work once
    assert board.best()["experiment"] == "home"
    assert len(board.table(experiment="away")) == 2                     # report and confirm read them by experiment
    again = run_cli(capsys, "leaderboard", "merge", away, local, "--into", local)
    assert again.code == 0 and len(board.table()) == 4


def test_merging_an_experiment_ranked_on_another_objective_is_refused_before_anything_is_written(tmp_path, capsys):
    """tune and report keep one objective per experiment; merge brought a second one in without a word, and best/top
    then ranked sum_mae values against mean_score values."""
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    Leaderboard(home).append([trial(home, trial_id="h1")])
    cfg = parse_config(embedded(away, name="t", train={"head_lr": 2e-3},
                                tasks={"left": {"type": "classification"}, "right": {"type": "classification"},
                                       "sum": {"type": "regression", "metric": "mae"}},
                                objective={"metric": "sum_mae"}))
    Leaderboard(away).append([row(cfg, [{**HISTORY[0], "objective": 1.7, "sum_mae": 1.7}], trial_id="w1")])
    r = run_cli(capsys, "leaderboard", "merge", home, away, "--into", dst)
    assert r.code == 2 and "\n" not in r.err and "mean_score" in r.err and "sum_mae" in r.err, r.err
    assert Leaderboard(dst).table(kind=None).num_rows == 0                 # the first source was not written either


def test_merging_an_experiment_whose_mean_score_averages_other_task_metrics_is_refused(tmp_path, capsys):
    """mean_score over sum's MAE is another number than over its R2 under the same objective name: merge brought it
    in and best ranked the two as one (found by a helper's audit)."""
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    for store, metric, tid in ((home, "r2", "h1"), (away, "mae", "w1")):
        cfg = parse_config(embedded(store, name="t", tasks={"sum": {"type": "regression", "metric": metric}}))
        Leaderboard(store).append([row(cfg, [{**HISTORY[0], "objective": 0.7}], trial_id=tid)])
    r = run_cli(capsys, "leaderboard", "merge", home, away, "--into", dst)
    assert r.code == 2 and "\n" not in r.err and "sum r2" in r.err and "sum mae" in r.err, r.err
    assert Leaderboard(dst).table(kind=None).num_rows == 0


def test_the_same_work_under_two_experiments_stays_in_each_experiments_own_queries(tmp_path):
    """The work key leaves the experiment's name out (the same work, whatever it is called), so a merged trial of
    experiment beta with the config and seed of one of alpha's was marked duplicate_of alpha's row, and every query
    of beta left it out: beta's best trial (0.9) was gone from `best -e beta`, its listing and its report. A row of
    work counted elsewhere is left out only where that row is in the same read."""
    from orchestrator.report import write_report

    home, away = str(tmp_path / "home"), str(tmp_path / "away")
    Leaderboard(home).append([trial(home, name="alpha", trial_id="a1", objective=0.6, sweep_id="sa")])
    Leaderboard(away).append([trial(away, name="beta", trial_id="b1", objective=0.9, sweep_id="sb"),
                              trial(away, name="beta", trial_id="b2", lr=3e-3, objective=0.8, sweep_id="sb")])
    board = Leaderboard(home)
    board.merge(away)
    rows = {r["trial_id"]: r for r in board.table(kind=None).to_pylist()}
    assert rows["b1"]["duplicate_of"] == rows["a1"]["row_id"]   # b1 is alpha's a1, as work
    assert board.best(experiment="beta")["trial_id"] == "b1" and board.best(sweep_id="sb")["trial_id"] == "b1"
    assert board.top(5, experiment="beta").column("trial_id").to_pylist() == ["b1", "b2"]
    assert sorted(board.top(5).column("trial_id").to_pylist()) == ["a1", "b2"]   # together: the work once
    result = write_report(board, "beta", str(tmp_path / "report"))
    assert result["pareto"]["n_trials"] == 2, result["pareto"]


def test_images_of_a_fixed_size_format_are_identified_by_content(tmp_path):
    """A manifest's identity holds the size of every image it lists, which changes with the content of a compressed
    image; a BMP (PPM, uncompressed TIFF) of one shape has one size whatever its pixels. Two sets of such images with
    different pixels and the same manifest were one identity, and merge marked one's trials as the other's work.
    A copy elsewhere is still the same data."""
    import numpy as np
    from PIL import Image

    for folder, seed in (("a", 0), ("b", 1), ("copy", 0)):
        for i in range(3):
            pixels = np.random.default_rng(seed * 10 + i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / folder / f"{i}.bmp")
        (tmp_path / folder / "m.csv").write_text("image,left\n" + "".join(f"{i}.bmp,{i % 2}\n" for i in range(3)))
    ids = {f: data_identity(str(tmp_path / f / "m.csv")) for f in ("a", "b", "copy")}
    assert ids["a"] != ids["b"] and ids["a"] == ids["copy"], ids


def test_merging_again_after_a_rerun_superseded_a_merged_row_adds_nothing(tmp_path):
    """DST's row ids were read from its current rows, which leave out a superseded one: a failed row merged in, then
    rerun in DST (its row superseding it), was merged again by every later merge of the source. Found by a helper's
    audit."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    failed = trial(src, trial_id="x", objective=None, status="failed")
    Leaderboard(src).append([failed])
    board = Leaderboard(dst)
    assert board.merge(src)["rows"] == 1
    board.append([trial(dst, trial_id="x", objective=0.7, supersedes=failed["row_id"])])
    assert board.merge(src)["rows"] == 0 and board.merge(src)["rows"] == 0


def test_merged_work_is_done_work_in_the_storage_it_was_merged_into(tmp_path):
    """Merge points a row's config at DST (storage rewritten) but kept the config hash the source computed, which
    covers storage: DST's sweeps, confirm and ablate looked the work up by DST's hash, found nothing, and trained it
    again. Found by a helper's audit."""
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    Leaderboard(src).append([trial(src, trial_id="x", objective=0.7)])
    board = Leaderboard(dst)
    board.merge(src)
    here = parse_config(embedded(dst, train={"head_lr": 1e-3, "seed": 0}))
    done = board.done(here.name, (here.config_hash(),), fingerprint=board.table().to_pylist()[0]["data_fingerprint"])
    assert done is not None and done["trial_id"] == "x"


def test_merge_knows_the_same_work_as_the_config_hash_does(tmp_path):
    """The work key hashed the config as written, where the config hash counts unused fields at their defaults,
    static weights normalized and adamw as adam: {left: 1, right: 1} and {left: 0.5, right: 0.5} were two works,
    counted twice after a merge. Found by a helper's audit."""
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))

    def weighted(store, trial_id, weights, **train):
        cfg = parse_config(embedded(store, train={"loss_weights": weights, **train}))
        return row(cfg, HISTORY, trial_id=trial_id, sweep_id="s")

    Leaderboard(home).append([weighted(home, "h", {"left": 1, "right": 1}),
                              weighted(home, "d", {"left": 1, "right": 1}, loss_weighting="dwa", optimizer="adamw")])
    Leaderboard(away).append([weighted(away, "w", {"left": 0.5, "right": 0.5}),
                              weighted(away, "e", {"left": 3, "right": 1}, loss_weighting="dwa", optimizer="adam")])
    board = Leaderboard(dst)
    assert board.merge([home, away])["duplicates"] == 2
    assert sorted(board.top(10).column("trial_id").to_pylist()) == ["d", "h"]


def test_the_identity_of_parquet_data_follows_its_labels(tmp_path):
    """A Parquet file's identity hashed its size and footer only: relabelling rows (dictionary-encoded, bit-packed
    pages) kept both, so two leaderboards' runs on differently labelled data were merged as the same work. Found by
    a helper's audit."""
    import pyarrow as pa

    images = [bytes([i % 251]) * 64 for i in range(200)]
    labels = ["cat", "dog", "emu", "fox"] * 50
    ys = [float(i % 7) for i in range(200)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = str(tmp_path / "a" / "d.parquet")
    b = str(tmp_path / "b" / "d.parquet")
    pq.write_table(pa.table({"image": images, "label": labels, "y": ys}), a)
    relabelled = list(labels)
    relabelled[3], relabelled[7], relabelled[11] = "cat", "dog", "emu"
    moved = list(ys)
    moved[5] += 0.5
    pq.write_table(pa.table({"image": images, "label": relabelled, "y": moved}), b)
    assert data_identity(a) != data_identity(b)
    (tmp_path / "swapped").mkdir()   # every cat a dog and every dog a cat: the same sizes and statistics
    swapped = str(tmp_path / "swapped" / "d.parquet")
    pq.write_table(pa.table({"image": images, "label": [{"cat": "dog", "dog": "cat"}.get(v, v) for v in labels],
                             "y": ys}), swapped)
    assert os.path.getsize(swapped) == os.path.getsize(a) and data_identity(swapped) != data_identity(a)
    (tmp_path / "c").mkdir()
    c = str(tmp_path / "c" / "d.parquet")
    pq.write_table(pa.table({"image": images, "label": labels, "y": ys}), c)
    assert data_identity(a) == data_identity(c)                       # a copy: the same identity


def test_the_identity_of_parquet_data_follows_its_images(tmp_path):
    """A Parquet file's identity read every column but the images: two files of the same labels and other pixels
    (fixed-size lists of incompressible uint8: the same file size, footer and statistics) had one identity, so merge
    took a run on the other images for a duplicate of this storage's run and hid its score. Found by a helper's
    audit."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    labels = ["cat", "dog"] * 20
    paths = []
    for name in ("a", "b"):
        pixels = rng.integers(0, 256, size=(40, 16 * 16), dtype=np.uint8)
        pixels[:, 0], pixels[:, 1] = 0, 255   # every file's statistics span 0-255
        images = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel(), pa.uint8()), 16 * 16)
        (tmp_path / name).mkdir()
        paths.append(str(tmp_path / name / "d.parquet"))
        pq.write_table(pa.table({"image": images, "label": labels}), paths[-1])
    assert os.path.getsize(paths[0]) == os.path.getsize(paths[1])
    assert data_identity(paths[0]) != data_identity(paths[1])


def test_rows_on_copies_of_the_same_data_rank_together_after_a_merge(tmp_path):
    """A data fingerprint names where the data is (paths, mtimes), so a copy on the laptop and one on the cluster
    fingerprint apart, and a ranking compares the rows of its experiment's newest data only: after merging the laptop
    (newer rows) into the cluster, `best` named the laptop's 0.62 over the cluster's 0.90 on the same content, and
    the cluster's rows were no longer ranked. Merge knows the data by content: a merged row on a copy of DST's data
    is measured on DST's, as its `data_alias` says. Found by a helper's audit."""
    import time

    rows = {}
    for where in ("cluster", "laptop"):
        (tmp_path / where).mkdir()
        data = write_parquet(tmp_path / where / "d.parquet", small_table(120))      # the same content, twice
        rows[where] = lambda tid, lr, obj, where=where, data=data: row(
            parse_config(experiment(tmp_path / where / "runs", data, name="demo", train={"head_lr": lr})),
            [{"epoch": 1, "left_accuracy": obj, "right_accuracy": obj, "sum_r2": obj, "objective": obj}],
            trial_id=tid, sweep_id=where, fingerprint=f"{where}-fp")
    cluster, laptop = str(tmp_path / "cluster" / "runs"), str(tmp_path / "laptop" / "runs")
    Leaderboard(cluster).append([rows["cluster"]("c1", 1e-3, 0.90), rows["cluster"]("c2", 2e-3, 0.85)])
    time.sleep(0.01)
    Leaderboard(laptop).append([rows["laptop"]("l1", 3e-3, 0.60), rows["laptop"]("l2", 1e-3, 0.62)])   # l2: c1's work
    board = Leaderboard(cluster)
    board.merge(laptop)
    assert board.best(experiment="demo")["trial_id"] == "c1"
    assert board.top(10, experiment="demo").column("trial_id").to_pylist() == ["c1", "c2", "l1"]
    merged = {r["trial_id"]: r for r in board.table(experiment="demo").to_pylist()}
    assert merged["l1"]["data_alias"] == "cluster-fp" and merged["c1"].get("data_alias") is None
    other = write_parquet(tmp_path / "laptop" / "e.parquet", small_table(120, seed=1))   # other content: no alias
    elsewhere = str(tmp_path / "elsewhere")
    Leaderboard(elsewhere).append([row(parse_config(experiment(tmp_path / "x", other, name="demo")),
                                       [{"epoch": 1, "objective": 0.99}], trial_id="o1", sweep_id="o",
                                       fingerprint="other-fp")])
    board.merge(elsewhere)
    assert {r["trial_id"]: r.get("data_alias") for r in board.table(experiment="demo").to_pylist()}["o1"] is None
    assert board.best(experiment="demo")["trial_id"] == "o1"        # the newest data: its rows are ranked


def test_work_merged_before_the_work_key_changed_is_still_recognized(tmp_path):
    """Merged rows keep the work key they were merged with, and merge trusted it: once the key's formula changed (the
    config as the config hash sees it; labels in a Parquet identity), a row merged before and the same work merged
    now had two keys, and the work counted twice. A key of another formula is computed again. Found by a helper's
    review."""
    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    Leaderboard(home).append([trial(home, trial_id="h", objective=0.6)])
    board = Leaderboard(dst)
    board.merge(home)
    (merged,) = board.table(kind=None).to_pylist()
    assert merged["work_key"].startswith(WORK_KEY)
    stale = {**merged, "row_id": "older", "trial_id": "older", "work_key": "9801df61aaaaaaaa", "duplicate_of": None}
    dst2 = Leaderboard(str(tmp_path / "dst2"))
    dst2.append([stale])                                    # as merged by older code: its key of the old formula
    Leaderboard(away).append([trial(away, trial_id="w", objective=0.7)])
    assert dst2.merge(away)["duplicates"] == 1
    # keys of the formula before Parquet data was identified by its bytes ("w3:"): computed again too (a review)
    dst3 = Leaderboard(str(tmp_path / "dst3"))
    dst3.append([{**stale, "work_key": "w3:0123456789abcdef"}])
    assert dst3.merge(away)["duplicates"] == 1


def test_merge_finds_each_rows_data_key_once(tmp_path, monkeypatch):
    """A row's data key (a config validated, its data identified, a hash) is computed once per row a merge reads:
    each incoming row's was computed twice, to find its alias and to record it (stop 36's leftover)."""
    from orchestrator.leaderboard import merge

    data = write_parquet(tmp_path / "d.parquet", small_table(120))
    make = lambda where, tid, lr: row(parse_config(experiment(tmp_path / where, data, name="demo",   # noqa: E731
                                                              train={"head_lr": lr})),
                                      [{"epoch": 1, "objective": 0.5}], trial_id=tid, sweep_id=where,
                                      fingerprint=f"{where}-fp")
    Leaderboard(str(tmp_path / "dst")).append([make("dst", "d1", 1e-3), make("dst", "d2", 2e-3)])
    Leaderboard(str(tmp_path / "src")).append([make("src", "s1", 3e-3), make("src", "s2", 4e-3)])
    calls = []
    real = merge.data_key
    monkeypatch.setattr(merge, "data_key", lambda config, identity, **kw: calls.append(1) or real(config, identity, **kw))
    assert Leaderboard(str(tmp_path / "dst")).merge(str(tmp_path / "src"))["rows"] == 2
    assert len(calls) == 4          # 2 rows here, 2 merged in


def test_merge_judges_a_backbone_file_by_what_each_row_trained_on_not_what_it_holds_now(tmp_path):
    """One backbone path held two exports over time: A's rows trained on the first, B's on the second. Merged from a
    copy of the data elsewhere, A's rows were identified by the file as it is at merge time (the second): one was
    marked a duplicate of B's row of the same config (another result, hidden), another measured on B's data (ranked
    with B's). A row records the digest of the backbone file it trained on (``backbone_digest``), and merge keys on
    it; a row of older code without one is neither aliased nor taken for a duplicate (found by a helper's audit)."""
    from orchestrator.leaderboard.rows import RowContext, TrialFacts, trial_row

    model = tmp_path / "bb.keras"
    model.write_bytes(b"export 1")

    def trained(where, tid, lr, digest):
        (tmp_path / where).mkdir(exist_ok=True)
        data = write_parquet(tmp_path / where / "d.parquet", small_table(120))      # one content, two places
        cfg = parse_config(experiment(tmp_path / where, data, name="demo", train={"head_lr": lr},
                                      backbone={"kind": "file", "path": str(model), "weights": "none"}))
        context = RowContext(where, 4, fingerprint=f"{where}-fp", backbone_digest=digest)
        r = trial_row(cfg, [{"epoch": 1, "objective": lr * 100, "status": "running"}], context=context,
                      trial=TrialFacts(tid, {}))
        assert r["backbone_digest"] == digest
        return r

    a, b = str(tmp_path / "a" / "runs"), str(tmp_path / "b" / "runs")
    Leaderboard(a).append([trained("a", "a1", 1e-3, "d-one"), trained("a", "a2", 2e-3, "d-one")])
    model.write_bytes(b"export 2, another backbone")
    Leaderboard(b).append([trained("b", "b1", 1e-3, "d-two")])
    board = Leaderboard(b)
    assert board.merge(a)["duplicates"] == 0
    merged = {r["trial_id"]: r for r in board.table(experiment="demo").to_pylist()}
    assert merged["a1"]["duplicate_of"] is None and merged["a1"]["data_alias"] is None
    assert merged["a2"]["data_alias"] is None
    # A's rows are measured on their own data (no alias): the newest data's row, B's, is the one a ranking compares
    assert board.best(experiment="demo")["trial_id"] == "b1"
    c = str(tmp_path / "c" / "runs")        # the same export trained there: the same work, on the same data
    Leaderboard(c).append([trained("c", "c1", 1e-3, "d-two")])
    assert board.merge(c)["duplicates"] == 1


@pytest.mark.slow
def test_a_sweeps_rows_record_the_digest_of_the_backbone_file_they_trained_on(ray_session, tmp_path, capsys):
    """The real path: a sweep's row carries ``backbone_digest``, the shipped file's sha256 (what merge keys on)."""
    import hashlib

    from factories import write_yaml
    from orchestrator.data.builtin import IMAGE_SHAPE
    from orchestrator.model.backbones import digits_cnn

    data = write_parquet(tmp_path / "d.parquet", small_table(120))
    digits_cnn(IMAGE_SHAPE).save(tmp_path / "bb.keras")
    cfg = experiment(tmp_path, data, name="bb", backbone={"kind": "file", "path": str(tmp_path / "bb.keras")},
                     resources={"workers": 1, "cpus_per_worker": 0.45},
                     search={"space": {"train.head_lr": {"choice": [1e-3]}}, "num_samples": 1})
    assert run_cli(capsys, "tune", write_yaml(tmp_path / "bb.yaml", cfg)).code == 0
    (r,) = Leaderboard(str(tmp_path / "runs")).table(experiment="bb").to_pylist()
    assert r["backbone_digest"] == hashlib.sha256((tmp_path / "bb.keras").read_bytes()).hexdigest()[:16]


def test_rows_of_older_code_merged_in_later_do_not_take_the_ranking_over(tmp_path):
    """A colleague on an older release (training revision one less) ran the experiment after this storage's sweep,
    and their storage was merged in: best, top, report and confirm then ranked only the older code's rows (the
    newest measurement was taken by created_at, not by revision), and this storage's rows were dropped from every
    ranking (found by a helper's audit). The newest code's rows win, whenever written."""
    import time

    from orchestrator.config import schema

    home, old = str(tmp_path / "home"), str(tmp_path / "old")
    Leaderboard(home).append([trial(home, trial_id="new_code", lr=1e-3, objective=0.90)])
    time.sleep(0.01)
    Leaderboard(old).append([{**trial(old, trial_id="old_code", lr=2e-3, objective=0.70),
                              "training_revision": schema.TRAINING_REVISION - 1}])
    board = Leaderboard(home)
    board.merge([old])
    assert board.best(experiment="t")["trial_id"] == "new_code"
    assert board.top(10, experiment="t").column("trial_id").to_pylist() == ["new_code"]


def test_a_chain_of_reruns_merges_whole(tmp_path):
    """A trial failed (X), was rerun and failed again (Y supersedes X), then completed (Z supersedes Y). A storage
    that had merged X, merging again, got Z alone (the source's reads hide Y), and X stayed current beside Z: the
    trial twice, a failed trial the source does not have. And where the chain was the destination's own, a source
    holding a copy of X had it written again at every merge (found by a helper's audit)."""
    import glob

    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    x = trial(src, trial_id="x", objective=None, status="failed")
    Leaderboard(src).append([x])
    board = Leaderboard(dst)
    board.merge([src])
    y = trial(src, trial_id="x", objective=None, status="failed", supersedes=x["row_id"])
    Leaderboard(src).append([y])
    Leaderboard(src).append([trial(src, trial_id="x", objective=0.8, supersedes=y["row_id"])])
    board.merge([src])
    assert [r["status"] for r in board.table().to_pylist()] == ["completed"]

    src2, dst2 = str(tmp_path / "src2"), str(tmp_path / "dst2")
    x = trial(dst2, trial_id="x", objective=None, status="failed")
    own = Leaderboard(dst2)
    own.append([x])
    Leaderboard(src2).merge([dst2])   # the source holds a copy of X
    y = trial(dst2, trial_id="x", objective=None, status="failed", supersedes=x["row_id"])
    own.append([y])
    own.append([trial(dst2, trial_id="x", objective=0.8, supersedes=y["row_id"])])
    files = len(glob.glob(f"{dst2}/leaderboard/*.parquet"))
    assert [own.merge([src2])["rows"] for _ in range(2)] == [0, 0]
    assert len(glob.glob(f"{dst2}/leaderboard/*.parquet")) == files


@pytest.mark.parametrize("stopped_first", [True, False])
def test_one_merge_of_several_sources_judges_their_rows_together(tmp_path, stopped_first):
    """Two sources hold the same work (config and seed): a run the scheduler stopped (0.85) and the completed run
    (0.80). Listed stopped-first, both counted and best was the stopped run; listed the other way, the completed run
    counted and the stopped one was marked duplicate_of it: each source was written before the next was judged
    (found by a helper's audit). Whatever the order, the completed run counts."""
    a, b, dst = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "dst")
    Leaderboard(a).append([trial(a, trial_id="run_stopped", objective=0.85, status="stopped")])
    Leaderboard(b).append([trial(b, trial_id="run_completed", objective=0.80)])
    Leaderboard(dst).append([trial(dst, trial_id="other", lr=5e-3, objective=0.70)])
    board = Leaderboard(dst)
    result = board.merge([a, b] if stopped_first else [b, a])
    assert result["duplicates"] == 1 and result["rows"] == 2
    assert board.top(10, experiment="t").column("trial_id").to_pylist() == ["run_completed", "other"]


@pytest.mark.parametrize("order", ["copy_first", "chain_first", "apart"])
def test_a_chain_of_reruns_merges_whole_whichever_source_holds_its_start(tmp_path, order):
    """S2 holds X (failed) <- Y (failed) <- Z (completed); S1 an earlier copy of X. Merged together in either order,
    or S2 then S1, X stayed current beside Z: only the destination's own rows were looked up along the chain (the
    review of 2c05366). The sources are read whole, superseded rows too, and the chain comes along."""
    s1, s2, dst = str(tmp_path / "s1"), str(tmp_path / "s2"), str(tmp_path / "dst")
    x = trial(s2, trial_id="x", objective=None, status="failed")
    Leaderboard(s2).append([x])
    Leaderboard(s1).merge([s2])   # s1: a copy of X
    y = trial(s2, trial_id="x", objective=None, status="failed", supersedes=x["row_id"])
    Leaderboard(s2).append([y])
    Leaderboard(s2).append([trial(s2, trial_id="x", objective=0.8, supersedes=y["row_id"])])
    board = Leaderboard(dst)
    if order == "apart":
        board.merge([s2])
        board.merge([s1])
    else:
        board.merge([s1, s2] if order == "copy_first" else [s2, s1])
    assert [r["status"] for r in board.table().to_pylist()] == ["completed"]
    assert board.merge([s1, s2])["rows"] == 0


def swept(store, sweep_id: str, *, scheduler: str | None, lr: float) -> bytes:
    """A sweep's two completed trials in ``store`` and, unless ``scheduler`` is None, its sweep.json as ``tune``
    records it (its config with the search it ran, its baselines); the record's bytes (b"" without)."""
    search = {"space": {"train.head_lr": {"choice": [lr, lr * 2]}}, "scheduler": {"type": scheduler or "asha"}}
    if scheduler == "moasha":
        search["scheduler"]["metrics"] = ["left_accuracy", "right_accuracy"]
    cfg = parse_config(embedded(store, search=search))
    Leaderboard(store).append([row(cfg.with_values({"train.head_lr": v}), [{**HISTORY[0], "left_accuracy": a,
                                                                          "right_accuracy": b, "objective": a}],
                                   trial_id=f"{sweep_id}-{i}", sweep_id=sweep_id)
                               for i, (v, a, b) in enumerate([(lr, 0.6, 0.8), (lr * 2, 0.7, 0.5)])])
    if scheduler is None:
        return b""
    record = json.dumps({"sweep_id": sweep_id, "config_hash": cfg.config_hash(), "config": cfg.public_dump(),
                         "data_fingerprint": None, "training_revision": TRAINING_REVISION,
                         "baselines": {"left": 0.9, "right": 0.8}}).encode()
    storage.atomic_write(layout.sweep_record(store, "t", sweep_id), record)
    return record


def test_merge_brings_each_merged_sweeps_record_along(tmp_path):
    """merge copied a sweep's rows but not its sweep.json: in DST the report grouped the merged sweeps' fronts under
    scheduler "unknown", ablate lost the searched space and confirm the sweep's baselines (found by an audit)."""
    from orchestrator.leaderboard.query import rows as row_dicts
    from orchestrator.report.fronts import scheduler_fronts, sweep_searches
    from orchestrator.sweep.confirm import sweep_record

    home, away, dst = (str(tmp_path / n) for n in ("home", "away", "dst"))
    mo = swept(home, "sw-mo", scheduler="moasha", lr=1e-3)
    sync = swept(away, "sw-sync", scheduler="sync", lr=3e-3)
    swept(away, "sw-none", scheduler=None, lr=5e-3)                     # a sweep whose record is gone
    assert Leaderboard(dst).merge([home, away])["rows"] == 6
    # as recorded, marked as merged (`tune --resume` never takes it up here: its Tune state stayed in the source)
    assert json.loads(storage.read_bytes(layout.sweep_record(dst, "t", "sw-mo"))) == {**json.loads(mo),
                                                                                      "merged_from": home}
    assert json.loads(storage.read_bytes(layout.sweep_record(dst, "t", "sw-sync"))) == {**json.loads(sync),
                                                                                        "merged_from": away}
    assert not storage.exists(layout.sweep_record(dst, "t", "sw-none"))
    trials = row_dicts(Leaderboard(dst).table(experiment="t"))
    by = scheduler_fronts(trials, sweep_searches(trials, dst, "t"))["by_scheduler"]
    assert {name: b["sweeps"] for name, b in by.items()} == {"moasha": ["sw-mo"], "sync": ["sw-sync"],
                                                             "unknown": ["sw-none"]}
    merged = next(r for r in trials if r["sweep_id"] == "sw-mo")
    assert merged["config"]["storage"] == dst                           # confirm reads DST's record
    assert sweep_record(merged)["baselines"] == {"left": 0.9, "right": 0.8}


def test_merge_never_overwrites_a_sweep_record_the_target_has(tmp_path):
    """DST's own sweep.json of a sweep stays as it is, whatever the source's says; the merge does not fail on it."""
    home, dst = str(tmp_path / "home"), str(tmp_path / "dst")
    theirs = swept(home, "sw1", scheduler="moasha", lr=1e-3)
    ours = json.dumps({"sweep_id": "sw1", "config": {**json.loads(theirs)["config"], "storage": dst}}).encode()
    storage.atomic_write(layout.sweep_record(dst, "t", "sw1"), ours)
    assert ours != theirs and Leaderboard(dst).merge(home)["rows"] == 2
    assert storage.read_bytes(layout.sweep_record(dst, "t", "sw1")) == ours
    assert Leaderboard(dst).merge(home)["rows"] == 0
    assert storage.read_bytes(layout.sweep_record(dst, "t", "sw1")) == ours


def test_merge_brings_a_sweeps_record_into_s3(s3_server, tmp_path):
    import pyarrow.fs as pafs

    pafs.S3FileSystem(access_key="AKIARECORD", secret_key="recordS3cret", endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("merge-record")
    shared = (f"s3://AKIARECORD:recordS3cret@merge-record/shared?endpoint_override={s3_server}&scheme=http"
              f"&region=us-east-1")
    home = str(tmp_path / "home")
    record = swept(home, "sw1", scheduler="moasha", lr=1e-3)
    assert Leaderboard(shared).merge(home)["rows"] == 2
    assert json.loads(storage.read_bytes(layout.sweep_record(shared, "t", "sw1"))) == {**json.loads(record),
                                                                                       "merged_from": home}


def test_a_merged_sweeps_record_is_never_what_resume_takes_up_in_the_target(tmp_path):
    """A merged sweep.json names the source's storage, and DST holds none of its Tune state: `tune --resume` in DST
    took the newest sweep, a merged one, and refused DST's own config (found by a review). It resumes DST's own
    sweep now, and a merged sweep named by id is refused, naming where it ran."""
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep, sweep_hash

    dst, src = str(tmp_path / "dst"), str(tmp_path / "src")

    def own_sweep(store, sweep_id):
        cfg = parse_config(embedded(store, search={"space": {"train.head_lr": {"choice": [1e-3, 2e-3]}}}))
        Leaderboard(store).append([row(cfg, HISTORY, trial_id=f"{sweep_id}-0", sweep_id=sweep_id)])
        storage.atomic_write(layout.sweep_record(store, "t", sweep_id), json.dumps(
            {"sweep_id": sweep_id, "config_hash": sweep_hash(cfg), "config": cfg.public_dump(),
             "data_fingerprint": None, "training_revision": TRAINING_REVISION, "baselines": None}).encode())
        return cfg

    cfg = own_sweep(dst, "20240101-000000-aaaaaa")     # DST's own sweep, interrupted
    own_sweep(src, "20240102-000000-bbbbbb")           # a newer one elsewhere, of the same experiment
    assert Leaderboard(dst).merge(src)["rows"] == 1
    assert find_sweep(cfg, None, fingerprint=None) == "20240101-000000-aaaaaa"
    with pytest.raises(ConfigError, match=f"sweep 20240102-000000-bbbbbb was merged from {src}: resume it there"):
        find_sweep(cfg, "20240102-000000-bbbbbb", fingerprint=None)
