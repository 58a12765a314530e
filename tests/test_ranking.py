"""Ranking: every metric's direction from the one registry; top and best follow a minimized objective."""

import pytest


from orchestrator.leaderboard import Leaderboard

from factories import minimized_rows, run_cli


def test_best_and_top_follow_a_minimized_objective(tmp_path):
    board = Leaderboard(str(tmp_path))
    board.append(minimized_rows())
    assert board.best()["trial_id"] == "good"
    assert board.best(metric="best_objective")["trial_id"] == "good"
    assert board.top(2).column("trial_id").to_pylist() == ["good", "bad"]


def test_one_registry_gives_every_metric_its_direction():
    from orchestrator.metrics import direction

    assert direction("sum_rmse") == "min" and direction("best_sum_rmse") == "min"
    assert direction("left_accuracy") == "max" and direction("sum_r2") == "max"
    assert direction("objective", objective_mode="min") == "min"
    assert direction("delta_m_pct") == "max"


def test_failed_and_diverged_rows_are_never_ranked(tmp_path):
    """Rows from before divergence was detected carry a finite objective (argmax of NaN logits is class 0): no ranking
    may pick them, nor a failed row, whatever its numbers; listings show them last."""
    from orchestrator.leaderboard import ranking

    board = Leaderboard(str(tmp_path))
    common = {"experiment": "e", "sweep_id": "s1", "kind": "trial", "objective_metric": "left_accuracy",
              "objective_mode": "max", "config": {"name": "e"}}
    board.append([{**common, "trial_id": t, "status": s, "objective": v, "left_accuracy": v, "right_accuracy": 1 - v}
                  for t, s, v in (("ok", "completed", 0.5), ("diverged", "diverged", 0.99), ("failed", "failed", 0.98),
                                  ("stopped", "stopped", 0.6), ("legacy", None, 0.4))])
    assert board.best()["trial_id"] == "stopped"
    assert set(ranking.UNRANKED) == {"failed", "diverged"}
    assert board.top(10).column("trial_id").to_pylist() == ["stopped", "ok", "legacy"]
    assert board.top(10, ascending=True).column("trial_id").to_pylist() == ["legacy", "ok", "stopped"]
    listed = board.top(10, ranked=False).column("trial_id").to_pylist()
    assert listed[:3] == ["stopped", "ok", "legacy"] and sorted(listed[3:]) == ["diverged", "failed"]
    front = board.pareto(["left_accuracy", "right_accuracy"]).column("trial_id").to_pylist()
    assert "diverged" not in front and "failed" not in front and front
    confirms = [{**common, "kind": "confirm", "confirm_of": "ok", "trial_id": f"c{i}", "status": s, "objective": v,
                 "seed": i} for i, (s, v) in enumerate((("completed", 0.5), ("completed", 0.7), ("diverged", 0.2)))]
    board.append(confirms)
    (top,) = ranking.confirmed(board.table(kind="confirm").to_pylist())
    assert top["n"] == 2 and top["mean"] == 0.6


def test_confirm_and_warm_starts_take_only_ranked_rows(tmp_path):
    from orchestrator.sweep.confirm import confirm_configs

    from factories import embedded
    from orchestrator.config import parse_config

    from orchestrator.sweep.tuner import first_points

    cfg = parse_config(embedded(tmp_path))
    board = Leaderboard(str(tmp_path))
    common = {"experiment": "t", "sweep_id": "s1", "kind": "trial", "objective_mode": "max"}
    board.append([{**common, "trial_id": "diverged", "status": "diverged", "objective": 0.99,
                   "config": cfg.with_values({"train.head_lr": 5.0}).run_fields()},
                  {**common, "trial_id": "ok", "status": "completed", "objective": 0.5,
                   "config": cfg.with_values({"train.head_lr": 0.02}).run_fields()}])
    configs, extra = confirm_configs(board, "t", top=2, seeds=1, workers=None, storage=str(tmp_path))
    assert extra == [{"confirm_of": "ok"}]
    warm = cfg.with_values({"search": {"space": {"train.head_lr": {"loguniform": [1e-4, 10.0]}}, "base_first": False,
                                       "warm_start": {"experiment": "t", "top": 2}}})
    assert [p["train.head_lr"] for p in first_points(warm, say=lambda line: None)] == [0.02]


def test_a_seed_confirmed_twice_or_merged_in_counts_once(tmp_path):
    """`confirm` run twice trains seeds 1..S again; `merge` brings another storage's copies of the same runs (marked
    duplicate_of). Either way each seed of a configuration is one measurement: n and the std must not grow."""
    from orchestrator.leaderboard import ranking

    common = {"experiment": "e", "sweep_id": "c1", "kind": "confirm", "confirm_of": "t1", "status": "completed",
              "objective_metric": "mean_score", "objective_mode": "max", "config": {"name": "e"}}
    first = [{**common, "trial_id": f"a{s}", "seed": s, "config_hash": f"h{s}", "objective": v,
              "created_at": f"2026-12-01T00:00:0{s}"} for s, v in ((1, 0.80), (2, 0.82), (3, 0.84))]
    again = [{**r, "trial_id": f"b{r['seed']}", "sweep_id": "c2", "objective": r["objective"] + 0.01,
              "created_at": f"2026-12-02T00:00:0{r['seed']}"} for r in first]
    merged = [{**r, "trial_id": f"m{r['seed']}", "duplicate_of": r["trial_id"]} for r in first]
    for rows, mean in ((first + again, 0.83), (first + merged, 0.82)):
        (top,) = ranking.confirmed(rows)
        assert top["n"] == 3 and top["seeds"] == [1, 2, 3], top
        assert abs(top["mean"] - mean) < 1e-9 and abs(top["std"] - 0.02) < 1e-9


