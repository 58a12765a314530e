"""How the task losses combine into one: ``train.loss_weighting``. Knows nothing of Ray or Tune.

- ``static``: ``Σ_k w_k L_k`` with the configured ``loss_weights`` (normalized to sum 1).
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): one learned ``s_k = log σ_k²`` per task, a model
  variable trained with the heads' optimizer. Regression: ``½ e^{-s} L + ½ s``; classification and
  binary: ``e^{-s} L + ½ s``. Effective weight: ``½ e^{-s}`` or ``e^{-s}``.
- ``dwa`` (Liu, Johns & Davison 2019, Dynamic Weight Average): ``λ_k(t) = K softmax_k(r_k / T)`` with
  ``r_k = L_k(t-1) / L_k(t-2)``, the ratio of the task's last two epoch losses (all-reduced over
  workers, so every worker computes the same λ); ``λ = 1`` for the first two epochs. Applied as
  ``λ_k / K`` so the weights sum to 1, like static ones.
- ``rlw`` (Lin et al. 2022, Random Loss Weighting): new weights every step, ``λ = softmax(z)`` with
  ``z ~ N(0, I_K)`` drawn by a stateless generator keyed on (``train.seed``, global step + 2**40): every
  replica draws the same weights without communicating.
- ``famo`` (Liu et al. 2023, Fast Adaptive Multitask Optimization): task logits ``ξ`` (0 at the start),
  ``z = softmax(ξ)``; the step descends ``Σ_k w_k L_k`` with ``w_k = z_k / (c L_k)``, ``c = Σ_i z_i / L_i``
  (the gradient of ``Σ z_k log L_k / c``, c held fixed; the ``w_k`` sum to 1), and after the update one
  no-gradient forward pass on the same batch gives ``L'``; then ``ξ`` takes one Adam step on
  ``J_z(ξ)ᵀ (log L − log L') + γ ξ`` at rate ``β``, as the reference code does (github Cranial-XIX/FAMO, famo.py:
  torch Adam, betas 0.9/0.999, eps 1e-8, weight decay γ added to the gradient), ``β = famo_lr``,
  ``γ = famo_decay``. The paper's Algorithm 1 writes a plain step ``ξ ← ξ − β (…)``: at β = 0.025 it moves a logit
  by about 1e-4 per step, so FAMO trained at equal weights; Adam moves it by about β. Adam's moments and step count
  are checkpointed. ``L`` and ``L'`` are the all-reduced global batch losses, so every worker computes the same
  weights and logits.

All run inside the custom distributed step: ``combine`` is called per replica on that
replica's share of each task's global-batch mean loss.
"""
from __future__ import annotations

import math

import numpy as np

FAMO_EPS = 1e-8   # keeps log L and 1 / L finite (the reference code's epsilon)
FAMO_ADAM = (0.9, 0.999, 1e-8)   # torch.optim.Adam's betas and eps, which the FAMO reference code keeps


def dwa_weights(loss_history: list[dict[str, float]], tasks: list[str], temperature: float) -> dict[str, float]:
    """DWA's λ_k (summing to K) for the next epoch, from the per-task epoch losses so far."""
    k = len(tasks)
    if len(loss_history) < 2:
        return {t: 1.0 for t in tasks}
    prev, prev2 = loss_history[-1], loss_history[-2]
    r = np.array([prev[t] / prev2[t] if prev2[t] > 0 else 1.0 for t in tasks], np.float64)
    e = np.exp((r - r.max()) / temperature)
    return {t: float(k * v / e.sum()) for t, v in zip(tasks, e)}


def rlw_weights(seed: int, step, k: int):
    """RLW's λ for global step ``step``: softmax of K standard normal draws from a generator keyed on (seed, step)."""
    import tensorflow as tf

    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64) + _RLW_STREAM])
    return tf.nn.softmax(tf.random.stateless_normal([k], seed=key))


# A layer's draws are keyed (its seed, calls so far), and the first head's Dropout is seeded train.seed: keyed (seed,
# step), RLW's λ was a function of that head's dropout bits. Its counters start here, where no layer's reach.
_RLW_STREAM = 2 ** 40


def famo_weights(logits, losses):
    """FAMO's weights on the raw losses, ``w_k = z_k / (c L_k)`` with ``z = softmax(ξ)``, ``c = Σ_i z_i / L_i``."""
    import tensorflow as tf

    ratio = tf.nn.softmax(tf.convert_to_tensor(logits, tf.float32)) / (tf.convert_to_tensor(losses, tf.float32) + FAMO_EPS)
    return ratio / tf.reduce_sum(ratio)


