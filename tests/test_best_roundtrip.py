"""`best` writes the winner's config so that `train` retrains that trial's work (found by a helper's audit of best,
confirm and retrain; each test seen failing before its fix). No Ray: rows are written with the leaderboard's API."""
from factories import embedded, row, run_cli
from orchestrator.config import load_config, parse_config
from orchestrator.leaderboard import Leaderboard
from orchestrator.leaderboard.query import rows as row_dicts


def _reversed_tasks(tmp_path):
    raw = embedded(tmp_path / "runs")
    raw["tasks"] = dict(reversed(list(raw["tasks"].items())))      # right, then left: other work (heads' order)
    return parse_config(raw)


def test_a_stored_config_keeps_its_tasks_order(tmp_path):
    """Rows stored configs with sorted keys: tasks right, left came back left, right, another config hash."""
    cfg = _reversed_tasks(tmp_path)
    board = Leaderboard(cfg.storage)
    board.append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a", sweep_id="s")])
    stored = row_dicts(board.table())[0]
    assert list(stored["config"]["tasks"]) == ["right", "left"]
    assert parse_config(stored["config"]).config_hash() == stored["config_hash"] == cfg.config_hash()


def test_best_yaml_retrains_the_winners_config_hash(tmp_path, capsys):
    cfg = _reversed_tasks(tmp_path)
    board = Leaderboard(cfg.storage)
    board.append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a", sweep_id="s")])
    code, _, err = run_cli(capsys, "best", "--storage", cfg.storage, "-e", cfg.name, "-o", str(tmp_path / "b.yaml"))
    assert code == 0, err
    assert load_config(str(tmp_path / "b.yaml")).config_hash() == cfg.config_hash()


def test_a_merged_row_keeps_its_tasks_order_and_its_work(tmp_path):
    """Merge re-wrote a row's config with sorted keys, and rehashed it from that: another config's hash."""
    cfg = _reversed_tasks(tmp_path)
    Leaderboard(cfg.storage).append([row(cfg, [{"epoch": 1, "objective": 0.9, "mean_score": 0.9}], trial_id="a",
                                         sweep_id="s")])
    into = str(tmp_path / "dst")
    Leaderboard(into).merge([cfg.storage])
    merged = row_dicts(Leaderboard(into).table())[0]
    assert list(merged["config"]["tasks"]) == ["right", "left"]
    assert merged["config_hash"] == cfg.with_values({"storage": into}).config_hash()


def _three_objectives(tmp_path) -> Leaderboard:
    board = Leaderboard(str(tmp_path / "mixed"))
    common = {"sweep_id": "s", "status": "completed", "training_revision": 5}
    board.append([
        {**common, "experiment": "acc", "trial_id": "a1", "objective": 0.93, "objective_metric": "mean_score",
         "objective_mode": "max", "config": {"name": "acc"}},
        {**common, "experiment": "dm", "trial_id": "d1", "objective": 3.5, "objective_metric": "delta_m",
         "objective_mode": "max", "config": {"name": "dm"}},
        {**common, "experiment": "mae", "trial_id": "m1", "objective": 0.2, "objective_metric": "sum_mae",
         "objective_mode": "min", "config": {"name": "mae"}}])
    return board


def test_best_across_experiments_of_other_objectives_is_refused_and_names_them(tmp_path, capsys):
    """`best` without -e ranked a Δm% of 3.5 above a mean score of 0.93 and an MAE of 0.2, and wrote d1, exit 0."""
    board = _three_objectives(tmp_path)
    code, _, err = run_cli(capsys, "best", "--storage", str(tmp_path / "mixed"), "-o", str(tmp_path / "b.yaml"))
    assert code == 2 and "\n" not in err and "-e" in err and "delta_m" in err and "sum_mae" in err, err
    assert not (tmp_path / "b.yaml").exists()
    assert board.best(experiment="mae")["trial_id"] == "m1"          # one experiment: its own objective
    assert board.best(metric="objective", experiment=["acc"])["trial_id"] == "a1"