def test_a_confirm_run_merge_marked_as_an_ablation_runs_copy_still_counts(tmp_path):
    """The winner's own run at a seed is the same work for confirm and ablate: merged, a confirm row can get
    duplicate_of the ablation row, and the confirmed ranking (the report reads every kind) left that seed out. Copies
    count once among confirm rows only (the twin of What mattered's mend)."""
    from orchestrator.leaderboard import ranking

    common = {"experiment": "e", "sweep_id": "c1", "kind": "confirm", "confirm_of": "t1", "status": "completed",
              "objective_metric": "mean_score", "objective_mode": "max", "config": {"name": "e"}}
    runs = [{**common, "trial_id": f"a{s}", "row_id": f"a{s}", "seed": s, "config_hash": f"h{s}", "objective": v,
             "created_at": f"2026-12-01T00:00:0{s}"} for s, v in ((1, 0.80), (2, 0.82))]
    ablation = {**runs[0], "kind": "ablation", "trial_id": "x1", "row_id": "x1", "ablation_of": "t1"}
    runs[0] = {**runs[0], "duplicate_of": "x1"}   # as merge marks the later of two rows of one work
    (top,) = ranking.confirmed(runs + [ablation])
    assert top["n"] == 2 and top["seeds"] == [1, 2], top


def test_confirmation_runs_of_older_code_or_other_data_are_not_pooled_with_the_newest(tmp_path):
    """After an upgrade (another training revision) or a data rewrite, `confirm --seeds 3` trained seeds 1-3 again
    but seeds 4-5 of the older runs stayed in the mean: two measurements pooled as one. A configuration's runs are
    those of its newest run's training revision and data fingerprint."""
    from orchestrator.leaderboard import ranking

    common = {"experiment": "e", "kind": "confirm", "confirm_of": "t1", "status": "completed",
              "objective_metric": "mean_score", "objective_mode": "max", "config": {"name": "e"}}
    old = [{**common, "trial_id": f"o{s}", "seed": s, "objective": 0.5, "data_fingerprint": "d1",
            "created_at": f"2026-12-01T00:00:0{s}"} for s in range(1, 6)]            # no revision: 1
    new = [{**common, "trial_id": f"n{s}", "seed": s, "objective": 0.8 + s / 100, "data_fingerprint": "d1",
            "training_revision": 2, "created_at": f"2026-12-02T00:00:0{s}"} for s in range(1, 4)]
    (top,) = ranking.confirmed(old + new)
    assert top["n"] == 3 and top["seeds"] == [1, 2, 3] and abs(top["mean"] - 0.82) < 1e-9
    rewritten = [{**r, "trial_id": f"r{r['seed']}", "data_fingerprint": "d2", "created_at": f"2026-12-03T00:00:0{r['seed']}"}
                 for r in new[:2]]
    (top,) = ranking.confirmed(old + new + rewritten)
    assert top["n"] == 2 and top["seeds"] == [1, 2]


def test_configurations_confirmed_by_older_code_do_not_compete_with_the_newest(tmp_path):
    """Each configuration's seeds were held to its own newest version, but configurations were ranked across
    versions: t1 confirmed before an upgrade (0.90) beat t2 confirmed after it (0.85), two measurements compared as
    one. The ranking holds the configurations confirmed by the newest confirmation run's code and data."""
    from orchestrator.leaderboard import ranking

    common = {"experiment": "e", "kind": "confirm", "status": "completed", "objective_mode": "max",
              "data_fingerprint": "d1", "config": {"name": "e"}}
    old = [{**common, "confirm_of": "t1", "trial_id": f"o{s}", "seed": s, "objective": 0.9,
            "created_at": f"2026-12-01T00:00:0{s}"} for s in (1, 2)]                       # training revision 1
    new = [{**common, "confirm_of": "t2", "trial_id": f"n{s}", "seed": s, "objective": 0.85, "training_revision": 2,
            "created_at": f"2026-12-02T00:00:0{s}"} for s in (1, 2)]
    assert [c["confirm_of"] for c in ranking.confirmed(old + new)] == ["t2"]
    assert [c["confirm_of"] for c in ranking.confirmed(old)] == ["t1"]


