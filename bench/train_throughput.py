"""Throughput: plain in-process Keras custom loop vs the orchestrated run (Ray Train, 1 worker).

Same model, same data, same step code, same number of epochs, run one after the other in one
process tree (plain, orchestrated, plain again: the plain figure is the mean of the two). Prints steady-state examples/second (first epoch excluded: tracing, warm-up) and
their ratio. Goal: orchestrated >= 0.90x plain.

    python bench/train_throughput.py [--examples 16000] [--epochs 6] [--batch-size 256]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def steady(history: list[dict]) -> float:
    """Examples/s over epochs 2..N: total examples / total training seconds."""
    rest = history[1:]
    return sum(m["examples_per_s"] * m["epoch_seconds"] for m in rest) / sum(m["epoch_seconds"] for m in rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=16000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()

    import pyarrow.parquet as pq
    import tensorflow as tf

    from orchestrator import builtin
    from orchestrator.config import parse_config
    from orchestrator.data import to_arrays
    from orchestrator.run import init_ray, make_trainer, prepare_run
    from orchestrator.worker import fit_arrays

    work = tempfile.mkdtemp(prefix="bench-")
    digits = (5, 6, 7, 8, 9)
    pq.write_table(builtin.image_table(builtin.composites(digits, "train", n=args.examples)), f"{work}/train.parquet")
    pq.write_table(builtin.image_table(builtin.composites(digits, "val", n=1000)), f"{work}/val.parquet")
    cfg = parse_config({
        "name": "bench", "storage": f"{work}/runs",
        "data": {"train": f"{work}/train.parquet", "validation": f"{work}/val.parquet"},
        "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
                  "sum": {"type": "regression"}},
        "backbone": {"kind": "builtin", "weights": "none"},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "freeze_depth": 0},
        "resources": {"workers": 1, "cpus_per_worker": os.cpu_count()},  # same cores as plain
    })
    p = prepare_run(cfg, out=lambda *_: None)

    def run_plain():
        _, state = fit_arrays(tf.distribute.get_strategy(), p.cfg, p.spec,
                              to_arrays(p.train, p.cfg.tasks), to_arrays(p.val, p.cfg.tasks))
        return state["history"]

    # A-B-A: plain before and after the orchestrated run, so machine drift hits both sides.
    plain_runs = [steady(run_plain())]
    init_ray(None)
    t0 = time.perf_counter()
    result = make_trainer(p, name="bench-orchestrated", storage_path=f"{work}/runs/trials").fit()
    wall = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
        history = json.load(f)["history"]
    orchestrated = steady(history)
    last = run_plain()
    plain_runs.append(steady(last))
    plain = sum(plain_runs) / 2

    print(f"examples={args.examples} epochs={args.epochs} global_batch={args.batch_size} (first epoch excluded)")
    print(f"plain in-process custom loop : {plain:9.0f} examples/s   (before {plain_runs[0]:.0f}, after {plain_runs[1]:.0f})")
    print(f"orchestrated, Ray Train 1 wkr: {orchestrated:9.0f} examples/s   (wall {wall:5.1f} s incl. start-up)")
    print(f"ratio orchestrated/plain     : {orchestrated / plain:.3f}   (goal >= 0.90)")
    print(f"final objective plain {last[-1]['objective']:.4f} vs orchestrated "
          f"{history[-1]['objective']:.4f}")


if __name__ == "__main__":
    main()