def test_best_confirmed_refuses_a_winner_of_data_the_experiment_no_longer_ranks(tmp_path, capsys):
    """Confirmed on the data before a rewrite (fingerprint f1), A was written by `best --confirmed`, exit 0, where
    `best` picks B of the newest data and `leaderboard` shows A as 'other data'."""
    from datetime import datetime, timedelta, timezone

    st, t0 = str(tmp_path / "runs"), datetime(2026, 12, 1, tzinfo=timezone.utc)

    def cfg(lr, seed=0):
        return {"name": "e", "storage": st, "data": {"train": "builtin:multidigits/train",
                                                     "validation": "builtin:multidigits/val"},
                "tasks": {"left": {"type": "classification"}}, "backbone": {"kind": "builtin", "weights": "none"},
                "train": {"head_lr": lr, "seed": seed}}
    common = {"experiment": "e", "objective_metric": "mean_score", "objective_mode": "max", "status": "completed",
              "training_revision": 5}
    board = Leaderboard(st)
    board.append([{**common, "kind": "trial", "sweep_id": "s1", "trial_id": "A", "objective": 0.90,
                   "config": cfg(0.01), "data_fingerprint": "f1", "created_at": t0}])
    board.append([{**common, "kind": "confirm", "sweep_id": "confirm-1", "trial_id": f"c{s}", "confirm_of": "A",
                   "seed": s, "objective": 0.89, "config": cfg(0.01, s), "data_fingerprint": "f1",
                   "created_at": t0 + timedelta(hours=1)} for s in (1, 2)])
    board.append([{**common, "kind": "trial", "sweep_id": "s2", "trial_id": "B", "objective": 0.70,
                   "config": cfg(0.002), "data_fingerprint": "f2", "created_at": t0 + timedelta(days=1)}])
    code, _, err = run_cli(capsys, "best", "--storage", st, "-e", "e", "--confirmed", "-o", str(tmp_path / "b.yaml"))
    assert code == 2 and "\n" not in err and "confirm" in err and "A" in err, err
    assert not (tmp_path / "b.yaml").exists()
    # ablate took that stale winner as its reference (a helper's audit of confirm and ablate)
    import pytest

    from orchestrator.errors import ConfigError
    from orchestrator.sweep.ablate import winner_row

    with pytest.raises(ConfigError, match="confirmed on older data"):
        winner_row(board, "e")
    # A confirmed again on the new data (confirm retrains a trial's config): its confirmation is of the newest
    # measurement, whatever data its sweep trained on (found reviewing this change: it was refused for good)
    board.append([{**common, "kind": "confirm", "sweep_id": "confirm-2", "trial_id": f"d{s}", "confirm_of": "A",
                   "seed": s, "objective": 0.88, "config": cfg(0.01, s), "data_fingerprint": "f2",
                   "created_at": t0 + timedelta(days=2)} for s in (1, 2)])
    code, out, err = run_cli(capsys, "best", "--storage", st, "-e", "e", "--confirmed", "-o", str(tmp_path / "b.yaml"))
    assert code == 0 and "confirmed winner A" in out, err


def test_a_kind_no_row_can_have_is_refused_from_python(tmp_path):
    """Leaderboard.top(kind="trials") returned 0 rows without a word (the CLI's --kind is a choice)."""
    import pytest

    from orchestrator.errors import ConfigError

    board = _three_objectives(tmp_path)
    with pytest.raises(ConfigError, match="trials.*trial, baseline, confirm, ablation"):
        board.top(5, kind="trials", experiment="acc")
    assert board.top(5, kind=["trial", "confirm"], experiment="acc").num_rows == 1


