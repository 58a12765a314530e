"""Sweep overhead: the fixed cost of a trial, where it goes, and a sweep against the same work in-process.

1. Trials one at a time (1-worker, then 2-worker), epochs 1, 2, 4, 6 on the embedded default: wall
   time of each trial (Tune start to row written) against its epochs; the intercept is the fixed cost
   per trial, the slope the cost per epoch.
2. Where the fixed cost goes, from the marks each run records (trial.json, progress.json): Tune
   trial start, Train controller + worker group start, TensorFlow import, data reaching the worker,
   model build, first step (tracing), checkpoint per epoch, teardown.
3. The demo's sweep (its experiment file without the baselines: 10 trials, random + ASHA, its resources
   and the concurrency the product picks for them), then the same
   trials replayed one after another in this process (same configs, same epochs each trial ran,
   through fit_arrays, no Ray): the ratio of wall times.

    python bench/sweep_overhead.py            # about 10 minutes on 2 cores
Last line: RESULT fixed_s_1w=... fixed_s_2w=... epoch_overhead_s=... sweep_vs_inprocess=...
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import EMBEDDED  # noqa: E402

BASE = {**EMBEDDED, "train": {"epochs": 6, "batch_size": 128, "backbone_lr": 0.001, "head_lr": 0.003, "seed": 0}}


def config(storage, name, *, workers, search):
    from orchestrator.config import parse_config

    cpus = 0.9 if workers == 1 else 0.45
    return parse_config({**BASE, "name": name, "storage": storage, "search": search,
                         "resources": {"workers": workers, "cpus_per_worker": cpus}})


def demo_config(storage):
    """The demo's own experiment (orchestrator/experiments/demo.yaml: space, searcher, ASHA, resources),
    without its single-task baselines."""
    from importlib.resources import files

    import yaml

    from orchestrator.config import parse_config

    data = yaml.safe_load(files("orchestrator.experiments").joinpath("demo.yaml").read_text())
    data["search"]["baselines"] = False
    return parse_config({**data, "name": "demo-like", "storage": storage})


def trial_marks(storage, row):
    run = os.path.join(storage, "trials", f"{row['sweep_id']}-{row['trial_id']}")
    with open(os.path.join(run, "progress.json")) as f:
        progress = json.load(f)
    with open(os.path.join(run, "trial.json")) as f:
        trial = json.load(f)
    return {**progress["marks"], **trial, "started": row["started_at"].timestamp(),
            "ended": row["created_at"].timestamp(), "epochs": row["epochs"]}


def fixed_cost(storage, workers):
    """Trials one at a time over epochs {1, 2, 4, 6}: least-squares wall = fixed + per_epoch * epochs."""
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    name = f"fixed-{workers}w"
    search = {"searcher": "grid", "scheduler": {"type": "none"}, "max_concurrent_trials": 1, "base_first": False,
              "space": {"train.epochs": {"choice": [1, 2, 4, 6]}}}
    tune(config(storage, name, workers=workers, search=search), out=lambda line: None)
    rows = Leaderboard(storage).table(experiment=name).to_pylist()
    marks = [trial_marks(storage, r) for r in rows]
    epochs = np.array([m["epochs"] for m in marks], float)
    walls = np.array([m["ended"] - m["started"] for m in marks])
    per_epoch, fixed = np.polyfit(epochs, walls, 1)
    return fixed, per_epoch, marks


def breakdown(marks):
    """Mean seconds per start-up step over trials."""
    steps = {
        "tune trial start (Tune start -> trial function)": lambda m: m["trial_fit_start"] - m["started"],
        "train controller + worker group start": lambda m: m["loop_start"] - m["trial_fit_start"],
        "tensorflow import (worker)": lambda m: m["tensorflow"] - m["loop_start"],
        "data reaching the worker": lambda m: m["data"] - m["tensorflow"],
        "model build": lambda m: m["model"] - m["data"],
        "first step (tracing + one step)": lambda m: m["first_step"] - m["model"],
        "checkpoint, per epoch": lambda m: float(np.mean(m.get("checkpoint_s") or [0.0])),
        "teardown (last epoch -> row written)": lambda m: m["ended"] - m["epoch_end"][-1],
    }
    return {k: float(np.mean([f(m) for m in marks])) for k, f in steps.items()}


def replay(storage, rows):
    """The same trials in this process, one after another (same configs and epochs, no Ray)."""
    import tensorflow as tf

    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.loop import fit_arrays

    cache = {}
    t0 = time.perf_counter()
    per_epoch = []
    for row in rows:
        cfg = parse_config({**json.loads(row["config"]), "storage": storage})
        cfg = cfg.with_values({"train.epochs": max(int(row["epochs"]), 1)})
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = load_arrays(cfg)
        train, val, spec = cache[key]
        _, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train, val)
        per_epoch += [h["epoch_seconds"] for h in state["history"][1:]]
    return time.perf_counter() - t0, float(np.median(per_epoch)) if per_epoch else 0.0


def main() -> None:
    from orchestrator.console import console
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.training.pretrain import pretrain
    from orchestrator.sweep.tuner import tune

    work = tempfile.mkdtemp(prefix="bench-overhead-")
    storage = os.path.join(work, "runs")
    try:
        with console(os.path.join(work, "bench.log")) as out:
            pretrain(storage, out=lambda line: None)
            fixed_1w, epoch_1w, marks_1w = fixed_cost(storage, 1)
            fixed_2w, epoch_2w, marks_2w = fixed_cost(storage, 2)
            t0 = time.perf_counter()
            tune(demo_config(storage), out=lambda line: None)
            sweep_s = time.perf_counter() - t0
            rows = Leaderboard(storage).table(experiment="demo-like").to_pylist()
            replay_s, inproc_epoch = replay(storage, rows)
        print("\n== fixed cost per trial (trials one at a time, epochs 1/2/4/6; wall = fixed + per_epoch x epochs)")
        print(f"  1 worker : fixed {fixed_1w:6.2f} s, per epoch {epoch_1w:5.2f} s")
        print(f"  2 workers: fixed {fixed_2w:6.2f} s, per epoch {epoch_2w:5.2f} s")
        print("\n== where a 1-worker trial's fixed cost goes (mean over its trials)        1 worker   2 workers")
        b1, b2 = breakdown(marks_1w), breakdown(marks_2w)
        for k in b1:
            print(f"  {k:<58} {b1[k]:7.2f} s  {b2[k]:7.2f} s")
        print(f"\n== the demo's sweep: 10 trials (random + ASHA), {len(rows)} rows, "
              f"{sum(r['epochs'] for r in rows)} epochs in all")
        print(f"  orchestrated sweep {sweep_s:6.1f} s; the same trials in-process one after another {replay_s:6.1f} s; "
              f"ratio {sweep_s / replay_s:.2f}")
        print(f"  best objective: sweep {max(r['objective'] or 0 for r in rows):.4f}")
        overhead = epoch_1w - inproc_epoch
        print(f"  per-epoch time: in a trial {epoch_1w:.2f} s, in-process {inproc_epoch:.2f} s -> overhead "
              f"{overhead:.2f} s")
        print(f"RESULT fixed_s_1w={fixed_1w:.2f} fixed_s_2w={fixed_2w:.2f} epoch_overhead_s={overhead:.2f} "
              f"sweep_vs_inprocess={sweep_s / replay_s:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
