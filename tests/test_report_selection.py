"""Which rows the report counts: the same selection the leaderboard's queries make (found by a helper's audit of
`report`, each seen failing before its fix). No TensorFlow: rows are written with the leaderboard's own API."""
import time

from orchestrator.leaderboard import Leaderboard
from orchestrator.report import write_report

from test_report import BASE, baseline, trial


def test_a_report_of_trials_that_all_failed_or_diverged_says_so_instead_of_a_traceback(tmp_path):
    """ArrowNotImplementedError ('array_take' ... (string, null)) from table.take([]) when no trial could be ranked."""
    for name, rows in (("failed", [trial("f1", None, None, depth=0, error="OOM")]),
                       ("diverged", [trial("d1", 0.7, 0.7, depth=0, diverged=True),
                                     trial("d2", 0.7, 0.7, depth=1, diverged=True)])):
        board = Leaderboard(str(tmp_path / name / "runs"))
        board.append(rows)
        result = write_report(board, "digits", str(tmp_path / name / "out"))
        assert result["best"] is None and result["pareto"]["trial_ids"] == []
        assert (tmp_path / name / "out" / "report.md").exists()


def test_a_newer_failed_trial_on_rewritten_data_does_not_hide_the_measured_ones(tmp_path):
    """The report took "the newest measurement" from every trial, failed ones too: one failed trial on rewritten
    data (a new fingerprint) left nothing to rank and crashed, where `best` still answered trial a."""
    board = Leaderboard(str(tmp_path / "runs"))
    board.append([trial("a", 0.9, 0.8, depth=0), trial("b", 0.7, 0.6, depth=1)])
    time.sleep(0.01)
    board.append([{**trial("new", None, None, depth=0, error="OOM", sweep="sw2"), "data_fingerprint": "fp-new"}])
    result = write_report(board, "digits", str(tmp_path / "out"))
    assert result["best"]["trial_id"] == board.best(experiment="digits")["trial_id"] == "a"


def test_the_reports_front_on_delta_m_compares_one_set_of_baselines_as_pareto_does(tmp_path):
    """`pareto -m delta_m_pct,left_accuracy` compares the trials of the newest baselines (2); the report's front drew
    all 4, Δm% against two sets of baselines mixed."""
    board = Leaderboard(str(tmp_path / "runs"))
    old, new = {"left": 0.95, "right": 0.93}, {"left": 0.80, "right": 0.80}
    board.append([trial("a", 0.90, 0.88, depth=0, baselines=old), trial("b", 0.93, 0.80, depth=1, baselines=old)])
    time.sleep(0.01)
    board.append([trial("c", 0.85, 0.85, depth=0, baselines=new, sweep="sw2"),
                  trial("e", 0.80, 0.90, depth=2, baselines=new, sweep="sw2")])
    pair = ["delta_m_pct", "left_accuracy"]
    queried = board.pareto(pair, experiment="digits").column("trial_id").to_pylist()
    result = write_report(board, "digits", str(tmp_path / "out"), metrics=pair)
    assert sorted(result["pareto"]["trial_ids"]) == sorted(queried)
    assert set(queried) <= {"c", "e"}


def test_a_merged_copy_of_a_baseline_is_counted_once(tmp_path):
    """A baseline and its merged copy (duplicate_of): `leaderboard --kind baseline` lists one, report.md listed
    'left' twice ("single-task baselines: 3")."""
    board = Leaderboard(str(tmp_path / "runs"))
    left, right = baseline("left", 0.95), baseline("right", 0.93)
    copy = {**baseline("left", 0.95), "duplicate_of": left["row_id"], "merged_from": "/elsewhere/runs"}
    board.append([trial("a", 0.9, 0.88, depth=0, baselines=BASE), trial("b", 0.8, 0.8, depth=1, baselines=BASE),
                  left, right, copy])
    result = write_report(board, "digits", str(tmp_path / "out"))
    assert sorted(b["task"] for b in result["baselines"]) == ["left", "right"]
    assert result["kinds"]["baseline"] == 2


def test_what_mattered_counts_the_seeds_that_diverged_for_each_alternative():
    """An alternative that diverged on every seed vanished from "What mattered", and one that diverged on 2 of 3
    showed n=1 at its one surviving seed's 0.95, the best-looking row, without a word."""
    import json

    from orchestrator.report.mattered import markdown_lines, what_mattered

    def run(tid, dim, value, seed, score, diverged=False):
        return trial(tid, score, score, depth=value if dim == "train.freeze_depth" else 1, kind="ablation",
                     seed=seed, sweep="abl", diverged=diverged,
                     extra={"ablation_of": "w", "ablation_dim": dim, "ablation_value": json.dumps(value)})

    rows = []
    for s in (1, 2, 3):
        rows += [run(f"ref{s}", "reference", None, s, 0.9), run(f"d0_{s}", "train.freeze_depth", 0, s, 0.8),
                 run(f"d4_{s}", "train.freeze_depth", 4, s, 0.5, diverged=True),
                 run(f"d3_{s}", "train.freeze_depth", 3, s, 0.95, diverged=s != 1)]
    alts = what_mattered(rows)["dims"]["train.freeze_depth"]
    assert alts["4"]["n"] == 0 and alts["4"]["mean"] is None and alts["4"]["diverged"] == [1, 2, 3]
    assert alts["3"]["n"] == 1 and alts["3"]["diverged"] == [2, 3] and alts["0"]["diverged"] == []
    text = "\n".join(markdown_lines({"mattered": what_mattered(rows), "experiment": "digits", "importance": None},
                                    lambda header, body: [" | ".join(map(str, header))] +
                                    [" | ".join(map(str, r)) for r in body]))
    assert "diverged" in text and "4 | 0" in text


