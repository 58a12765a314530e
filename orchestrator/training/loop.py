"""The per-worker training loop run by Ray Train. Knows nothing of Tune or the leaderboard.

Every rank runs ``train_loop_per_worker``: build the model in the strategy's scope -> restore the latest checkpoint
-> per epoch: the distributed step over its batches, one all-reduce of named sums, a report. Ranks synchronize only
inside the step (gradient all-reduce, ``training.step``), in that one all-reduce per epoch (losses, step counts, memory,
validation sums) and at ``ray.train.report`` (a barrier: every rank reports once per epoch).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .. import layout, metrics as registry, scratch, storage
from ..config.schema import TRAINING_REVISION
from ..config.freezing import hashes_of_same_work
from . import checkpoints
from .batch import per_worker_batch
from .precision import configure_gpus
from .progress import read_progress, write_progress
from .step import allreduce_fields, make_allreduce_sum, make_train_step, one_hot, own_draws, sync_batchnorm


@dataclass
class Worker:
    """This process's place in the run and what the loop calls back: ``restore(load, check) -> state | None`` and
    ``on_epoch(metrics, state, save)``, and ``on_resumed(metrics, state)`` for the epoch a restart restored (its report
    may have been lost with the worker). In-process runs (pretraining, benches, tests) use the defaults."""
    rank: int = 0
    world: int = 1
    restore: Optional[Callable] = None
    on_epoch: Optional[Callable] = None
    on_resumed: Optional[Callable] = None
    backbone_file: Optional[str] = None
    baselines: Optional[dict] = None
    marks: dict = field(default_factory=dict)   # when start-up steps ended (progress.json, bench/)


@dataclass
class Trainee:
    """The model, its loss weighting and its optimizers (one per variable group: discriminative learning rates)."""
    mt: object
    weighting: object
    optimizers: dict

    def save(self, directory: str) -> None:
        self.mt.model.save_weights(os.path.join(directory, "model.weights.h5"))
        np.savez(os.path.join(directory, "optimizers.npz"),
                 **{f"{n}_{i}": v.numpy() for n, opt in self.optimizers.items() for i, v in enumerate(opt.variables)},
                 **{f"rng_{i}": v.numpy() for i, v in enumerate(self.seed_states())})

    def load(self, directory: str) -> None:
        self.mt.model.load_weights(os.path.join(directory, "model.weights.h5"))
        with np.load(os.path.join(directory, "optimizers.npz")) as saved:
            for n, opt in self.optimizers.items():
                for i, v in enumerate(opt.variables):
                    v.assign(saved[f"{n}_{i}"])
            for i, v in enumerate(self.seed_states()):
                if f"rng_{i}" in saved.files:   # checkpoints from before they were saved: as built
                    v.assign(saved[f"rng_{i}"])

    def seed_states(self) -> list:
        """The model's random draws so far (Dropout's, and any other layer's seed generator): training state that
        ``save_weights`` leaves out, so a resumed run would replay epoch 1's dropout masks."""
        return [v for v in self.mt.model.variables if v.path.endswith("seed_generator_state")]


def train_loop_per_worker(payload: dict) -> None:
    """Ray Train entry point: data from the pipeline, metrics and checkpoints through Ray."""
    from .warm import marks as process_marks

    marks = {**process_marks(), "loop_start": time.time()}
    import ray.train

    ctx = ray.train.get_context()
    rank, world, run_dir = ctx.get_world_rank(), ctx.get_world_size(), payload["run_dir"]
    if rank == 0 and read_progress(run_dir) is None:
        write_progress(run_dir, [], marks=marks)   # for the driver's watcher: resources acquired, the run has started
    from ..console import quiet_logs, quiet_tensorflow

    tf = quiet_tensorflow()
    marks["tensorflow"] = time.time()
    quiet_logs()
    # Trials packed on one GPU (gpus_per_worker < 1) share it: each gets a memory cap (else memory growth).
    configure_gpus(tf, payload["config"]["resources"]["gpus_per_worker"])
    # Create the strategy before any other TF op. One worker has nothing to synchronize: the
    # default strategy then spares the per-step collectives (measured in bench/).
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if world > 1 else tf.distribute.get_strategy()
    from ..config.schema import ExperimentConfig
    from ..data.pipeline import worker_data
    from ..data.spec import DataSpec

    cfg = ExperimentConfig.model_validate(payload["config"])  # workers re-validate
    spec = DataSpec.from_dict(payload["data_spec"])
    data = worker_data(payload["data"], cfg, spec, rank=rank, world=world)
    # Nothing left behind in the temp dir: the backbone's local copy, TensorBoard's local folder and its writer.
    with _shipped_file(payload.get("backbone_file")) as backbone_file, _board(run_dir, rank) as board:
        on_epoch, on_resumed = _reporter(run_dir, cfg, rank=rank, marks=marks, board=board)
        worker = Worker(rank, world, restore=_restorer(run_dir, rank=rank, world=world), marks=marks,
                        on_epoch=on_epoch, on_resumed=on_resumed,
                        baselines=payload.get("baselines"), backbone_file=backbone_file)
        marks["data"] = time.time()
        fit(strategy, cfg, spec, data, worker=worker)


