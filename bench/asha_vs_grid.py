"""Model-based, multi-fidelity search vs a grid: which searcher + scheduler finds the grid's best fine-tuning recipe on
a third of its epochs, surely (in most seeds) and really (its pick holds up when retrained with new seeds)?

On the embedded default (built-in data, built-in backbone pretrained on the source digits once, not timed), through
the orchestrator (`tune`), 1 worker per trial with the demo's resources, 6 epochs at most, uniform loss weights,
head learning rate 0.003 (the demo's base). Today's space: freeze depth {0, 2, 3, 4, all} x backbone lr.

- grid: freeze depth x backbone lr {3e-4, 1e-3, 3e-3}, every trial to 6 epochs (searcher grid, scheduler none);
- random-asha: random search + ASHA; tpe-asha: Optuna TPE + ASHA; tpe-sync: Optuna TPE + synchronous successive
  halving (promotions independent of report order; paused trials resume their own Train run). Backbone lr
  loguniform [3e-4, 3e-3], ``--samples`` trials, ``--grace`` / ``--rf``, base config not evaluated first, warm start
  off, one sweep per searcher seed (``--seeds``), each in a fresh storage.

Epochs are counted as computed, from each trial's own run record: the last epoch its Train run reached (epochs run
ahead while a trial was paused or being stopped included), plus one per restart of the run (an epoch in flight when
it stopped, counted as if whole). A trial's score is its row's ``objective`` (mean_score at its last epoch).
Each seed's pick (its best row) and the grid's pick are retrained with ``--retrain`` new seeds, so a lucky maximum
does not count as a find. Goal: within 0.005 (0.5 points) of the grid's best on at most 1/3 of its epochs in >= 4 of
5 seeds.

    python bench/asha_vs_grid.py [--methods random-asha,tpe-asha,tpe-sync] [--seeds 0,1,2,3,4] [--samples 12]
    python bench/asha_vs_grid.py --quick      # a tiny smoke run (2 epochs, a 2-point grid, 1 seed, tpe-sync)
Last line, for ``--default`` (one RESULT line per method before it): RESULT grid_best=... met_seeds=K/N
median_best=... median_epoch_ratio=... pick_mean=... grid_pick_mean=...
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import DEMO_RESOURCES, DEMO_TRAIN, EMBEDDED, default_method  # noqa: E402

BASE = {**EMBEDDED, "train": DEMO_TRAIN, "resources": DEMO_RESOURCES}
FREEZE = [0, 2, 3, 4, "all"]
GRID_LR = [3e-4, 1e-3, 3e-3]
METHODS = {"random-asha": ("random", "asha"), "tpe-asha": ("optuna", "asha"), "tpe-sync": ("optuna", "sync")}
RETRAIN_SEEDS = [101, 102, 103]


def sweep(storage: str, name: str, search: dict, *, base: dict) -> tuple[dict, list[dict]]:
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    cfg = parse_config({**base, "name": name, "storage": storage, "search": search})
    summary = tune(cfg, out=lambda line: None)
    rows = Leaderboard(storage).table(experiment=name).to_pylist()
    if len(rows) != summary["trials"] or any(r["status"] == "failed" for r in rows):
        raise SystemExit(f"sweep {name}: {summary['statuses']}, {len(rows)} rows")
    return summary, rows


def computed_epochs(storage: str, rows: list[dict]) -> int:
    """Epochs the trials' Train runs computed: the last epoch each run reached, plus one per restart."""
    from orchestrator import layout
    from orchestrator.training.progress import attempts, read_progress

    total = 0
    for r in rows:
        run = layout.run_dir(storage, layout.trial_run_name(r["sweep_id"], r["trial_id"]))
        progress = read_progress(run)
        reached = max(int(progress["epoch"]) if progress else 0, int(r["epochs"] or 0))
        total += reached + max(0, len(attempts(run)) - 1)
    return total


def best(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["objective"] if r["objective"] is not None else -np.inf)


def retrained_mean(storage: str, name: str, row: dict, seeds: list[int]) -> float:
    """The mean objective of ``row``'s config retrained with each of ``seeds`` (one grid sweep over train.seed)."""
    import json

    config = json.loads(row["config"]) if isinstance(row["config"], str) else dict(row["config"])
    config.pop("name", None)
    config.pop("storage", None)
    _, rows = sweep(storage, name, {"searcher": "grid", "scheduler": {"type": "none"},
                                    "space": {"train.seed": {"choice": seeds}}}, base=config)
    return float(np.mean([r["objective"] for r in rows]))


def describe(r: dict) -> str:
    return (f"freeze_depth={r['freeze_depth']} backbone_lr={r['backbone_lr']:.2e} objective={r['objective']:.4f} "
            f"({r['epochs']} epochs)")


def fresh_storage(work: str, name: str, backbone_from: str) -> str:
    """A new storage (no leaderboard, no sweeps) holding the same pretrained built-in backbone."""
    from orchestrator import layout

    storage = os.path.join(work, name)
    target = layout.builtin_backbone(storage)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(layout.builtin_backbone(backbone_from), target)
    return storage


