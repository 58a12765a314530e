"""Throughput: plain in-process custom loop vs the orchestrated run (Ray Train, 1 worker), and step time at 2 workers.

Same model, same data, same step, same epochs. The plain run is ``worker.fit_arrays`` in this process (default
strategy, no Ray), fed by ``pipeline.load_arrays``; the orchestrated run is ``run.train``, the product's
`orchestrator train` (Parquet -> Ray Data decode into the object store -> one Ray Train worker -> the same
``worker.fit``), with as many CPUs as the machine has, so both sides get the same cores. Order A-B-A-B-...-A
(``--rounds`` orchestrated runs, each between two plain runs): machine drift hits both sides; each round's ratio
is the orchestrated run over the mean of the plain runs around it, and the result is the median round. Then one
2-worker orchestrated run (same global batch, split over 2 workers, one CPU each; MultiWorkerMirroredStrategy).
The machine is shared: single runs of the same plain loop vary by up to 2x here, hence the rounds.

Steady state: examples/s over epochs 2..N (total examples / total training seconds; the first epoch holds tracing
and warm-up). Time per step: training seconds of epochs 2..N / steps. Goal: orchestrated >= 0.95x plain.

    python bench/train_throughput.py [--examples 32000] [--epochs 6] [--batch-size 256] [--rounds 5]   # about 7-9 minutes
Last line: RESULT ratio=... plain_ex_s=... orch_ex_s=... step_ms_1w=... step_ms_2w=...
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def steady(history: list[dict]) -> tuple[float, float]:
    """(examples/s, ms per step) over epochs 2..N."""
    rest = history[1:]
    seconds = sum(m["epoch_seconds"] for m in rest)
    examples = sum(m["examples_per_s"] * m["epoch_seconds"] for m in rest)
    steps = sum(m["steps_per_epoch"] for m in rest)
    return examples / seconds, 1000.0 * seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=32000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5, help="orchestrated 1-worker runs, each between two plain runs")
    args = ap.parse_args()

    from orchestrator.console import console, quiet_tensorflow

    tf = quiet_tensorflow()
    import pyarrow.parquet as pq

    from orchestrator.data import builtin
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.driver import train
    from orchestrator.training.loop import fit_arrays

    work = tempfile.mkdtemp(prefix="bench-throughput-")
    try:
        digits = (5, 6, 7, 8, 9)
        pq.write_table(builtin.image_table(builtin.composites(digits, "train", n=args.examples)),
                       f"{work}/train.parquet")
        pq.write_table(builtin.image_table(builtin.composites(digits, "val", n=1000)), f"{work}/val.parquet")

        def config(workers: int):
            return parse_config({
                "name": f"throughput-{workers}w", "storage": f"{work}/runs",
                "data": {"train": f"{work}/train.parquet", "validation": f"{work}/val.parquet"},
                "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
                          "sum": {"type": "regression", "metric": "r2"}},
                "backbone": {"kind": "builtin", "weights": "none"},
                "train": {"epochs": args.epochs, "batch_size": args.batch_size, "freeze_depth": 0},
                # the whole machine for the run, split between its workers: the same cores as the plain loop
                "resources": {"workers": workers, "cpus_per_worker": (os.cpu_count() or 1) / workers},
            })

        cfg = config(1)
        train_arrays, val_arrays, spec = load_arrays(cfg)

        def plain() -> list[dict]:
            _, state = fit_arrays(tf.distribute.get_strategy(), cfg, spec, train_arrays, val_arrays)
            return state["history"]

        def orchestrated(workers: int) -> dict:
            summary = train(config(workers), out=lambda line: None)
            if summary["status"] != "completed":
                raise SystemExit(f"orchestrated {workers}-worker run {summary['status']}: {summary['error']}")
            return summary

        with console(os.path.join(work, "bench.log")):
            # A-B-A-...: a plain run before and after every orchestrated run, so machine drift hits both sides.
            plains = [steady(plain())]
            ones = []
            for _ in range(args.rounds):
                ones.append(orchestrated(1))
                plains.append(steady(plain()))
            two = orchestrated(2)

        rounds = []
        for i, one in enumerate(ones):
            around = (plains[i][0] + plains[i + 1][0]) / 2
            rounds.append((steady(one["history"])[0] / around, around, *steady(one["history"])))
        ratio = float(np.median([r[0] for r in rounds]))
        plain_ex, plain_ms = float(np.median([p[0] for p in plains])), float(np.median([p[1] for p in plains]))
        orch_ex, orch_ms = float(np.median([r[2] for r in rounds])), float(np.median([r[3] for r in rounds]))
        two_ex, two_ms = steady(two["history"])
        steps = ones[0]["history"][-1]["steps_per_epoch"]
        print(f"examples={args.examples} epochs={args.epochs} global_batch={args.batch_size} ({steps} steps/epoch); "
              f"steady state = epochs 2..{args.epochs}; {args.rounds} rounds")
        print("plain runs (ex/s, in order): " + ", ".join(f"{p[0]:.0f}" for p in plains))
        for i, (r, around, ex, ms) in enumerate(rounds, 1):
            print(f"round {i}: orchestrated 1 worker {ex:8.0f} ex/s vs plain around it {around:8.0f} ex/s -> "
                  f"{r:.3f}  (run wall {ones[i - 1]['wall_time_s']:.1f} s incl. start-up)")
        print(f"median plain in-process custom loop : {plain_ex:8.0f} examples/s  {plain_ms:6.2f} ms/step")
        print(f"median orchestrated, Ray Train 1 wkr: {orch_ex:8.0f} examples/s  {orch_ms:6.2f} ms/step")
        print(f"orchestrated, Ray Train 2 workers   : {two_ex:8.0f} examples/s  {two_ms:6.2f} ms/step   "
              f"(one run, wall {two['wall_time_s']:.1f} s; {args.batch_size // 2} examples per worker per step)")
        print(f"ratio orchestrated/plain, 1 worker (median of {args.rounds} rounds): {ratio:.3f}   "
              f"(goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'})")
        print(f"final objective: orchestrated 1 worker {ones[-1]['history'][-1]['objective']:.4f}, "
              f"2 workers {two['history'][-1]['objective']:.4f}")
        print(f"RESULT ratio={ratio:.3f} plain_ex_s={plain_ex:.0f} orch_ex_s={orch_ex:.0f} step_ms_1w={orch_ms:.2f} "
              f"step_ms_2w={two_ms:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