def _restorer(run_dir: str, *, rank: int, world: int) -> Callable:
    def restore(load, check):
        # Rank 0 picks the checkpoint (the newest whole one: checksums verified, ``check``ed before any weight is
        # read) and tells the others, so all ranks resume from the same epoch.
        from ray.train.collective import broadcast_from_rank_zero

        notes: list[str] = []
        state = checkpoints.restore_latest(run_dir, load, check=check, say=notes.append) if rank == 0 else None
        epoch = state["epoch"] if state else 0
        if world > 1:
            epoch = broadcast_from_rank_zero(epoch)
            if rank != 0 and epoch:
                state = checkpoints.load(run_dir, epoch, load)
        if rank == 0:   # one record per (re)start: which epoch it resumed from, and checkpoints passed over
            for line in notes:
                print(f"warning: {line}", file=sys.stderr, flush=True)
            storage.atomic_write(storage.join(layout.attempts(run_dir), f"{time.time():.3f}.json"),
                                 json.dumps({"start_epoch": epoch, "pid": os.getpid(), "notes": notes}).encode())
        return state
    return restore


def _reporter(run_dir: str, cfg, *, rank: int, marks: dict, board) -> tuple[Callable, Callable]:
    """``on_epoch``: rank 0 checkpoints, writes TensorBoard events (``board``) and the progress file; every rank
    reports. ``on_resumed``: the restored epoch reported again (a worker can die between its checkpoint and its
    report; the driver keeps each epoch once)."""
    import ray.train

    def on_epoch(metrics, state, save):
        last = metrics["epoch"] == cfg.train.epochs or metrics["status"] == "diverged"
        if rank == 0 and (metrics["epoch"] % cfg.train.checkpoint_every == 0 or last):
            t0 = time.perf_counter()
            checkpoints.save(run_dir, metrics["epoch"], save, state)
            marks.setdefault("checkpoint_s", []).append(time.perf_counter() - t0)
        if rank == 0:
            board.write(metrics)
            marks.setdefault("epoch_end", []).append(time.time())
            write_progress(run_dir, state["history"], marks=marks)
        ray.train.report(metrics)  # a barrier: every rank reports once per epoch (Tune hears rank 0)

    def on_resumed(metrics, state):
        if rank == 0:
            write_progress(run_dir, state["history"], marks=marks)
        ray.train.report(metrics)  # every rank, as for an epoch
    return on_epoch, on_resumed


@contextlib.contextmanager
def _board(run_dir: str, rank: int):
    """Rank 0's TensorBoard writer (None on other ranks), closed at the end."""
    if rank != 0:
        yield None
        return
    from .tensorboard import EpochBoard

    with EpochBoard(run_dir) as board:
        yield board


@contextlib.contextmanager
def _shipped_file(shipped):
    """A backbone/weights file shipped through the object store -> a local path on this worker, deleted at the end."""
    if shipped is None:
        yield None
        return
    import ray

    blob, suffix = ray.get(shipped["ref"])
    fd, path = scratch.mkstemp(suffix)   # a stopped trial's worker is killed: the next process removes it
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        del blob
        yield path
    finally:
        os.unlink(path)


