"""MO-ASHA vs ASHA on mean_score vs random: which finds the better Pareto front of the three tasks on equal epochs?

On the embedded default (built-in data and backbone, pretrained once, not timed), through the orchestrator (`tune`),
the demo's resources, over the demo's kind of space (freeze depth, backbone lr, loss weighting, loss weights), per
searcher seed (``--seeds``, fresh storage per seed, base config not evaluated first):

- moasha: random search + MO-ASHA over left_accuracy, right_accuracy, sum_r2;
- asha: random search + ASHA on the objective, mean_score;
- random: random search, every trial to max epochs.

Equal computed epochs: the budget is ``--budget`` epochs per method and seed; trials count in the order they were
created, each with the epochs it computed, until the budget is spent (later trials are left out). A method's front
comes from its counted trials that reached max epochs; its hypervolume is measured above a fixed reference point at
chance level (accuracy 1/5: five digit classes per task; R² 0: predicting the mean).
Goal: MO-ASHA's hypervolume beats ASHA's in >= 4 of 5 seeds, with a positive mean gain.

    python bench/moasha.py [--seeds 0,1,2,3,4] [--samples 16] [--budget 36] [--epochs 6]   # about 40 minutes
    python bench/moasha.py --smoke                                                          # seed 0, tiny: a check
Last line: RESULT hv_moasha=... hv_asha=... hv_random=... moasha_wins=K/5 hv_gain_mean=...   (hv_*: means over seeds)
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import DEMO_RESOURCES, DEMO_TRAIN, EMBEDDED  # noqa: E402

METRICS = ["left_accuracy", "right_accuracy", "sum_r2"]
REFERENCE = {"left_accuracy": 0.2, "right_accuracy": 0.2, "sum_r2": 0.0}   # chance level
SPACE = {"train.freeze_depth": {"choice": [0, 1, 2, 3, 4]},
         "train.backbone_lr": {"loguniform": [3e-4, 3e-3]},
         "train.loss_weighting": {"choice": ["static", "uncertainty", "dwa"]},
         "train.loss_weights": {"simplex": {"concentration": 1.0}}}
SCHEDULERS = {"moasha": {"type": "moasha", "metrics": METRICS}, "asha": {"type": "asha"}, "random": {"type": "none"}}


def within_budget(rows: list[dict], budget: int) -> list[dict]:
    """The trials counted in ``budget`` epochs: in creation order, each with the epochs it computed."""
    out, spent = [], 0
    for r in sorted(rows, key=lambda r: str(r["created_at"])):
        if spent + int(r["epochs"] or 0) > budget:
            break
        spent += int(r["epochs"] or 0)
        out.append(r)
    return out


def front_hypervolume(rows: list[dict], max_epochs: int) -> tuple[float, int]:
    """(hypervolume above the chance-level reference, trials on the front) of the trials that reached max epochs."""
    from orchestrator.pareto import hypervolume, pareto_front, signed_point

    full = [r for r in rows if r["epochs"] == max_epochs and all(r.get(m) is not None for m in METRICS)]
    points = [signed_point([r[m] for m in METRICS], METRICS) for r in full]
    ref = signed_point([REFERENCE[m] for m in METRICS], METRICS)
    return hypervolume(points, ref), len(pareto_front(points))


def sweep(storage: str, name: str, search: dict, epochs: int) -> list[dict]:
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    cfg = parse_config({**EMBEDDED, "train": {**DEMO_TRAIN, "epochs": epochs}, "resources": DEMO_RESOURCES,
                        "name": name, "storage": storage, "search": search})
    tune(cfg, out=lambda line: None)
    return Leaderboard(storage).table(experiment=name).to_pylist()


def run_seed(seed: int, args, work: str) -> dict[str, tuple[float, int, int]]:
    """method -> (hypervolume, front size, trials counted) for one searcher seed, in a fresh storage."""
    from orchestrator.training.pretrain import pretrain

    storage = os.path.join(work, f"seed{seed}", "runs")
    pretrain(storage, out=lambda line: None)   # not timed, not counted
    out = {}
    for method, scheduler in SCHEDULERS.items():
        samples = args.budget // args.epochs if method == "random" else args.samples
        search = {"searcher": "random", "seed": seed, "num_samples": samples, "base_first": False,
                  "scheduler": {**scheduler, "grace_period": 1, "reduction_factor": args.rf}
                  if method != "random" else scheduler, "space": SPACE}
        rows = within_budget(sweep(storage, f"{method}-{seed}", search, args.epochs), args.budget)
        hv, size = front_hypervolume(rows, args.epochs)
        out[method] = (hv, size, len(rows))
        print(f"  seed {seed} {method}: {len(rows)} trials in {sum(r['epochs'] for r in rows)} epochs, "
              f"{sum(r['epochs'] == args.epochs for r in rows)} at max epochs, front {size}, hypervolume {hv:.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--samples", type=int, default=16, help="trials per MO-ASHA / ASHA sweep (then cut to budget)")
    ap.add_argument("--budget", type=int, default=36, help="computed epochs per method and seed")
    ap.add_argument("--epochs", type=int, default=6, help="max epochs per trial")
    ap.add_argument("--rf", type=float, default=3.0, help="reduction factor of both schedulers")
    ap.add_argument("--smoke", action="store_true", help="seed 0, 2 epochs, 2 trials, budget 4: checks it runs "
                                                          "(about 15 minutes on a loaded 2-core machine)")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.samples, args.budget, args.epochs, args.rf = "0", 2, 4, 2, 2.0
    seeds = [int(s) for s in args.seeds.split(",")]

    from orchestrator.console import console

    work = tempfile.mkdtemp(prefix="bench-moasha-")
    results = []
    try:
        print(f"== {len(seeds)} seeds; budget {args.budget} epochs per method; max {args.epochs} epochs; reference "
              + ", ".join(f"{m} {v}" for m, v in REFERENCE.items()))
        with console(os.path.join(work, "bench.log")):
            for seed in seeds:
                results.append(run_seed(seed, args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    hv = {m: [r[m][0] for r in results] for m in SCHEDULERS}
    wins = sum(r["moasha"][0] > r["asha"][0] for r in results)
    gains = [r["moasha"][0] - r["asha"][0] for r in results]
    print(f"goal (MO-ASHA beats ASHA in >= 4 of 5 seeds, mean gain > 0): wins {wins}/{len(seeds)}, mean gain "
          f"{statistics.fmean(gains):+.4f}")
    print(f"RESULT hv_moasha={statistics.fmean(hv['moasha']):.4f} hv_asha={statistics.fmean(hv['asha']):.4f} "
          f"hv_random={statistics.fmean(hv['random']):.4f} moasha_wins={wins}/{len(seeds)} "
          f"hv_gain_mean={statistics.fmean(gains):.4f} "
          + " ".join(f"hv_{m}_by_seed={'/'.join(f'{v:.4f}' for v in hv[m])}" for m in SCHEDULERS))


if __name__ == "__main__":
    main()
