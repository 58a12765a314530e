"""`orchestrator ablate`: the winner varied one dimension at a time (plan, reuse, mistakes), the report's "What
mattered" and front-hypervolume sections, and (slow) a real 2-worker MO-ASHA sweep + ablate + report."""
import json
import os
import statistics

import pytest

from factories import embedded, row, run_cli, write_yaml
from orchestrator import layout, storage
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.leaderboard import Leaderboard
from orchestrator.report.mattered import what_mattered
from orchestrator.sweep.ablate import REFERENCE, plan, winner_row

SPACE = {"train.loss_weighting": {"choice": ["static", "uncertainty", "dwa"]},
         "train.freeze_depth": {"choice": [0, 1, 2]},
         "train.head_lr": {"loguniform": [1e-4, 1e-2]}}


def base_cfg(storage_dir, **train):
    return parse_config(embedded(storage_dir, name="exp", train={"epochs": 2, "batch_size": 64, "seed": 0, **train}))


def metrics_history(left, right, epochs=2):
    return [{"epoch": e, "objective": (left + right) / 2, "mean_score": (left + right) / 2, "left_accuracy": left,
             "right_accuracy": right} for e in range(1, epochs + 1)]


BASELINES = {"left": 0.95, "right": 0.95}   # what the sweep's Δm% was measured against (its sweep.json)


def sweep_board(tmp_path, scheduler="asha"):
    """A finished sweep: its sweep.json (with the space) and three trial rows; the winner learns its weights."""
    runs = str(tmp_path / "runs")
    cfg = base_cfg(runs)
    search = {"space": SPACE, "num_samples": 3, "scheduler": {"type": scheduler}}
    if scheduler == "moasha":
        search["scheduler"]["metrics"] = ["left_accuracy", "right_accuracy"]
    storage.atomic_write(layout.sweep_record(runs, "exp", "sw1"), json.dumps(
        {"sweep_id": "sw1", "config": {**cfg.public_dump(), "search": search},
         "baselines": BASELINES}).encode())
    trials = [("t1", cfg.with_values({"train.loss_weighting": "uncertainty", "train.freeze_depth": 1}), 0.9, 0.8),
              ("t2", cfg.with_values({"train.loss_weights": {"left": 0.7, "right": 0.3}}), 0.85, 0.75),
              ("t3", cfg.with_values({"train.loss_weights": {"left": 0.2, "right": 0.8}}), 0.6, 0.9)]
    Leaderboard(runs).append([row(c, metrics_history(a, b), trial_id=t, sweep_id="sw1") for t, c, a, b in trials])
    return runs


def ran(board, todo, history, *, sweep_id: str, prefix: str = "a") -> None:
    """``todo``'s runs (a plan) as the ablation's Tune run records them, each with ``history(config, extra)``."""
    board.append([row(c, history(c, x), trial_id=f"{prefix}{i}", sweep_id=sweep_id, kind="ablation", extra=x)
                  for i, (c, x) in enumerate(zip(todo.configs, todo.extra))])


def test_the_plan_varies_the_winner_one_dimension_at_a_time(tmp_path):
    runs = sweep_board(tmp_path)
    todo = plan(Leaderboard(runs), winner_row(Leaderboard(runs), "exp"), dims=["train.loss_weighting", "train.freeze_depth"], seeds=2, values={},
                storage_location=runs)
    assert todo.winner["trial_id"] == "t1"          # the best completed trial (no confirmation runs)
    made = [(x["ablation_dim"], json.loads(x["ablation_value"]), c.train.seed)
            for c, x in zip(todo.configs, todo.extra)]
    assert made == [(REFERENCE, None, 1), (REFERENCE, None, 2),
                    ("train.loss_weighting", "static", 1), ("train.loss_weighting", "static", 2),
                    ("train.loss_weighting", "dwa", 1), ("train.loss_weighting", "dwa", 2),
                    ("train.freeze_depth", 0, 1), ("train.freeze_depth", 0, 2),
                    ("train.freeze_depth", 2, 1), ("train.freeze_depth", 2, 2)]
    for c, x in zip(todo.configs, todo.extra):       # everything else held at the winner's values
        assert c.train.freeze_depth == (json.loads(x["ablation_value"]) if x["ablation_dim"] == "train.freeze_depth"
                                        else 1)
        assert c.train.epochs == 2 and c.resources.workers == 1 and x["ablation_of"] == "t1"
    static = todo.configs[2]
    assert static.train.loss_weighting == "static"
    assert static.train.loss_weights == {"left": 0.7, "right": 0.3}   # the best static trial's weights (t2)


def test_a_dimension_that_is_not_a_choice_needs_values(tmp_path):
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    with pytest.raises(ConfigError, match="--values train.head_lr=V1,V2"):
        plan(board, winner_row(board, "exp"), dims=["train.head_lr"], seeds=1, values={}, storage_location=runs)
    todo = plan(board, winner_row(board, "exp"), dims=["train.head_lr"], seeds=1, values={"train.head_lr": [0.01]}, storage_location=runs)
    assert [c.train.head_lr for c in todo.configs] == [0.001, 0.01]
    with pytest.raises(ConfigError, match="has no trial 'nope'"):
        winner_row(board, "exp", "nope")


