"""`orchestrator report`: plots and report.md from a realistic leaderboard (rows built by rows.trial_row), with every
number in report.md checked against values computed here from the rows themselves."""
import math
import os
import re
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from factories import row as trial_row
from orchestrator.sweep.baselines import single_task
from orchestrator.cli.main import cli, main
from orchestrator.cli.report import report
from orchestrator.config import parse_config
from orchestrator.errors import ConfigError
from orchestrator.leaderboard import Leaderboard
from orchestrator.report import FILES, summary_lines, write_report

N_BLOCKS = 5
EPOCHS = 4
BASE = {"left": 0.95, "right": 0.93}       # single-task baseline accuracies


def config(name="digits", objective="mean_score"):
    return parse_config({"name": name, "data": {"train": "builtin:multidigits/train"},
                         "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"}},
                         "backbone": {"kind": "builtin", "weights": "none"}, "objective": {"metric": objective},
                         "train": {"epochs": EPOCHS, "batch_size": 32, "seed": 0}})


DIGITS = config()


def history(left, right, epochs, *, weights, method, diverged=False, objective=None):
    """Per-epoch metrics as the worker reports them: accuracies climb to ``left``/``right`` at the last epoch."""
    out = []
    for e in range(1, epochs + 1):
        gap = 0.08 * (epochs - e)
        la, ra = left - gap, right - gap
        if method == "uncertainty":          # learned weights that do not sum to 1
            eff = {"left": 1.2 * weights[0] + 0.1 * e, "right": 0.8 * weights[1] + 0.05 * e}
        elif method == "dwa":
            eff = {"left": 0.5 + 0.02 * e, "right": 0.5 - 0.02 * e}
        else:
            eff = {"left": weights[0], "right": weights[1]}
        m = {"epoch": e, "world_size": 2, "objective": (la + ra) / 2, "mean_score": (la + ra) / 2,
             "left_accuracy": la, "left_loss": 1 - la, "right_accuracy": ra, "right_loss": 1 - ra,
             "train_loss": (2.2 - left - right) / e, **{f"eff_weight_{t}": w for t, w in eff.items()}}
        m["objective"] = m[objective] if objective else m["objective"]
        if diverged and e == epochs:
            m.update(status="diverged", objective=float("nan"), mean_score=float("nan"), train_loss=float("nan"),
                     left_accuracy=float("nan"), right_accuracy=float("nan"))
        out.append(m)
    return out


def trial(tid, left, right, *, depth, w=(0.5, 0.5), method="static", epochs=EPOCHS, error=None, diverged=False,
          baselines=None, sweep="sw1", kind="trial", extra=None, seed=0, cfg=DIGITS):
    values = {"train.freeze_depth": depth, "train.loss_weights": {"left": w[0], "right": w[1]},
              "train.loss_weighting": method, "train.seed": seed}
    c = cfg.with_values(values)
    searched = {"train.freeze_depth": depth, "train.loss_weights": c.normalized_loss_weights(),
                "train.loss_weighting": method}
    hist = [] if error else history(left, right, epochs, weights=w, method=method, diverged=diverged,
                                    objective=None if cfg.objective.metric == "mean_score" else cfg.objective.metric)
    return trial_row(c, hist, sweep_id=sweep, trial_id=tid, searched=searched, n_blocks=N_BLOCKS, kind=kind,
                     error=error, baselines=baselines, extra=extra, fingerprint="fp", wall_time_s=10.0)


def baseline(task, acc, *, data="fp"):
    c = single_task(DIGITS, task)
    hist = [{"epoch": e, f"{task}_accuracy": acc - 0.05 * (EPOCHS - e), f"{task}_loss": 0.2, "objective": acc,
             "mean_score": acc, "train_loss": 0.3} for e in range(1, EPOCHS + 1)]
    return trial_row(c, hist, sweep_id="base", trial_id=f"baseline-{task}", searched={}, n_blocks=N_BLOCKS,
                     kind="baseline", extra={"baseline_task": task, "baseline_key": f"{data}|{task}|d"}, baselines=None)


TRIALS = [
    trial("t01", 0.90, 0.88, depth=0, baselines=BASE),
    trial("t02", 0.92, 0.86, depth=0, method="uncertainty", baselines=BASE),
    trial("t03", 0.95, 0.84, depth=1, w=(0.7, 0.3), baselines=BASE),
    trial("t04", 0.91, 0.91, depth=1, method="dwa", baselines=BASE),
    trial("t05", 0.86, 0.93, depth=2, w=(0.3, 0.7), baselines=BASE),
    trial("t06", 0.93, 0.90, depth=2, method="uncertainty", w=(0.4, 0.6), baselines=BASE),
    trial("t07", 0.89, 0.89, depth=3),                                          # no baselines: no Δm%
    trial("t08", 0.88, 0.87, depth=3, method="dwa", baselines=BASE),
    trial("t09", 0.80, 0.78, depth="all", w=(0.6, 0.4), baselines=BASE),
    trial("t10", 0.85, 0.83, depth=1, epochs=2, baselines=BASE),               # stopped by the scheduler
    trial("t11", None, None, depth=2, error="worker died"),                      # failed
    trial("t12", 0.70, 0.70, depth=0, diverged=True),                            # diverged
    trial("t13", 0.94, 0.92, depth=2, w=(0.4, 0.6), baselines=BASE, sweep="sw2"),
]
CONFIRMS = [trial(f"c-{of}-{s}", left, right, depth=depth, w=w, kind="confirm", extra={"confirm_of": of}, seed=s,
                  sweep="conf")
            for of, depth, w, runs in [("t03", 1, (0.7, 0.3), [(1, 0.93, 0.84), (2, 0.94, 0.85), (3, 0.92, 0.83)]),
                                       ("t13", 2, (0.4, 0.6), [(1, 0.94, 0.91), (2, 0.93, 0.90)])]
            for s, left, right in runs]
OTHER = trial("x1", 0.99, 0.99, depth=0, cfg=config("other"))                  # another experiment, better


def finite(v):
    return isinstance(v, float) and math.isfinite(v)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    lb = Leaderboard(str(tmp_path_factory.mktemp("lb") / "runs"))
    lb.append(TRIALS[:7])
    lb.append(TRIALS[7:] + CONFIRMS)
    lb.append([baseline("left", BASE["left"]), baseline("right", BASE["right"]), OTHER])
    return lb


