"""Leaderboard at scale: N trials written as sweeps write them (one append, one file per trial), then
top / where / best timed before and after `compact()`.

    python bench/leaderboard_scale.py                 # 100,000 trials, 2 writer processes, temp dir deleted
    python bench/leaderboard_scale.py --rows 20000 --writers 4 --keep /tmp/lb

Rows are real `rows.trial_row` rows (3 experiments, 6 epochs of history each, one minimizing its
objective); each trial is a copy of its experiment's row with a new row id, trial id, sweep id, searched
hyperparameters and metrics. After compaction every query runs on a fresh `Leaderboard` (no cached
footers), as a CLI call would; before it (slow: 100,000 files) the three share one. Ends with one line: RESULT rows=... top_s=... where_s=... best_s=... compact_s=...
(median query times after compaction).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.leaderboard import Leaderboard  # noqa: E402

WHERE = "freeze_depth <= 2 and status == 'completed' and right_accuracy >= 0.5"
TASKS = {"left": {"type": "classification"}, "right": {"type": "classification"},
         "sum": {"type": "regression", "metric": "r2"}}


def experiments():
    from orchestrator.config import parse_config

    def cfg(name, tasks, **more):
        return parse_config({"name": name, "data": {"train": "builtin:multidigits/train"}, "tasks": tasks,
                             "backbone": {"kind": "builtin", "weights": "pretrained"},
                             "train": {"epochs": 6, "batch_size": 64}, **more})
    return [cfg("digits3", TASKS), cfg("pair", {t: TASKS[t] for t in ("left", "right")}),
            cfg("mae", {"sum": {"type": "regression", "metric": "mae"}}, objective={"metric": "sum_mae"})]


def base_row(cfg, rng):
    """One realistic trial row: 6 epochs of per-task metrics, losses, loss weights, throughput."""
    from orchestrator.leaderboard.rows import RowContext, TrialFacts, trial_row

    history = []
    for epoch in range(1, 7):
        m = {"epoch": epoch, "train_loss": 1.0 / epoch, "world_size": 2, "examples_per_s": 900.0 + epoch,
             "config_hash": "0123456789ab", "steps_per_epoch": 40, "time_this_iter_s": 3.2}
        for task, tc in cfg.tasks.items():
            if tc.type == "regression":
                m.update({f"{task}_mae": 0.5 / epoch, f"{task}_rmse": 0.7 / epoch, f"{task}_r2": 1 - 0.5 / epoch})
            else:
                m.update({f"{task}_accuracy": 1 - 0.4 / epoch})
            m[f"{task}_loss"] = 0.9 / epoch
            m[f"eff_weight_{task}"] = 1 / len(cfg.tasks)
        m["mean_score"] = m["objective"] = rng.random()
        if cfg.objective.metric == "sum_mae":
            m["objective"] = m["sum_mae"]
        history.append(m)
    searched = {"train.freeze_depth": 1, "train.backbone_lr": 1e-4, "train.head_lr": 1e-3}
    context = RowContext("s", 5, fingerprint="f" * 16,
                         versions={"python": "3.11", "tensorflow": "2.20", "keras": "3.11", "ray": "2.60"})
    facts = TrialFacts("t", searched, wall_time_s=42.0, checkpoint="s3://bucket/runs/trials/t/checkpoints/epoch_000006")
    return trial_row(cfg, history, context=context, trial=facts)


def trial(base, i, rng):
    """A copy of ``base`` as trial ``i`` of sweep ``i // 500``: new ids, hyperparameters and metrics."""
    row = dict(base, row_id=uuid.uuid4().hex, trial_id=f"{i:06d}", sweep_id=f"sweep{i // 500:04d}")
    row.update(freeze_depth=rng.randrange(6), backbone_lr=10 ** rng.uniform(-5, -2), head_lr=10 ** rng.uniform(-4, -1),
               wall_time_s=rng.uniform(10, 300), status="completed" if rng.random() < 0.8 else "stopped")
    for k, v in base.items():
        if isinstance(v, float) and k.endswith(("_accuracy", "_r2", "_mae", "_rmse", "_loss", "objective",
                                                "mean_score")):
            row[k] = v * rng.uniform(0.5, 1.0)
    return row