def build(strategy, cfg, spec, *, backbone_file: Optional[str]) -> Trainee:
    """Model, loss weighting and optimizers, in ``strategy``'s scope (freezing is applied inside ``build``)."""
    import keras

    from ..model.multitask import build as build_model, make_optimizer
    from ..model.weighting import LossWeighting

    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        mt = build_model(cfg, spec, backbone_file=backbone_file)
        weighting = LossWeighting(cfg, num_replicas=strategy.num_replicas_in_sync)
        mt.extra_variables = weighting.trainable_variables
        backbone_vars, head_vars = mt.variable_groups()
        optimizers = {"heads": make_optimizer(cfg, cfg.train.head_lr)}
        # uncertainty's log-variances are not regularized (Kendall et al.); the optimizer decays all else it is given
        optimizers["heads"].exclude_from_weight_decay(var_list=weighting.trainable_variables)
        optimizers["heads"].build(head_vars)
        if backbone_vars:
            optimizers["backbone"] = make_optimizer(cfg, cfg.train.backbone_lr)
            optimizers["backbone"].build(backbone_vars)
    return Trainee(mt, weighting, optimizers)


def fit(strategy, cfg, spec, data, *, worker: Optional[Worker] = None):
    """Build the model in ``strategy``'s scope and train it; returns (model, state).

    Shared by Ray workers (MultiWorkerMirroredStrategy) and in-process runs (default strategy). ``data``
    (``data.pipeline``) gives ``agree_steps``, ``start_at(epoch, dist)``, ``set_epoch(epoch) -> steps``,
    ``train_dataset(per_worker)`` and ``val_batches()``."""
    w = worker or Worker()
    trainee = build(strategy, cfg, spec, backbone_file=w.backbone_file)
    own_draws(trainee.mt.model, w.rank)   # each worker its own dropout masks
    w.marks["model"] = time.time()
    state = _restored(trainee, cfg, w, fingerprint=spec.fingerprint, n_blocks=len(trainee.mt.blocks))
    per_worker = per_worker_batch(cfg.train.batch_size, w.world)   # what a check missed never trains fewer
    allreduce_sum = make_allreduce_sum(strategy, w.world)
    data.agree_steps(per_worker, allreduce_sum)
    run = _Epochs(cfg, spec, data, trainee=trainee, worker=w, allreduce_sum=allreduce_sum, per_worker=per_worker,
                  step=make_train_step(strategy, trainee.mt, cfg, trainee.weighting, trainee.optimizers,
                                       global_batch=per_worker * w.world),
                  dist=strategy.distribute_datasets_from_function(lambda _: data.train_dataset(per_worker)))
    data.start_at(state["epoch"], run.dist)   # a resumed run trains epoch k on epoch k's order
    scale = run.step.loss_scale   # float16 only
    if scale is not None and "loss_scale" in state:
        scale.restore(state["loss_scale"])
    if state["history"] and w.on_resumed:
        w.on_resumed(state["history"][-1], state)
    diverged = bool(state["history"]) and state["history"][-1]["status"] == "diverged"
    for epoch in range(state["epoch"], state["epoch"] if diverged else cfg.train.epochs):   # diverged: it ended
        metrics = run.epoch(epoch)
        state = {"epoch": epoch + 1, "history": state["history"] + [metrics], "config_hash": metrics["config_hash"],
                 "data_fingerprint": spec.fingerprint, "training_revision": TRAINING_REVISION,
                 "weighting": trainee.weighting.state(),
                 **({"loss_scale": scale.state()} if scale else {})}
        if w.on_epoch:
            w.on_epoch(metrics, state, trainee.save)
        if metrics["status"] == "diverged":
            break
    return trainee.mt, state


def _restored(trainee: Trainee, cfg, w: Worker, *, fingerprint: Optional[str], n_blocks: int) -> dict:
    check = checkpoints.same_config(hashes_of_same_work(cfg, n_blocks), fingerprint)
    state = (w.restore and w.restore(trainee.load, check)) or {"epoch": 0, "history": []}
    if "weighting" in state:
        trainee.weighting.restore(state["weighting"])
    return state