def test_runs_of_another_winners_ablation_are_not_reused_under_this_one(tmp_path):
    """Ablation runs were reused by config hash alone: winner t4 (t1 with freeze depth 2) after t1's freeze-depth
    ablation found every run done (its own value, and each alternative, equal t1's runs), trained nothing, and
    "what mattered" still showed t1's rows. Reuse is per winner; confirm's per configuration confirmed."""
    from orchestrator.sweep.confirm import done_runs

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    t1 = parse_config(winner_row(board, "exp")["config"])
    board.append([row(t1.with_values({"train.freeze_depth": 2}), metrics_history(0.5, 0.5), trial_id="t4",
                      sweep_id="sw1")])
    first = plan(board, winner_row(board, "exp"), dims=["train.freeze_depth"], seeds=2, values={},
                 storage_location=runs)
    board.append([row(c, metrics_history(0.8, 0.8), trial_id=f"a{i}", sweep_id="ab", kind="ablation", extra=x)
                  for i, (c, x) in enumerate(zip(first.configs, first.extra))])
    other = plan(board, winner_row(board, "exp", "t4"), dims=["train.freeze_depth"], seeds=2, values={},
                 storage_location=runs)
    assert len(other.configs) == 6 and other.reused == 0
    again = plan(board, winner_row(board, "exp"), dims=["train.freeze_depth"], seeds=2, values={},
                 storage_location=runs)
    assert again.configs == () and again.reused == 6
    done = done_runs(board, "exp", kind="ablation", fingerprint=None)
    assert ("t1", first.configs[0].config_hash()) in done and ("t4", first.configs[0].config_hash()) not in done


def test_ablation_rows_are_reused_on_reruns_and_summed_up_by_alternative(tmp_path):
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    todo = plan(board, winner_row(board, "exp"), dims=["train.loss_weighting"], seeds=2, values={}, storage_location=runs)
    scores = {REFERENCE: (0.9, 0.8), "static": (0.8, 0.8), "dwa": (0.7, 0.6)}
    rows = []
    for i, (c, x) in enumerate(zip(todo.configs, todo.extra)):
        left, right = scores[json.loads(x["ablation_value"]) or REFERENCE]
        left += 0.01 * i   # seeds differ
        rows.append(row(c, metrics_history(left, right), trial_id=f"a{i}", sweep_id="ab", kind="ablation", extra=x,
                        baselines=BASELINES))
    board.append(rows)
    again = plan(board, winner_row(board, "exp"), dims=["train.loss_weighting"], seeds=2, values={}, storage_location=runs)
    assert again.configs == () and again.reused == 6
    # the same config on other data (a file rewritten in place: the hash names its path) is work still to do
    other = plan(board, winner_row(board, "exp"), dims=["train.loss_weighting"], seeds=2, values={}, storage_location=runs,
                 fingerprint="other data")
    assert len(other.configs) == 6 and other.reused == 0
    # a later baseline of other work (another budget): not the one the sweep's Δm% was measured against
    board.append([row(base_cfg(runs), metrics_history(0.60, 0.60), trial_id=f"b{t}", kind="baseline",
                      extra={"baseline_task": t, "baseline_key": "other|" + t}) for t in ("left", "right")])
    from orchestrator.leaderboard.query import rows as row_dicts

    m = what_mattered(row_dicts(board.table(experiment="exp", kind=None)))
    alts = m["dims"]["train.loss_weighting"]
    assert set(alts) == {"uncertainty", "static", "dwa"} and alts["uncertainty"]["winner"]
    mine = [r for r in rows if json.loads(r["ablation_value"]) == "dwa"]
    assert alts["dwa"]["n"] == 2
    assert alts["dwa"]["mean"] == pytest.approx(statistics.fmean(r["objective"] for r in mine))
    assert alts["dwa"]["std"] == pytest.approx(statistics.stdev(r["objective"] for r in mine))
    want_dm = statistics.fmean(100 * ((r["left_accuracy"] - 0.95) / 0.95 + (r["right_accuracy"] - 0.95) / 0.95) / 2
                               for r in mine)
    assert alts["dwa"]["delta_m"]["mean"] == pytest.approx(want_dm)


def test_the_report_has_what_mattered_importance_and_hypervolume(tmp_path):
    from orchestrator.report import write_report

    runs = sweep_board(tmp_path, scheduler="moasha")
    board = Leaderboard(runs)
    cfg = base_cfg(runs)
    board.append([row(cfg.with_values({"train.freeze_depth": d, "train.head_lr": lr}),
                      metrics_history(0.5 + 0.1 * d, 0.7 - 0.05 * d), trial_id=f"x{d}{i}", sweep_id="sw1",
                      searched={"train.freeze_depth": d, "train.head_lr": lr})
                  for i, lr in enumerate((1e-3, 3e-3)) for d in (0, 1, 2)])
    res = write_report(board, "exp", str(tmp_path / "rep"))
    text = open(os.path.join(tmp_path, "rep", "report.md")).read()
    assert "## What mattered" in text and "No ablation runs" in text
    assert "### Parameter importance (fANOVA" in text
    assert set(res["importance"]["importance"]) >= {"freeze_depth", "head_lr"}
    assert sum(res["importance"]["importance"].values()) == pytest.approx(1.0)
    f = res["fronts"]
    assert f["metrics"] == ["left_accuracy", "right_accuracy"] and list(f["by_scheduler"]) == ["moasha"]
    assert f["reference"] == {"left_accuracy": 0.0, "right_accuracy": 0.0}
    # front: (0.9, 0.8) t1, (0.6, 0.9) t3, (0.7, 0.6) x2*, dominated by t1: HV = 0.9*0.8 + 0.6*0.1
    assert f["by_scheduler"]["moasha"]["hypervolume"] == pytest.approx(0.9 * 0.8 + 0.6 * 0.1)
    assert "## Front hypervolume by scheduler" in text and "`left_accuracy` 0 (classes not listed in the config)" in text