def write(args):
    folder, start, stop, seed = args
    import random

    rng = random.Random(seed)
    bases = [base_row(cfg, rng) for cfg in experiments()]
    board = Leaderboard(folder)
    for i in range(start, stop):
        board.append([trial(bases[i % len(bases)], i, rng)])
    return stop - start


def timed(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def queries(folder, board=None):
    """The three timed queries; each on a fresh Leaderboard (cold footer cache) unless ``board`` is given."""
    get = (lambda: board) if board is not None else (lambda: Leaderboard(folder))
    one = {"experiment": "digits3"}   # the three experiments rank by other objectives: a ranking reads one of them
    return {"top": lambda: get().top(5, **one), "where": lambda: get().top(5, where=WHERE, **one),
            "best": lambda: get().best(**one)}


def folder_stats(folder):
    names = [n for n in os.listdir(os.path.join(folder, "leaderboard")) if n.endswith(".parquet")]
    size = sum(os.path.getsize(os.path.join(folder, "leaderboard", n)) for n in names)
    return len(names), size / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--writers", type=int, default=2, help="processes appending")
    p.add_argument("--before-runs", type=int, default=1, help="runs of each query before compaction (slow)")
    p.add_argument("--after-runs", type=int, default=5)
    p.add_argument("--keep", default=None, help="write here and keep it (default: a temp dir, deleted)")
    args = p.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="leaderboard-scale-")
    try:
        t0 = time.perf_counter()
        bounds = [args.rows * k // args.writers for k in range(args.writers + 1)]
        with mp.get_context("spawn").Pool(args.writers) as pool:
            written = sum(pool.map(write, [(folder, a, b, k) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]))
        write_s = time.perf_counter() - t0
        files, mb = folder_stats(folder)
        print(f"wrote {written} trials as {files} files ({mb:.0f} MB) in {write_s:.0f} s "
              f"({written / write_s:.0f} appends/s, {args.writers} processes)", flush=True)

        # one Leaderboard for the three: the first query reads every file's footer, the others reuse them
        before = {name: timed(fn, args.before_runs) for name, fn in queries(folder, Leaderboard(folder)).items()}
        print("before compaction (one Leaderboard, footers read by the first query): "
              + ", ".join(f"{n} {min(t):.1f} s" for n, t in before.items()), flush=True)

        result = Leaderboard(folder).compact()
        files_after, mb_after = folder_stats(folder)
        print(f"compact: {result['files_before']} -> {result['files_after']} files ({mb_after:.0f} MB), "
              f"{result['rows']} rows in {result['seconds']:.1f} s", flush=True)

        board = Leaderboard(folder)
        ids = board.table(kind=None, columns=["row_id"]).column("row_id")
        assert len(ids) == args.rows and len(set(ids.to_pylist())) == args.rows, "rows lost or doubled"
        assert board.top(5, where=WHERE, experiment="digits3").num_rows == 5
        after = {name: timed(fn, args.after_runs) for name, fn in queries(folder).items()}

        print(f"\n{'query':<8}{'before (s)':>12}{'after median (s)':>18}{'after max (s)':>15}")
        for name in after:
            print(f"{name:<8}{min(before[name]):>12.2f}{statistics.median(after[name]):>18.3f}"
                  f"{max(after[name]):>15.3f}")
        med = {n: statistics.median(t) for n, t in after.items()}
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; whole bench "
              f"{time.perf_counter() - t0:.0f} s")
        print(f"RESULT rows={args.rows} top_s={med['top']:.3f} where_s={med['where']:.3f} best_s={med['best']:.3f} "
              f"compact_s={result['seconds']:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