def run_method(work: str, method: str, seed: int, args, *, space: dict, base: dict) -> dict:
    """One sweep of ``method`` with searcher seed ``seed`` in a fresh storage, and its pick retrained."""
    storage = fresh_storage(work, f"{method}-{seed}", os.path.join(work, "grid"))
    searcher, scheduler = METHODS[method]
    summary, rows = sweep(storage, f"{method}-{seed}", {
        "searcher": searcher, "seed": seed, "num_samples": args.samples, "base_first": False,
        "scheduler": {"type": scheduler, "grace_period": args.grace, "reduction_factor": args.rf},
        "space": space}, base=base)
    b = best(rows)
    run = {"seed": seed, "rows": rows, "best": b, "epochs": computed_epochs(storage, rows),
           "wall": summary["wall_time_s"], "pick_mean": retrained_mean(storage, "pick", b, args.retrain_seeds)}
    # A progress line per sweep (the comparison with the grid comes at the end): a cut-short run still says something.
    print(f"  done {method} seed {seed}: {run['epochs']} epochs computed, wall {run['wall']:.0f} s, best "
          f"{describe(b)}, pick retrained {run['pick_mean']:.4f}", flush=True)
    return run


def report(method: str, runs: list[dict], *, grid_best: float, grid_epochs: int, grid_pick: float) -> str:
    met = 0
    for run in runs:
        ratio = run["epochs"] / grid_epochs
        gap = grid_best - run["best"]["objective"]
        ok = gap <= 0.005 and ratio <= 1 / 3
        met += ok
        print(f"  {method} seed {run['seed']}: {run['epochs']} epochs computed ({ratio:.2f} of the grid's; rows "
              f"{sorted((r['epochs'] for r in run['rows']), reverse=True)}), wall {run['wall']:.0f} s; best "
              f"{describe(run['best'])}, gap {gap:+.4f}; pick retrained {run['pick_mean']:.4f} "
              f"({'MET' if ok else 'missed'})")
    bests = [r["best"]["objective"] for r in runs]
    ratios = [r["epochs"] / grid_epochs for r in runs]
    return (f"RESULT grid_best={grid_best:.4f} met_seeds={met}/{len(runs)} median_best={float(np.median(bests)):.4f} "
            f"median_epoch_ratio={float(np.median(ratios)):.3f} pick_mean="
            f"{float(np.mean([r['pick_mean'] for r in runs])):.4f} grid_pick_mean={grid_pick:.4f} method={method} "
            f"bests={'/'.join(f'{b:.4f}' for b in bests)} epoch_ratios={'/'.join(f'{r:.3f}' for r in ratios)}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help=f"of {', '.join(METHODS)}")
    ap.add_argument("--default", default=next(m for m, v in METHODS.items() if v == default_method()),
                    help="the method whose RESULT line comes last (default: the product's default searcher + "
                         "scheduler)")
    ap.add_argument("--samples", type=int, default=12, help="trials per sweep")
    ap.add_argument("--grace", type=int, default=1, help="grace period (epochs)")
    ap.add_argument("--rf", type=float, default=3.0, help="reduction factor")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="searcher seeds, one sweep per method each")
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run (not a measurement)")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = args.methods.split(",")
    args.retrain_seeds = RETRAIN_SEEDS
    if args.quick:
        args.methods, args.default, args.seeds, args.samples, args.retrain_seeds = ["tpe-sync"], "tpe-sync", [0], 3, [101]
    return args


def main() -> None:
    args = parse_args()
    freeze, lrs = ([0, "all"], [1e-3]) if args.quick else (FREEZE, GRID_LR)
    base = {**BASE, "train": {**DEMO_TRAIN, "epochs": 2}} if args.quick else BASE
    space = {"train.freeze_depth": {"choice": freeze},
             "train.backbone_lr": {"loguniform": [GRID_LR[0], GRID_LR[-1]]}}

    from orchestrator.console import console
    from orchestrator.training.pretrain import pretrain

    work = tempfile.mkdtemp(prefix="bench-asha-")
    try:
        with console(os.path.join(work, "bench.log")):
            grid_storage = os.path.join(work, "grid")
            pretrain(grid_storage, out=lambda line: None)   # once per storage, not timed
            grid_summary, grid_rows = sweep(grid_storage, "grid", {
                "searcher": "grid", "scheduler": {"type": "none"},
                "space": {"train.freeze_depth": {"choice": freeze}, "train.backbone_lr": {"choice": lrs}}}, base=base)
            g = best(grid_rows)
            grid_pick = retrained_mean(grid_storage, "grid-pick", g, args.retrain_seeds)
            grid_epochs = computed_epochs(grid_storage, grid_rows)
            print(f"  done grid: {grid_epochs} epochs, best {describe(g)}, pick retrained "
                  f"{grid_pick:.4f}", flush=True)
            runs = {m: [run_method(work, m, seed, args, space=space, base=base) for seed in args.seeds]
                    for m in args.methods}
        print(f"== grid: {len(grid_rows)} trials, {grid_epochs} epochs, wall {grid_summary['wall_time_s']:.0f} s; "
              f"best {describe(g)}; its config retrained with seeds {args.retrain_seeds}: {grid_pick:.4f}")
        lines = {m: report(m, r, grid_best=g["objective"], grid_epochs=grid_epochs, grid_pick=grid_pick)
                 for m, r in runs.items()}
        print(f"goal: within 0.005 of the grid's best on <= 1/3 of its epochs in >= 4 of 5 seeds; the last line is "
              f"{args.default}'s")
        for m in sorted(lines, key=lambda m: m == args.default):
            print(lines[m])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