def test_ablate_mistakes_are_one_line_and_start_no_ray(tmp_path, capsys, no_ray):
    runs = sweep_board(tmp_path)
    r = run_cli(capsys, "ablate", "-e", "exp", "--dims", "train.head_lr", "--storage", runs)
    assert r.code == 2 and r.err.count("\n") == 0 and "--values train.head_lr=V1,V2" in r.err
    r = run_cli(capsys, "ablate", "-e", "exp", "--dims", "x", "--values", "x", "--storage", runs)
    assert r.code == 2 and "is not DIM=V1,V2" in r.err
    r = run_cli(capsys, "ablate", "-e", "nope", "--dims", "train.freeze_depth", "--storage", runs)
    assert r.code == 2 and "no completed trials" in r.err


@pytest.mark.slow
def test_a_moasha_sweep_then_ablate_then_its_report(tmp_path, capsys):
    """The embedded default, 1 worker per trial as the demo: a real MO-ASHA sweep, ablate on its winner, and the
    report."""
    runs = tmp_path / "runs"
    cfg = embedded(runs, name="mo", train={"epochs": 2, "batch_size": 64, "seed": 0},
                   resources={"workers": 1, "cpus_per_worker": 0.45},
                   search={"space": {"train.freeze_depth": {"choice": [1, 4]}}, "num_samples": 3, "searcher": "optuna",
                           "scheduler": {"type": "moasha", "metrics": ["left_accuracy", "right_accuracy"],
                                         "reduction_factor": 2}, "max_concurrent_trials": 1, "baselines": True})
    path = write_yaml(tmp_path / "mo.yaml", cfg)
    assert run_cli(capsys, "tune", path).code == 0
    # the sweep's own folder (the baselines' Tune run has one too)
    sweep_id = next(d for d in os.listdir(runs / "sweeps" / "mo") if not d.startswith("baseline"))
    assert storage.exists(layout.scheduler_state(str(runs), "mo", sweep_id))
    r = run_cli(capsys, "ablate", "-e", "mo", "--dims", "train.freeze_depth", "--seeds", "1", "--storage", str(runs))
    assert r.code == 0, r.err
    assert "  train.freeze_depth (seeds " in r.out and "*" in r.out
    rows = Leaderboard(str(runs)).table(experiment="mo", kind="ablation").to_pylist()
    assert len(rows) == 2 and {x["ablation_dim"] for x in rows} == {REFERENCE, "train.freeze_depth"}
    baselines = json.loads((runs / "sweeps" / "mo" / sweep_id / "sweep.json").read_text())["baselines"]
    for x in rows:   # Δm% against the sweep's own baselines
        want = 100 * sum((x[f"{t}_accuracy"] - b) / b for t, b in baselines.items()) / len(baselines)
        assert x["delta_m_pct"] == pytest.approx(want), (x["delta_m_pct"], want)
    again = run_cli(capsys, "ablate", "-e", "mo", "--dims", "train.freeze_depth", "--seeds", "1",
                    "--storage", str(runs))
    # the rerun's own log: the newest ablate log (its name has the second it started: computing it again here, after
    # the run, named a second that had no log once the rerun crossed a second's boundary)
    logs = sorted((runs / "logs").glob("ablate-mo-*.log"), key=lambda p: p.stat().st_mtime)
    assert again.code == 0 and logs and "0 runs to train, 2 reused" in again.out + again.err + logs[-1].read_text()
    assert run_cli(capsys, "report", "-e", "mo", "-o", str(tmp_path / "rep"), "--storage", str(runs)).code == 0
    text = open(tmp_path / "rep" / "report.md").read()
    assert "## What mattered" in text and "No ablation runs" not in text and "train.freeze_depth" in text
    assert "## Front hypervolume by scheduler" in text and "| moasha |" in text


def test_a_conditional_choice_ablates_its_parent_values(tmp_path):
    """A branch written as {static: {train.loss_weights: ...}} is the value static."""
    from orchestrator.sweep.ablate import alternatives

    runs = sweep_board(tmp_path)
    record = layout.sweep_record(runs, "exp", "sw1")
    saved = json.loads(storage.read_bytes(record))
    saved["config"]["search"]["space"]["train.loss_weighting"] = {
        "choice": [{"static": {"train.loss_weights": {"simplex": {"concentration": 1.0}}}}, "uncertainty", "dwa"]}
    storage.atomic_write(record, json.dumps(saved).encode())
    winner = {"experiment": "exp", "sweep_id": "sw1", "config": base_cfg(runs).run_fields()}
    assert alternatives(None, winner, ["train.loss_weighting"], {}) == {
        "train.loss_weighting": ["static", "uncertainty", "dwa"]}