def test_confirm_runs_already_done_on_the_same_data_are_not_trained_again(tmp_path):
    from orchestrator.sweep.confirm import done_runs

    board = Leaderboard(str(tmp_path))
    common = {"experiment": "e", "kind": "confirm", "confirm_of": "t1", "objective": 0.8}
    board.append([{**common, "trial_id": "a", "config_hash": "h1", "status": "completed", "data_fingerprint": "d1"},
                  {**common, "trial_id": "b", "config_hash": "h2", "status": "completed", "data_fingerprint": "d2"},
                  {**common, "trial_id": "c", "config_hash": "h3", "status": "failed", "data_fingerprint": "d1"},
                  {**common, "trial_id": "d", "config_hash": "h4", "status": "completed", "data_fingerprint": "d1",
                   "kind": "trial"}])
    assert done_runs(board, "e", kind="confirm", fingerprint="d1") == {("t1", "h1")}   # for the trial it confirmed


def test_one_seed_has_no_spread_rather_than_zero():
    """A configuration confirmed with one seed showed '± 0.0000': a certainty nothing measured. Its std is
    unknown (None), and the console says so."""
    from orchestrator.cli.common import mean_pm
    from orchestrator.leaderboard import ranking
    from orchestrator.report.mattered import _stats

    row = {"experiment": "e", "sweep_id": "c1", "kind": "confirm", "confirm_of": "t1", "status": "completed",
           "objective_mode": "max", "trial_id": "a1", "seed": 1, "objective": 0.8, "created_at": "2026-12-01"}
    (top,) = ranking.confirmed([row])
    assert top["n"] == 1 and top["std"] is None
    assert _stats([0.8])["std"] is None and _stats([0.8, 0.9])["std"] > 0
    assert mean_pm(top) == "0.8000 (n=1: no spread)"
    assert mean_pm({"mean": 0.8, "std": 0.01, "n": 2}) == "0.8000 ± 0.0100 (n=2)"


def test_delta_m_objectives_measured_against_other_baselines_are_not_ranked_together(tmp_path):
    """Each sweep measures Δm% against the single-task baselines of its own base config. A second sweep of the
    experiment whose base config trained 3 epochs instead of 1 got new baselines; `best` ranked its trial (+0.21
    against baselines 0.961/0.972) below the first sweep's (+13.70 against 0.833/0.667), though it was better on
    both tasks: two scales ranked as one. A row names what its Δm% was measured against (``baselines_id``), and
    rankings compare the rows measured like the newest, as they do across training revisions and data. Found by a
    helper's audit."""
    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.leaderboard.rows import RowContext, TrialFacts, trial_row

    d = experiment(tmp_path, "builtin:multidigits/train", objective={"metric": "delta_m"}, storage=str(tmp_path))
    del d["tasks"]["sum"]
    cfg = parse_config(d)
    board = Leaderboard(str(tmp_path))

    def ran(sweep_id, baselines, left, right):
        epoch = {"epoch": 1, "status": "running", "config_hash": cfg.config_hash(), "left_accuracy": left,
                 "right_accuracy": right, "objective": 100 * ((left - baselines["left"]) / baselines["left"]
                                                              + (right - baselines["right"]) / baselines["right"]) / 2}
        return trial_row(cfg, [epoch], context=RowContext(sweep_id, 5, fingerprint="d1", baselines=baselines),
                         trial=TrialFacts(f"{sweep_id}-t"))

    first = ran("s1", {"left": 0.833, "right": 0.667}, 0.714, 0.945)
    board.append([first])
    assert board.best(experiment="t")["trial_id"] == "s1-t"
    second = ran("s2", {"left": 0.961, "right": 0.972}, 0.966, 0.971)
    assert second["baselines_id"] != first["baselines_id"] and second["objective"] < first["objective"]
    board.append([second])
    assert board.best(experiment="t")["trial_id"] == "s2-t"
    assert board.top(5, experiment="t").column("trial_id").to_pylist() == ["s2-t"]
    again = ran("s3", {"left": 0.833, "right": 0.667}, 0.70, 0.90)     # the first baselines again (reused): one scale
    assert again["baselines_id"] == first["baselines_id"]
    board.append([again])
    assert board.top(5, experiment="t").column("trial_id").to_pylist() == ["s1-t", "s3-t"]
    copy = {**ran("s4", {"left": 0.961, "right": 0.972}, 0.714, 0.945), "duplicate_of": first["row_id"]}
    board.append([copy])   # s4 reused s1's work, rescored against the second baselines: it is of their measurement
    assert board.best(experiment="t")["trial_id"] == "s2-t"
    assert board.top(5, experiment="t").column("trial_id").to_pylist() == ["s2-t", "s4-t"]