def test_the_confirmed_ranking_names_failed_seeds_and_configurations_with_no_seed_completed():
    """B's seeds 1 and 2 failed and it ranked first on its one seed, without a word; C, whose 3 seeds diverged, was
    not listed at all (a helper's audit of confirm)."""
    from orchestrator.cli.common import mean_pm
    from orchestrator.leaderboard.ranking import confirmed

    from test_report import trial

    def run(of, seed, score, **more):
        return trial(f"c-{of}-{seed}", score, score, depth=0, kind="confirm", sweep="conf", seed=seed,
                     extra={"confirm_of": of}, **more)

    rows = [run("A", s, 0.70) for s in (1, 2, 3)]
    rows += [run("B", 1, None, error="worker died"), run("B", 2, None, error="worker died"), run("B", 3, 0.75)]
    rows += [run("C", s, 0.9, diverged=True) for s in (1, 2, 3)]
    ranked = confirmed(rows)
    assert [c["confirm_of"] for c in ranked] == ["A", "B", "C"]
    assert ranked[1]["failed"] == [1, 2] and "seeds 1, 2 failed" in mean_pm(ranked[1])
    assert ranked[2]["n"] == 0 and ranked[2]["diverged"] == [1, 2, 3]
    assert mean_pm(ranked[2]) == "no seed completed (seeds 1, 2, 3 diverged)"


def test_best_of_every_kind_or_of_experiments_of_other_tasks_is_refused(tmp_path, capsys):
    """`best --kind all` wrote a single-task baseline as best.yaml (its 'mean_score' is one task's accuracy, 0.95,
    above the trials' 0.89), and `best` without -e ranked the mean scores of other task sets as one: the check
    compared objective_metric alone (found by a helper's audit). It compares what the objective measures."""
    from factories import embedded, row
    from orchestrator.config import parse_config
    from orchestrator.sweep.baselines import single_task

    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs, name="exp"))
    other = {**embedded(runs, name="other"), "tasks": {"left": {"type": "classification"}}}
    other = parse_config(other)
    hist = lambda v: [{"epoch": 1, "objective": v, "mean_score": v}]   # noqa: E731
    board = Leaderboard(runs)
    board.append([row(cfg, hist(0.89), trial_id="t1", sweep_id="s"),
                  row(single_task(cfg, "left"), hist(0.95), trial_id="b-left", kind="baseline",
                      extra={"baseline_task": "left", "baseline_key": "k"}),
                  row(other, hist(0.97), trial_id="o1", sweep_id="o")])
    for args in (["-e", "exp", "--kind", "all"], []):
        code, _, err = run_cli(capsys, "best", "--storage", runs, *args, "-o", str(tmp_path / "b.yaml"))
        assert code == 2 and "\n" not in err and "mean_score of left accuracy, right accuracy" in err, (args, err)
        assert not (tmp_path / "b.yaml").exists()
    assert board.best(experiment="exp")["trial_id"] == "t1"   # one experiment's trials: one objective


def test_best_of_baselines_of_other_tasks_is_refused_and_a_row_without_config_is_no_other_objective(tmp_path, capsys):
    """The review of e8c461a: `best -e exp --kind baseline` still ranked left's accuracy against right's (one
    experiment, one kind: configs were not read), and a row without a config (its tasks unknown) made `best` refuse
    two experiments of the same tasks."""
    from factories import embedded, row
    from orchestrator.config import parse_config
    from orchestrator.sweep.baselines import single_task

    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs, name="exp"))
    hist = lambda v: [{"epoch": 1, "objective": v, "mean_score": v}]   # noqa: E731
    board = Leaderboard(runs)
    board.append([row(single_task(cfg, t), hist(v), trial_id=f"b-{t}", kind="baseline",
                      extra={"baseline_task": t, "baseline_key": t}) for t, v in (("left", 0.95), ("right", 0.97))])
    code, _, err = run_cli(capsys, "best", "--storage", runs, "-e", "exp", "--kind", "baseline", "-o",
                           str(tmp_path / "b.yaml"))
    assert code == 2 and "mean_score of left accuracy" in err and "mean_score of right accuracy" in err, err
    # one experiment and one kind given: the advice is the task, not -e (the review of da09751)
    assert err.endswith("select one task with --where \"baseline_task == 'left'\" (experiment=, kind=, where= from "
                        "Python)"), err
    other = str(tmp_path / "other")
    same = Leaderboard(other)
    same.append([row(cfg, hist(0.9), trial_id="a1", sweep_id="s"),
                 {"experiment": "b", "sweep_id": "s", "kind": "trial", "status": "completed", "trial_id": "b1",
                  "objective": 0.95, "objective_metric": "mean_score", "objective_mode": "max"}])
    assert same.best()["trial_id"] == "b1"   # b1's tasks unknown: not another objective