def test_ablation_runs_measure_delta_m_against_the_winners_sweep_baselines_only(tmp_path):
    """Ablation rows had no Δm% of their own, so the report fell back to the latest baseline row of any work (another
    budget, other data): "controlled Δm%" against unrelated baselines. The ablation runs take the baselines the
    winner's sweep measured its Δm% against (its sweep.json), and the report uses nothing else."""
    from orchestrator.leaderboard.query import rows as row_dicts
    from orchestrator.sweep.ablate import sweep_baselines

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    assert sweep_baselines(winner) == BASELINES
    todo = plan(board, winner, dims=["train.loss_weighting"], seeds=1, values={}, storage_location=runs)
    board.append([row(c, metrics_history(0.9, 0.8), trial_id=f"a{i}", sweep_id="ab", kind="ablation", extra=x)
                  for i, (c, x) in enumerate(zip(todo.configs, todo.extra))])          # no baselines: no Δm%
    board.append([row(base_cfg(runs), metrics_history(0.60, 0.60), trial_id=f"b{t}", kind="baseline",
                      extra={"baseline_task": t, "baseline_key": "other|" + t}) for t in ("left", "right")])
    m = what_mattered(row_dicts(board.table(experiment="exp", kind=None)))
    assert not m["baselines"]
    assert all(a["delta_m"]["n"] == 0 and a["delta_m"]["mean"] is None for a in m["dims"]["train.loss_weighting"].values())


def test_merged_copies_of_ablation_runs_count_once(tmp_path):
    """`merge` marks a row already held (the same run from another leaderboard) with duplicate_of; counted again, a
    copy doubled n and shrank the std with no new evidence."""
    from orchestrator.leaderboard.query import rows as row_dicts

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    todo = plan(board, winner_row(board, "exp"), dims=["train.loss_weighting"], seeds=2, values={},
                storage_location=runs)
    made = [row(c, metrics_history(0.8 + 0.02 * i, 0.7), trial_id=f"a{i}", sweep_id="ab", kind="ablation", extra=x)
            for i, (c, x) in enumerate(zip(todo.configs, todo.extra))]
    board.append(made)
    before = what_mattered(row_dicts(board.table(experiment="exp", kind=None)))
    board.append([{**r, "row_id": f"copy-{r['row_id']}", "duplicate_of": r["row_id"]} for r in made])   # as merge writes
    after = what_mattered(row_dicts(board.table(experiment="exp", kind=None)))
    assert after["dims"] == before["dims"] and before["dims"]["train.loss_weighting"]["dwa"]["n"] == 2


def test_an_ablation_run_merge_marked_as_a_confirm_runs_copy_still_counts_in_what_mattered(tmp_path):
    """The winner's own run at seed 1 is the same work for `confirm` and `ablate`: merged into another storage, the
    ablation row got duplicate_of the confirm row, and "What mattered" (which reads the confirm rows too) left it out,
    so the winner's own value lost that seed (a helper's audit found the two rows; this is what merge made of them)."""
    from orchestrator.leaderboard.query import rows as row_dicts

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    todo = plan(board, winner_row(board, "exp"), dims=["train.loss_weighting"], seeds=1, values={},
                storage_location=runs)
    made = [row(c, metrics_history(0.8, 0.7), trial_id=f"a{i}", sweep_id="ab", kind="ablation", extra=x)
            for i, (c, x) in enumerate(zip(todo.configs, todo.extra))]
    ref = next(r for r, x in zip(made, todo.extra) if x["ablation_dim"] == REFERENCE)
    confirm = {**row(todo.configs[0], metrics_history(0.8, 0.7), trial_id="c1", sweep_id="cf", kind="confirm",
                     extra={"confirm_of": "t1"}), "row_id": "confirm-row"}
    board.append([confirm, *[{**r, "duplicate_of": "confirm-row"} if r is ref else r for r in made]])
    m = what_mattered(row_dicts(board.table(experiment="exp", kind=None)))
    owns = [a for a in m["dims"]["train.loss_weighting"].values() if a["winner"]]
    assert [a["n"] for a in owns] == [1], m


def test_ablate_reads_a_storage_given_with_credentials(tmp_path, capsys, s3_server, monkeypatch):
    """`ablate --storage s3://KEY:SECRET@...` (the fix that keeps the pair for that storage had no test): the winner
    and its sweep's space are read from the S3 storage with the pair from the URI alone, the secret is never
    printed, and the configurations it would train (pickled into Tune's state on that storage) do not hold it.
    Starting Ray is replaced by nothing, and the Tune run by a probe that keeps the configurations and stops the
    command: what is checked happens before them."""
    import pyarrow.fs as pafs

    from orchestrator import credentials

    key, secret = "AKIAABLATE", "abl/Se+cret"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("ablate-bucket")
    query = f"?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    given = f"s3://{key}:abl%2FSe%2Bcret@ablate-bucket/runs{query}"
    plain = credentials.adopt(given)                    # this test writes the board with the pair...
    local = sweep_board(tmp_path)
    board = Leaderboard(plain)
    board.append([{k: v for k, v in r.items()} for r in Leaderboard(local).table().to_pylist()])
    storage.atomic_write(layout.sweep_record(plain, "exp", "sw1"),
                         storage.read_bytes(layout.sweep_record(local, "exp", "sw1")))
    monkeypatch.setattr(credentials, "_BY_LOCATION", {})   # ...then forgets it: the command must take it from --storage
    code, out, err = run_cli(capsys, "ablate", "-e", "exp", "--dims", "heads.hidden_units", "--storage", given)
    assert code == 2 and "--dims heads.hidden_units: not a choice in sweep sw1's space" in err, err
    assert secret not in out + err and "abl%2FSe" not in out + err and key not in out + err
    from orchestrator.sweep import runner
    from orchestrator.training import session

    started = []

    def probe(session, configs, **kw):
        started.append(json.dumps([c.model_dump(mode="json") for c in configs]))
        raise ConfigError("stopped by the test before Ray")

    monkeypatch.setattr(session, "start", lambda p, **kw: None)
    monkeypatch.setattr(runner, "run_configs", probe)
    code, out, err = run_cli(capsys, "ablate", "-e", "exp", "--dims", "heads.hidden_units", "--values",
                             "heads.hidden_units=8,16", "--seeds", "1", "--storage", given)
    assert code == 2 and "stopped by the test before Ray" in err and len(started) == 1, err
    assert "ablate-bucket/runs" in started[0] and "abl%2FSe" not in started[0] and key not in started[0]


