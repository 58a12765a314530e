"""The orchestrator against Keras Tuner, on Keras Tuner's own ground: one machine, a small model, a small budget.

Same data (the embedded default: digits 5-9, tasks left, right, sum), same backbone (the built-in digits-cnn,
pretrained on digits 0-4 once, not timed) and heads, same search space, same budget, same objective:

- space: freeze depth {0, 2, 3, 4, all}, backbone lr loguniform [3e-4, 1e-2], head lr loguniform [1e-3, 1e-2],
  static loss weights from a Dirichlet(8) (one uniform per task through the Gamma quantile: the orchestrator's
  ``simplex``, the same function on both sides);
- budget: ``--trials`` trials of at most ``--epochs`` epochs (Hyperband decides its own trial count from
  ``max_epochs``; its epochs are printed);
- objective: ``mean_score`` (mean of left accuracy, right accuracy, sum R²) on the same validation set,
  computed by the same function (``orchestrator.model.multitask.eval_sums`` + ``metrics_from_sums``) after every epoch;
  a trial's score is its best epoch (Keras Tuner's rule; the orchestrator's ``best_objective`` column).

Keras Tuner runs as a Keras user would run it: ``RandomSearch`` and ``Hyperband``, in this process,
``model.fit``. The model is the orchestrator's (``orchestrator.model.multitask.build``) behind a ``keras.Model`` whose
``train_step`` applies two optimizers (backbone lr, head lr: Keras's documented way to customize ``fit``), with
the batch size, losses and weights of the orchestrator's step. The orchestrator runs ``tune`` with its default
searcher and scheduler (config.space's defaults; grace 1, reduction factor 2; ``base_first: false``) with the
demo's resources (1 worker per trial, 0.45 CPU: 4 trials at once); Ray is started before the first timed sweep. Each tool runs once per seed (``--seeds``).

Wall time is from the call (``tuner.search``, ``tune``) to its return. Keras Tuner's best in a seed is the better
of its two searchers; the time at which a tool first reached it is, for Keras Tuner, the end of the epoch that
reached it, and for the orchestrator the end of the trial that reached it (its leaderboard row's ``created_at``:
conservative, the trial may have reached it epochs earlier).
Goal: the orchestrator reaches Keras Tuner's best in <= 1.0x Keras Tuner's wall time.

    pip install -e '.[bench]'      # keras-tuner
    python bench/sweep_vs_keras_tuner.py [--trials 8] [--epochs 4] [--seeds 0,1,2]    # about 12-15 minutes
Last line: RESULT kt_best=... kt_wall_s=... orch_best=... orch_wall_s=... orch_time_to_kt_best_s=...
(medians over seeds; Keras Tuner: the better of its two searchers in each seed; the orchestrator: its default)
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _embedded import DEMO_RESOURCES, DEMO_TRAIN, EMBEDDED, default_method  # noqa: E402

FREEZE = ["0", "2", "3", "4", "all"]
BB_LR, HEAD_LR, CONCENTRATION = (3e-4, 1e-2), (1e-3, 1e-2), 8.0
BASE = {**EMBEDDED, "train": {**DEMO_TRAIN, "epochs": 4}, "resources": DEMO_RESOURCES}


def keras_tuner_search(kind: str, *, base, spec, train, val, trials: int, epochs: int, seed: int, work: str,
                       fixed: dict | None = None):
    """One Keras Tuner search; returns (wall_s, [(seconds since start, mean_score) per epoch], epochs run).
    ``fixed``: hyperparameter values to hold (the parity check trains the base config this way)."""
    import keras
    import keras_tuner as kt
    import tensorflow as tf

    from orchestrator.model.multitask import build, eval_sums, array_batches, make_optimizer, mean_score, metrics_from_sums
    from orchestrator.model.multitask import per_example_losses
    from orchestrator.config.sampling import simplex_weights

    tasks = list(base.tasks)
    (x, y), (xv, yv) = train, val
    ys = {t: ((v - spec.label_mean[t]) / spec.label_std[t]).astype(np.float32) if t in spec.label_mean else v
          for t, v in y.items()}   # the orchestrator's standardized regression target
    ds = (tf.data.Dataset.from_tensor_slices((x.astype(np.float32), ys)).shuffle(len(x), seed=seed)
          .batch(base.train.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    class TwoRates(keras.Model):
        """The multi-task model; fit() trains the backbone and the heads with their own learning rates."""

        def __init__(self, mt, weights):
            super().__init__()
            self.mt, self.net, self.loss_w = mt, mt.model, weights

        def call(self, inputs, training=False):
            return self.net(inputs, training=training)

        def compile(self, backbone_opt, head_opt):
            super().compile()
            self.backbone_opt, self.head_opt = backbone_opt, head_opt

        def train_step(self, data):
            xb, yb = data
            bb, heads = self.mt.variable_groups()
            with tf.GradientTape() as tape:
                losses = per_example_losses(cfg_of[id(self)], yb, self(xb, training=True))
                loss = tf.add_n([self.loss_w[t] * tf.reduce_mean(losses[t]) for t in tasks])
            grads = tape.gradient(loss, bb + heads)
            if bb:
                self.backbone_opt.apply_gradients(zip(grads[:len(bb)], bb))
            self.head_opt.apply_gradients(zip(grads[len(bb):], heads))
            return {"loss": loss}

    cfg_of: dict[int, object] = {}
    t0 = [0.0]
    curve: list[tuple[float, float]] = []

    class Score(keras.callbacks.Callback):
        """mean_score on the validation set after every epoch, the orchestrator's way, into the logs."""

        def on_epoch_end(self, epoch, logs=None):
            cfg = cfg_of[id(self.model)]
            m = metrics_from_sums(cfg, eval_sums(cfg, spec, self.model.net, array_batches(xv, yv)))
            logs["mean_score"] = mean_score(cfg, m)
            curve.append((time.perf_counter() - t0[0], logs["mean_score"]))

    def build_model(hp):
        u = {t: hp.Float(f"u_{t}", 1e-4, 1 - 1e-4) for t in tasks}
        depth = hp.Choice("freeze_depth", FREEZE)
        cfg = base.with_values({
            "train.freeze_depth": depth if depth == "all" else int(depth),
            "train.backbone_lr": hp.Float("backbone_lr", *BB_LR, sampling="log"),
            "train.head_lr": hp.Float("head_lr", *HEAD_LR, sampling="log"),
            "train.loss_weights": simplex_weights(u, CONCENTRATION)})
        keras.utils.set_random_seed(cfg.train.seed)
        model = TwoRates(build(cfg, spec), cfg.train.loss_weights)
        model(np.zeros((1, *spec.image_shape), np.float32))   # built: Hyperband loads earlier rounds' weights into it
        cfg_of[id(model)] = cfg
        model.compile(make_optimizer(cfg, cfg.train.backbone_lr), make_optimizer(cfg, cfg.train.head_lr))
        bb, heads = model.mt.variable_groups()
        if bb:   # built now, so Hyperband's next round restores their state (Adam moments) with the weights
            model.backbone_opt.build(bb)
        model.head_opt.build(heads)
        return model

    objective = kt.Objective("mean_score", direction="max")
    common = dict(objective=objective, seed=seed, directory=work, project_name=f"{kind}-{seed}", overwrite=True)
    if fixed:
        common["hyperparameters"] = kt.HyperParameters()
        for name, value in fixed.items():
            common["hyperparameters"].Fixed(name, value)
    if kind == "random":
        tuner = kt.RandomSearch(build_model, max_trials=trials, **common)
    else:
        tuner = kt.Hyperband(build_model, max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
    t0[0] = time.perf_counter()
    tuner.search(ds, epochs=epochs, callbacks=[Score()], verbose=0)
    wall = time.perf_counter() - t0[0]
    return wall, curve, len(curve)


def orchestrator_sweep(*, storage: str, trials: int, epochs: int, seed: int):
    """One `tune` with the default searcher and scheduler, the base config not evaluated first (Keras Tuner gets no
    hand-tuned first trial either); returns (wall_s, [(seconds since start, best_objective) per trial, by end time],
    epochs run)."""
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune

    searcher, scheduler = default_method()
    name = f"{searcher}-{seed}"
    cfg = parse_config({**BASE, "train": {**BASE["train"], "epochs": epochs}, "name": name, "storage": storage,
                        "search": {"searcher": searcher, "seed": seed, "num_samples": trials, "base_first": False,
                                   "scheduler": {"type": scheduler, "grace_period": 1, "reduction_factor": 2},
                                   "space": {"train.freeze_depth": {"choice": [0, 2, 3, 4, "all"]},
                                             "train.backbone_lr": {"loguniform": list(BB_LR)},
                                             "train.head_lr": {"loguniform": list(HEAD_LR)},
                                             "train.loss_weights": {"simplex": {"concentration": CONCENTRATION}}}}})
    start = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    summary = tune(cfg, out=lambda line: None)
    wall = time.perf_counter() - t0
    rows = Leaderboard(storage).table(experiment=name).to_pylist()
    if len(rows) != summary["trials"] or any(r["status"] == "failed" for r in rows):
        raise SystemExit(f"sweep {name}: {summary['statuses']}, {len(rows)} rows")
    ends = sorted(((r["created_at"] - start).total_seconds(), r["best_objective"]) for r in rows)
    return wall, ends, sum(r["epochs"] for r in rows)


def first_reach(curve, target: float):
    return next((t for t, v in curve if v >= target - 1e-12), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from orchestrator.console import console, quiet_tensorflow

    tf = quiet_tensorflow()
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays
    from orchestrator.training.pretrain import pretrain
    from orchestrator.training.session import init_ray
    from orchestrator.training.loop import fit_arrays

    work = tempfile.mkdtemp(prefix="bench-kt-")
    storage = os.path.join(work, "runs")
    results = {}   # (tool, searcher, seed) -> (wall, curve, epochs)
    try:
        with console(os.path.join(work, "bench.log")):
            pretrain(storage, out=lambda line: None)                    # once, not timed
            base = parse_config({**BASE, "name": "kt", "storage": storage,
                                 "train": {**BASE["train"], "epochs": args.epochs}})
            train, val, spec = load_arrays(base)
            # Parity, not timed: the base config through Keras Tuner's model.fit path and through the orchestrator's
            # own step in-process (fit_arrays). Equal weights: equal uniforms give equal Dirichlet quantiles.
            _, kt_curve, _ = keras_tuner_search(
                "random", base=base, spec=spec, train=train, val=val, trials=1, epochs=args.epochs, seed=0,
                work=os.path.join(work, "kt"), fixed={"freeze_depth": str(base.train.freeze_depth), "backbone_lr":
                                                      base.train.backbone_lr, "head_lr": base.train.head_lr,
                                                      **{f"u_{t}": 0.5 for t in base.tasks}})
            _, state = fit_arrays(tf.distribute.get_strategy(), base, spec, train, val)
            parity = (kt_curve[-1][1], state["history"][-1]["objective"])
            init_ray(None)                                              # once, not timed
            for seed in seeds:
                for kind in ("random", "hyperband"):
                    results[("kt", kind, seed)] = keras_tuner_search(
                        kind, base=base, spec=spec, train=train, val=val, trials=args.trials, epochs=args.epochs,
                        seed=seed, work=os.path.join(work, "kt"))
                results[("orch", "default", seed)] = orchestrator_sweep(
                    storage=storage, trials=args.trials, epochs=args.epochs, seed=seed)

        print(f"embedded default, {args.trials} trials x <= {args.epochs} epochs, seeds {seeds}; "
              f"objective mean_score (best epoch of a trial)")
        print(f"parity, the base config for {args.epochs} epochs: Keras Tuner's model.fit path {parity[0]:.4f}, the "
              f"orchestrator's step in-process {parity[1]:.4f} (same model, weights, lrs; other batch order)")
        print(f"the orchestrator runs its default searcher + scheduler ({'+'.join(default_method())}, grace 1, "
              f"reduction factor 2), base config not evaluated first (base_first: false)")
        print(f"{'tool':<26}{'seed':>5}{'wall s':>9}{'epochs':>8}{'best':>9}{'reached KT best at s':>22}")
        per_seed = []
        for seed in seeds:
            kt_best = max(max(v for _, v in results[("kt", k, seed)][1]) for k in ("random", "hyperband"))
            kt_pick = max(("random", "hyperband"), key=lambda k: max(v for _, v in results[("kt", k, seed)][1]))
            for (tool, kind) in (("kt", "random"), ("kt", "hyperband"), ("orch", "default")):
                wall, curve, epochs = results[(tool, kind, seed)]
                reach = first_reach(curve, kt_best)
                label = {"kt": "Keras Tuner ", "orch": "orchestrator "}[tool] + \
                    {"random": "random", "hyperband": "Hyperband", "default": "+".join(default_method())}[kind]
                print(f"{label:<26}{seed:>5}{wall:>9.1f}{epochs:>8}{max(v for _, v in curve):>9.4f}"
                      f"{'-' if reach is None else f'{reach:.1f}':>22}")
            kt_wall = results[("kt", kt_pick, seed)][0]
            o_wall, o_curve, _ = results[("orch", "default", seed)]
            reach = first_reach(o_curve, kt_best)
            per_seed.append((kt_best, kt_wall, max(v for _, v in o_curve), o_wall, reach))
            print(f"  seed {seed}: Keras Tuner's best {kt_best:.4f} ({kt_pick}, {kt_wall:.1f} s); orchestrator "
                  f"(default) {'reached it at ' + f'{reach:.1f} s = {reach / kt_wall:.2f}x' if reach is not None else 'did NOT reach it'}")
        met = sum(r[4] is not None and r[4] <= r[1] for r in per_seed)
        print(f"goal (orchestrator reaches Keras Tuner's best in <= 1.0x its wall time): met in {met} of {len(seeds)} "
              f"seeds")
        med = lambda i: float(np.median([r[i] for r in per_seed]))       # noqa: E731
        reached = [r[4] for r in per_seed if r[4] is not None]
        t_reach = f"{float(np.median(reached)):.1f}" if len(reached) == len(per_seed) else \
            f"none({len(per_seed) - len(reached)}_of_{len(per_seed)}_seeds_not_reached)"
        print(f"RESULT kt_best={med(0):.4f} kt_wall_s={med(1):.1f} orch_best={med(2):.4f} orch_wall_s={med(3):.1f} "
              f"orch_time_to_kt_best_s={t_reach}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
