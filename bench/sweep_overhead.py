"""Sweep overhead: the fixed cost of a trial, where it goes, and a sweep against the same work in-process.

1. Trials one at a time (1-worker, then 2-worker), epochs 1, 2, 3, 4, 6 on the embedded default: wall
   time of each trial (Tune start to row written) against its epochs; the intercept is the fixed cost
   per trial, the slope the cost per epoch, over the trials whose Train workers were warm (every trial but the
   first is given the spare processes its predecessor started: orchestrator/training/warm.py); cold_extra_s_1w is
   how much longer the cold first trial took than that line says.
2. Where the fixed cost goes, from the marks each run records (trial.json, progress.json): Tune
   trial start, Train controller + worker group start, TensorFlow import, data reaching the worker,
   model build, first step (tracing), checkpoint per epoch, teardown.
3. floor_s: a trial whose Train run does nothing (one report), on the same launch path (a Tune function trial
   with the product's trial resources fitting a DataParallelTrainer with our backend and 1 worker): what Ray
   itself costs per trial here, Tune's trial start to its end, on a new worker process. The product's goal is
   fixed_s_1w <= 1.2 x floor_s. floor_warm_s: the same no-op trial given a warm spare process, as the product's
   trials after the first are (one trial more runs first, cold, and is left out; each waits WARM_PAUSE_S in its
   loop, taken off again, so that its successor's spare has finished importing TensorFlow on otherwise idle cores).
   floor_tf_s: the same no-op trial on a new worker process that imports TensorFlow as it starts (the product's
   workers' runtime env, no spare): the launch path plus the one TensorFlow import every trial's worker needs. A
   real trial's spare imports beside its predecessor's epochs; on 2 busy cores those epochs slow down ("epochs while
   the next trial's spare imports", step 2), so the import stays in the fixed cost here.
   The same no-op trial with Ray's default launch, its Train controller in an actor of its own, is timed beside it
   (floor_actor_controller_s), with the CPU seconds of all Ray worker processes per trial both ways (floor_cpu_s,
   floor_actor_controller_cpu_s): the product runs the controller in the trial's process (orchestrator/_ray/controller.py).
4. helper_cpu_s: CPU seconds per 1-worker trial of Ray Train's helper actors (TrainController,
   SynchronizationActor, PlacementGroupCleaner, PreemptionWatcher, DatasetManager, _QueueActor, the report
   queue each trial started before its controller moved into its process, and ImplicitFunc, the Tune trial's own
   process, which holds the controller now, and _AutoscalingCoordinatorActor, the detached actor Ray Train's first
   run of a Ray session starts, counted since 2026-12-07), read from /proc over the trials of step 1, against a 1-epoch
   trial's training CPU (the worker process, fit over epochs 1/2/4/6).
5. Round 2's demo sweep, pinned (bench/_embedded.py DEMO_R2: 10 trials, random + ASHA, 4 at once), with the
   busy fraction of the machine's CPUs over it (cpu_busy_frac), then the same
   trials replayed one after another in this process (same configs, same epochs each trial ran,
   through fit_arrays, no Ray): the ratio of wall times.

    python bench/sweep_overhead.py            # about 10 minutes on 2 cores
Last line: RESULT fixed_s_1w=... fixed_s_2w=... floor_s=... floor_warm_s=... floor_tf_s=... cold_extra_s_1w=...
floor_actor_controller_s=... floor_cpu_s=...
floor_actor_controller_cpu_s=... epoch_overhead_s=... sweep_vs_inprocess=... helper_cpu_s=... train_cpu_s_1epoch=...
cpu_busy_frac=...
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

from _embedded import DEMO_R2, EMBEDDED  # noqa: E402
from _procs import Sampler  # noqa: E402

HELPERS = ("TrainController", "SynchronizationActor", "PlacementGroupCleaner", "PreemptionWatcher", "DatasetManager",
           "_QueueActor", "ImplicitFunc", "_AutoscalingCoordinatorActor")

BASE = {**EMBEDDED, "train": {"epochs": 6, "batch_size": 128, "backbone_lr": 0.001, "head_lr": 0.003, "seed": 0}}


def config(storage, name, *, workers, search):
    from orchestrator.config import parse_config

    cpus = 0.9 if workers == 1 else 0.45
    return parse_config({**BASE, "name": name, "storage": storage, "search": search,
                         "resources": {"workers": workers, "cpus_per_worker": cpus}})


def demo_config(storage):
    """Round 2's demo experiment (pinned in bench/_embedded.py), without its single-task baselines."""
    from orchestrator.config import parse_config

    return parse_config({**DEMO_R2, "storage": storage})