def test_an_ablation_that_fails_removes_its_disk_cache(tmp_path, capsys, monkeypatch):
    """confirm, ablate and baselines removed their disk cache only when they ended normally, and nothing resumes
    them: every one that failed (a storage error, Ctrl-C) left its decoded data set on every node for good. Their
    session's cache is now removed however they end. Ray's start is replaced by a session on a disk cache folder,
    the Tune run by a probe that fails, and the removal on every node by a recorder: the Tune run is not the point."""
    from orchestrator.data import disk_cache
    from orchestrator.sweep import runner
    from orchestrator.training import session

    runs = sweep_board(tmp_path)
    removed = []
    monkeypatch.setattr(session, "start", lambda p, **kw: session.Session(p, {"mode": "disk", "folder": "/c/x"}, None))
    monkeypatch.setattr(disk_cache, "remove_everywhere", removed.append)

    def failing(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_configs", failing)
    code, _, _ = run_cli(capsys, "ablate", "-e", "exp", "--dims", "train.loss_weighting", "--seeds", "1",
                         "--storage", runs)
    assert code != 0 and removed == ["/c/x"]


def test_a_numeric_branch_key_of_the_winner_is_not_ablated_against_itself(tmp_path):
    """The winner's sweep record is JSON: its branch key 0 is "0" there, which is not 0, so the plan held an
    "alternative" freeze depth "0" identical to the winner's own (the same config hash), trained as if it differed."""
    import json

    from factories import experiment, row
    from orchestrator import layout, storage
    from orchestrator.config import parse_config

    space = {"train.freeze_depth": {"choice": [4, {0: {"train.backbone_lr": {"loguniform": [1e-4, 1e-2]}}}]}}
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={"space": space}))
    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, "s"),
                         json.dumps({"config": cfg.public_dump()}).encode())
    won = cfg.with_values({"train.freeze_depth": 0, "train.backbone_lr": 0.003})
    board = Leaderboard(cfg.storage)
    board.append([row(won, [{"epoch": 1, "objective": 0.9, "status": "running"}], trial_id="win", sweep_id="s",
                      searched={"train.freeze_depth": 0, "train.backbone_lr": 0.003})])
    todo = plan(board, winner_row(board, cfg.name), dims=["train.freeze_depth"], seeds=1, values={},
                storage_location=cfg.storage)
    hashes = [c.config_hash() for c in todo.configs]
    assert [c.train.freeze_depth for c in todo.configs] == [0, 4] and len(set(hashes)) == 2, todo.extra


def test_what_mattered_is_of_the_winner_asked_about_not_the_latest_ablated(tmp_path):
    """`ablate --trial A` after an ablation of trial B printed B's runs under "what mattered for A" (the summary took
    the winner of the newest ablation rows; a rerun of A's, all reused, wrote none). Found by a helper's audit."""
    from orchestrator.leaderboard.query import rows as row_dicts

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    mine = winner_row(board, "exp")
    todo = plan(board, mine, dims=["train.loss_weighting"], seeds=1, values={}, storage_location=runs)
    ran(board, todo, lambda c, x: metrics_history(0.9, 0.8), sweep_id="ab")
    other = [r for r in row_dicts(board.table(experiment="exp")) if r["trial_id"] != mine["trial_id"]][0]
    todo = plan(board, other, dims=["train.head_lr"], seeds=1, values={"train.head_lr": [0.5]}, storage_location=runs)
    ran(board, todo, lambda c, x: metrics_history(0.5, 0.5), sweep_id="ab2", prefix="b")
    rows = row_dicts(board.table(experiment="exp", kind=None))
    assert what_mattered(rows)["winner"] == other["trial_id"]                       # the newest, when none is named
    asked = what_mattered(rows, winner=mine["trial_id"])
    assert asked["winner"] == mine["trial_id"] and list(asked["dims"]) == ["train.loss_weighting"]


def test_a_searched_dimension_that_is_not_a_choice_asks_for_values_as_a_sweep_records_it(tmp_path):
    """A sweep's record dumps every field of a domain (a loguniform's ``choice: null``), so ``"choice" in`` held for
    head_lr searched loguniform and `ablate --dims train.head_lr` ended in a traceback (TypeError) instead of the
    one line asking for --values (found by a helper's audit of the README)."""
    from factories import experiment, row
    from orchestrator.config import parse_config

    space = {"train.head_lr": {"loguniform": [1e-4, 1e-2]}, "train.freeze_depth": {"choice": [0, 2]}}
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={"space": space}))
    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, "s"),
                         json.dumps({"config": cfg.public_dump()}).encode())
    board = Leaderboard(cfg.storage)
    board.append([row(cfg, [{"epoch": 1, "objective": 0.9}], trial_id="w", sweep_id="s")])
    with pytest.raises(ConfigError, match="--values train.head_lr=V1,V2"):
        plan(board, winner_row(board, cfg.name), dims=["train.head_lr"], seeds=1, values={},
             storage_location=cfg.storage)


