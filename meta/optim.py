"""A small Adam whose state is a handful of named tensors.

Meta-training must resume from a checkpoint exactly, and checkpoints must be plain ``.npz``
arrays (never pickles); owning the optimizer's few slot variables makes both trivial and keeps
the update usable from a replica-free, cross-replica context under a distribution strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


class Adam:
    """Adam (Kingma & Ba) over a fixed list of ``tf.Variable``s, with exportable state."""

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        *,
        learning_rate: float = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
        if not (0.0 <= beta_1 < 1.0 and 0.0 <= beta_2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {beta_1}, {beta_2}.")
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._variables = list(variables)
        self._m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._variables]
        self._v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self._variables]
        self._t = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    def apply(self, gradients: Sequence[tf.Tensor]) -> None:
        self._t.assign_add(1.0)
        t = self._t
        correction = tf.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        for var, grad, m, v in zip(self._variables, gradients, self._m, self._v, strict=True):
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * grad)
            v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad))
            var.assign_sub(self.learning_rate * correction * m / (tf.sqrt(v) + self.epsilon))

    def state_arrays(self) -> dict[str, np.ndarray]:
        state = {"adam/t": np.asarray(self._t.numpy())}
        for i, (m, v) in enumerate(zip(self._m, self._v, strict=True)):
            state[f"adam/m/{i}"] = m.numpy()
            state[f"adam/v/{i}"] = v.numpy()
        return state

    def load_state_arrays(self, state: dict[str, np.ndarray]) -> None:
        self._t.assign(float(state["adam/t"]))
        for i, (m, v) in enumerate(zip(self._m, self._v, strict=True)):
            m.assign(state[f"adam/m/{i}"])
            v.assign(state[f"adam/v/{i}"])