@pytest.fixture(scope="module")
def written(board, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = write_report(board, "digits", str(out))
    return out, result, (out / "report.md").read_text()


def md_table(md: str, heading: str) -> list[dict]:
    """The first Markdown table after the line starting with ``heading``, as dicts of strings."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    block = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip("|").split("|")])
    return [dict(zip(block[0], r)) for r in block[2:]]


def close(text: str, expected: float):
    """A number shown with 4 significant digits equals ``expected`` to that precision."""
    return float(text) == pytest.approx(expected, rel=6e-4, abs=1e-12)


def dominated_free(rows, a, b, signs=(1, 1)):
    pts = {r["trial_id"]: (signs[0] * r[a], signs[1] * r[b]) for r in rows if finite(r[a]) and finite(r[b])}
    return {i for i, p in pts.items()
            if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for j, q in pts.items() if j != i)}


def test_every_plot_is_a_png_and_linked_from_report(written):
    out, result, md = written
    assert set(result["paths"]) == set(FILES)          # confirm rows exist, so all six plots
    for name, path in result["paths"].items():
        assert path == str(out / FILES[name])
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode in ("RGB", "RGBA")
            assert img.size[0] > 300 and img.size[1] > 100
            assert len(img.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10     # something was drawn
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(FILES.values())
    assert all((out / link).is_file() for link in links)
    assert result["report"] == str(out / "report.md")


def test_best_trial_and_counts_match_rows(written):
    _, result, md = written
    best = max((r for r in TRIALS if finite(r["objective"])), key=lambda r: r["objective"])
    assert best["trial_id"] == "t13"                   # not x1: another experiment
    row = md_table(md, "## Best trial")[0]
    assert row["trial"] == "t13" and row["sweep"] == "sw2"
    assert close(row["objective"], best["objective"]) and close(row["Δm%"], best["delta_m_pct"])
    assert close(row["left_accuracy"], best["left_accuracy"]) and close(row["right_accuracy"], best["right_accuracy"])
    assert "`freeze_depth` 2," in md and "`weight_left` 0.4," in md and "`loss_weighting` static" in md
    counts = defaultdict(int)
    for r in TRIALS:
        counts[r["status"]] += 1
    assert dict(counts) == {"completed": 10, "stopped": 1, "failed": 1, "diverged": 1}
    assert result["counts"] == dict(counts)
    line = next(x for x in md.splitlines() if x.startswith("Trials:"))
    assert line.startswith(f"Trials: {len(TRIALS)} (completed 10, diverged 1, failed 1, stopped 1); single-task "
                           f"baselines: 2; confirmation runs: {len(CONFIRMS)}.")
    assert "sweeps: sw1, sw2." in md


def test_freeze_depth_summary_matches_rows(written):
    _, result, md = written
    groups = defaultdict(list)
    for r in TRIALS:
        if finite(r["objective"]):
            groups[r["freeze_depth"]].append(r)
    assert sorted(groups) == [0, 1, 2, 3, N_BLOCKS]
    table = {int(r["freeze depth"]): r for r in md_table(md, "## Objective by freeze depth")}
    assert sorted(table) == sorted(groups)
    for depth, g in groups.items():
        objs = [r["objective"] for r in g]
        shown = table[depth]
        assert int(shown["n"]) == len(g) and int(shown["completed"]) == sum(r["status"] == "completed" for r in g)
        assert close(shown["mean objective"], np.mean(objs)) and close(shown["best objective"], max(objs))
        assert result["freeze"][depth]["mean"] == pytest.approx(np.mean(objs))
    assert len(groups[1]) == 3                        # the stopped trial counts; the failed/diverged ones do not
    assert "left out: 1 failed, 1 without a finite objective" in md


def test_pareto_front_matches_rows(written):
    _, result, md = written
    expected = dominated_free(TRIALS, "left_accuracy", "right_accuracy")
    assert expected == {"t03", "t05", "t13"}
    table = md_table(md, "## Pareto front: left_accuracy vs right_accuracy")
    assert {r["trial"] for r in table} == expected == set(result["pareto"]["trial_ids"])
    by_id = {r["trial_id"]: r for r in TRIALS}
    for r in table:
        assert close(r["left_accuracy"], by_id[r["trial"]]["left_accuracy"])
        assert close(r["right_accuracy"], by_id[r["trial"]]["right_accuracy"])
    n = sum(finite(r["left_accuracy"]) and finite(r["right_accuracy"]) for r in TRIALS)
    assert f"3 of {n} trials" in md


def test_delta_m_by_method_matches_rows(written):
    _, result, md = written
    groups = defaultdict(list)
    for r in TRIALS:
        if finite(r["delta_m_pct"]) and r["status"] == "completed":   # not t10, stopped at epoch 2
            groups[r["loss_weighting"]].append(r["delta_m_pct"])
    assert sorted(groups) == ["dwa", "static", "uncertainty"] and sum(map(len, groups.values())) == 9
    table = {r["loss weighting"]: r for r in md_table(md, "## Δm% by loss weighting")}
    assert list(table) == ["static", "uncertainty", "dwa"]
    for method, values in groups.items():
        assert int(table[method]["n"]) == len(values) and close(table[method]["mean Δm%"], np.mean(values))
        assert result["delta_m"][method]["mean"] == pytest.approx(np.mean(values))


def test_delta_m_plot_draws_the_points_its_mean_and_n_count(written):
    from matplotlib.figure import Figure
    from orchestrator.report import plots
    _, result, _ = written
    fig = plots.plot_delta_m(lambda w, h: Figure(figsize=(w, h)), TRIALS, result)
    drawn = [len(c.get_offsets()) for c in fig.axes[0].collections]   # one scatter per method, in table order
    assert drawn == [result["delta_m"][m]["n"] for m in result["delta_m"]]


def test_confirmation_ranking_and_baselines(written):
    _, result, md = written
    groups = defaultdict(list)
    for r in CONFIRMS:
        groups[r["confirm_of"]].append(r["objective"])
    ranked = sorted(groups, key=lambda k: -np.mean(groups[k]))
    assert ranked == ["t13", "t03"]
    table = md_table(md, "## Confirmation runs")
    assert [r["configuration"] for r in table] == ranked and [r["rank"] for r in table] == ["1", "2"]
    for r in table:
        values = groups[r["configuration"]]
        assert int(r["n seeds"]) == len(values)
        assert close(r["mean"], np.mean(values)) and close(r["std"], np.std(values, ddof=1))
    assert [c["seeds"] for c in result["confirm"]] == [[1, 2], [1, 2, 3]]
    base = {r["task"]: r for r in md_table(md, "## Single-task baselines")}
    assert set(base) == {"left", "right"}
    assert close(base["left"]["value"], BASE["left"]) and base["right"]["metric"] == "accuracy"


def test_summary_lines(written):
    _, result, _ = written
    best, front, freeze = summary_lines(result)
    t13 = TRIALS[-1]
    assert best == f"best trial t13: mean_score {t13['objective']:#.4g}, Δm% {t13['delta_m_pct']:#.4g}"
    n = sum(finite(r["left_accuracy"]) and finite(r["right_accuracy"]) for r in TRIALS)
    assert n == 11 and front.startswith(f"Pareto front (left_accuracy vs right_accuracy): 3 of {n} trials: ")
    assert set(front.rsplit(": ", 1)[1].split(", ")) == {"t03", "t05", "t13"}
    assert freeze.startswith("freeze depth: 0: mean ") and f"{N_BLOCKS}: mean " in freeze


def test_one_sweep_chosen_metrics_and_min_direction(board, tmp_path):
    result = write_report(board, "digits", str(tmp_path), sweep_id="sw1", metrics=["left_loss", "right_accuracy"])
    sw1 = [r for r in TRIALS if r["sweep_id"] == "sw1"]
    assert result["best"]["trial_id"] == max((r for r in sw1 if finite(r["objective"])),
                                             key=lambda r: r["objective"])["trial_id"] == "t06"
    expected = dominated_free(sw1, "left_loss", "right_accuracy", signs=(-1, 1))     # loss: lower is better
    assert set(result["pareto"]["trial_ids"]) == expected and "t05" in expected and "t13" not in expected
    assert [c["confirm_of"] for c in result["confirm"]] == ["t03"]      # confirmation runs of sw1's trials only
    assert result["sweep_ids"] == ["sw1"] and result["kinds"]["trial"] == len(sw1)
    assert "t13" not in {r["trial_id"] for r in result["pareto"]["rows"]} and len(result["baselines"]) == 2


def test_no_baselines_says_how_to_get_them(tmp_path):
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([trial("a", 0.9, 0.8, depth=0), trial("b", 0.8, 0.9, depth=1, method="dwa")])
    result = write_report(lb, "digits", str(tmp_path / "out"))
    md = (tmp_path / "out" / "report.md").read_text()
    assert result["delta_m"] == {} and "No single-task baselines" in md and "search.baselines: true" in md
    assert "orchestrator baselines CONFIG" in md
    with Image.open(result["paths"]["delta_m"]) as img:
        assert img.format == "PNG"
    assert summary_lines(result)[0].endswith("Δm% n/a (no single-task baselines)")
    assert "## Confirmation runs" not in md and set(result["pareto"]["trial_ids"]) == {"a", "b"}


def test_a_failed_trials_scores_from_before_it_failed_are_in_no_front_best_or_importance(tmp_path):
    """A failed trial keeps the scores of the epochs it reported (a worker died at epoch 2 of 3). The front, the best
    trial and the parameter importance pick no failed trial (ranking.UNRANKED, as `pareto` and `best` do); the
    report's front was that trial alone, "1 of 3 trials"."""
    c = DIGITS.with_values({"train.freeze_depth": 2})
    dead = trial_row(c, history(0.99, 0.99, 2, weights=(0.5, 0.5), method="static"), sweep_id="sw1",
                     trial_id="dead", searched={"train.freeze_depth": 2}, n_blocks=N_BLOCKS, error="worker died",
                     fingerprint="fp", wall_time_s=10.0)
    assert dead["status"] == "failed" and dead["left_accuracy"] > 0.9   # its scores stay in the row
    ok = [trial(f"ok{i}", 0.80 + 0.03 * i, 0.90 - 0.02 * i, depth=i % 2) for i in range(4)]
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append(ok + [dead])
    result = write_report(lb, "digits", str(tmp_path / "out"))
    assert set(result["pareto"]["trial_ids"]) == {r["trial_id"] for r in ok} and result["pareto"]["n_trials"] == 4
    assert result["best"]["trial_id"] != "dead" and result["left_out"]["failed"] == 1
    assert result["importance"]["n"] == 4            # fANOVA over the 4 trials that did not fail
    from matplotlib.figure import Figure
    from orchestrator.leaderboard.query import rows as row_dicts
    from orchestrator.report import plots

    fig = plots.plot_weights(lambda w, h: Figure(figsize=(w, h)), row_dicts(lb.table(experiment="digits")), result)
    scores = {float(y) for ax in fig.axes for c in ax.collections for _, y in c.get_offsets()}
    assert dead["left_accuracy"] not in scores and scores   # score_vs_loss_weight.png drew it (a helper's audit)


def test_trials_that_all_score_the_same_give_no_importance_not_a_crash(tmp_path):
    """fANOVA raised "zero total variance in all trees" when every trial had the same objective (a task set the
    backbone cannot tell apart, or a metric that saturates): the report crashed with a traceback."""
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([trial(f"eq{i}", 0.80 + 0.02 * i, 0.90 - 0.02 * i, depth=i % 2) for i in range(4)])   # means 0.85
    result = write_report(lb, "digits", str(tmp_path / "out"))
    assert result["importance"] is None
    assert "or the objective did not vary" in (tmp_path / "out" / "report.md").read_text()


def test_the_baselines_table_shows_the_baselines_of_the_trials_data_only(tmp_path):
    """The table listed every baseline row of the experiment: ones trained on the data before a rewrite too, beside
    Δm% measured against the current ones (a baseline's key begins with the data fingerprint it serves)."""
    lb = Leaderboard(str(tmp_path / "runs"))
    old = baseline("left", 0.5, data="older-data")
    lb.append([trial("a", 0.9, 0.8, depth=0, baselines=BASE), trial("b", 0.8, 0.9, depth=1, baselines=BASE),
               baseline("left", 0.95), baseline("right", 0.93), {**old, "trial_id": "old-left"}])
    result = write_report(lb, "digits", str(tmp_path / "out"))
    assert sorted((b["task"], b["value"]) for b in result["baselines"]) == [("left", 0.95), ("right", 0.93)]


def test_bad_input_is_a_config_error(board, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown metric 'left_acc'.*left_accuracy"):
        write_report(board, "digits", str(tmp_path), metrics=["left_acc", "right_accuracy"])
    with pytest.raises(ConfigError, match="exactly two metrics"):
        write_report(board, "digits", str(tmp_path), metrics=["left_accuracy"])
    with pytest.raises(ConfigError, match="no trials in sweep 'nope'; its sweeps: sw1, sw2$"):
        write_report(board, "digits", str(tmp_path), sweep_id="nope")
    assert not os.listdir(tmp_path)                    # nothing written


def test_min_objective_ranks_lower_first(tmp_path):
    lossy = config("lossy", objective="left_loss")          # the registry: loss, lower is better
    lb = Leaderboard(str(tmp_path / "runs"))
    rows = [trial("m1", 0.90, 0.80, depth=0, cfg=lossy), trial("m2", 0.95, 0.70, depth=0, cfg=lossy),
            trial("m3", 0.85, 0.90, depth=1, cfg=lossy)]
    confirms = [trial(f"c{s}", left, 0.8, depth=0, cfg=lossy, kind="confirm", extra={"confirm_of": of}, seed=s)
                for s, of, left in [(1, "m1", 0.97), (2, "m1", 0.96), (3, "m3", 0.80), (4, "m3", 0.82)]]
    lb.append(rows + confirms)
    result = write_report(lb, "lossy", str(tmp_path / "out"))
    assert [r["objective"] for r in rows] == pytest.approx([0.10, 0.05, 0.15])
    assert result["objective_mode"] == "min" and result["best"]["trial_id"] == "m2"
    assert result["freeze"][0]["best"] == pytest.approx(0.05) and result["freeze"][0]["mean"] == pytest.approx(0.075)
    assert [c["confirm_of"] for c in result["confirm"]] == ["m1", "m3"]     # m1's confirmations have lower loss
    md = (tmp_path / "out" / "report.md").read_text()
    assert "(lower is better)" in md and md_table(md, "## Confirmation runs")[0]["configuration"] == "m1"


def test_the_experiment_counts_a_reused_work_once_its_sweep_has_it(tmp_path):
    lb = Leaderboard(str(tmp_path / "runs"))
    first = [trial("a", 0.9, 0.8, depth=0), trial("b", 0.7, 0.6, depth=1)]
    reused = {**trial("r", 0.9, 0.8, depth=0, sweep="sw2"), "duplicate_of": first[0]["row_id"], "reused_from": "sw1/a"}
    lb.append(first + [reused, trial("c", 0.6, 0.6, depth=1, sweep="sw2")])
    whole = write_report(lb, "digits", str(tmp_path / "all"))
    assert whole["freeze"][0]["n"] == 1 and whole["freeze"][1]["n"] == 2      # a once, not a and r
    sweep = write_report(lb, "digits", str(tmp_path / "sw2"), sweep_id="sw2")
    assert sweep["best"]["trial_id"] == "r" and sweep["freeze"][0]["n"] == 1


def test_a_read_of_two_sweeps_counts_a_work_one_reused_from_the_other_once(tmp_path):
    """A sweep's row of work done before (reused_from) counts in that sweep's reads; a read of both sweeps held the
    work twice (its row, and the reusing sweep's), so a top 2 showed one configuration twice and left another out."""
    lb = Leaderboard(str(tmp_path / "runs"))
    first = [trial("a", 0.9, 0.8, depth=0), trial("b", 0.5, 0.5, depth=1)]
    reused = {**trial("r", 0.9, 0.8, depth=0, sweep="sw2"), "duplicate_of": first[0]["row_id"], "reused_from": "sw1/a"}
    again = {**trial("r2", 0.9, 0.8, depth=0, sweep="sw3"), "duplicate_of": first[0]["row_id"], "reused_from": "sw1/a"}
    lb.append(first + [reused, again, trial("c", 0.6, 0.6, depth=1, sweep="sw2")])
    assert lb.top(2, sweep_id=["sw1", "sw2"]).column("trial_id").to_pylist() == ["a", "c"]
    assert lb.top(5, sweep_id=["sw2", "sw3"]).column("trial_id").to_pylist() == ["r", "c"]   # a's work once
    assert lb.top(2, sweep_id="sw2").column("trial_id").to_pylist() == ["r", "c"]            # the sweep's own row


@pytest.fixture
def cli_with_report(monkeypatch):
    monkeypatch.setitem(cli.commands, "report", report)


def test_cli_unknown_experiment_exits_2_with_one_line(board, tmp_path, capsys, cli_with_report):
    storage = os.path.dirname(board.uri)
    with pytest.raises(SystemExit) as e:
        main(["report", "-e", "nope", "-o", str(tmp_path / "out"), "--storage", storage])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown experiment 'nope'") and "digits, other" in err
    assert not (tmp_path / "out").exists()


def test_cli_writes_and_prints_three_lines(board, tmp_path, capsys, cli_with_report):
    storage = os.path.dirname(board.uri)
    main(["report", "-e", "digits", "-o", str(tmp_path), "--storage", storage, "--metrics", "left_accuracy,right_loss",
          "--sweep", "sw2"])
    lines = capsys.readouterr().out.splitlines()
    wrote = [x.removeprefix("wrote ") for x in lines if x.startswith("wrote ")]
    assert len(wrote) == 7 and all(os.path.isfile(p) for p in wrote) and wrote[-1].endswith("report.md")
    assert "## Confirmation runs" in (tmp_path / "report.md").read_text()     # t13's confirmation runs
    assert lines[-3].startswith("best trial t13: mean_score ")
    assert lines[-2] == "Pareto front (left_accuracy vs right_loss): 1 of 1 trials: t13"
    objective = f"{TRIALS[-1]['objective']:#.4g}"
    assert lines[-1] == f"freeze depth: 2: mean {objective} best {objective} (n=1)"


def test_one_experiment_ranks_trials_on_one_objective(tmp_path, capsys, no_ray):
    """An experiment's trials are compared by their objective. A later sweep of the same experiment on another
    objective (sum_mae, minimized, or Δm%) mixed numbers of different scales and directions: the report printed
    "best trial: mean_score 4.200" (a Δm% value) and averaged unrelated metrics per freeze depth. The sweep is refused
    before anything runs, and a leaderboard that mixes them anyway (merged) is reported one objective at a time."""
    from factories import experiment, run_cli, write_yaml

    base = experiment(tmp_path, "builtin:multidigits/train",
                      search={"space": {"train.freeze_depth": {"choice": [0, 2]}}, "num_samples": 2})
    cfg = parse_config(base)
    history = [{"epoch": 1, "objective": 0.9, "mean_score": 0.9, "left_accuracy": 0.9, "status": "running"}]
    Leaderboard(cfg.storage).append([trial_row(cfg, history, trial_id="a", sweep_id="s1")])
    other = {**base, "objective": {"metric": "sum_mae"}}
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "mae.yaml", other))
    assert code == 2 and "\n" not in err and "mean_score" in err and "sum_mae" in err and "--name" in err, err
    mae_cfg = parse_config(other)
    Leaderboard(cfg.storage).append([trial_row(mae_cfg, [{**history[0], "objective": 1.7, "sum_mae": 1.7}],
                                               trial_id="b", sweep_id="s2")])
    with pytest.raises(ConfigError, match="mixes objectives") as e:
        write_report(Leaderboard(cfg.storage), "t", str(tmp_path / "rep"))
    assert "--sweep" in str(e.value) and "\n" not in str(e.value)
    assert write_report(Leaderboard(cfg.storage), "t", str(tmp_path / "rep2"), sweep_id="s2")["best"]["trial_id"] == "b"