def test_values_are_read_as_one_yaml_list(tmp_path):
    """`--values train.loss_weights={left: 0.9, right: 0.1}` was split on its comma before YAML read it (a one-line
    ConfigError: not valid YAML), so a mapping value could not be given (found by a helper's audit)."""
    from orchestrator.sweep.ablate import parse_values

    assert parse_values(("train.loss_weights={left: 0.9, right: 0.1}", "train.head_lr=1e-3, 0.01",
                         "train.freeze_depth=all,0")) == {"train.loss_weights": [{"left": 0.9, "right": 0.1}],
                                                          "train.head_lr": [0.001, 0.01],
                                                          "train.freeze_depth": ["all", 0]}
    with pytest.raises(ConfigError, match="--values 'train.head_lr=\\[0.1' is not valid YAML"):
        parse_values(("train.head_lr=[0.1",))
    # null is a value (equal loss weights): this stop's first version dropped it (the review's find)
    assert parse_values(("train.loss_weights=null,{left: 0.9, right: 0.1}",)) == \
        {"train.loss_weights": [None, {"left": 0.9, "right": 0.1}]}


def test_values_of_a_dimension_not_in_dims_are_refused(tmp_path):
    """`--dims train.freeze_depth --values train.head_lr=0.01` dropped head_lr's alternatives without a word."""
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    with pytest.raises(ConfigError, match="--values train.head_lr: not in --dims"):
        plan(board, winner_row(board, "exp"), dims=["train.freeze_depth"], seeds=1,
             values={"train.head_lr": [0.01]}, storage_location=runs)


def test_an_alternative_that_is_the_same_work_is_refused(tmp_path):
    """The winner learns its weights (uncertainty): `--values train.loss_weights={...}` made an "alternative" whose
    config hash was the reference's (inactive fields reset), trained twice and shown as a finding; `--values
    train.head_lr=0.01,1e-2` trained one configuration twice under two labels (found by a helper's audit)."""
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    with pytest.raises(ConfigError, match="train.loss_weights=.*the same configuration as the winner's own"):
        plan(board, winner, dims=["train.loss_weights"], seeds=1,
             values={"train.loss_weights": [{"left": 0.9, "right": 0.1}]}, storage_location=runs)
    with pytest.raises(ConfigError, match="train.head_lr=0.01 .*the same configuration as train.head_lr=0.01"):
        plan(board, winner, dims=["train.head_lr"], seeds=1, values={"train.head_lr": [0.01, 1e-2]},
             storage_location=runs)
    # depth 5 of the 5-block backbone is 'all' (this session's reread): two labels, one configuration
    with pytest.raises(ConfigError, match='train.freeze_depth=5 .*the same configuration as train.freeze_depth="all"'):
        plan(board, winner, dims=["train.freeze_depth"], seeds=1, values={"train.freeze_depth": ["all", 5]},
             storage_location=runs, n_blocks=5)


@pytest.mark.parametrize("dim, value", [("data.image_size", [24, 24]), ("data.split_seed", 1),
                                        ("objective.metric", "left_accuracy")])
def test_a_dimension_a_session_prepares_once_is_refused(tmp_path, dim, value):
    """Ablation runs share one session: its data and backbone as the reference prepared them. `--values
    data.image_size=24,24` trained every alternative on the reference's data while its rows claimed other data;
    `objective.metric` ranked alternatives by different measures."""
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    with pytest.raises(ConfigError, match=f"ablate --dims {dim}: .*train\\.\\*, heads\\.\\*, data\\.augment\\.\\*"):
        plan(board, winner_row(board, "exp"), dims=[dim], seeds=1, values={dim: [value]}, storage_location=runs)


def test_what_mattered_counts_each_seed_of_an_alternative_once(tmp_path):
    """A rerun retrains a diverged seed, and a `static` alternative whose weights changed (a better static trial
    since): "What mattered" averaged both runs of one seed, n 4 from 2 seeds (found by a helper's audit). One run per
    alternative and seed counts: the newest, as confirm ranks."""
    import time

    from orchestrator.leaderboard.query import rows as row_dicts

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    first = plan(board, winner, dims=["train.loss_weighting"], seeds=2, values={}, storage_location=runs)
    ran(board, first, lambda c, x: metrics_history(0.6, 0.6), sweep_id="ab1")
    time.sleep(0.01)
    board.append([row(base_cfg(runs).with_values({"train.loss_weights": {"left": 0.4, "right": 0.6}}),
                      metrics_history(0.99, 0.99), trial_id="t5", sweep_id="sw1")])   # beats t1: t1 stays named
    second = plan(board, winner, dims=["train.loss_weighting"], seeds=2, values={}, storage_location=runs)
    assert [json.loads(x["ablation_value"]) for x in second.extra] == ["static", "static"]   # new weights
    ran(board, second, lambda c, x: metrics_history(0.8, 0.8), sweep_id="ab2", prefix="b")
    m = what_mattered(row_dicts(board.table(experiment="exp", kind=None)), winner="t1")
    static = m["dims"]["train.loss_weighting"]["static"]
    assert static["n"] == 2 and static["mean"] == pytest.approx(0.8)   # the newest run of each seed


