"""How the task losses combine into one: ``train.loss_weighting``. Knows nothing of Ray or Tune.

- ``static``: ``Σ_k w_k L_k`` with the configured ``loss_weights`` (normalized to sum 1).
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): one learned ``s_k = log σ_k²`` per task, a model
  variable trained with the heads' optimizer. Regression: ``½ e^{-s} L + ½ s``; classification and
  binary: ``e^{-s} L + ½ s``. Effective weight: ``½ e^{-s}`` or ``e^{-s}``.
- ``dwa`` (Liu, Johns & Davison 2019, Dynamic Weight Average): ``λ_k(t) = K softmax_k(r_k / T)`` with
  ``r_k = L_k(t-1) / L_k(t-2)``, the ratio of the task's last two epoch losses (all-reduced over
  workers, so every worker computes the same λ); ``λ = 1`` for the first two epochs. Applied as
  ``λ_k / K`` so the weights sum to 1, like static ones.

All three run inside the custom distributed step: ``combine`` is called per replica on that
replica's share of each task's global-batch mean loss.
"""
from __future__ import annotations

import math

import numpy as np


def dwa_weights(loss_history: list[dict[str, float]], tasks: list[str], temperature: float) -> dict[str, float]:
    """DWA's λ_k (summing to K) for the next epoch, from the per-task epoch losses so far."""
    k = len(tasks)
    if len(loss_history) < 2:
        return {t: 1.0 for t in tasks}
    prev, prev2 = loss_history[-1], loss_history[-2]
    r = np.array([prev[t] / prev2[t] if prev2[t] > 0 else 1.0 for t in tasks], np.float64)
    e = np.exp((r - r.max()) / temperature)
    return {t: float(k * v / e.sum()) for t, v in zip(tasks, e)}


class LossWeighting:
    """The loss combination of one run; build it in the strategy's scope."""

    def __init__(self, cfg, *, num_replicas: int = 1):
        import keras

        self.kind = cfg.train.loss_weighting
        self.tasks = list(cfg.tasks)
        self.types = {t: tc.type for t, tc in cfg.tasks.items()}
        self.temperature = cfg.train.dwa_temperature
        self.num_replicas = num_replicas
        self.loss_history: list[dict[str, float]] = []
        static = cfg.normalized_loss_weights()
        initial = [static[t] for t in self.tasks] if self.kind == "static" else [1.0 / len(self.tasks)] * len(self.tasks)
        # Applied weights (static / DWA): a variable, so a new epoch's weights need no retracing.
        self.weights = keras.Variable(np.array(initial, np.float32), trainable=False, name="loss_weights")
        self.log_vars = (keras.Variable(np.zeros(len(self.tasks), np.float32), name="log_variances")
                         if self.kind == "uncertainty" else None)

    @property
    def trainable_variables(self) -> list:
        return [self.log_vars] if self.log_vars is not None else []

    def _half(self) -> np.ndarray:
        return np.array([0.5 if self.types[t] == "regression" else 1.0 for t in self.tasks], np.float32)

    def combine(self, losses: list):
        """Total loss from per-task losses (this replica's share of each global-batch mean)."""
        import tensorflow as tf

        stacked = tf.stack(losses)
        if self.log_vars is None:
            return tf.reduce_sum(tf.cast(self.weights, stacked.dtype) * stacked)
        s = tf.cast(self.log_vars, stacked.dtype)
        # The ½ s regularizer is split across replicas: the optimizer sums replicas' gradients.
        return tf.reduce_sum(self._half() * tf.exp(-s) * stacked + 0.5 * s / self.num_replicas)

    def effective(self) -> dict[str, float]:
        """The weight each task's loss carries now."""
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
                "log_vars": None if self.log_vars is None else self.log_vars.numpy().tolist()}

    def restore(self, state: dict) -> None:
        self.loss_history = list(state.get("loss_history", []))
        self.weights.assign(np.array(state["weights"], np.float32))
        if self.log_vars is not None and state.get("log_vars") is not None:
            self.log_vars.assign(np.array(state["log_vars"], np.float32))