def famo_logits(logits, moments, *, step, before, after, lr: float, decay: float):
    """FAMO's logit step, torch Adam's on ``g = J_z(ξ)ᵀ (log L − log L') + γ ξ`` (``J_zᵀ v = z ⊙ (v − z·v)``);
    ``moments``: Adam's (m, v), ``step``: the steps taken before this one. Returns (ξ, (m, v))."""
    import tensorflow as tf

    b1, b2, eps = FAMO_ADAM
    xi = tf.convert_to_tensor(logits, tf.float32)
    z = tf.nn.softmax(xi)
    d = (tf.math.log(tf.convert_to_tensor(before, tf.float32) + FAMO_EPS)
         - tf.math.log(tf.convert_to_tensor(after, tf.float32) + FAMO_EPS))
    g = z * (d - tf.reduce_sum(z * d)) + decay * xi
    m = b1 * tf.convert_to_tensor(moments[0], tf.float32) + (1 - b1) * g
    v = b2 * tf.convert_to_tensor(moments[1], tf.float32) + (1 - b2) * g * g
    t = tf.cast(step, tf.float32) + 1
    return xi - (lr / (1 - b1 ** t)) * m / (tf.sqrt(v) / tf.sqrt(1 - b2 ** t) + eps), (m, v)


class LossWeighting:
    """The loss combination of one run; build it in the strategy's scope."""

    def __init__(self, cfg, *, num_replicas: int = 1):
        import keras

        self.kind = cfg.train.loss_weighting
        self.tasks = list(cfg.tasks)
        self.types = {t: tc.type for t, tc in cfg.tasks.items()}
        self.temperature = cfg.train.dwa_temperature
        self.seed, self.famo_lr, self.famo_decay = cfg.train.seed, cfg.train.famo_lr, cfg.train.famo_decay
        self.num_replicas = num_replicas
        self.loss_history: list[dict[str, float]] = []
        static = cfg.normalized_loss_weights()
        initial = [static[t] for t in self.tasks] if self.kind == "static" else [1.0 / len(self.tasks)] * len(self.tasks)
        # Applied weights (static / DWA): a variable, so a new epoch's weights need no retracing.
        self.weights = keras.Variable(np.array(initial, np.float32), trainable=False, name="loss_weights")
        self.log_vars = (keras.Variable(np.zeros(len(self.tasks), np.float32), name="log_variances")
                         if self.kind == "uncertainty" else None)
        # RLW: the global step that keys its draws; FAMO: its task logits. Both change once per step, in the
        # step's cross-replica part, from values every worker has (``after_step``).
        self.draws = keras.Variable(0, dtype="int64", trainable=False, name="rlw_step") if self.kind == "rlw" else None
        self.logits = (keras.Variable(np.zeros(len(self.tasks), np.float32), trainable=False, name="famo_logits")
                       if self.kind == "famo" else None)
        self.famo_adam = ((keras.Variable(np.zeros((2, len(self.tasks)), np.float32), trainable=False,
                                          name="famo_moments"),
                           keras.Variable(0, dtype="int64", trainable=False, name="famo_steps"))
                          if self.kind == "famo" else None)

    @property
    def global_losses(self) -> bool:
        """FAMO weighs by the global batch's task losses: the step all-reduces them before ``combine``."""
        return self.kind == "famo"

    @property
    def learned(self) -> list:
        """The variables the method learns (uncertainty's log-variances, FAMO's logits)."""
        return [v for v in (self.log_vars, self.logits) if v is not None]

    @property
    def trainable_variables(self) -> list:
        return [self.log_vars] if self.log_vars is not None else []

    def _half(self) -> np.ndarray:
        return np.array([0.5 if self.types[t] == "regression" else 1.0 for t in self.tasks], np.float32)

    def combine(self, losses: list, *, global_losses=None):
        """Total loss from per-task losses (this replica's share of each global-batch mean); FAMO also takes the
        all-reduced ``global_losses``."""
        import tensorflow as tf

        stacked = tf.stack(losses)
        if self.kind == "rlw":
            return tf.reduce_sum(tf.cast(rlw_weights(self.seed, self.draws, len(self.tasks)), stacked.dtype) * stacked)
        if self.kind == "famo":   # weights from global losses, held fixed: replicas' gradients sum to the global one
            w = tf.stop_gradient(famo_weights(self.logits, global_losses))
            return tf.reduce_sum(tf.cast(w, stacked.dtype) * stacked)
        if self.log_vars is None:
            return tf.reduce_sum(tf.cast(self.weights, stacked.dtype) * stacked)
        s = tf.cast(self.log_vars, stacked.dtype)
        # The ½ s regularizer is split across replicas: the optimizer sums replicas' gradients.
        return tf.reduce_sum(self._half() * tf.exp(-s) * stacked + 0.5 * s / self.num_replicas)

    def after_step(self, before, after, *, applied=True) -> None:
        """Once per step, outside the replicas, identical on every worker: RLW moves to the next draw; FAMO steps
        its logits from the all-reduced losses before and after the update (a step not ``applied``, i.e. skipped
        by float16's loss scale, or with a non-finite loss leaves them and its Adam state)."""
        import tensorflow as tf

        if self.draws is not None:
            self.draws.assign_add(1)
        if self.logits is not None:
            moments, steps = self.famo_adam
            new, (m, v) = famo_logits(self.logits, tf.unstack(moments), step=steps, before=before, after=after,
                                      lr=self.famo_lr, decay=self.famo_decay)
            finite = tf.reduce_all(tf.math.is_finite(new)) & tf.reduce_all(tf.math.is_finite(v)) & applied
            self.logits.assign(tf.where(finite, new, self.logits))
            moments.assign(tf.where(finite, tf.stack([m, v]), moments))
            steps.assign_add(tf.cast(finite, tf.int64))

    def effective(self, losses: dict[str, float] | None = None) -> dict[str, float]:
        """The weight each task's loss carries now (RLW: its expectation 1/K; FAMO: the weights it applies to raw
        ``losses``, ``famo_weights``, e.g. the epoch's mean ones; ``softmax(ξ)`` without them)."""
        if self.kind == "rlw":
            return {t: 1.0 / len(self.tasks) for t in self.tasks}
        if self.logits is not None:
            z = np.exp(self.logits.numpy() - self.logits.numpy().max())
            if losses is not None:
                z = z / (np.array([losses[t] for t in self.tasks], np.float64) + FAMO_EPS)
            return {t: float(v) for t, v in zip(self.tasks, z / z.sum())}
        if self.log_vars is not None:
            s = np.asarray(self.log_vars.numpy(), np.float64)
            return {t: float(h * math.exp(-v)) for t, h, v in zip(self.tasks, self._half(), s)}
        return {t: float(w) for t, w in zip(self.tasks, np.asarray(self.weights.numpy()))}

    def end_epoch(self, epoch_losses: dict[str, float]) -> None:
        """DWA: new weights from the all-reduced epoch losses (identical on every worker)."""
        self.loss_history.append({t: float(epoch_losses[t]) for t in self.tasks})
        if self.kind == "dwa":
            lam = dwa_weights(self.loss_history, self.tasks, self.temperature)
            self.weights.assign(np.array([lam[t] / len(self.tasks) for t in self.tasks], np.float32))

    def state(self) -> dict:
        return {"loss_history": self.loss_history, "weights": self.weights.numpy().tolist(),
                "log_vars": None if self.log_vars is None else self.log_vars.numpy().tolist(),
                "draws": None if self.draws is None else int(self.draws.numpy()),
                "logits": None if self.logits is None else self.logits.numpy().tolist(),
                **({} if self.famo_adam is None else {"famo_moments": self.famo_adam[0].numpy().tolist(),
                                                      "famo_steps": int(self.famo_adam[1].numpy())})}

    def restore(self, state: dict) -> None:
        self.loss_history = list(state.get("loss_history", []))
        self.weights.assign(np.array(state["weights"], np.float32))
        if self.log_vars is not None and state.get("log_vars") is not None:
            self.log_vars.assign(np.array(state["log_vars"], np.float32))
        if self.draws is not None and state.get("draws") is not None:
            self.draws.assign(int(state["draws"]))
        if self.logits is not None and state.get("logits") is not None:
            self.logits.assign(np.array(state["logits"], np.float32))
        if self.famo_adam is not None and state.get("famo_moments") is not None:
            self.famo_adam[0].assign(np.array(state["famo_moments"], np.float32))
            self.famo_adam[1].assign(int(state["famo_steps"]))