def test_a_configuration_whose_confirmation_seed_diverged_ranks_after_the_stable_ones():
    """A diverged confirmation run has no objective and was left out: A (0.86, diverged, 0.85) was the confirmed
    winner at 0.855 (n=2) over B (0.84 on all 3 seeds), an unstable recipe preferred for its survivors, with only
    n=2 to hint at it. A configuration with a diverged seed ranks after those without, and says which seeds
    diverged. Found by a helper's audit."""
    from orchestrator.cli.common import mean_pm
    from orchestrator.leaderboard import ranking

    common = {"experiment": "cx", "kind": "confirm", "objective_metric": "mean_score", "objective_mode": "max",
              "data_fingerprint": "d1", "config": {"name": "cx"}}
    runs = [("A", 1, "completed", 0.86), ("A", 2, "diverged", None), ("A", 3, "completed", 0.85),
            ("B", 1, "completed", 0.84), ("B", 2, "completed", 0.84), ("B", 3, "completed", 0.84)]
    rows = [{**common, "confirm_of": t, "trial_id": f"{t}{s}", "row_id": f"{t}{s}", "seed": s, "status": st,
             "objective": v, "created_at": f"2026-12-01T00:00:0{i}"} for i, (t, s, st, v) in enumerate(runs)]
    ranked = ranking.confirmed(rows)
    assert [c["confirm_of"] for c in ranked] == ["B", "A"]
    assert ranked[1]["diverged"] == [2] and ranked[0]["diverged"] == [] and ranked[1]["n"] == 2
    assert "seed 2 diverged" in mean_pm(ranked[1]) and "diverged" not in mean_pm(ranked[0])


def test_confirm_takes_new_seeds_and_each_recipe_once(tmp_path):
    """Confirmation seeds were the trial's seed + 1..S, but a grid's repeat r trains seed + r: confirming repeat 0
    trained repeat 1's seed again, its run identical to the sweep's trial (the optimistic maximum confirm exists to
    remove), and `--top 2` confirmed two repeats of one recipe as two configurations. Seeds no trial of the recipe
    trained, and each recipe once. Found by a helper's audit."""
    from factories import embedded
    from orchestrator.config import parse_config
    from orchestrator.sweep.confirm import confirm_configs

    cfg = parse_config(embedded(tmp_path))
    common = {"experiment": "t", "sweep_id": "s1", "kind": "trial", "objective_mode": "max", "status": "completed"}

    def trial(trial_id, objective, lr, seed):
        return {**common, "trial_id": trial_id, "objective": objective,
                "config": cfg.with_values({"train.head_lr": lr, "train.seed": seed}).run_fields()}

    Leaderboard(str(tmp_path)).append([trial("A", 0.87, 0.01, 0), trial("B", 0.86, 0.01, 1),
                                       trial("C", 0.80, 0.003, 0)])
    configs, extra = confirm_configs(Leaderboard(str(tmp_path)), "t", top=2, seeds=2, workers=None,
                                     storage=str(tmp_path))
    assert [(e["confirm_of"], c.train.seed) for c, e in zip(configs, extra)] == [("A", 2), ("A", 3), ("C", 1), ("C", 2)]


def test_ranking_by_delta_m_pct_holds_one_set_of_baselines_whatever_the_objective(tmp_path):
    """Under objective mean_score, best --metric delta_m_pct, leaderboard --sort delta_m_pct and pareto -m
    delta_m_pct,... ranked Δm% measured against two sweeps' baselines as one scale: B (0.84/0.70, +2.89 against
    1-epoch baselines) above A (0.96/0.97, -0.15 against 3-epoch ones), though A is better on both tasks. Ranked by
    Δm%, rows are held to the newest row's baselines, as under objective delta_m. Found by a helper's audit."""
    board = _two_baselines(tmp_path)
    assert board.best(experiment="t", metric="delta_m_pct")["trial_id"] == "A-t"
    assert board.top(5, experiment="t", metric="delta_m_pct").column("trial_id").to_pylist() == ["A-t"]
    assert board.top(5, experiment="t").column("trial_id").to_pylist() == ["A-t", "B-t"]   # mean_score: one scale
    assert [r["trial_id"] for r in board.pareto(["delta_m_pct", "left_accuracy"], experiment="t").to_pylist()] == \
        ["A-t"]


def test_a_listing_numbers_only_the_rows_a_ranking_compares(tmp_path, capsys):
    """`leaderboard --sort delta_m_pct` listed B (+2.50 against 1-epoch baselines) as rank 1 above A (-0.52 against
    3-epoch ones), though A is better on both tasks and `best` names A; failed rows got rank numbers too. A listing
    keeps every row, but numbers only the rows a ranking compares (the newest measurement, ranked statuses): the
    others follow them, unnumbered."""
    from orchestrator.leaderboard import render

    board = _two_baselines(tmp_path)
    common = {"experiment": "t", "sweep_id": "A", "kind": "trial", "objective_metric": "mean_score",
              "objective_mode": "max", "data_fingerprint": "d1", "config": {"name": "t"}}
    board.append([{**common, "trial_id": "F", "status": "failed", "objective": 0.99, "delta_m_pct": 9.0}])
    listed = board.top(10, experiment="t", metric="delta_m_pct", ranked=False)
    assert listed.column("trial_id").to_pylist() == ["A-t", "B-t", "F"]
    assert listed.column("rank").to_pylist() == [1, None, None]
    text = render(listed, columns=["rank", "trial_id"], width=200).splitlines()
    assert [line.split()[:3] for line in text[2:]] == [["1", "│", "A-t"], ["-", "│", "B-t"], ["-", "│", "F"]]
    out = run_cli(capsys, "leaderboard", "--storage", str(tmp_path), "--sort", "delta_m_pct")
    assert out.code == 0 and "rank -: not ranked by delta_m_pct (failed, diverged, no value" in out.out
    by_objective = board.top(10, experiment="t", ranked=False)     # mean_score: one scale, both numbered
    assert by_objective.column("trial_id").to_pylist() == ["A-t", "B-t", "F"]
    assert by_objective.column("rank").to_pylist() == [1, 2, None]