def _noop_loop(config):
    import ray.train

    time.sleep(config.get("pause_s", 0.0))
    ray.train.report({"objective": 0.0})


# A warm floor trial waits this long in its loop (and the floor leaves it out): a no-op run is shorter than a spare's
# TensorFlow import, which real trials' epochs hide; so the next trial finds its spare ready, as theirs do.
WARM_PAUSE_S = 10.0


def _noop_trial(params):
    """A Tune trial that fits a Train run doing nothing: the floor of the product's launch path (its controller in
    the trial's process), or with ``local`` false, of Ray's default (the controller in an actor of its own)."""
    import ray.train

    from orchestrator import _ray
    from orchestrator.training import backend

    from orchestrator.training import warm

    pause_s = WARM_PAUSE_S if params["warm"] else 0.0
    hook = params["warm"] or params["tf"]   # the product's workers' runtime env: TensorFlow imported as they start
    backend.make(_noop_loop, train_loop_config={"pause_s": pause_s}, scaling_config=ray.train.ScalingConfig(
        num_workers=1, resources_per_worker={"CPU": 0.9}), run_config=ray.train.RunConfig(
        name=f"noop-{params['i']}", storage_path=params["storage"],
        worker_runtime_env=warm.worker_runtime_env() if hook else None),
        controller=_ray.LocalController() if params["local"] else None, spares=params["warm"],
        autoscaler=params["autoscaler"]).fit()
    from ray import tune
    tune.report({"objective": 0.0})


FLOOR_TRIALS = 4