def test_one_experiment_ranks_mean_score_over_one_set_of_task_metrics(tmp_path, capsys, no_ray):
    """mean_score is the mean of each task's score metric: a sweep that scores sum by MAE instead of R2 gives another
    number under the same name (the same models: 0.6888 against -0.0380), and best, top and the report ranked the
    two sweeps as one (found by a helper's audit). A sweep of the same experiment with other task metrics under a
    mean_score (or delta_m) objective is refused before anything runs, and a report of rows that mix them says so."""
    from factories import experiment, run_cli, write_yaml

    base = experiment(tmp_path, "builtin:multidigits/train",
                      search={"space": {"train.freeze_depth": {"choice": [0, 2]}}, "num_samples": 2})
    cfg = parse_config(base)
    history = [{"epoch": 1, "objective": 0.9, "mean_score": 0.9, "left_accuracy": 0.9, "status": "running"}]
    Leaderboard(cfg.storage).append([trial_row(cfg, history, trial_id="a", sweep_id="s1")])
    other = {**base, "tasks": {**base["tasks"], "sum": {"type": "regression", "metric": "mae"}}}
    code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "mae.yaml", other))
    assert code == 2 and "\n" not in err and "sum r2" in err and "sum mae" in err and "--name" in err, err
    Leaderboard(cfg.storage).append([trial_row(parse_config(other), [{**history[0], "objective": -0.04}],
                                               trial_id="b", sweep_id="s2")])
    with pytest.raises(ConfigError, match="mixes objectives"):
        write_report(Leaderboard(cfg.storage), "t", str(tmp_path / "rep"))
    from types import SimpleNamespace

    from orchestrator.sweep.tuner import check_objective

    storage = str(tmp_path / "again")   # sum at its default score metric (MAE), then MAE written out: the same
    default = {**base, "storage": storage, "tasks": {**base["tasks"], "sum": {"type": "regression"}}}
    Leaderboard(storage).append([trial_row(parse_config(default), history, trial_id="a")])
    same = {**default, "tasks": {**base["tasks"], "sum": {"type": "regression", "metric": "mae"}}}
    check_objective(SimpleNamespace(cfg=parse_config(same)))
    with pytest.raises(ConfigError, match="sum mae"):
        check_objective(SimpleNamespace(cfg=parse_config({**default, "tasks": base["tasks"]})))   # r2: another
    # delta_m against other baselines is a new scale that rankings keep apart (baselines_id): not refused (a review
    # found the first version of this check refusing it)
    dm = str(tmp_path / "dm")
    Leaderboard(dm).append([trial_row(parse_config({**default, "storage": dm, "objective": {"metric": "delta_m"}}),
                                      history, trial_id="a")])
    check_objective(SimpleNamespace(cfg=parse_config({**base, "storage": dm, "objective": {"metric": "delta_m"}})))