def _two_baselines(tmp_path):
    """B (0.84/0.70) against 1-epoch baselines (0.80/0.70), then A (0.96/0.97) against 3-epoch ones (0.97/0.97)."""
    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.leaderboard.rows import RowContext, TrialFacts, trial_row

    d = experiment(tmp_path, "builtin:multidigits/train", storage=str(tmp_path))
    del d["tasks"]["sum"]
    cfg = parse_config(d)
    board = Leaderboard(str(tmp_path))

    def ran(sweep_id, baselines, left, right):
        epoch = {"epoch": 1, "status": "running", "config_hash": cfg.config_hash(), "left_accuracy": left,
                 "right_accuracy": right, "objective": (left + right) / 2}
        return trial_row(cfg, [epoch], context=RowContext(sweep_id, 5, fingerprint="d1", baselines=baselines),
                         trial=TrialFacts(f"{sweep_id}-t"))

    board.append([ran("B", {"left": 0.80, "right": 0.70}, 0.84, 0.70)])
    board.append([ran("A", {"left": 0.97, "right": 0.97}, 0.96, 0.97)])
    return board


def test_a_listing_keeps_the_row_best_names_and_refuses_only_when_no_row_has_a_value(tmp_path, capsys):
    """A listing counted each work once before it split the rows by measurement: a sweep's copy of a work rescored on
    newer baselines (y, duplicate_of x) was dropped for its original on older ones, though `best` names y, and z
    took rank 1. And `leaderboard --sort M` refused ("no row selected has a value") when its first row, now one
    compared, had no value though later rows had. Found by a helper's review."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    common = {"experiment": "e", "kind": "trial", "status": "completed", "objective_metric": "mean_score",
              "objective_mode": "max", "data_fingerprint": "d", "training_revision": 5, "config": {"name": "e"}}
    board = Leaderboard(str(tmp_path))
    board.append([{**common, "row_id": "x", "trial_id": "x", "baselines_id": "B1", "delta_m_pct": 9.0,
                   "objective": 0.8, "created_at": t0},
                  {**common, "row_id": "y", "trial_id": "y", "baselines_id": "B2", "delta_m_pct": 3.0,
                   "objective": 0.8, "duplicate_of": "x", "created_at": t0 + timedelta(1)},
                  {**common, "row_id": "z", "trial_id": "z", "baselines_id": "B2", "delta_m_pct": 1.0,
                   "objective": 0.7, "created_at": t0 + timedelta(2)}])
    assert board.best(metric="delta_m_pct")["trial_id"] == "y"
    listed = board.top(10, metric="delta_m_pct", ranked=False)
    assert list(zip(listed.column("trial_id").to_pylist(), listed.column("rank").to_pylist())) == \
        [("y", 1), ("z", 2), ("x", None)]
    board.append([{**common, "row_id": "w", "trial_id": "w", "baselines_id": "B3", "objective": 0.6,
                   "created_at": t0 + timedelta(3)}])      # the newest measurement, without a Δm%
    out = run_cli(capsys, "leaderboard", "--storage", str(tmp_path), "--sort", "delta_m_pct")
    assert out.code == 0 and "x" in out.out and "rank -" in out.out, out.err


def test_a_recipe_is_confirmed_once_whichever_of_its_trials_leads_now(tmp_path):
    """A confirmed (seeds 1-3); a later sweep trains A's recipe with seed 2 (A2) and it leads. `confirm --top 2`
    confirmed A2 as a new configuration (seeds 3-5: seed 3 the same work as A's seed 3, trained again) and the ranking
    listed A's recipe twice. A recipe's confirmation keeps its first trial; only seeds it lacks are trained. A trial
    without an objective (stopped before its first report) is not confirmed. Found by a helper's audit."""
    from factories import embedded, row
    from orchestrator.config import parse_config
    from orchestrator.sweep.confirm import confirm_configs, confirmed

    cfg = parse_config(embedded(tmp_path, name="exp"))

    def hist(objective):
        return [{"epoch": 1, "objective": objective, "mean_score": objective}]

    board = Leaderboard(str(tmp_path))
    a, b = cfg.with_values({"train.freeze_depth": 1}), cfg.with_values({"train.freeze_depth": 2})
    board.append([row(a, hist(0.80), trial_id="A", sweep_id="sw1"), row(b, hist(0.79), trial_id="B", sweep_id="sw1"),
                  row(cfg, [], trial_id="N", sweep_id="sw1")])
    configs, extra = confirm_configs(board, "exp", top=3, seeds=3, workers=None, storage=str(tmp_path))
    assert [(e["confirm_of"], c.train.seed) for c, e in zip(configs, extra)] == \
        [("A", 1), ("A", 2), ("A", 3), ("B", 1), ("B", 2), ("B", 3)]   # N has no objective
    board.append([row(c, hist(0.7), trial_id=f"c{i}", sweep_id="confirm-1", kind="confirm", extra=e)
                  for i, (c, e) in enumerate(zip(configs, extra))])
    board.append([row(a.with_values({"train.seed": 2}), hist(0.85), trial_id="A2", sweep_id="sw2")])
    configs, extra = confirm_configs(board, "exp", top=2, seeds=3, workers=None, storage=str(tmp_path),
                                     trials=("A2",))
    assert [(e["confirm_of"], c.train.seed) for c, e in zip(configs, extra)] == \
        [("A", 1), ("A", 3), ("A", 4), ("B", 1), ("B", 2), ("B", 3)]   # seed 2 is A2's: A's seed 4 is new
    board.append([row(configs[2], hist(0.7), trial_id="d", sweep_id="confirm-2", kind="confirm", extra=extra[2])])
    assert [c["confirm_of"] for c in confirmed(board, "exp")] == ["A", "B"]


def test_confirming_trials_measured_against_other_baselines_together_is_refused(tmp_path):
    """Objective delta_m: `confirm --top 1 --trial X`, X of a sweep with other single-task baselines than the top
    trial's, trained both confirmations (one Tune run per baselines), and the ranking then showed only the newest
    measurement's: one confirmation vanished without a word (found by a helper's audit). Refused before anything
    trains, naming the trials and their sweeps."""
    import json as _json

    from factories import embedded, row
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.confirm import measured_against, trial_row

    cfg = parse_config(embedded(tmp_path, name="exp", objective={"metric": "delta_m"}))
    b1, b2 = {"left": 0.9, "right": 0.9}, {"left": 0.95, "right": 0.95}
    for sweep, baselines in (("sw1", b1), ("sw2", b2), ("sw3", b1)):
        storage.atomic_write(layout.sweep_record(str(tmp_path), "exp", sweep),
                             _json.dumps({"sweep_id": sweep, "config": cfg.public_dump(), "baselines": baselines}).encode())
    board = Leaderboard(str(tmp_path))
    board.append([row(cfg.with_values({"train.freeze_depth": d}), [{"epoch": 1, "objective": 1.0}], trial_id=t,
                      sweep_id=s) for t, s, d in (("X", "sw1", 1), ("Y", "sw2", 2), ("Z", "sw3", 0))])
    rows = [trial_row(board, "exp", t) for t in ("Y", "X")]
    with pytest.raises(ConfigError, match="Y \\(sweep sw2\\) and X \\(sweep sw1\\) were measured against different "
                                          "single-task baselines"):
        measured_against(rows)
    assert measured_against([trial_row(board, "exp", t) for t in ("X", "Z")]) == {"X": b1, "Z": b1}
    mean = [{**r, "config": {**r["config"], "objective": {"metric": "mean_score", "mode": None}}} for r in rows]
    assert measured_against(mean) == {"Y": b2, "X": b1}   # Δm% only reported: each run keeps its sweep's
    # X's recipe again in sw2 (other baselines), leading: its confirmation is its own, not X's (another measurement)
    from orchestrator.sweep.confirm import confirm_configs

    x = parse_config(trial_row(board, "exp", "X")["config"])
    board.append([row(x, [{"epoch": 1, "objective": 0.5}], trial_id="cX", sweep_id="c1", kind="confirm",
                      extra={"confirm_of": "X"}, baselines=b1)])
    board.append([row(x.with_values({"train.seed": 5}), [{"epoch": 1, "objective": 9.0}], trial_id="X2",
                      sweep_id="sw2", baselines=b2)])
    configs, extra = confirm_configs(board, "exp", top=1, seeds=1, workers=None, storage=str(tmp_path))
    assert extra == [{"confirm_of": "X2"}]


def test_trials_of_one_recipe_named_in_one_confirm_are_confirmed_once(tmp_path):
    """A and A1 are grid repeats of one configuration (seeds 0 and 1), A1 leads: `confirm --top 1 --trial A` trained
    the configuration twice in one call (seeds 2 and 3 under A1 and again under A) and ranked it twice (the review
    of this stop's anchoring)."""
    from factories import embedded, row
    from orchestrator.config import parse_config
    from orchestrator.sweep.confirm import confirm_configs

    cfg = parse_config(embedded(tmp_path, name="exp"))
    a = cfg.with_values({"train.freeze_depth": 1})
    board = Leaderboard(str(tmp_path))
    board.append([row(a, [{"epoch": 1, "objective": 0.80}], trial_id="A", sweep_id="g"),
                  row(a.with_values({"train.seed": 1}), [{"epoch": 1, "objective": 0.85}], trial_id="A1",
                      sweep_id="g")])
    configs, extra = confirm_configs(board, "exp", top=1, seeds=2, workers=None, storage=str(tmp_path),
                                     trials=("A",))
    assert [(e["confirm_of"], c.train.seed) for c, e in zip(configs, extra)] == [("A1", 2), ("A1", 3)]


def test_a_delta_m_recipe_keeps_the_confirmation_of_its_own_baselines(tmp_path):
    """Objective delta_m, three sweeps: sw1 (baselines b1), sw2 and sw4 (b2). The recipe was confirmed under X (sw1)
    and, measured anew, under X2 (sw2); leading again in sw4 it was confirmed under its sw4 trial, listed a third
    time, because the anchor kept was the first (X, of b1) (the review of this stop's anchoring)."""
    import json as _json
    import time

    from factories import embedded, row
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.sweep.confirm import confirm_configs

    cfg = parse_config(embedded(tmp_path, name="exp", objective={"metric": "delta_m"}))
    b1, b2 = {"left": 0.9, "right": 0.9}, {"left": 0.95, "right": 0.95}
    for sweep, b in (("sw1", b1), ("sw2", b2), ("sw4", b2)):
        storage.atomic_write(layout.sweep_record(str(tmp_path), "exp", sweep), _json.dumps(
            {"sweep_id": sweep, "config": cfg.public_dump(), "baselines": b}).encode())
    board = Leaderboard(str(tmp_path))
    x = cfg.with_values({"train.freeze_depth": 1})

    def add(c, objective, trial_id, sweep_id, baselines, **more):
        board.append([row(c, [{"epoch": 1, "objective": objective}], trial_id=trial_id, sweep_id=sweep_id,
                          baselines=baselines, **more)])
        time.sleep(0.01)

    add(x, 1.0, "X", "sw1", b1)
    add(x.with_values({"train.seed": 1}), 0.5, "cX", "c1", b1, kind="confirm", extra={"confirm_of": "X"})
    add(x.with_values({"train.seed": 5}), 2.0, "X2", "sw2", b2)
    add(x.with_values({"train.seed": 6}), 1.9, "cX2", "c2", b2, kind="confirm", extra={"confirm_of": "X2"})
    add(x.with_values({"train.seed": 9}), 3.0, "X3", "sw4", b2)
    configs, extra = confirm_configs(board, "exp", top=1, seeds=1, workers=None, storage=str(tmp_path))
    assert [e["confirm_of"] for e in extra] == ["X2"], extra


def test_confirm_with_workers_refuses_a_batch_that_does_not_split_before_anything_starts(tmp_path, capsys, no_ray):
    """`confirm --workers 3` over trials of batch 96 and 64: only the first run's config was checked, so B's runs
    started (Ray up, data shipped) and failed in their workers, where the batch 64 no longer splits (the review of
    this stop's worker-side check)."""
    from factories import embedded, row
    from orchestrator.config import parse_config

    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs, name="exp", train={"batch_size": 96}))
    Leaderboard(runs).append([row(cfg, [{"epoch": 1, "objective": 0.9}], trial_id="A", sweep_id="s"),
                              row(cfg.with_values({"train.batch_size": 64}), [{"epoch": 1, "objective": 0.8}],
                                  trial_id="B", sweep_id="s")])
    r = run_cli(capsys, "confirm", "-e", "exp", "--top", "2", "--seeds", "1", "--workers", "3", "--storage", runs)
    assert r.code == 2 and "\n" not in r.err and "train.batch_size 64 is not a multiple of resources.workers 3" in r.err, r