def test_ablates_printout_of_an_alternative_whose_every_seed_diverged():
    """`orchestrator ablate` prints each alternative with mean_pm: a mean of no seed was a TypeError."""
    from orchestrator.cli.common import mean_pm

    assert mean_pm({"mean": None, "std": None, "n": 0, "diverged": [1, 2]}) == "no seed completed (seeds 1, 2 diverged)"
    assert mean_pm({"mean": 0.95, "std": None, "n": 1, "diverged": [2]}) == "0.9500 (n=1: no spread; seed 2 diverged)"


def test_a_report_names_the_sweeps_of_its_trials_not_of_its_baselines_or_confirmations(tmp_path):
    """`report --sweep sw2` printed "sweeps: base, conf, sw2": the baselines' and confirmations' sweep ids too."""
    board = Leaderboard(str(tmp_path / "runs"))
    confirm = trial("c1", 0.9, 0.88, depth=0, kind="confirm", sweep="conf", baselines=BASE,
                    extra={"confirm_of": "a"})
    board.append([trial("a", 0.9, 0.88, depth=0, baselines=BASE, sweep="sw2"),
                  trial("b", 0.8, 0.8, depth=1, baselines=BASE, sweep="sw1"),
                  baseline("left", 0.95), baseline("right", 0.93), confirm])
    result = write_report(board, "digits", str(tmp_path / "out"), sweep_id="sw2")
    assert result["sweep_ids"] == ["sw2"]
    assert "sweeps: sw2." in (tmp_path / "out" / "report.md").read_text()


def test_a_plot_an_earlier_report_drew_does_not_stay_beside_a_report_without_it(tmp_path):
    """report.md was rewritten but confirmation_runs.png of the earlier report (all sweeps) stayed in the folder of
    `report --sweep sw2` (no confirmations), unlinked, looking current."""
    board = Leaderboard(str(tmp_path / "runs"))
    confirms = [trial(f"c{s}", 0.9, 0.88, depth=0, kind="confirm", sweep="conf", seed=s, extra={"confirm_of": "a"})
                for s in (1, 2)]
    board.append([trial("a", 0.9, 0.88, depth=0), trial("b", 0.8, 0.8, depth=1, sweep="sw2"), *confirms])
    out = tmp_path / "out"
    assert "confirm" in write_report(board, "digits", str(out))["paths"]
    assert (out / "confirmation_runs.png").exists()
    assert "confirm" not in write_report(board, "digits", str(out), sweep_id="sw2")["paths"]
    assert not (out / "confirmation_runs.png").exists()


def test_importance_names_a_parameter_set_in_one_trial_only_as_left_out():
    """weight_left, set by the one static trial, was skipped before the 'set in some trials only' check: the note
    did not name it."""
    from orchestrator.report.mattered import importance

    rows = [{"kind": "trial", "status": "completed", "objective_mode": "max", "trial_id": f"t{i}",
             "freeze_depth": i % 3, "objective": 0.6 + 0.05 * i, "loss_weighting": "static" if i == 0 else "dwa",
             "weight_left": 0.3 if i == 0 else None} for i in range(6)]
    assert "weight_left" in importance(rows)["left_out"]


def test_a_newer_diverged_ablation_run_does_not_hide_the_completed_ones():
    """One diverged ablation run on rewritten data (newer) decided "the newest measurement": every completed run
    vanished from What mattered (found reviewing this change)."""
    import json

    from orchestrator.report.mattered import what_mattered

    def run(tid, value, seed, score, **more):
        return {**trial(tid, score, score, depth=value, kind="ablation", seed=seed, sweep="abl",
                        extra={"ablation_of": "w", "ablation_dim": "train.freeze_depth",
                               "ablation_value": json.dumps(value)}, **more)}

    rows = [run(f"d0_{s}", 0, s, 0.8) for s in (1, 2)] + [run(f"d3_{s}", 3, s, 0.83) for s in (1, 2)]
    time.sleep(0.01)
    rows.append({**run("late", 3, 9, 0.5, diverged=True), "data_fingerprint": "fp-new",
                 "created_at": "2999-01-01T00:00:00+00:00"})
    alts = what_mattered(rows)["dims"]["train.freeze_depth"]
    assert alts["0"]["n"] == 2 and alts["3"]["n"] == 2


def test_importance_over_many_trials_reads_a_seeded_sample_and_says_so(monkeypatch):
    """fANOVA's cost grows faster than the trials: over one experiment's 6,667 trials (bench/leaderboard_scale's
    board) the report waited minutes on it (100 trials 3 s, 1,000 trials 33 s). Over more than IMPORTANCE_SAMPLE
    trials it reads a seeded sample, the same whatever order the rows come in, and the report says so."""
    import random

    from orchestrator.report import mattered

    monkeypatch.setattr(mattered, "IMPORTANCE_SAMPLE", 20)
    rnd = random.Random(0)
    rows = [{"kind": "trial", "status": "completed", "objective_mode": "max", "trial_id": f"t{i}", "row_id": f"r{i}",
             "freeze_depth": i % 3, "backbone_lr": rnd.uniform(1e-5, 1e-3), "objective": rnd.random()}
            for i in range(50)]
    first = mattered.importance(rows)
    assert (first["n"], first["of"]) == (20, 50), first
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert mattered.importance(shuffled) == first
    text = "\n".join(mattered.markdown_lines({"importance": first, "ablate_command": "x"}, lambda h, r: []))
    assert "A seeded sample of 20 of the 50 trials" in text, text
    few = mattered.importance(rows[:20])
    assert (few["n"], few["of"]) == (20, 20) and "seeded sample" not in "\n".join(
        mattered.markdown_lines({"importance": few, "ablate_command": "x"}, lambda h, r: []))