def test_the_report_of_an_experiment_pools_only_rows_measured_like_the_newest(tmp_path):
    """A trial of older code (training revision 1) or on the data before a rewrite is another measurement: the
    experiment's report took its 0.99 as the best trial and averaged it into the freeze-depth summary."""
    from datetime import datetime, timezone

    lb = Leaderboard(str(tmp_path / "runs"))
    old = {**trial("old", 0.99, 0.99, depth=0), "training_revision": 1,
           "created_at": datetime(2024, 1, 1, tzinfo=timezone.utc)}
    rewritten = {**trial("before", 0.98, 0.98, depth=0), "data_fingerprint": "fp-before-rewrite",
                 "created_at": datetime(2024, 1, 2, tzinfo=timezone.utc)}
    lb.append([old, rewritten, trial("a", 0.9, 0.8, depth=0), trial("b", 0.7, 0.6, depth=1)])
    result = write_report(lb, "digits", str(tmp_path / "report"))
    assert result["best"]["trial_id"] == "a"
    assert result["freeze"][0]["n"] == 1 and result["counts"] == {"completed": 2}
    assert result["left_out"]["other_version"] == 2
    md = (tmp_path / "report" / "report.md").read_text()
    assert "2 trials of older code, older data or other baselines" in md, md


def test_delta_m_by_weighting_counts_completed_trials_only(written):
    """A trial stopped at epoch 2 has an epoch-2 score against full-budget baselines: methods the scheduler stops
    more often looked worse."""
    _, result, _ = written
    assert math.isfinite(next(r for r in TRIALS if r["trial_id"] == "t10")["delta_m_pct"])   # stopped, static
    static = [r["delta_m_pct"] for r in TRIALS if r["loss_weighting"] == "static" and r["status"] == "completed"
              and finite(r["delta_m_pct"])]
    assert result["delta_m"]["static"] == {"mean": pytest.approx(np.mean(static)), "n": len(static)}