def test_confirmation_runs_of_older_code_merged_in_later_do_not_take_the_confirmation_over(tmp_path):
    """This code's confirmation runs of w scored 0.90; an older release's runs of w (0.60), written later, were merged
    in: the confirmed ranking showed 0.60, and best --confirmed refused w as confirmed on older code (the review of
    19b6991, which keyed the trials' newest measurement on revision but not the confirmation runs')."""
    import time

    from factories import embedded, row
    from orchestrator.config import parse_config, schema
    from orchestrator.sweep.confirm import confirmed, confirmed_now

    home, old = str(tmp_path / "home"), str(tmp_path / "old")
    now = schema.TRAINING_REVISION

    def run(store, seed, v, rev, **kw):
        cfg = parse_config(embedded(store, train={"seed": seed}))
        return {**row(cfg, [{"epoch": 1, "objective": v, "mean_score": v}], **kw), "training_revision": rev}

    board = Leaderboard(home)
    board.append([run(home, 0, 0.9, now, trial_id="w")])
    board.append([run(home, s, 0.9, now, trial_id=f"c{s}", kind="confirm", extra={"confirm_of": "w"}) for s in (1, 2)])
    time.sleep(0.01)
    Leaderboard(old).append([run(old, s, 0.6, now - 1, trial_id=f"o{s}", kind="confirm", extra={"confirm_of": "w"})
                             for s in (1, 2)])
    board.merge([old])
    (top,) = confirmed(board, "t")
    assert top["mean"] == pytest.approx(0.9) and top["seeds"] == [1, 2]
    confirmed_now(board, "t", "w")   # no refusal


