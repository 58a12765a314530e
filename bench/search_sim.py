"""Can any searcher + scheduler meet bench/asha_vs_grid.py's goal on today's space? A replay on measured learning
curves, over many searcher seeds, at a fraction of the real bench's cost.

This is not a measurement of the product: no Ray, no Tune. It measures the *problem*:
1. Curves (measured): every freeze depth of asha_vs_grid's space x ``--lrs`` backbone learning rates, log-spaced over
   its range, trained in this process to 6 epochs (``fit_arrays``, the code a worker runs), seed 0 as the bench's
   trials use; the objective (mean_score) after every epoch and the seconds per epoch, per depth.
2. Target share: the fraction of the space (freeze depth uniform, backbone lr log-uniform, as sampled) whose final
   objective is within 0.005 of the grid's best. Rates between measured points are interpolated linearly in log lr
   (an assumption: one training seed, no noise between points).
3. Replay, ``--seeds`` searcher seeds per method and trial count: random search or Optuna TPE (Optuna's default
   sampler, as Ray's OptunaSearch builds it, told each trial's last value when it ends), under asynchronous successive
   halving with Ray's ASHA rule (at a rung, stop when below the (1 - 1/rf) percentile of those recorded there before
   it), 4 trials at once, each epoch taking its depth's measured time, so results come in the order they would.
   Epochs are counted as computed. "found" = the sweep's best within 0.005 of the grid's best; "met" = found on at
   most 1/3 of the grid's epochs (asha_vs_grid's per-seed goal).

    python bench/search_sim.py [--trials 12,24,36,48] [--seeds 100] [--curves FILE]   # about 5 minutes
Last line: RESULT grid_best=... target_share=... random_found_12=... tpe_found_12=... met_best=... (rates over seeds)
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import DEMO_RESOURCES, DEMO_TRAIN, EMBEDDED  # noqa: E402

FREEZE = [0, 2, 3, 4, "all"]          # asha_vs_grid's space
LR_RANGE = (3e-4, 3e-3)
GRID_EPOCHS = 15 * 6                  # its grid: 5 depths x 3 rates, 6 epochs each
MAX_T, GRACE, RF, CONCURRENT = 6, 1, 3.0, 4
GAP = 0.005


def measure_curves(lrs: int) -> dict:
    """{depth: {"lrs": [...], "objective": [[per epoch] per lr], "epoch_s": s}}, trained in this process."""
    import tensorflow as tf

    from orchestrator import layout
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.loop import fit_arrays
    from orchestrator.training.pretrain import pretrain

    work = tempfile.mkdtemp(prefix="bench-sim-")
    try:
        pretrain(work, out=lambda line: None)   # the built-in backbone, as every asha_vs_grid storage holds it
        arrays, curves = None, {}
        for depth in FREEZE:
            rates = [float(x) for x in np.geomspace(*LR_RANGE, lrs)]
            curves[str(depth)] = {"lrs": rates, "objective": [], "epoch_s": []}
            for lr in rates:
                cfg = parse_config({**EMBEDDED, "train": {**DEMO_TRAIN, "freeze_depth": depth, "backbone_lr": lr},
                                    "resources": DEMO_RESOURCES, "storage": work, "name": "sim"})
                arrays = arrays or load_arrays(cfg)
                _, state = fit_arrays(tf.distribute.get_strategy(), cfg, arrays[2], arrays[0], arrays[1],
                                      backbone_file=layout.builtin_backbone(work))
                curves[str(depth)]["objective"].append([h["objective"] for h in state["history"]])
                curves[str(depth)]["epoch_s"] += [h["epoch_seconds"] for h in state["history"][1:]]
            curves[str(depth)]["epoch_s"] = float(np.median(curves[str(depth)]["epoch_s"]))
            print(f"  curves: freeze depth {depth}: final objective by lr "
                  f"{' '.join(f'{o[-1]:.4f}' for o in curves[str(depth)]['objective'])}", flush=True)
        return curves
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Surface:
    """The objective of (depth, lr) after ``epoch`` epochs, interpolated in log lr between measured rates."""

    def __init__(self, curves: dict):
        self.curves = curves
        self.grid_best = max(max(o[-1] for o in c["objective"]) for c in curves.values())

    def __call__(self, depth, lr: float, epoch: int) -> float:
        c = self.curves[str(depth)]
        return float(np.interp(np.log(lr), np.log(c["lrs"]), [o[epoch - 1] for o in c["objective"]]))

    def epoch_s(self, depth) -> float:
        return self.curves[str(depth)]["epoch_s"]

    def target_share(self, points: int = 20001) -> float:
        lrs = np.geomspace(*LR_RANGE, points)
        return float(np.mean([[self(d, lr, MAX_T) >= self.grid_best - GAP for lr in lrs] for d in FREEZE]))


def sweep(f: Surface, searcher: str, trials: int, seed: int) -> tuple[float, int]:
    """One replayed sweep: (its best objective, epochs computed)."""
    import optuna

    rng = np.random.default_rng(seed)
    study = (optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
             if searcher == "tpe" else None)
    rungs = {r: [] for r in _rungs()}
    events, order, started, epochs, ends = [], itertools.count(), 0, 0, []

    def start(now: float):
        nonlocal started
        started += 1
        if searcher == "tpe":
            t = study.ask()
            depth, lr = t.suggest_categorical("depth", FREEZE), t.suggest_float("lr", *LR_RANGE, log=True)
        else:
            t, depth, lr = None, FREEZE[rng.integers(len(FREEZE))], float(np.exp(rng.uniform(*np.log(LR_RANGE))))
        heapq.heappush(events, (now + f.epoch_s(depth), next(order), {"t": t, "depth": depth, "lr": lr, "epoch": 1}))

    for _ in range(min(CONCURRENT, trials)):
        start(0.0)
    while events:
        now, _, trial = heapq.heappop(events)
        epoch, value = trial["epoch"], f(trial["depth"], trial["lr"], trial["epoch"])
        epochs += 1
        recorded = rungs.get(epoch)
        stop = recorded is not None and bool(recorded) and value < np.percentile(recorded, (1 - 1 / RF) * 100)
        if recorded is not None:
            recorded.append(value)
        if stop or epoch == MAX_T:
            ends.append(value)
            if trial["t"] is not None:
                study.tell(trial["t"], value)
            if started < trials:
                start(now)
        else:
            trial["epoch"] += 1
            heapq.heappush(events, (now + f.epoch_s(trial["depth"]), next(order), trial))
    return max(ends), epochs


def _rungs() -> list[int]:
    from orchestrator.sweep.syncsha import rungs_for   # the rung formula ASHA and our schedulers share

    return rungs_for(MAX_T, GRACE, RF)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="12,24,36,48", help="trials per sweep (one replay set each)")
    ap.add_argument("--seeds", type=int, default=100, help="searcher seeds per method and trial count")
    ap.add_argument("--lrs", type=int, default=7, help="measured backbone learning rates per freeze depth")
    ap.add_argument("--curves", help="a curves JSON written by an earlier run (skips step 1)")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.curves and os.path.exists(args.curves):
        with open(args.curves) as fh:
            curves = json.load(fh)
    else:
        from orchestrator.console import console

        with console(os.path.join(tempfile.gettempdir(), "bench-search-sim.log")):
            curves = measure_curves(args.lrs)
        if args.curves:
            with open(args.curves, "w") as fh:
                json.dump(curves, fh)
    f = Surface(curves)
    share = f.target_share()
    print(f"grid best {f.grid_best:.4f}; within {GAP} of it: {share:.2%} of the space (random search finds it in n "
          f"trials run to the end with probability 1 - (1 - {share:.4f})^n: n = 12 -> {1 - (1 - share) ** 12:.0%})")
    out = {}
    for n in [int(x) for x in args.trials.split(",")]:
        for searcher in ("random", "tpe"):
            runs = [sweep(f, searcher, n, seed) for seed in range(args.seeds)]
            found = [f.grid_best - b <= GAP for b, _ in runs]
            ratios = [e / GRID_EPOCHS for _, e in runs]
            met = sum(ok and r <= 1 / 3 for ok, r in zip(found, ratios)) / len(runs)
            out[f"{searcher}_found_{n}"], out[f"{searcher}_met_{n}"] = sum(found) / len(runs), met
            print(f"  {searcher}-asha, {n} trials: found {sum(found)}/{len(runs)}, met {met:.0%}, median best "
                  f"{np.median([b for b, _ in runs]):.4f}, median epoch ratio {np.median(ratios):.2f}", flush=True)
    met_best = max(v for k, v in out.items() if "_met_" in k)
    print("goal (asha_vs_grid): met in >= 4 of 5 seeds, i.e. a met rate near 0.8 or more")
    print(f"RESULT grid_best={f.grid_best:.4f} target_share={share:.4f} "
          + " ".join(f"{k}={v:.2f}" for k, v in out.items()) + f" met_best={met_best:.2f}")


if __name__ == "__main__":
    main()