def test_a_sweep_that_reused_its_own_trial_counts_that_work_once_in_its_report(tmp_path):
    """A sweep that drew a config and seed it had run already reuses that trial's row (duplicate_of it,
    reused_from). `report --sweep S` kept both rows: the work counted twice in the means, Δm% and the front."""
    board = Leaderboard(str(tmp_path / "runs"))
    a = trial("a", 0.95, 0.95, depth=0, baselines=BASE, sweep="S")
    b = trial("b", 0.70, 0.70, depth=0, baselines=BASE, sweep="S")
    again = {**trial("r", 0.95, 0.95, depth=0, baselines=BASE, sweep="S"), "duplicate_of": a["row_id"],
             "reused_from": "S/a"}
    board.append([a, b, again, baseline("left", BASE["left"]), baseline("right", BASE["right"])])
    whole = write_report(board, "digits", str(tmp_path / "all"))
    swept = write_report(board, "digits", str(tmp_path / "S"), sweep_id="S")
    for result in (whole, swept):
        assert result["freeze"][0]["n"] == 2 and result["pareto"]["n_trials"] == 2, result["freeze"]
    assert swept["delta_m"] == whole["delta_m"]


def test_the_report_names_the_baselines_its_trials_were_measured_against_whichever_experiment_trained_them(tmp_path):
    """Baselines are reused by key across experiments: experiment b's sweep measured Δm% against baselines that
    experiment a had trained, and b's report showed its Δm% but said "single-task baselines: 0", with no baselines
    section (it read b's rows only). The baselines are the rows of the keys its sweeps used. Found by a helper's
    audit."""
    import json as _json

    from factories import experiment, row
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.sweep.baselines import baseline_key, single_task

    d = experiment(tmp_path, "builtin:multidigits/train", name="b", storage=str(tmp_path / "runs"))
    del d["tasks"]["sum"]
    cfg = parse_config({**d, "search": {"space": {"train.head_lr": {"choice": [0.01, 0.02]}}}})
    base = {"left": 0.8, "right": 0.7}
    storage.atomic_write(layout.sweep_record(cfg.storage, "b", "s1"), _json.dumps(
        {"config": cfg.public_dump(), "data_fingerprint": "fp", "baselines": base}).encode())
    board = Leaderboard(cfg.storage)
    board.append([row(single_task(cfg.with_values({"name": "a"}), t), [{"epoch": 1, f"{t}_accuracy": v,
                                                                          "objective": v, "status": "running"}],
                      trial_id=f"base-{t}", sweep_id="baseline-x", kind="baseline", fingerprint="fp",
                      extra={"baseline_task": t, "baseline_key": baseline_key(cfg, t, "fp")}) for t, v in base.items()])
    history = [{"epoch": 1, "left_accuracy": 0.9, "right_accuracy": 0.8, "objective": 0.85, "status": "running"}]
    board.append([row(cfg.with_values({"search": None}), history, trial_id="t1", sweep_id="s1", fingerprint="fp",
                      baselines=base)])
    result = write_report(board, "b", str(tmp_path / "report"))
    assert sorted(b["task"] for b in result["baselines"]) == ["left", "right"]