def test_an_ablated_batch_size_that_does_not_split_is_refused_before_anything_starts(tmp_path, capsys, no_ray):
    """`ablate --values train.batch_size=65` on a 2-worker winner: its runs started and failed in their workers (the
    review of this stop's worker-side check)."""
    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs, name="exp", train={"epochs": 2, "batch_size": 64, "seed": 0},
                                resources={"workers": 2, "cpus_per_worker": 0.45}))
    storage.atomic_write(layout.sweep_record(runs, "exp", "sw1"), json.dumps(
        {"sweep_id": "sw1", "config": {**cfg.public_dump(), "search": {"space": SPACE}}}).encode())
    Leaderboard(runs).append([row(cfg, metrics_history(0.9, 0.8), trial_id="w", sweep_id="sw1")])
    r = run_cli(capsys, "ablate", "-e", "exp", "--dims", "train.batch_size", "--values", "train.batch_size=65",
                "--storage", runs)
    assert r.code == 2 and "\n" not in r.err and "train.batch_size 65 is not a multiple of resources.workers 2" in r.err, r


def test_what_mattered_compares_each_dimension_on_the_seeds_all_its_alternatives_ran(tmp_path):
    """`ablate --dims train.loss_weighting --seeds 3`, then `ablate --dims train.head_lr --values
    train.head_lr=0.01 --seeds 2` (the winner's own runs reused): the head_lr table set the winner's mean over seeds
    1-3 (0.84) against the alternative's over 1-2 (0.88), reversing the answer (on seeds 1-2 the winner scores
    0.91), under "seeds 1, 2, 3 for every alternative" (found by a helper's audit of the report)."""
    from orchestrator.leaderboard.query import rows as row_dicts
    from orchestrator.report.mattered import markdown_lines
    from orchestrator.report.report import _table

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    first = plan(board, winner, dims=["train.loss_weighting"], seeds=3, values={}, storage_location=runs)
    scores = {1: 0.90, 2: 0.92, 3: 0.70}
    ran(board, first, lambda c, x: metrics_history(scores[c.train.seed], scores[c.train.seed])
        if x["ablation_dim"] == REFERENCE else metrics_history(0.85, 0.85), sweep_id="ab1")
    second = plan(board, winner, dims=["train.head_lr"], seeds=2, values={"train.head_lr": [0.01]},
                  storage_location=runs)
    assert second.reused == 2   # the winner's own seeds 1 and 2
    ran(board, second, lambda c, x: metrics_history(0.88, 0.88), sweep_id="ab2", prefix="b")
    m = what_mattered(row_dicts(board.table(experiment="exp", kind=None)), winner="t1")
    head = m["dims"]["train.head_lr"]
    assert m["seeds"]["train.head_lr"] == [1, 2] and m["seeds"]["train.loss_weighting"] == [1, 2, 3]
    assert head["0.001"]["n"] == 2 and head["0.001"]["mean"] == pytest.approx(0.91) and head["0.01"]["n"] == 2
    assert m["dims"]["train.loss_weighting"]["uncertainty"]["n"] == 3
    text = "\n".join(markdown_lines({"mattered": m, "experiment": "exp", "importance": None}, _table))
    assert "`train.head_lr`: seeds 1, 2 for every alternative" in text, text
    assert "for every alternative: objective" not in text   # no one seed list for all dimensions


def test_the_ablate_command_names_each_dimensions_seeds(tmp_path, capsys, monkeypatch):
    """The README says a dimension compared on fewer seeds says so; the command printed only (n=2) (the review of
    3b3cef3). Training is stubbed (sweep.ablate.ablate: the runs are already in the leaderboard); the summary and the
    leaderboard are real."""
    import orchestrator.sweep.ablate as ablation

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    for dims, seeds, values, score in ((["train.loss_weighting"], 3, {}, 0.85),
                                       (["train.head_lr"], 2, {"train.head_lr": [0.01]}, 0.88)):
        todo = plan(board, winner, dims=dims, seeds=seeds, values=values, storage_location=runs)
        ran(board, todo, lambda c, x, score=score: metrics_history(score, score), sweep_id="ab", prefix=dims[0])
    monkeypatch.setattr(ablation, "ablate", lambda *a, **k: {"winner": winner["trial_id"], "trained": 0, "reused": 2})
    r = run_cli(capsys, "ablate", "-e", "exp", "--dims", "train.head_lr", "--values", "train.head_lr=0.01",
                "--seeds", "2", "--storage", runs)
    assert r.code == 0, r
    assert "  train.head_lr (seeds 1, 2):" in r.out and "  train.loss_weighting (seeds 1, 2, 3):" in r.out, r.out


def test_an_alternative_beyond_the_backbones_blocks_or_a_dimension_no_config_has_is_refused_before_ray(tmp_path):
    """`ablate --values train.freeze_depth=9` (5 blocks) started Ray, trained a run that failed "beyond the backbone's
    5 blocks", stored a failed row on each rerun, left the alternative out of its summary and exited 0; and a typo
    (`--dims train.freez_depth`) was told to give its alternatives with --values, though no config has that field.
    Found by a helper's audit."""
    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    with pytest.raises(ConfigError, match="train.freeze_depth 9 is beyond the backbone's 5 blocks"):
        plan(board, winner, dims=["train.freeze_depth"], seeds=1, values={"train.freeze_depth": [9]},
             storage_location=runs, n_blocks=5)
    with pytest.raises(ConfigError, match="--dims train.freez_depth: not a config field"):
        plan(board, winner, dims=["train.freez_depth"], seeds=1, values={}, storage_location=runs, n_blocks=5)