def test_rows_of_a_newer_release_merged_in_do_not_outrank_this_codes_later_rows(tmp_path):
    """Keyed on revision alone, rows of a newer release merged into a storage this (older) code keeps using ranked for
    good: this code's later sweep never ranked again (the review of 19b6991). A revision above this code's is taken
    as this code's: the newest row decides."""
    import time

    from factories import embedded, row
    from orchestrator.config import parse_config, schema

    runs = str(tmp_path / "runs")
    cfg = parse_config(embedded(runs))
    hist = lambda v: [{"epoch": 1, "objective": v, "mean_score": v}]   # noqa: E731
    board = Leaderboard(runs)
    board.append([{**row(cfg.with_values({"train.head_lr": 0.01}), hist(0.7), trial_id="theirs", sweep_id="new"),
                   "training_revision": schema.TRAINING_REVISION + 1, "data_fingerprint": "old-data"}])
    time.sleep(0.01)
    board.append([{**row(cfg, hist(0.6), trial_id="ours", sweep_id="later"), "data_fingerprint": "new-data"}])
    assert board.top(5, experiment="t").column("trial_id").to_pylist() == ["ours"]


def test_a_warm_start_from_an_experiment_with_no_rows_is_said_and_the_sweep_goes_on(tmp_path):
    """A review: when Leaderboard.top began refusing an experiment the storage holds no row of, the warm start's read
    raised NoMatchingRows late in a sweep (Ray started, baselines trained) where it had said one line and gone on."""
    from factories import embedded
    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import first_points

    cfg = parse_config(embedded(tmp_path))
    warm = cfg.with_values({"search": {"space": {"train.head_lr": {"loguniform": [1e-4, 10.0]}}, "base_first": False,
                                       "warm_start": {"experiment": "earlier", "top": 2}}})
    for rows in ([], [{"experiment": "other", "sweep_id": "s1", "kind": "trial", "objective_mode": "max",
                       "trial_id": "x", "status": "completed", "objective": 0.5, "config": cfg.run_fields()}]):
        Leaderboard(str(tmp_path)).append(rows)
        said = []
        assert first_points(warm, say=said.append) == []
        assert any("warm start: experiment 'earlier' has no rows in" in line for line in said), said