def test_a_sweeps_reuse_rescored_against_its_baselines_stays_in_the_report(tmp_path):
    """Objective delta_m: sweep B reused sweep A's work x, rescored against B's own (newer) baselines. The report
    kept each work once before holding the trials to the newest measurement: A's row won the work, then was dropped
    as another measurement, and x vanished (its best trial B-y, 0.53, where `best` names B-x, 2.11). The measurement
    first, then each work once in it, as the leaderboard's queries do. Found by a helper's audit."""
    from factories import experiment, row

    d = experiment(tmp_path, "builtin:multidigits/train", name="digits", objective={"metric": "delta_m"},
                   storage=str(tmp_path / "runs"))
    del d["tasks"]["sum"]
    cfg = parse_config(d)

    def trial(trial_id, sweep_id, lr, acc, base):
        dm = 100 * sum((acc - base[t]) / base[t] for t in base) / len(base)
        history = [{"epoch": 5, "left_accuracy": acc, "right_accuracy": acc, "objective": dm, "status": "running"}]
        return row(cfg.with_values({"train.head_lr": lr}), history, trial_id=trial_id, sweep_id=sweep_id,
                   baselines=base)

    a, b = {"left": 0.90, "right": 0.90}, {"left": 0.95, "right": 0.95}
    a_x = trial("A-x", "swA", 0.001, 0.97, a)
    b_x = {**trial("B-x", "swB", 0.001, 0.97, b), "reused_from": "swA/A-x", "duplicate_of": a_x["row_id"]}
    board = Leaderboard(cfg.storage)
    board.append([a_x])
    board.append([b_x, trial("B-y", "swB", 0.01, 0.955, b)])
    assert board.best(experiment="digits")["trial_id"] == "B-x"
    result = write_report(board, "digits", str(tmp_path / "report"))
    assert result["best"]["trial_id"] == "B-x" and result["counts"]["completed"] == 2


def test_delta_m_by_loss_weighting_holds_one_set_of_baselines(tmp_path):
    """Under objective mean_score the report's "Δm% by loss weighting" pooled Δm% measured against different
    baselines (two sweeps of other base configs): static -1.19 (n=3) against dwa +7.31 (n=2), though the dwa trials
    scored 0.79-0.80 and the static ones 0.95-0.96, with nothing said left out. The table holds the rows measured
    against the newest trial's baselines, and says how many it left out. Found by a helper's audit."""
    from factories import experiment, row

    d = experiment(tmp_path, "builtin:multidigits/train", name="digits", storage=str(tmp_path / "runs"))
    del d["tasks"]["sum"]
    cfg = parse_config(d)

    def trial(trial_id, method, acc, base):
        history = [{"epoch": 1, "left_accuracy": acc, "right_accuracy": acc, "objective": acc, "status": "running"}]
        return row(cfg.with_values({"train.loss_weighting": method, "train.epochs": 1}), history, trial_id=trial_id,
                   baselines=base)

    low, high = {"left": 0.74, "right": 0.74}, {"left": 0.97, "right": 0.97}
    board = Leaderboard(cfg.storage)
    board.append([trial("d1", "dwa", 0.79, low), trial("d2", "dwa", 0.80, low)])
    board.append([trial(f"s{i}", "static", acc, high) for i, acc in enumerate((0.95, 0.96, 0.955))])
    result = write_report(board, "digits", str(tmp_path / "report"))
    assert list(result["delta_m"]) == ["static"] and result["delta_m"]["static"]["n"] == 3
    assert result["left_out"]["other_baselines"] == 2
    assert "2 trials measured against other baselines" in (tmp_path / "report" / "report.md").read_text()


def test_a_stopped_trial_on_the_front_is_marked_as_such(tmp_path):
    """The front compares what each trial last scored: a stopped trial's epoch-1 scores beside completed trials'
    final ones (as `orchestrator pareto` does), and it can push a completed trial off the front, while the report's
    hypervolume section keeps completed trials only; the front's table said nothing of it. Each front row says its
    status and epochs, and the text says stopped ones are scored at the epoch they stopped. Found by a helper's
    audit."""
    lb = Leaderboard(str(tmp_path / "runs"))
    lb.append([trial("done-a", 0.90, 0.88, depth=0), trial("done-b", 0.85, 0.95, depth=1),
               trial("stop-c", 0.93, 0.89, depth=0, epochs=1)])
    result = write_report(lb, "digits", str(tmp_path / "out"))
    assert set(result["pareto"]["trial_ids"]) == {"done-b", "stop-c"}
    table = {r["trial"]: r for r in md_table((tmp_path / "out" / "report.md").read_text(), "## Pareto front")}
    assert table["stop-c"]["status"] == "stopped at epoch 1" and table["done-b"]["status"] == "completed"
    assert "stopped trials are scored at the epoch they stopped" in (tmp_path / "out" / "report.md").read_text()


