"""Real Ray Tune + Ray Train + TensorFlow sweeps on tiny budgets (slow)."""
import csv
import io
import json

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config import load_config, parse_config
from orchestrator.errors import UserError
from orchestrator.leaderboard import Leaderboard
from orchestrator.training.driver import train
from orchestrator.sweep.tuner import tune

from factories import embedded, seeded_storage

pytestmark = pytest.mark.slow


def sweep(storage, name, space, *, epochs=4, searcher="grid", scheduler=None, optimizer="adam", samples=1,
          weights="pretrained"):
    """A sweep on the embedded default; ``weights="none"`` where what is tested does not need the pretrained built-in
    backbone (pretraining it takes about 25 s per storage: ``swept``'s storage gets the session's pretrained one)."""
    return parse_config(embedded(
        storage, name=name, tasks={"sum": {"type": "regression", "metric": "r2"}},
        backbone={"weights": weights}, heads={"hidden_units": 32},
        train={"epochs": epochs, "batch_size": 128, "optimizer": optimizer, "head_lr": 3e-3},
        search={"space": space, "searcher": searcher, "num_samples": samples,
                "scheduler": scheduler or {"type": "asha", "grace_period": 1, "reduction_factor": 2}}))


@pytest.fixture(scope="module")
def swept(ray_session, pretrained_backbone, tmp_path_factory):
    """Two experiments in one storage: a grid with ASHA, and a grid x sampled loss weights with a diverging lr."""
    storage = seeded_storage(tmp_path_factory.mktemp("sweep"), pretrained_backbone)
    a = tune(sweep(storage, "grid-a", {"train.freeze_depth": {"choice": [0, "all"]},
                                       "train.head_lr": {"choice": [3e-3, 1e-5]}}))
    b = tune(sweep(storage, "rand-b", {"train.head_lr": {"choice": [1e-2, 1e9]},
                                       "train.loss_weights": {"simplex": {"concentration": 1.0}}},
                   epochs=2, searcher="grid", optimizer="sgd", samples=1, scheduler={"type": "none"}))
    return storage, a, b


def test_every_trial_lands_in_one_shared_leaderboard(swept):
    storage, a, b = swept
    board = Leaderboard(storage)
    assert set(board.experiments()) == {"grid-a", "rand-b"}
    rows_a = board.table(experiment="grid-a").to_pylist()
    rows_b = board.table(experiment="rand-b").to_pylist()
    assert len(rows_a) == 4 and len(rows_b) == 2 and a["trials"] == 4 and b["trials"] == 2
    assert len({r["config_hash"] for r in rows_a}) == 4                      # distinct configs
    for r in rows_a + rows_b:
        assert r["worker_config_hash"] == r["config_hash"]                  # the worker trained that config
        # each status says what happened to the trial: its epochs and reason agree with it
        assert {"completed": r["epochs"] == r["max_epochs"] and r["reason"] is None,
                "stopped": r["epochs"] < r["max_epochs"] and "stopped early" in (r["reason"] or ""),
                "diverged": "non-finite" in (r["reason"] or ""),
                "failed": bool(r["reason"])}[r["status"]], r
        assert r["data_fingerprint"] and r["versions"]
    # ASHA can stop trials mid-training: stopped rows ran fewer epochs
    stopped = [r for r in rows_a if r["status"] == "stopped"]
    assert stopped and all(r["epochs"] < 4 for r in stopped), [(r["status"], r["epochs"]) for r in rows_a]
    assert any(r["status"] == "completed" and r["epochs"] == 4 for r in rows_a)
    # per-task metric columns and searched hyperparameters as typed columns
    assert {"left_accuracy", "right_accuracy", "sum_r2", "best_sum_r2", "freeze_depth", "head_lr"} <= set(rows_a[0])
    assert {r["freeze_depth"] for r in rows_a} == {0, 5}
    # the diverging learning rate is recorded as diverged, and the sweep went on
    assert any(r["status"] == "diverged" and "non-finite" in r["reason"] for r in rows_b)
    assert any(r["status"] == "completed" for r in rows_b)
    for r in rows_b:
        assert r["weight_left"] + r["weight_right"] + r["weight_sum"] == pytest.approx(1.0)
    # freeze depth matters on the embedded default: fine-tuning beats heads-only at the good lr (best epoch,
    # so a trial ASHA stopped early still counts)
    good = {r["freeze_depth"]: r["best_objective"] for r in rows_a if r["head_lr"] == 3e-3}
    assert set(good) == {0, 5} and good[0] > good[5], good