def _newest_versions_row_by_row(light, *, by=()):
    """``ranking.newest_versions`` as it was, one Python dict per row (0.4 s of a 0.75 s `top` over 20,000 rows,
    1.4 s at 100,000): the reference its vectorized pass must equal."""
    from orchestrator.leaderboard.ranking import VERSION_COLUMNS, newest_version

    rows = light.select([c for c in VERSION_COLUMNS if c in light.column_names]).to_pylist()
    by_experiment: dict = {}
    for r in rows:
        by_experiment.setdefault(r.get("experiment"), []).append(r)
    kept = {id(r) for group in by_experiment.values() for r in newest_version(group, by=by)}
    return [i for i, r in enumerate(rows) if id(r) in kept]


@pytest.mark.parametrize("seed", range(100))
def test_newest_versions_keeps_the_rows_the_row_by_row_pass_kept(seed):
    """Random tables of few versions (ties in created_at, nulls, revisions past this code's, delta_m's baselines,
    columns missing, created_at as text or as the timestamps the leaderboard stores): the same rows kept, in the
    same order, as the per-row pass it replaced."""
    import datetime
    import random

    import pyarrow as pa

    from orchestrator.leaderboard.ranking import newest_versions

    rnd = random.Random(seed)
    n = rnd.randint(0, 60)
    pick = lambda *values: [rnd.choice(values) for _ in range(n)]   # noqa: E731
    if seed % 2:
        day = lambda d: datetime.datetime(2026, 1, d, 0, 0, rnd.choice([0, 0, 1]), rnd.choice([0, 500000]),  # noqa: E731
                                          tzinfo=datetime.timezone.utc)
        created = pa.array(pick(day(1), day(2), day(3), None), pa.timestamp("us", tz="UTC"))
    else:
        created = pick("2026-01-01", "2026-01-02", "2026-01-03", None, "")
    columns = {"row_id": [f"r{i}" for i in range(n)], "experiment": pick("a", "b", None),
               "training_revision": pick(None, 0, 1, 4, 5, 9), "data_fingerprint": pick("f1", "f2", None),
               "data_alias": pick(None, None, "f1"), "objective_metric": pick("mean_score", "delta_m", None),
               "baselines_id": pick("b1", "b2", None), "created_at": created}
    if seed % 3 == 0:   # revisions as floats (int and float files unified), fingerprints as a dictionary column
        columns["training_revision"] = pa.array(columns["training_revision"], pa.float64())
        columns["data_fingerprint"] = pa.array(columns["data_fingerprint"]).dictionary_encode()
    versions = ["data_alias", "baselines_id", "created_at", "experiment", "training_revision", "data_fingerprint",
                "objective_metric"]
    for name in rnd.sample(versions, rnd.choice([0, 1, 2, 7])):   # 7: none (a file of row ids and values only)
        del columns[name]
    light = pa.table(columns)
    for by in ((), ("objective",), ("delta_m_pct",)):
        expected = _newest_versions_row_by_row(light, by=by)
        assert newest_versions(light, by=by).column("row_id").to_pylist() == [columns["row_id"][i] for i in expected]