@dataclass
class _Epochs:
    """What every epoch of one fit uses; ``executed``: steps this rank ran since (re)start (proof that it trained)."""
    cfg: object
    spec: object
    data: object
    trainee: Trainee
    worker: Worker
    allreduce_sum: Callable
    per_worker: int
    step: Callable
    dist: object
    executed: int = 0
    skipped: int = 0      # float16: steps the loss scale skipped, up to the last epoch

    def epoch(self, epoch: int) -> dict:
        """This rank's steps, then one all-reduce of named sums: the epoch's metrics (identical on every rank)."""
        from ..model.multitask import eval_sums, metrics_from_sums

        cfg, w, tasks = self.cfg, self.worker, list(self.cfg.tasks)
        steps = self.data.set_epoch(epoch)
        t0 = time.perf_counter()
        total = self._steps(len(tasks) + 1)
        seconds = time.perf_counter() - t0
        sync_batchnorm(self.trainee.mt.model, self.allreduce_sum, w.world)   # validate and save one model
        summed = allreduce_fields(self.allreduce_sum, {   # one collective per epoch (and one with BatchNorm)
            "losses": total, "steps": one_hot(self.executed, rank=w.rank, world=w.world),
            "rss_mb": one_hot(peak_rss_mb(), rank=w.rank, world=w.world),
            "validation": eval_sums(cfg, self.spec, self.trainee.mt.model, self.data.val_batches())})
        losses = summed["losses"] / steps
        metrics = metrics_from_sums(cfg, summed["validation"], baselines=w.baselines)
        applied = self.trainee.weighting.effective(dict(zip(tasks, losses[1:])))   # this epoch's, at its mean losses
        self.trainee.weighting.end_epoch(dict(zip(tasks, losses[1:])))   # DWA: next epoch's weights
        metrics.update(epoch=epoch + 1, train_loss=float(losses[0]), world_size=w.world, steps_per_epoch=steps,
                       examples_per_s=steps * self.per_worker * w.world / seconds, epoch_seconds=seconds,
                       **{f"train_loss_{t}": float(v) for t, v in zip(tasks, losses[1:])},
                       **{f"eff_weight_{t}": v for t, v in applied.items()},
                       **{f"rank{r}_steps": int(c) for r, c in enumerate(summed["steps"])},
                       **{f"rank{r}_peak_rss_mb": float(m) for r, m in enumerate(summed["rss_mb"])},
                       status="running" if np.isfinite(losses).all() and not metrics["nonfinite_outputs"] else
                       "diverged", config_hash=cfg.config_hash())   # non-finite losses or validation outputs
        metrics.update(self._loss_scale())
        return metrics

    def _loss_scale(self) -> dict:
        """float16: the loss scale now and the steps skipped this epoch (identical on every worker)."""
        scale = self.step.loss_scale
        if scale is None:
            return {}
        total = int(scale.skipped.numpy())
        skipped, self.skipped = total - self.skipped, total
        return {"loss_scale": float(scale.scale.numpy()), "skipped_steps": skipped}

    def _steps(self, width: int) -> np.ndarray:
        """Sum of this rank's step losses over the epoch ([total, task 1, ...])."""
        import tensorflow as tf

        total = tf.zeros(width)
        try:
            for xb, yb in self.dist:
                total += self.step(xb, yb)
                self.executed += 1
                if "first_step" not in self.worker.marks:
                    float(total[0])   # wait for the step: tracing and the first step's compute end here
                    self.worker.marks["first_step"] = time.time()
        except Exception:
            if getattr(self.data, "error", None) is not None:
                raise self.data.error from None   # a bad image met while streaming: the user's error, one line
            raise
        return total.numpy()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fit_arrays(strategy, cfg, spec, train, val, *, on_epoch=None, backbone_file=None):
    """``fit`` on in-memory arrays ``(x, {task: y})``, in this process (no Ray)."""
    from ..data.pipeline import ArrayData

    hook = (lambda m, s, _save: on_epoch(m, s)) if on_epoch else None
    return fit(strategy, cfg, spec, ArrayData(cfg, spec, train, val),
               worker=Worker(on_epoch=hook, backbone_file=backbone_file))


def format_epoch(m: dict, epochs: int) -> str:
    """One console line per epoch: every per-task metric the registry knows (the loss aside), and the objective."""
    task_metrics = " ".join(f"{k}={m[k]:.4f}" for k in registry.task_metric_columns(m) if isinstance(m[k], float))
    return (f"epoch {m['epoch']}/{epochs} train_loss={m['train_loss']:.4f} {task_metrics} "
            f"objective={m['objective']:.4f} ({m['examples_per_s']:.0f} ex/s)")