def test_cli_queries(swept, capsys):
    storage, _, _ = swept
    main(["leaderboard", "--storage", storage, "--experiment", "rand-b", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and {r["experiment"] for r in rows} == {"rand-b"}
    main(["leaderboard", "--storage", storage, "--where", "freeze_depth == 0 and status == 'completed'",
          "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["freeze_depth"] == "0" and r["status"] == "completed" for r in rows)
    main(["leaderboard", "--storage", storage, "--sort", "sum_mae", "--top", "2"])
    assert "trial_id" in capsys.readouterr().out


def test_best_then_train_reproduces_the_winner(swept, tmp_path, capsys):
    storage, _, _ = swept
    out = str(tmp_path / "best.yaml")
    main(["best", "--storage", storage, "--experiment", "grid-a", "-o", out])
    best = Leaderboard(storage).best(experiment="grid-a")
    text = open(out).read()
    assert "search" not in yaml.safe_load(text)
    summary = train(load_config(out), name="retrain-best")
    assert summary["status"] == "completed"
    assert abs(summary["objective"] - best["objective"]) <= 0.02, (summary["objective"], best["objective"])


def test_optuna_sweep_with_simplex_weights_and_a_warm_start(swept):
    """A real Optuna sweep (TPE) over loss weights (simplex) and freeze depth, warm-started from the best
    configurations of an earlier experiment, whose paths outside the new space are dropped."""
    storage, _, _ = swept
    board = Leaderboard(storage)
    earlier = board.top(2, experiment="grid-a").to_pylist()
    cfg = sweep(storage, "optuna-c", {"train.freeze_depth": {"choice": [0, 2, "all"]},
                                      "train.head_lr": {"choice": [3e-3, 1e-5, 1e-3]},
                                      "train.loss_weights": {"simplex": {"concentration": 1.0}}},
                epochs=2, searcher="optuna", samples=4, scheduler={"type": "none"})
    cfg = cfg.with_values({"search.warm_start": {"experiment": "grid-a", "top": 2}})
    lines = []
    s = tune(cfg, out=lines.append)
    rows = board.table(experiment="optuna-c").to_pylist()
    assert len(rows) == 4 == s["trials"] and all(r["status"] in ("completed", "stopped") for r in rows)
    for r in rows:
        assert r["weight_left"] + r["weight_right"] + r["weight_sum"] == pytest.approx(1.0)
    configs = [json.loads(r["config"]) for r in rows]
    base = [c for c in configs if c["train"]["loss_weights"] and
            all(abs(w - 1 / 3) < 1e-3 for w in c["train"]["loss_weights"].values())]
    assert base, "the base config (equal weights) was not evaluated first"
    for e in earlier:   # grid-a's best configurations were evaluated (freeze depth and head lr carried over)
        old = json.loads(e["config"])["train"]
        assert any(c["train"]["freeze_depth"] == old["freeze_depth"] and c["train"]["head_lr"] == old["head_lr"]
                   for c in configs), (old, [c["train"] for c in configs])


def test_baselines_are_trained_once_and_give_delta_m(swept):
    """search.baselines: each task alone (kind baseline, reused by the next sweep), Δm% on every row, and
    Δm% as the objective."""
    storage, _, _ = swept
    space = {"train.loss_weighting": {"choice": ["static", "uncertainty"]}}
    cfg = sweep(storage, "dm", space, epochs=2, samples=1, scheduler={"type": "none"})
    cfg = cfg.with_values({"search.baselines": True})
    lines = []
    first = tune(cfg, out=lines.append)
    board = Leaderboard(storage)
    baselines = board.table(experiment="dm", kind="baseline").to_pylist()
    assert sorted(r["baseline_task"] for r in baselines) == ["left", "right", "sum"]
    assert all(r["status"] == "completed" for r in baselines)
    rows = board.table(experiment="dm").to_pylist()
    assert len(rows) == 2 and all(isinstance(r["delta_m_pct"], float) for r in rows)
    base = {r["baseline_task"]: r[f"{r['baseline_task']}_{'r2' if r['baseline_task'] == 'sum' else 'accuracy'}"]
            for r in baselines}
    r = rows[0]
    expected = 100 / 3 * sum((r[f"{t}_{m}"] - base[t]) / abs(base[t])
                             for t, m in (("left", "accuracy"), ("right", "accuracy"), ("sum", "r2")))
    assert r["delta_m_pct"] == pytest.approx(expected, rel=1e-9)
    assert first["baselines"] == pytest.approx(base)
    # a second sweep with the same data, backbone and budget reuses them (and can optimize Δm% itself)
    # (one trial: the reuse is what is tested)
    again = tune(cfg.with_values({"name": "dm2", "objective": {"metric": "delta_m"},
                                  "search.space": {"train.loss_weighting": {"choice": ["uncertainty"]},
                                                   "train.freeze_depth": {"choice": [2]}}}),
                 out=lines.append)
    assert board.table(kind="baseline").num_rows == 3 and again["baselines"] == pytest.approx(base)
    assert any("baselines reused" in line for line in lines)
    rows2 = board.table(experiment="dm2").to_pylist()
    assert len(rows2) == 1 and all(r["objective"] == pytest.approx(r["delta_m_pct"]) for r in rows2)
    # its winner retrained in one command (`orchestrator train best.yaml`) is measured against the same baselines:
    # train got none before, and its objective was NaN
    from orchestrator.config import parse_config
    from orchestrator.sweep.baselines import recorded_for
    from orchestrator.training.driver import train

    # The winner differs from the base config in what its baselines train with (freeze depth, rates), so it is
    # measured against its sweep's baselines (sweep.json), not ones keyed on its own config, which do not exist.
    winner = parse_config(board.best(experiment="dm2")["config"])
    summary = train(winner.with_values({"resources.cpus_per_worker": 0.9}), out=lines.append, baselines=recorded_for)
    assert summary["status"] == "completed" and summary["objective_metric"] == "delta_m", summary["error"]
    measured = 100 / 3 * sum((summary["tasks"][t][m] - base[t]) / abs(base[t])
                             for t, m in (("left", "accuracy"), ("right", "accuracy"), ("sum", "r2")))
    assert summary["objective"] == pytest.approx(measured, rel=1e-6), (summary["objective"], measured)
    unknown = winner.with_values({"train.freeze_depth": 1, "name": "dm-new"})   # no sweep and no baselines of its own
    with pytest.raises(UserError, match="objective delta_m needs single-task baselines"):
        train(unknown, out=lines.append, baselines=recorded_for)


def test_confirm_reruns_the_top_configs_with_new_seeds(swept, tmp_path):
    from orchestrator.sweep.confirm import confirm

    storage, _, _ = swept
    ranking = confirm(storage, "grid-a", top=1, seeds=2, out=lambda line: None)
    board = Leaderboard(storage)
    rows = board.table(experiment="grid-a", kind="confirm").to_pylist()
    best = board.best(experiment="grid-a")
    seen = [(r["confirm_of"], r["seed"], r["status"], r["objective"], r["reason"]) for r in rows]
    top = [(r["trial_id"], r["objective"]) for r in board.top(3, experiment="grid-a").to_pylist()]
    assert len(rows) == 2 and {r["confirm_of"] for r in rows} == {best["trial_id"]}, (seen, best["trial_id"], top)
    assert sorted(r["seed"] for r in rows) == [best["seed"] + 1, best["seed"] + 2], seen
    assert len(ranking) == 1 and ranking[0]["n"] == 2, (ranking, seen)
    assert ranking[0]["mean"] == pytest.approx(sum(r["objective"] for r in rows) / 2)
    out = str(tmp_path / "confirmed.yaml")
    main(["best", "--storage", storage, "-e", "grid-a", "--confirmed", "-o", out])
    expected = best["config"] if isinstance(best["config"], dict) else json.loads(best["config"])
    assert yaml.safe_load(open(out))["train"] == expected["train"]


def test_sync_halving_pauses_trials_and_resumes_their_own_train_runs(ray_session, tmp_path):
    """Three trials, rung at epoch 1: all pause there; the best resumes its own Train run from its checkpoint."""
    from orchestrator import layout
    from orchestrator.leaderboard.query import rows as row_dicts
    from orchestrator.training.progress import attempts

    storage = str(tmp_path)
    summary = tune(sweep(storage, "sync", {"train.head_lr": {"loguniform": [1e-4, 1e-2]}}, epochs=3,
                         searcher="random", samples=3, scheduler={"type": "sync", "grace_period": 1,
                                                                  "reduction_factor": 3}, weights="none"))
    rows = row_dicts(Leaderboard(storage).table(experiment="sync"))       # history parsed
    assert summary["trials"] == 3 and len(rows) == 3
    done = [r for r in rows if r["status"] == "completed"]
    assert len(done) == 1 and done[0]["epochs"] == 3, [(r["status"], r["epochs"]) for r in rows]
    # promoted on its epoch-1 objective, the best of the three
    assert all(r["history"][0]["objective"] <= done[0]["history"][0]["objective"] for r in rows)
    assert [h["epoch"] for h in done[0]["history"]] == [1, 2, 3] and done[0]["worker_config_hash"] == \
        done[0]["config_hash"]
    starts = attempts(layout.run_dir(storage, layout.trial_run_name(done[0]["sweep_id"], done[0]["trial_id"])))
    assert starts[0] == 0 and len(starts) >= 2 and min(starts[1:]) >= 1, starts   # resumed, not from scratch
    # its rung is kept in the sweep's folder, for --resume: the one decision, with the promoted trial's id
    kept = json.loads(open(layout.scheduler_state(storage, "sync", done[0]["sweep_id"], "sync")).read())
    assert kept["promoted"] == [[done[0]["trial_id"]]] and len(kept["values"][0]) == 3, kept


def test_later_trials_start_on_warm_train_workers(ray_session, tmp_path):
    """A trial's Train workers used to start as new processes and import TensorFlow inside the trial (about 4.6 s of
    its 10.6 s fixed cost, bench/sweep_overhead). Now each Train run starts as many spare processes on its workers'
    nodes, with the workers' runtime env, and those import TensorFlow as they start; the next trial's workers are
    given them. Trials one at a time: the first trial's worker process starts after its trial began (cold); every
    later one's started before (warm), and its own TensorFlow import is near zero. The trials' own process (Tune's
    trial actor, which holds the Train controller) is reused too: one process, not one per trial."""
    import os

    from orchestrator import layout

    cfg = sweep(str(tmp_path), "warm", {"train.seed": {"choice": [1, 2, 3]}}, epochs=1, scheduler={"type": "none"},
                weights="none")
    cfg = cfg.with_values({"search.max_concurrent_trials": 1, "search.base_first": False})
    tune(cfg)
    rows = sorted(Leaderboard(str(tmp_path)).table(experiment="warm").to_pylist(), key=lambda r: r["started_at"])
    assert [r["status"] for r in rows] == ["completed"] * 3
    seen, trial_pids = [], set()
    for r in rows:
        run = layout.run_dir(str(tmp_path), layout.trial_run_name(r["sweep_id"], r["trial_id"]))
        marks = json.load(open(os.path.join(run, "progress.json")))["marks"]
        trial = json.load(open(os.path.join(run, "trial.json")))
        fit_start = trial["trial_fit_start"]
        trial_pids.add(trial["trial_pid"])
        warm = marks.get("worker_process_start", float("inf")) < fit_start   # the worker's process was there first
        seen.append((warm, marks["tensorflow"] - marks["loop_start"]))
    assert [warm for warm, _ in seen] == [False, True, True], seen
    assert all(import_s < 1.0 for _, import_s in seen[1:]), seen
    assert len(trial_pids) == 1, trial_pids
