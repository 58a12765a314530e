"""ASHA vs grid: does random search + ASHA find the grid's best fine-tuning recipe on a third of its epochs?

On the embedded default (built-in data, built-in backbone pretrained on the source digits once, not timed), both
through the orchestrator (`tune`), 1 worker per trial with the demo's resources, 6 epochs at most, uniform loss
weights, head learning rate 0.003 (the demo's base):

- grid: freeze depth {0, 2, 3, 4, all} x backbone lr {3e-4, 1e-3, 3e-3}, every trial to 6 epochs (searcher grid,
  scheduler none): 15 trials, 90 epochs;
- random + ASHA over the same space (freeze depth choice, backbone lr loguniform [3e-4, 3e-3]), ``--samples``
  trials, ASHA with ``--grace`` / ``--rf``, one sweep per searcher seed (``--seeds``), base config not evaluated
  first (pure random search).

Epochs are counted from the leaderboard rows (epochs each trial actually ran). A trial's score is its row's
``objective`` (mean_score at its last epoch: what its checkpoint holds and what ``best`` ranks by).
Goal: ASHA's best within 0.005 objective (0.5 points) of the grid's best, on at most 1/3 of the grid's epochs.

    python bench/asha_vs_grid.py [--samples 12] [--grace 1] [--rf 3] [--seeds 0,1,2]    # about 8 minutes
Last line: RESULT grid_best=... asha_best=... epoch_ratio=...   (asha_best: median over seeds; epoch_ratio: the
largest over seeds; per-seed values follow)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import DEMO_RESOURCES, DEMO_TRAIN, EMBEDDED  # noqa: E402

BASE = {**EMBEDDED, "train": DEMO_TRAIN, "resources": DEMO_RESOURCES}
FREEZE = [0, 2, 3, 4, "all"]
GRID_LR = [3e-4, 1e-3, 3e-3]


def sweep(storage: str, name: str, search: dict) -> tuple[dict, list[dict]]:
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    cfg = parse_config({**BASE, "name": name, "storage": storage, "search": search})
    summary = tune(cfg, out=lambda line: None)
    rows = Leaderboard(storage).table(experiment=name).to_pylist()
    if len(rows) != summary["trials"] or any(r["status"] == "failed" for r in rows):
        raise SystemExit(f"sweep {name}: {summary['statuses']}, {len(rows)} rows")
    return summary, rows


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["objective"] if r["objective"] is not None else -np.inf)


def describe(r: dict) -> str:
    return (f"freeze_depth={r['freeze_depth']} backbone_lr={r['backbone_lr']:.2e} objective={r['objective']:.4f} "
            f"({r['epochs']} epochs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=12, help="random + ASHA trials per seed")
    ap.add_argument("--grace", type=int, default=1, help="ASHA grace period (epochs)")
    ap.add_argument("--rf", type=float, default=3.0, help="ASHA reduction factor")
    ap.add_argument("--seeds", default="0,1,2", help="searcher seeds, one random + ASHA sweep each")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from orchestrator.console import console
    from orchestrator.training.pretrain import pretrain

    work = tempfile.mkdtemp(prefix="bench-asha-")
    storage = os.path.join(work, "runs")
    try:
        with console(os.path.join(work, "bench.log")):
            pretrain(storage, out=lambda line: None)   # once, not timed
            grid_summary, grid_rows = sweep(storage, "grid", {
                "searcher": "grid", "scheduler": {"type": "none"},
                "space": {"train.freeze_depth": {"choice": FREEZE}, "train.backbone_lr": {"choice": GRID_LR}}})
            ashas = []
            for seed in seeds:
                ashas.append((seed, *sweep(storage, f"asha-{seed}", {
                    "searcher": "random", "seed": seed, "num_samples": args.samples, "base_first": False,
                    "scheduler": {"type": "asha", "grace_period": args.grace, "reduction_factor": args.rf},
                    "space": {"train.freeze_depth": {"choice": FREEZE},
                              "train.backbone_lr": {"loguniform": [GRID_LR[0], GRID_LR[-1]]}}})))

        grid_epochs = sum(r["epochs"] for r in grid_rows)
        g = best(grid_rows)
        print(f"== grid: {len(grid_rows)} trials, {grid_epochs} epochs, wall {grid_summary['wall_time_s']:.0f} s")
        by_cell = {(r["freeze_depth"], round(r["backbone_lr"], 6)): r["objective"] for r in grid_rows}
        depths = sorted({r["freeze_depth"] for r in grid_rows})
        print("  objective      " + "".join(f"  bb_lr={lr:.0e}" for lr in GRID_LR))
        for d in depths:
            print(f"  freeze_depth={d}" + "".join(f"  {by_cell[(d, round(lr, 6))]:10.4f}" for lr in GRID_LR))
        print(f"  best: {describe(g)}")
        print(f"== random + ASHA: {args.samples} trials per seed, grace_period {args.grace}, reduction_factor "
              f"{args.rf:g}, max 6 epochs; budget {grid_epochs / 3:.0f} epochs (1/3 of the grid's)")
        bests, ratios = [], []
        for seed, summary, rows in ashas:
            epochs = sum(r["epochs"] for r in rows)
            b = best(rows)
            bests.append(b["objective"])
            ratios.append(epochs / grid_epochs)
            gap = g["objective"] - b["objective"]
            print(f"  seed {seed}: {epochs} epochs ({epochs / grid_epochs:.2f} of the grid's; per trial "
                  f"{sorted((r['epochs'] for r in rows), reverse=True)}), wall {summary['wall_time_s']:.0f} s; "
                  f"best {describe(b)}; gap to the grid's best {gap:+.4f} "
                  f"({'within' if gap <= 0.005 else 'NOT within'} 0.005; budget "
                  f"{'held' if epochs <= grid_epochs / 3 else 'EXCEEDED'})")
        met = sum(g["objective"] - b <= 0.005 and r <= 1 / 3 for b, r in zip(bests, ratios))
        print(f"goal (within 0.005 of the grid's best on <= 1/3 of its epochs) met by {met} of {len(seeds)} seeds; "
              f"asha_best below is the median over seeds, epoch_ratio the largest")
        print(f"RESULT grid_best={g['objective']:.4f} asha_best={float(np.median(bests)):.4f} "
              f"epoch_ratio={max(ratios):.3f} asha_bests={'/'.join(f'{b:.4f}' for b in bests)} "
              f"epoch_ratios={'/'.join(f'{r:.3f}' for r in ratios)} grid_epochs={grid_epochs}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