def test_parameter_importance_sees_every_column_that_varied_and_names_those_it_leaves_out(tmp_path):
    """fANOVA read a fixed list of columns (freeze depth, rates, ...) and the loss weights when no trial had them
    null: a searched heads.hidden_units that decided the objective was never seen, and freeze depth (noise) got
    importance 1.000; a column set in some trials only (dwa's temperature) was dropped without a word. Found by a
    helper's audit."""
    from orchestrator.report.mattered import importance

    rows = []
    for i in range(8):
        units = (16, 64)[i % 2]
        rows.append({"kind": "trial", "status": "completed", "objective_mode": "max", "trial_id": f"t{i}",
                     "freeze_depth": i // 4, "hidden_units": units, "objective": (0.6, 0.95)[i % 2] + 0.001 * i,
                     "loss_weighting": "static" if i < 6 else "dwa",
                     "dwa_temperature": None if i < 6 else 1.0 + i})
    imp = importance(rows)
    assert max(imp["importance"], key=imp["importance"].get) == "hidden_units"
    assert imp["left_out"] == ["dwa_temperature"]


def test_the_hypervolume_tables_front_size_counts_tied_trials_as_the_pareto_section_does():
    """Two trials tied on every metric are both on the front (the report's Pareto section lists both), but the
    hypervolume table's "front size" counted distinct points: 1. Found by a helper's audit."""
    from orchestrator.report.fronts import scheduler_fronts

    common = {"kind": "trial", "status": "completed", "sweep_id": "s1"}
    trials = [{**common, "trial_id": "a", "left_accuracy": 0.9, "right_accuracy": 0.8},
              {**common, "trial_id": "b", "left_accuracy": 0.9, "right_accuracy": 0.8},
              {**common, "trial_id": "c", "left_accuracy": 0.7, "right_accuracy": 0.7}]
    searches = {"s1": {"scheduler": {"type": "moasha", "metrics": ["left_accuracy", "right_accuracy"]}}}
    by = scheduler_fronts(trials, searches)["by_scheduler"]["moasha"]
    assert by["n"] == 3 and by["front"] == 2


def test_a_report_cut_short_leaves_no_earlier_report_md_beside_its_new_plots(tmp_path, monkeypatch):
    """report.md is written last, after each plot is written into place: Ctrl-C (or a failure) while drawing left
    the earlier report.md ("Trials: 1") beside plots of 10 trials, looking complete (found by a helper's audit). The
    earlier report.md goes before anything is drawn."""
    from orchestrator.report import report as report_module

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    history = [{"epoch": 1, "objective": 0.9, "mean_score": 0.9, "left_accuracy": 0.9, "status": "running"}]
    board = Leaderboard(cfg.storage)
    board.append([trial_row(cfg, history, trial_id="a", sweep_id="s1")])
    out = tmp_path / "rep"
    write_report(board, "t", str(out))
    assert (out / "report.md").exists()

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "_draw", cut)
    with pytest.raises(KeyboardInterrupt):
        write_report(board, "t", str(out))
    assert not (out / "report.md").exists()


def test_the_pareto_axes_do_not_change_the_reports_best_trial_or_trials(tmp_path):
    """`report --metrics delta_m_pct,left_accuracy` only picks the Pareto plot's axes, but it dropped every trial
    measured against an older sweep's baselines from the whole report: its best trial (new-1, 0.905, where `best`
    writes old-best, 0.955), the freeze-depth table and the counts, calling them "older code or older data" (found
    by a helper's audit). Δm% on an axis holds the front to one set of baselines, as `pareto` does; the rest of the
    report is as without --metrics."""
    import time

    board = Leaderboard(str(tmp_path / "runs"))
    b2 = {"left": 0.97, "right": 0.96}   # a later sweep with another base config: other baselines
    board.append([trial("old-best", 0.96, 0.95, depth=0, baselines=BASE, sweep="sw1"),
                  trial("old-2", 0.90, 0.88, depth=1, baselines=BASE, sweep="sw1")])
    time.sleep(0.01)
    board.append([trial("new-1", 0.91, 0.90, depth=1, baselines=b2, sweep="sw2"),
                  trial("new-2", 0.88, 0.86, depth=2, baselines=b2, sweep="sw2")])
    plain = write_report(board, "digits", str(tmp_path / "a"))
    axes = write_report(board, "digits", str(tmp_path / "b"), metrics=["delta_m_pct", "left_accuracy"])
    assert plain["best"]["trial_id"] == axes["best"]["trial_id"] == board.best(experiment="digits")["trial_id"]
    assert axes["counts"] == plain["counts"] and not axes["left_out"].get("other_version")
    assert axes["pareto"]["trial_ids"] and set(axes["pareto"]["trial_ids"]) <= {"new-1", "new-2"}   # one set of baselines
    # and the front is said and drawn among those: "1 of 4 trials" plotted old-best, which beats new-1 on both axes,
    # as a grey trial beside the front (the review of this change)
    from orchestrator.report.numbers import front_candidates

    assert axes["pareto"]["n_trials"] == 2
    assert {r["trial_id"] for r in front_candidates(board.table().to_pylist(), ["delta_m_pct", "left_accuracy"])} \
        == {"new-1", "new-2"}


def test_the_printed_best_trial_says_when_it_was_stopped_early(tmp_path):
    """The report's terminal line showed a stopped best trial's Δm% as if it had run its budget ("best trial cut:
    mean_score 0.9600, Δm% 2.128"), where the report's Δm% table leaves stopped trials out (found by a helper's
    audit)."""
    board = Leaderboard(str(tmp_path / "runs"))
    cut = {**trial("cut", 0.97, 0.95, depth=1, baselines=BASE, epochs=2), "status": "stopped"}
    board.append([cut, trial("full", 0.90, 0.88, depth=0, baselines=BASE)])
    result = write_report(board, "digits", str(tmp_path / "out"))
    assert result["best"]["trial_id"] == "cut"
    first = summary_lines(result)[0]
    assert first.startswith("best trial cut (stopped early):") and "Δm%" in first, first