def test_each_ablation_run_says_which_alternative_and_seed_it_trains(tmp_path):
    """Every ablation run was announced as "started: base config", whatever it varied: with --top 2 nothing told which
    configuration a run belonged to. Found by a helper's audit."""
    from types import SimpleNamespace

    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    todo = plan(board, winner_row(board, "exp"), dims=["train.freeze_depth"], seeds=1, values={},
                storage_location=runs, n_blocks=5)
    lines = []
    callback = SweepCallback(todo.configs[0], context=RowContext("ablation-x", 5, kind="ablation"),
                             configs=list(todo.configs), extra=list(todo.extra), out=lines.append)
    for i in range(len(todo.configs)):
        trial = SimpleNamespace(trial_id=f"a{i}", status="RUNNING", config={"index": i})
        callback.on_trial_start(0, [trial], trial)
    assert lines == ["[a0] started: the winner's config, seed 1", "[a1] started: train.freeze_depth=0, seed 1",
                     "[a2] started: train.freeze_depth=2, seed 1"], lines
    from orchestrator.leaderboard.rows import ablated   # a string alternative as written, not JSON-quoted

    assert ablated({"ablation_dim": "train.loss_weighting", "ablation_value": '"dwa"'}) == "train.loss_weighting=dwa"


def test_the_reports_ablate_command_names_dimensions_the_winners_sweep_chose_from_and_the_storage(tmp_path):
    """The report said "No ablation runs: `orchestrator ablate -e E --dims train.loss_weighting,train.freeze_depth
    --seeds 3`" whatever the sweep searched: where loss_weighting was not a choice the command failed ("not a choice
    in sweep ...'s space"), and it left out --storage. Found by a helper's audit."""
    from orchestrator.report.mattered import ablate_command

    best = {"sweep_id": "sw1", "trial_id": "t9"}
    searches = {"sw1": {"space": {"train.freeze_depth": {"choice": [0, 1]},
                                  "train.head_lr": {"loguniform": [1e-4, 1e-2]},
                                  "heads.dropout": {"choice": [0.0, 0.2]}, "data.split_seed": {"choice": [0, 1]}}}}
    assert ablate_command("exp", best, searches, "/data/runs") == (
        "orchestrator ablate -e exp --trial t9 --dims train.freeze_depth,heads.dropout --seeds 3 --storage /data/runs")
    searches = {"sw1": {"space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]}}}}
    assert ablate_command("exp", best, searches, "/data/runs") == (
        "orchestrator ablate -e exp --trial t9 --dims train.head_lr --values train.head_lr=V1,V2 --seeds 3 "
        "--storage /data/runs")
    assert ablate_command("exp", best, searches, "/data/my runs").endswith("--storage '/data/my runs'")
    assert ablate_command("exp", None, {}, "/data/runs") == (
        "orchestrator ablate -e exp --dims train.freeze_depth --values train.freeze_depth=V1,V2 --seeds 3 "
        "--storage /data/runs")
    runs = sweep_board(tmp_path)   # its space: loss weighting and freeze depth are choices
    from orchestrator.report import write_report

    write_report(Leaderboard(runs), "exp", str(tmp_path / "rep"))
    text = open(os.path.join(tmp_path, "rep", "report.md")).read()
    winner = Leaderboard(runs).best(experiment="exp")["trial_id"]
    assert (f"`orchestrator ablate -e exp --trial {winner} --dims train.loss_weighting,train.freeze_depth --seeds 3 "
            f"--storage {runs}`" in text), text


def test_an_ablation_run_done_before_a_depth_of_every_block_ran_as_all_is_reused(tmp_path):
    """An ablation run of freeze_depth 5 (of 5 blocks) made before it ran as 'all' carries that config's hash: a rerun
    of the ablation looked for today's hash only and trained it again (a review of this stop's diff)."""
    from orchestrator.config.freezing import every_block_as_all

    runs = sweep_board(tmp_path)
    board = Leaderboard(runs)
    winner = winner_row(board, "exp")
    todo = plan(board, winner, dims=["train.freeze_depth"], seeds=1, values={"train.freeze_depth": [5]},
                storage_location=runs, n_blocks=5)
    (deep,) = [c for c, x in zip(todo.configs, todo.extra) if x["ablation_dim"] == "train.freeze_depth"]
    assert deep.train.freeze_depth == "all"
    before = deep.with_values({"train.freeze_depth": 5})   # as the code before wrote it
    assert every_block_as_all(before, 5).config_hash() == deep.config_hash() != before.config_hash()
    extra = next(x for x in todo.extra if x["ablation_dim"] == "train.freeze_depth")
    board.append([row(before, metrics_history(0.5, 0.5), trial_id="old5", sweep_id="ab0", kind="ablation",
                      extra={**extra, "ablation_value": "5"})])
    again = plan(board, winner, dims=["train.freeze_depth"], seeds=1, values={"train.freeze_depth": [5]},
                 storage_location=runs, n_blocks=5)
    assert again.reused == 1 and len(again.configs) == len(todo.configs) - 1, (again.reused, len(again.configs))