def floor(storage, n=FLOOR_TRIALS, *, local: bool = True, warm: bool = False, tf: bool = False):
    """Mean seconds from Tune's trial start to its end, for n no-op trials one at a time. With ``warm``, on the
    product's warm workers (training/warm.py): one trial more runs first, cold, and is left out, and each waits
    WARM_PAUSE_S in its loop, taken off again. With ``tf``, each on a new worker process that imports TensorFlow as
    it starts (the product's workers' runtime env, no spares): the launch path plus the one import a trial needs."""
    from ray import tune

    from orchestrator import _ray
    from orchestrator.sweep.runner import TRIAL_DRIVER_CPU

    class Times(tune.Callback):
        def __init__(self):
            self.start, self.end = {}, {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.start[trial.trial_id] = time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.end[trial.trial_id] = time.perf_counter()

    times = Times()
    # The product's runs ask no autoscaler on a Ray it started (Session.autoscaler); Ray's default launch does
    autoscaler = not (local and _ray.started_here())
    tune.Tuner(tune.with_resources(_noop_trial, {"CPU": TRIAL_DRIVER_CPU}),
               param_space={"i": tune.grid_search(list(range(n + warm))), "storage": storage, "local": local,
                            "warm": warm, "tf": tf, "autoscaler": autoscaler},
               tune_config=tune.TuneConfig(max_concurrent_trials=1),
               run_config=tune.RunConfig(name="floor", storage_path=storage, callbacks=[times], verbose=0)).fit()
    ordered = sorted(times.end, key=times.start.get)[int(warm):]
    return float(np.mean([times.end[t] - times.start[t] for t in ordered])) - (WARM_PAUSE_S if warm else 0.0)


def trial_marks(storage, row):
    run = os.path.join(storage, "trials", f"{row['sweep_id']}-{row['trial_id']}")
    with open(os.path.join(run, "progress.json")) as f:
        progress = json.load(f)
    with open(os.path.join(run, "trial.json")) as f:
        trial = json.load(f)
    m = {**progress["marks"], **trial, "started": row["started_at"].timestamp(),
         "ended": row["created_at"].timestamp(), "epochs": row["epochs"]}
    # warm: the Train worker's process started before its trial did (a spare, TensorFlow imported: training/warm.py)
    return {**m, "warm": m.get("worker_process_start", np.inf) < m["trial_fit_start"]}


def fixed_cost(storage, workers):
    """Trials one at a time over epochs {1, 2, 3, 4, 6}: least-squares wall = fixed + per_epoch * epochs, over the
    trials whose workers were warm (all but the first, which finds no spare); and how much longer the cold first
    trial took than that line says (cold_extra)."""
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    name = f"fixed-{workers}w"
    search = {"searcher": "grid", "scheduler": {"type": "none"}, "max_concurrent_trials": 1, "base_first": False,
              "space": {"train.epochs": {"choice": [1, 2, 3, 4, 6]}}}
    tune(config(storage, name, workers=workers, search=search), out=lambda line: None)
    rows = Leaderboard(storage).table(experiment=name).to_pylist()
    marks = [trial_marks(storage, r) for r in rows]
    warm = [m for m in marks if m["warm"]]
    cold = [m for m in marks if not m["warm"]]
    if len(warm) <= len(cold):   # no spares (the trials fill the cores: sweep/capacity.py idle_cores), or a leftover
        warm, cold = [], marks   # of the sweep before: fit on the cold trials
    fit_on = warm or cold
    per_epoch, fixed = np.polyfit([m["epochs"] for m in fit_on], [m["ended"] - m["started"] for m in fit_on], 1)
    cold_extra = [m["ended"] - m["started"] - (fixed + per_epoch * m["epochs"]) for m in cold] if warm else []
    return fixed, per_epoch, marks, cold_extra


def spare_overlap(marks):
    """(mean epoch seconds while the next trial's spare imported TensorFlow, mean otherwise, epochs of each), over the
    warm trials' epochs after their first (the first holds the trace)."""
    ordered = sorted(marks, key=lambda m: m["started"])
    during, after = [], []
    for m, nxt in zip(ordered, ordered[1:]):
        if not (m["warm"] and nxt["warm"]):
            continue
        lo, hi = nxt["worker_process_start"], nxt.get("worker_tensorflow_ready", np.inf)
        ends = m["epoch_end"]
        for a, b in zip(ends, ends[1:]):
            (during if a < hi and b > lo else after).append(b - a)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")   # noqa: E731
    return mean(during), mean(after), len(during), len(after)


def breakdown(marks):
    """Mean seconds per start-up step over trials (a warm worker's TensorFlow import happened before its trial)."""
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


def helper_cpu(sampler, marks):
    """(helper actors' CPU seconds per trial, a 1-epoch trial's training CPU). Step 1's trials run one at a time
    with one worker each, so the n-th worker process is the n-th trial's: its CPU = a + b x epochs, at 1 epoch."""
    helpers = sum(sampler.cpu_s.get(name, 0.0) for name in HELPERS) / len(marks)
    workers = [cpu for _, name, cpu in sampler.per_process if name == "RayTrainWorker"]
    epochs = [m["epochs"] for m in sorted(marks, key=lambda m: m["started"])]
    if len(workers) != len(epochs):   # a restarted worker: no one-to-one match, use the mean per epoch
        return helpers, sum(workers) / sum(epochs)
    per_epoch, fixed = np.polyfit(np.array(epochs, float), np.array(workers), 1)
    return helpers, float(fixed + per_epoch)


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
        with console(os.path.join(work, "bench.log")):
            pretrain(storage, out=lambda line: None)
            with Sampler() as cpu_1w:
                fixed_1w, epoch_1w, marks_1w, cold_1w = fixed_cost(storage, 1)
            fixed_2w, epoch_2w, marks_2w, cold_2w = fixed_cost(storage, 2)
            with Sampler() as cpu_floor:
                floor_s = floor(os.path.join(work, "floor"))
            floor_warm_s = floor(os.path.join(work, "floor-warm"), warm=True)
            floor_tf_s = floor(os.path.join(work, "floor-tf"), tf=True)
            with Sampler() as cpu_floor_actor:
                floor_actor_s = floor(os.path.join(work, "floor-actor"), local=False)
            floor_cpu = {k: sum(c.cpu_s.values()) / FLOOR_TRIALS
                         for k, c in (("local", cpu_floor), ("actor", cpu_floor_actor))}
            t0 = time.perf_counter()
            with Sampler() as cpu_demo:
                tune(demo_config(storage), out=lambda line: None)
            sweep_s = time.perf_counter() - t0
            rows = Leaderboard(storage).table(experiment="demo-like").to_pylist()
            replay_s, inproc_epoch = replay(storage, rows)
        print("\n== fixed cost per trial (trials one at a time, epochs 1/2/3/4/6; wall = fixed + per_epoch x epochs, "
              "over the trials on warm workers)")
        for label, fixed, epoch, marks, cold in (("1 worker ", fixed_1w, epoch_1w, marks_1w, cold_1w),
                                                 ("2 workers", fixed_2w, epoch_2w, marks_2w, cold_2w)):
            took = f"; the cold ones took {', '.join(f'{c:+.2f}' for c in cold)} s more" if cold else ""
            print(f"  {label}: fixed {fixed:6.2f} s, per epoch {epoch:5.2f} s ({sum(m['warm'] for m in marks)} of "
                  f"{len(marks)} trials warm{took})")
        print(f"  floor (a no-op Train run under Tune, same launch path, a new worker process): {floor_s:6.2f} s; "
              f"fixed_s_1w / floor_s = {fixed_1w / floor_s:.2f}")
        print(f"  the same no-op trial on a warm worker (a spare, as the product's trials after the first): "
              f"{floor_warm_s:6.2f} s; fixed_s_1w / floor_warm_s = {fixed_1w / floor_warm_s:.2f}")
        print(f"  the same no-op trial on a new worker process that imports TensorFlow as it starts (the product's "
              f"runtime env, no spare): {floor_tf_s:6.2f} s; fixed_s_1w / floor_tf_s = {fixed_1w / floor_tf_s:.2f} "
              f"(every trial's worker imports TensorFlow once: on idle cores a spare's import is free, on busy ones "
              f"it slows the trial it runs beside)")
        print(f"  the same no-op trial with its Train controller in an actor of its own (Ray's default): "
              f"{floor_actor_s:6.2f} s")
        print(f"  CPU seconds of all Ray worker processes per no-op trial: controller in the trial "
              f"{floor_cpu['local']:.2f} s, in an actor {floor_cpu['actor']:.2f} s")
        for label, c in (("in the trial", cpu_floor), ("in an actor", cpu_floor_actor)):
            print(f"    controller {label}: " + ", ".join(f"{n} {v / FLOOR_TRIALS:.2f}" for n, v in
                                                       sorted(c.cpu_s.items(), key=lambda kv: -kv[1]) if v > 0.005))
        helper_s, train_1epoch = helper_cpu(cpu_1w, marks_1w)
        print("\n== CPU seconds per 1-worker trial, by Ray process (trials of step 1)")
        for name, sec in sorted(cpu_1w.cpu_s.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<28} {sec / len(marks_1w):7.2f} s{'  (helper)' if name in HELPERS else ''}")
        print(f"  helpers {helper_s:.2f} s per trial; a 1-epoch trial's training CPU {train_1epoch:.2f} s "
              f"-> {helper_s / train_1epoch:.0%}")
        print("\n== where a trial's fixed cost goes (mean over warm trials; the cold first one)   1 worker        "
              "   2 workers")
        parts = [breakdown([m for m in marks if m["warm"] == w]) if any(m["warm"] == w for m in marks) else None
                 for marks in (marks_1w, marks_2w) for w in (1, 0)]
        for k in breakdown(marks_1w):
            print(f"  {k:<58} " + "  ".join(f"{p[k]:6.2f} s" if p else "     -  " for p in parts))
        during, after, n_during, n_after = spare_overlap(marks_1w)
        label = "epoch while the next trial's spare imports TensorFlow"
        print(f"  {label:<58} {during:6.2f} s (n={n_during}; the other epochs after the first: {after:.2f} s, "
              f"n={n_after})")
        print(f"\n== the demo's sweep: 10 trials (random + ASHA), {len(rows)} rows, "
              f"{sum(r['epochs'] for r in rows)} epochs in all")
        print(f"  orchestrated sweep {sweep_s:6.1f} s; the same trials in-process one after another {replay_s:6.1f} s; "
              f"ratio {sweep_s / replay_s:.2f}")
        print(f"  best objective: sweep {max(r['objective'] or 0 for r in rows):.4f}")
        overhead = epoch_1w - inproc_epoch
        print(f"  per-epoch time: in a trial {epoch_1w:.2f} s, in-process {inproc_epoch:.2f} s -> overhead "
              f"{overhead:.2f} s")
        print(f"  CPUs busy over the sweep: {cpu_demo.busy_frac:.2f}")
        print(f"RESULT fixed_s_1w={fixed_1w:.2f} fixed_s_2w={fixed_2w:.2f} floor_s={floor_s:.2f} "
              f"floor_warm_s={floor_warm_s:.2f} floor_tf_s={floor_tf_s:.2f} "
              f"cold_extra_s_1w={np.mean(cold_1w) if cold_1w else float('nan'):.2f} "
              f"floor_actor_controller_s={floor_actor_s:.2f} floor_cpu_s={floor_cpu['local']:.2f} "
              f"floor_actor_controller_cpu_s={floor_cpu['actor']:.2f} "
              f"epoch_overhead_s={overhead:.2f} sweep_vs_inprocess={sweep_s / replay_s:.2f} "
              f"helper_cpu_s={helper_s:.2f} train_cpu_s_1epoch={train_1epoch:.2f} "
              f"cpu_busy_frac={cpu_demo.busy_frac:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