def test_the_confirmation_runs_counted_are_the_ones_ranked(tmp_path):
    """"confirmation runs: 4" counted a merged copy and a run on the data before a rewrite, which the confirmed
    ranking (2 seeds of t1) leaves out (found by a helper's audit)."""
    import uuid

    board = Leaderboard(str(tmp_path / "runs"))
    old = {**trial("c0", 0.5, 0.5, depth=0, kind="confirm", extra={"confirm_of": "t1"}, seed=3, sweep="conf0"),
           "data_fingerprint": "fp-before-rewrite"}
    c1 = trial("c1", 0.91, 0.89, depth=0, kind="confirm", extra={"confirm_of": "t1"}, seed=1, sweep="conf")
    c2 = trial("c2", 0.89, 0.90, depth=0, kind="confirm", extra={"confirm_of": "t1"}, seed=2, sweep="conf")
    copy = {**c1, "row_id": uuid.uuid4().hex, "duplicate_of": c1["row_id"], "merged_from": "/elsewhere/runs"}
    board.append([old])
    board.append([trial("t1", 0.9, 0.9, depth=0, baselines=BASE), trial("t2", 0.8, 0.8, depth=1, baselines=BASE),
                  c1, c2, copy])
    result = write_report(board, "digits", str(tmp_path / "out"))
    assert [(c["confirm_of"], c["seeds"]) for c in result["confirm"]] == [("t1", [1, 2])]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "confirmation runs: 2." in md, md


def test_a_report_of_an_older_sweep_lists_the_baselines_it_measured_against(tmp_path, monkeypatch):
    """`report --sweep OLD` of a sweep run by older code (training revision one less): the report keyed its baselines
    with today's revision, so it listed the ones a newer sweep trained (0.80/0.78), not those OLD's Δm% was measured
    against (0.95/0.93, in the leaderboard); its sweep.json records its revision (found by a helper's audit)."""
    import json
    import time

    from orchestrator import layout, storage
    from orchestrator.config import schema
    from orchestrator.sweep.baselines import baseline_key

    runs = str(tmp_path / "runs")
    cfg = DIGITS.with_values({"storage": runs})
    now = schema.TRAINING_REVISION

    def base(task, acc, rev):
        monkeypatch.setattr(schema, "TRAINING_REVISION", rev)
        key = baseline_key(cfg, task, "fp")
        monkeypatch.setattr(schema, "TRAINING_REVISION", now)
        h = [{"epoch": 1, f"{task}_accuracy": acc, "objective": acc, "mean_score": acc}]
        return {**trial_row(single_task(cfg, task), h, trial_id=f"base-{task}-r{rev}", sweep_id=f"b{rev}",
                            kind="baseline", fingerprint="fp", extra={"baseline_task": task, "baseline_key": key}),
                "training_revision": rev}

    def sweep(sid, rev, baselines, tid):
        storage.atomic_write(layout.sweep_record(runs, "digits", sid), json.dumps(
            {"sweep_id": sid, "config": cfg.public_dump(), "data_fingerprint": "fp", "training_revision": rev,
             "baselines": baselines}).encode())
        h = [{"epoch": 1, "objective": 0.9, "mean_score": 0.9, "left_accuracy": 0.9, "right_accuracy": 0.9}]
        return {**trial_row(cfg, h, trial_id=tid, sweep_id=sid, fingerprint="fp", baselines=baselines),
                "training_revision": rev}

    board = Leaderboard(runs)
    old = {"left": 0.95, "right": 0.93}
    board.append([base("left", 0.95, now - 1), base("right", 0.93, now - 1), sweep("OLD", now - 1, old, "o1")])
    time.sleep(0.01)
    board.append([base("left", 0.80, now), base("right", 0.78, now),
                  sweep("NEW", now, {"left": 0.80, "right": 0.78}, "n1")])
    result = write_report(board, "digits", str(tmp_path / "out"), sweep_id="OLD")
    assert sorted(b["value"] for b in result["baselines"]) == [0.93, 0.95], result["baselines"]


def test_older_code_rows_written_later_do_not_pick_the_reports_baselines_or_ablated_winner(tmp_path):
    """Rows of an older release merged in after this code's: the Δm% table's baselines and "What mattered"'s default
    winner were the newest by time, the older code's (the review of 19b6991 named these places; rankings take the
    newest revision first)."""
    import json
    import time

    from orchestrator.config import schema
    from orchestrator.report.mattered import what_mattered
    from orchestrator.report.numbers import delta_m_rows

    old_base = {"left": 0.5, "right": 0.5}
    ours = trial("ours", 0.9, 0.9, depth=0, baselines=BASE)
    time.sleep(0.01)
    theirs = {**trial("theirs", 0.8, 0.8, depth=1, baselines=old_base), "training_revision": schema.TRAINING_REVISION - 1}
    assert [r["trial_id"] for r in delta_m_rows([ours, theirs])] == ["ours"]

    def ablation(tid, of, rev):
        extra = {"ablation_of": of, "ablation_dim": "reference", "ablation_value": json.dumps(None)}
        return {**trial(tid, 0.9, 0.9, depth=0, kind="ablation", extra=extra, seed=1), "training_revision": rev}

    mine = ablation("a1", "ours", schema.TRAINING_REVISION)
    time.sleep(0.01)
    assert what_mattered([mine, ablation("b1", "theirs", schema.TRAINING_REVISION - 1)])["winner"] == "ours"


def test_a_sweep_says_a_new_scale_against_this_codes_trials_not_older_code_merged_in_later(tmp_path):
    """_say_new_scale compared this sweep's baselines with the newest trial by time: an older release's trial merged
    in later made a sweep of the same baselines as this code's trials say it starts another scale."""
    import time

    from orchestrator.config import schema
    from orchestrator.metrics import baselines_id
    from orchestrator.sweep.tuner import _say_new_scale

    runs = str(tmp_path / "runs")
    cfg = config(objective="delta_m").with_values({"storage": runs})
    board = Leaderboard(runs)
    board.append([trial("ours", 0.9, 0.9, depth=0, baselines=BASE)])
    time.sleep(0.01)
    board.append([{**trial("theirs", 0.8, 0.8, depth=1, baselines={"left": 0.5, "right": 0.5}),
                   "training_revision": schema.TRAINING_REVISION - 1}])
    said = []
    _say_new_scale(board, cfg, BASE, out=said.append)
    assert said == [], said
    assert baselines_id(BASE) == board.table(where="trial_id == 'ours'").column("baselines_id")[0].as_py()
