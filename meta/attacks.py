"""Evasion attacks against a differentiable classifier, for measuring what our detectors catch.

Every attack is a pure function of a ``logits_fn`` (``[n, ...] float32 -> [n, C] logits``) and
returns an :class:`AttackResult`, never a bare array: a benchmark that reports "detected 90% of
adversarial inputs" must also know how many of those inputs actually fooled the model, and how far
they moved, or the number means nothing. ``success`` is judged on the returned array itself
(``argmax != y``, or ``== target`` when targeted), so a record that the model already
misclassified counts as a success with zero perturbation, the convention of robust accuracy.

All attacks work in mini-batches (memory stays bounded on a large test set), clip into the
attacker's input box ``[clip_min, clip_max]`` (scalars or arrays broadcastable to one record), and
are deterministic given ``seed`` and ``batch_size``. ``logits_fn`` is called inside
``tf.function`` (one trace per batch shape), so it must be built from TensorFlow ops: any Keras
model or a function of ``tf.Variable``s is; one that round-trips through numpy is not.

The adaptive attacker, one that knows the detector and wants to stay under its threshold, is
:func:`pgd` with ``extra_loss`` set to a differentiable surrogate of the detector's score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from meta.optim import Adam

LogitsFn = Callable[[tf.Tensor], tf.Tensor]
ExtraLoss = Callable[[tf.Tensor], tf.Tensor]
Progress = Callable[[int, int], None]
Norm = Literal["linf", "l2"]

NORMS: tuple[str, ...] = ("linf", "l2")
# How far outside the box an input may sit before we call it a caller error (float32 round-off).
_BOX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AttackResult:
    """What an attack produced, with enough to report its success rate honestly.

    Attributes
    ----------
    x : np.ndarray
        The adversarial inputs, float32, same shape as the attack's input.
    success : np.ndarray
        bool ``[n]``: the model's prediction on ``x`` differs from ``y`` (untargeted) or equals
        ``target`` (targeted).
    l2, linf : np.ndarray
        float ``[n]``: norms of the perturbation ``x - x_original`` per record.
    details : Mapping[str, Any]
        Attack-specific counts (e.g. records lost to rounding in :func:`constrained_tabular`).
    """

    x: np.ndarray
    success: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    details: Mapping[str, Any] = field(default_factory=dict)


def success_rate(result: AttackResult) -> float:
    """Share of records on which the attack succeeded (``1 - robust accuracy`` if untargeted)."""
    if result.success.size == 0:
        raise ValueError("the attack result holds no records; a success rate needs at least one.")
    return float(np.mean(result.success))


# --------------------------------------------------------------------------- validation helpers


@dataclass(frozen=True)
class _Inputs:
    """Validated attack inputs: float32 records, int labels and the box as float32 rows."""

    x: np.ndarray
    labels: np.ndarray  # y, or target when targeted: the class the loss is computed against
    y: np.ndarray
    target: np.ndarray | None
    low: np.ndarray
    high: np.ndarray


def _labels(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-d array with one label per record ({n}), "
                         f"got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}; "
                         "encode the labels first.")
    return arr.astype(np.int64)


def _box(name: str, bound: Any, row_shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(bound, dtype=np.float32)
    try:
        return np.broadcast_to(arr, row_shape).astype(np.float32)
    except ValueError:
        raise ValueError(f"{name} must be a scalar or broadcastable to one record {row_shape}, "
                         f"got shape {arr.shape}.") from None


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")


def _validate(
    logits_fn: LogitsFn,
    x: Any,
    y: Any,
    target: Any,
    clip_min: Any,
    clip_max: Any,
    batch_size: int,
    in_box: np.ndarray | None = None,
) -> _Inputs:
    """Check shapes, labels and box once, up front, so a bad call fails before any work.

    ``in_box`` (bool, one record's shape) limits the inside-the-box check to those features:
    the tabular attack never moves immutable features, so their bounds do not concern it.
    """
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim < 2 or xa.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [n, ...] of records, got shape {xa.shape}.")
    if not np.all(np.isfinite(xa)):
        raise ValueError("x holds NaN or infinite values; impute them before attacking.")
    _check_positive(batch_size=batch_size)
    n, row = xa.shape[0], xa.shape[1:]
    ya = _labels("y", y, n)
    ta = None if target is None else _labels("target", target, n)
    low, high = _box("clip_min", clip_min, row), _box("clip_max", clip_max, row)
    if np.any(low > high):
        raise ValueError("clip_min must not exceed clip_max on any feature.")
    outside = (xa < low - _BOX_TOLERANCE) | (xa > high + _BOX_TOLERANCE)
    if in_box is not None:
        outside &= in_box
    if np.any(outside):
        raise ValueError("x lies outside [clip_min, clip_max]; clip the inputs or widen the "
                         "bounds, or the perturbation budget cannot be honoured.")
    probe = np.asarray(logits_fn(tf.constant(xa[:1])))
    if probe.ndim != 2 or probe.shape[0] != 1:
        raise ValueError(f"logits_fn must return [n, C] logits, got shape {probe.shape} for one "
                         "record.")
    classes = probe.shape[1]
    for name, arr in (("y", ya), ("target", ta)):
        if arr is not None and (arr.min() < 0 or arr.max() >= classes):
            raise ValueError(f"{name} must lie in [0, {classes}) for a {classes}-class model, "
                             f"got values in [{arr.min()}, {arr.max()}].")
    return _Inputs(xa, ya if ta is None else ta, ya, ta, low, high)


# --------------------------------------------------------------------------- shared machinery


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _gradient_fn(
    logits_fn: LogitsFn,
    targeted: bool,
    extra_loss: ExtraLoss | None = None,
    extra_weight: float = 1.0,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The attacker's objective and its input gradient; the attacker always *ascends* it.

    Untargeted: ``CE(logits, y)``; targeted: ``-CE(logits, target)``; minus
    ``extra_weight * extra_loss(x)`` when an extra penalty is given.
    """
    sign = -1.0 if targeted else 1.0

    @tf.function(reduce_retracing=True)
    def objective_and_gradient(x: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = logits_fn(x)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            objective = sign * ce
            if extra_loss is not None:
                objective = objective - extra_weight * tf.reshape(extra_loss(x), [-1])
        return objective, tape.gradient(objective, x)

    return objective_and_gradient


def _predict(logits_fn: LogitsFn, x: np.ndarray, batch_size: int) -> np.ndarray:
    predictions = [np.argmax(np.asarray(logits_fn(tf.constant(x[s]))), axis=1)
                   for s in _batches(x.shape[0], batch_size)]
    return np.concatenate(predictions)


def _is_success(pred: np.ndarray, y: np.ndarray, target: np.ndarray | None) -> np.ndarray:
    return pred == target if target is not None else pred != y


def _result(
    logits_fn: LogitsFn,
    inputs: _Inputs,
    x_adv: np.ndarray,
    batch_size: int,
    details: Mapping[str, Any] | None = None,
    clip: bool = True,
) -> AttackResult:
    if clip:
        x_adv = np.clip(x_adv, inputs.low, inputs.high)
    x_adv = x_adv.astype(np.float32)
    delta = (x_adv - inputs.x).reshape(x_adv.shape[0], -1).astype(np.float64)
    pred = _predict(logits_fn, x_adv, batch_size)
    return AttackResult(
        x=x_adv,
        success=_is_success(pred, inputs.y, inputs.target),
        l2=np.linalg.norm(delta, axis=1),
        linf=np.abs(delta).max(axis=1),
        details=dict(details or {}),
    )


def _per_record_l2(t: tf.Tensor) -> tf.Tensor:
    """L2 norm of each record of ``t``, shaped to broadcast against ``t``."""
    axes = list(range(1, len(t.shape)))
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True))


def _project(delta: tf.Tensor, eps: float, norm: str) -> tf.Tensor:
    if norm == "linf":
        return tf.clip_by_value(delta, -eps, eps)
    length = _per_record_l2(delta)
    return delta * tf.minimum(1.0, eps / tf.maximum(length, 1e-12))


def _random_start(
    rng: np.random.Generator, shape: tuple[int, ...], eps: float, norm: str
) -> np.ndarray:
    """A uniform draw from the eps-ball (for L2: uniform direction, radius ``eps * u**(1/d)``)."""
    if norm == "linf":
        return rng.uniform(-eps, eps, size=shape).astype(np.float32)
    direction = rng.standard_normal(size=shape)
    flat = direction.reshape(shape[0], -1)
    dims = flat.shape[1]
    radius = eps * rng.uniform(size=(shape[0], 1)) ** (1.0 / dims)
    flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12) * radius
    return flat.reshape(shape).astype(np.float32)


# --------------------------------------------------------------------------- attacks


def fgsm(
    logits_fn: LogitsFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    clip_min: float | np.ndarray,
    clip_max: float | np.ndarray,
    target: np.ndarray | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> AttackResult:
    """Fast gradient sign method (Goodfellow et al., 2015): one signed step of size ``eps``.

    Threat model: the attacker knows the model's gradients and may move every input feature by
    at most ``eps`` (L∞), within ``[clip_min, clip_max]``. It is the cheapest white-box attack
    and a lower bound on what :func:`pgd` achieves at the same budget.

    Parameters
    ----------
    logits_fn : callable
        ``[n, ...] float32 tensor -> [n, C]`` logits; traced by ``tf.function``.
    x : np.ndarray
        Clean records ``[n, ...]`` inside ``[clip_min, clip_max]``.
    y : np.ndarray
        True class index per record.
    eps : float
        L∞ budget, in the units of ``x``.
    clip_min, clip_max : float or np.ndarray
        The valid input box, scalars or broadcastable to one record.
    target : np.ndarray, optional
        Class index per record for a targeted attack (step towards ``target``).
    batch_size : int
        Records per gradient computation.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.
    """
    _check_positive(eps=eps)
    inputs = _validate(logits_fn, x, y, target, clip_min, clip_max, batch_size)
    gradient = _gradient_fn(logits_fn, targeted=target is not None)
    n = inputs.x.shape[0]
    x_adv = np.empty_like(inputs.x)
    for s in _batches(n, batch_size):
        _, grad = gradient(tf.constant(inputs.x[s]), tf.constant(inputs.labels[s]))
        x_adv[s] = inputs.x[s] + eps * np.sign(grad.numpy())
        if progress is not None:
            progress(s.stop, n)
    return _result(logits_fn, inputs, x_adv, batch_size)


def pgd(
    logits_fn: LogitsFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    eps: float,
    norm: Norm = "linf",
    clip_min: float | np.ndarray,
    clip_max: float | np.ndarray,
    step_size: float | None = None,
    steps: int = 40,
    random_start: bool = True,
    seed: int | None = 0,
    target: np.ndarray | None = None,
    extra_loss: ExtraLoss | None = None,
    extra_weight: float = 1.0,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> AttackResult:
    """Projected gradient descent (Madry et al., 2018) under an L∞ or L2 budget.

    Threat model: a white-box attacker who may move each record anywhere within the ``eps``-ball
    around it (``norm``) and inside ``[clip_min, clip_max]``, with ``steps`` gradient queries.

    Each step ascends the attacker's objective and projects back: L∞ takes ``step_size *
    sign(grad)`` and clips the perturbation to ``[-eps, eps]``; L2 takes ``step_size`` along the
    per-record normalised gradient and rescales any perturbation longer than ``eps`` onto the
    sphere. Clipping into the box afterwards only shrinks each coordinate of the perturbation
    (the clean record lies in the box), so the budget still holds.

    **Adaptive attack.** ``extra_loss(x) -> [n]`` is a differentiable penalty that the attacker
    wants *low*, typically a surrogate of a detector's score; the step then ascends
    ``CE(logits_fn(x), y) - extra_weight * extra_loss(x)``, so the result fools the model while
    keeping the detector quiet. Evaluating a detector only against non-adaptive attacks
    overstates it (Carlini & Wagner, 2017; Tramèr et al., 2020): report both.

    Parameters
    ----------
    logits_fn : callable
        ``[n, ...] float32 tensor -> [n, C]`` logits; traced by ``tf.function``.
    x, y : np.ndarray
        Clean records inside ``[clip_min, clip_max]`` and their true class indices.
    eps : float
        Radius of the perturbation ball.
    norm : {"linf", "l2"}
        The ball's norm.
    clip_min, clip_max : float or np.ndarray
        The valid input box, scalars or broadcastable to one record.
    step_size : float, optional
        Defaults to ``2.5 * eps / steps``, enough to cross the ball from any start.
    steps : int
        Gradient steps.
    random_start : bool
        Start from a uniform draw in the ball (``seed`` makes it reproducible).
    seed : int, optional
        Seed of the random start.
    target : np.ndarray, optional
        Class index per record for a targeted attack.
    extra_loss : callable, optional
        Per-record penalty ``[n]`` to minimise alongside the attack (see above).
    extra_weight : float
        Weight of ``extra_loss`` against the cross-entropy.
    batch_size : int
        Records per batch.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.

    Examples
    --------
    A linear model that predicts class 0 when the first feature exceeds the second:

    >>> w = tf.constant([[1.0, -1.0], [-1.0, 1.0]])
    >>> x, y = np.array([[0.6, 0.4]], dtype=np.float32), np.array([0])
    >>> result = pgd(lambda t: tf.matmul(t, w), x, y, eps=0.2, steps=10, clip_min=0.0,
    ...              clip_max=1.0)
    >>> bool(result.success[0]), bool(result.linf[0] <= 0.2 + 1e-6)
    (True, True)
    >>> success_rate(result)
    1.0
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}.")
    _check_positive(eps=eps, steps=steps)
    step = 2.5 * eps / steps if step_size is None else step_size
    _check_positive(step_size=step)
    inputs = _validate(logits_fn, x, y, target, clip_min, clip_max, batch_size)
    gradient = _gradient_fn(logits_fn, target is not None, extra_loss, extra_weight)
    rng = np.random.default_rng(seed)
    low, high = tf.constant(inputs.low), tf.constant(inputs.high)
    n = inputs.x.shape[0]
    x_adv = np.empty_like(inputs.x)
    for s in _batches(n, batch_size):
        clean = tf.constant(inputs.x[s])
        labels = tf.constant(inputs.labels[s])
        current = clean
        if random_start:
            start = _random_start(rng, tuple(clean.shape), eps, norm)
            current = tf.clip_by_value(clean + start, low, high)
        for _ in range(steps):
            _, grad = gradient(current, labels)
            if norm == "linf":
                moved = current + step * tf.sign(grad)
            else:
                moved = current + step * grad / tf.maximum(_per_record_l2(grad), 1e-12)
            current = tf.clip_by_value(clean + _project(moved - clean, eps, norm), low, high)
        x_adv[s] = current.numpy()
        if progress is not None:
            progress(s.stop, n)
    return _result(logits_fn, inputs, x_adv, batch_size)


def _cw_margin(logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
    """``Z_y - max_{i != y} Z_i`` (untargeted) or ``max_{i != t} Z_i - Z_t`` (targeted)."""
    onehot = tf.one_hot(labels, tf.shape(logits)[1], dtype=logits.dtype)
    own = tf.reduce_sum(onehot * logits, axis=1)
    other = tf.reduce_max(logits - onehot * 1e9, axis=1)
    return other - own if targeted else own - other


def carlini_wagner_l2(
    logits_fn: LogitsFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    clip_min: float | np.ndarray,
    clip_max: float | np.ndarray,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 1,
    seed: int | None = 0,
    target: np.ndarray | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> AttackResult:
    """Carlini & Wagner's L2 attack (2017): the smallest perturbation that still fools the model.

    Threat model: a white-box attacker with no fixed budget who wants the least visible change;
    the L2 it needs measures how close each record sits to the decision boundary.

    Optimises ``w`` in tanh space (``x_adv = low + (high - low) * (tanh(w) + 1) / 2``, so the box
    holds without clipping) with Adam, minimising ``||x_adv - x||² + c * f6(x_adv)`` where
    ``f6 = max(Z_y - max_{i≠y} Z_i, -kappa)`` (targeted: ``max(max_{i≠t} Z_i - Z_t, -kappa)``).
    With ``binary_search_steps > 1`` each record's ``c`` is searched: halved towards the last
    failure after a success, multiplied by ten (or bisected) after a failure. For each record the
    smallest-L2 misclassified point seen is kept; a record never misclassified comes back
    unchanged, with ``success`` false (unless the model already got it wrong).

    Parameters
    ----------
    logits_fn : callable
        ``[n, ...] float32 tensor -> [n, C]`` logits; traced by ``tf.function``.
    x, y : np.ndarray
        Clean records inside ``[clip_min, clip_max]`` and their true class indices.
    clip_min, clip_max : float or np.ndarray
        The valid input box, scalars or broadcastable to one record.
    c : float
        Initial weight of the misclassification term.
    kappa : float
        Confidence margin: larger values ask for more confidently wrong predictions.
    steps : int
        Adam steps per binary-search step.
    lr : float
        Adam learning rate in tanh space.
    binary_search_steps : int
        Rounds of the per-record search on ``c``.
    seed : int, optional
        Accepted for a uniform signature; this attack draws no random numbers.
    target : np.ndarray, optional
        Class index per record for a targeted attack.
    batch_size : int
        Records per batch.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.
    """
    del seed  # deterministic: starts from the clean record
    _check_positive(c=c, steps=steps, lr=lr, binary_search_steps=binary_search_steps)
    if kappa < 0:
        raise ValueError(f"kappa must be non-negative, got {kappa}.")
    inputs = _validate(logits_fn, x, y, target, clip_min, clip_max, batch_size)
    targeted = target is not None
    low, span = inputs.low, inputs.high - inputs.low
    # Records on a face of the box would need tanh(w) = ±1; shrink slightly to keep w finite.
    unit = np.where(span > 0, (inputs.x - low) / np.where(span > 0, span, 1.0), 0.5)
    w_clean = np.arctanh(np.clip(unit * 2.0 - 1.0, -1.0, 1.0) * 0.999999).astype(np.float32)
    low_t, span_t = tf.constant(low), tf.constant(span)

    def to_input(w: tf.Tensor) -> tf.Tensor:
        return low_t + span_t * (tf.tanh(w) + 1.0) / 2.0

    @tf.function(reduce_retracing=True)
    def loss_and_gradient(
        w: tf.Tensor, clean: tf.Tensor, labels: tf.Tensor, const: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(w)
            adv = to_input(w)
            logits = logits_fn(adv)
            distance = tf.reduce_sum(tf.reshape(tf.square(adv - clean), [tf.shape(adv)[0], -1]),
                                     axis=1)
            f6 = tf.maximum(_cw_margin(logits, labels, targeted), -kappa)
            loss = tf.reduce_sum(distance + const * f6)
        return adv, logits, distance, tape.gradient(loss, w)

    n = inputs.x.shape[0]
    x_adv = inputs.x.copy()
    for s in _batches(n, batch_size):
        clean = tf.constant(inputs.x[s])
        labels = tf.constant(inputs.labels[s])
        m = s.stop - s.start
        const = np.full(m, c, dtype=np.float32)
        lower, upper = np.zeros(m), np.full(m, np.inf)
        best_l2 = np.full(m, np.inf)
        best = inputs.x[s].copy()
        for _ in range(binary_search_steps):
            w = tf.Variable(w_clean[s])
            adam = Adam([w], learning_rate=lr)
            succeeded = np.zeros(m, dtype=bool)
            const_t = tf.constant(const)
            for _ in range(steps):
                adv, logits, distance, grad = loss_and_gradient(w, clean, labels, const_t)
                hit = _is_success(np.argmax(logits.numpy(), axis=1), inputs.y[s],
                                  None if inputs.target is None else inputs.target[s])
                l2 = np.sqrt(distance.numpy())
                better = hit & (l2 < best_l2)
                best[better] = adv.numpy()[better]
                best_l2[better] = l2[better]
                succeeded |= hit
                adam.apply([grad])
            upper = np.where(succeeded, np.minimum(upper, const), upper)
            lower = np.where(succeeded, lower, np.maximum(lower, const))
            const = np.where(np.isfinite(upper), (lower + upper) / 2.0, const * 10.0)
            const = const.astype(np.float32)
        x_adv[s] = best
        if progress is not None:
            progress(s.stop, n)
    return _result(logits_fn, inputs, x_adv, batch_size)


@dataclass(frozen=True)
class _TabularSpace:
    """Which columns the tabular attacker may move, and how each kind is kept valid."""

    mutable: np.ndarray  # bool [d]
    integer: np.ndarray  # bool [d]: mutable integer columns outside one-hot groups
    continuous: np.ndarray  # bool [d]: mutable columns bound by eps (integers included)
    groups: tuple[np.ndarray, ...]  # mutable one-hot groups, column indices

    def discretise(self, x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Round integers inside their per-record box and snap each group to its argmax."""
        out = x.copy()
        if self.integer.any():
            cols = self.integer
            lo, hi = np.ceil(low[:, cols] - 1e-6), np.floor(high[:, cols] + 1e-6)
            out[:, cols] = np.clip(np.round(x[:, cols]), lo, hi)
        for group in self.groups:
            block = np.zeros((x.shape[0], group.size), dtype=x.dtype)
            block[np.arange(x.shape[0]), np.argmax(x[:, group], axis=1)] = 1.0
            out[:, group] = block
        return out

    @property
    def needs_discretising(self) -> bool:
        return bool(self.integer.any()) or bool(self.groups)


def _tabular_space(
    x: np.ndarray,
    mutable: Any,
    integer: Any,
    onehot_groups: list[list[int]] | None,
) -> _TabularSpace:
    d = x.shape[1]
    masks = {}
    for name, value in (("mutable", mutable), ("integer", integer)):
        arr = np.zeros(d, dtype=bool) if value is None else np.asarray(value)
        if arr.dtype != bool or arr.shape != (d,):
            raise ValueError(f"{name} must be a bool array with one entry per feature ({d}), "
                             f"got dtype {arr.dtype} and shape {arr.shape}.")
        masks[name] = arr
    mutable_mask = masks["mutable"]
    in_group = np.zeros(d, dtype=bool)
    groups = []
    for group in onehot_groups or []:
        cols = np.asarray(group, dtype=np.int64)
        if cols.size < 2 or np.unique(cols).size != cols.size or cols.min() < 0 or cols.max() >= d:
            raise ValueError(f"one-hot group {list(group)} must list two or more distinct "
                             f"columns in [0, {d}).")
        if in_group[cols].any():
            raise ValueError(f"one-hot group {list(group)} shares a column with another group.")
        in_group[cols] = True
        if mutable_mask[cols].any() != mutable_mask[cols].all():
            raise ValueError(f"one-hot group {list(group)} is partly mutable; mark all of its "
                             "columns mutable or none.")
        if mutable_mask[cols].all():
            block = x[:, cols]
            if not (np.isin(block, (0.0, 1.0)).all() and (block.sum(axis=1) == 1).all()):
                raise ValueError(f"one-hot group {list(group)} is not one-hot in x; encode "
                                 "the category as exactly one 1 per record.")
            groups.append(cols)
    continuous = mutable_mask & ~in_group
    integer_mask = masks["integer"] & continuous
    if np.any(x[:, integer_mask] != np.round(x[:, integer_mask])):
        raise ValueError("x holds non-integer values in features marked integer; round them "
                         "or unmark the features.")
    return _TabularSpace(mutable_mask, integer_mask, continuous, tuple(groups))


def constrained_tabular(
    logits_fn: LogitsFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    mutable: np.ndarray,
    lower: float | np.ndarray,
    upper: float | np.ndarray,
    eps: float,
    integer: np.ndarray | None = None,
    onehot_groups: list[list[int]] | None = None,
    steps: int = 50,
    step_size: float | None = None,
    random_start: bool = True,
    seed: int | None = 0,
    target: np.ndarray | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> AttackResult:
    """L∞ PGD on tabular records that stay valid records: the realistic evasion of a data stream.

    Threat model: the attacker controls only some fields of a record (``mutable``: e.g. payload
    size, not the protocol a server logged), each by at most ``eps`` and within its domain
    ``[lower, upper]``; the result must still be a record the pipeline would accept.

    Constraints, and how each is kept:

    * immutable features are copied from ``x`` unchanged, bit for bit;
    * mutable continuous features move at most ``eps`` and stay in ``[lower, upper]``;
    * ``integer`` features are rounded at the end, inside the same per-feature box;
    * a one-hot group is all mutable or all immutable; a mutable group is relaxed to ``[0, 1]``
      during the search (step ``2.5 / steps``, outside the ``eps`` budget, since switching a
      category is a move of 1 whatever ``eps`` is) and snapped to its argmax at the end.

    Rounding can undo a success, so every iterate is also discretised and checked: the first
    discretised iterate that fools the model is returned, otherwise the discretised last one.
    ``details["lost_to_rounding"]`` counts records whose continuous iterate fooled the model but
    no discretised one did. ``l2``/``linf`` are over all features, one-hot flips included.

    Parameters
    ----------
    logits_fn : callable
        ``[n, d] float32 tensor -> [n, C]`` logits; traced by ``tf.function``.
    x, y : np.ndarray
        Clean records ``[n, d]`` and their true class indices.
    mutable : np.ndarray
        bool ``[d]``: features the attacker may change.
    lower, upper : float or np.ndarray
        Per-feature domain; mutable continuous features of ``x`` must lie inside it.
    eps : float
        L∞ budget on mutable features outside one-hot groups.
    integer : np.ndarray, optional
        bool ``[d]``: integer-valued features (their values in ``x`` must be integers).
    onehot_groups : list of list of int, optional
        Column indices of each one-hot encoded category.
    steps, step_size, random_start, seed, target, batch_size, progress
        As in :func:`pgd` (``step_size`` defaults to ``2.5 * eps / steps``).
    """
    _check_positive(eps=eps, steps=steps)
    step = 2.5 * eps / steps if step_size is None else step_size
    _check_positive(step_size=step)
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim != 2:
        raise ValueError(f"x must be a table [n, d], got shape {xa.shape}.")
    space = _tabular_space(xa, mutable, integer, onehot_groups)
    inputs = _validate(logits_fn, xa, y, target, lower, upper, batch_size,
                       in_box=space.continuous)
    gradient = _gradient_fn(logits_fn, targeted=target is not None)
    rng = np.random.default_rng(seed)
    in_group = space.mutable & ~space.continuous
    steps_per_column = np.where(in_group, 2.5 / steps, step).astype(np.float32)
    n = xa.shape[0]
    x_adv = np.empty_like(xa)
    lost = 0
    for s in _batches(n, batch_size):
        clean = inputs.x[s]
        # The per-record box: the eps-ball within the domain, [0, 1] for groups, a point elsewhere.
        low = np.where(space.continuous, np.maximum(inputs.low, clean - eps), clean)
        high = np.where(space.continuous, np.minimum(inputs.high, clean + eps), clean)
        low, high = np.where(in_group, 0.0, low), np.where(in_group, 1.0, high)
        labels = tf.constant(inputs.labels[s])
        y_s, t_s = inputs.y[s], None if inputs.target is None else inputs.target[s]
        current = clean.copy()
        if random_start:
            current = rng.uniform(low, high).astype(np.float32)
        found = np.zeros(clean.shape[0], dtype=bool)
        best = clean.copy()
        for _ in range(steps):
            _, grad = gradient(tf.constant(current), labels)
            current = np.clip(current + steps_per_column * np.sign(grad.numpy()), low, high)
            current = current.astype(np.float32)
            if space.needs_discretising:
                snapped = space.discretise(current, low, high)
                hit = _is_success(_predict(logits_fn, snapped, batch_size), y_s, t_s) & ~found
                best[hit] = snapped[hit]
                found |= hit
        final = space.discretise(current, low, high)
        continuous_hit = _is_success(_predict(logits_fn, current, batch_size), y_s, t_s)
        final_hit = _is_success(_predict(logits_fn, final, batch_size), y_s, t_s)
        lost += int(np.sum(continuous_hit & ~final_hit & ~found))
        batch_adv = np.where(found[:, None], best, final)
        batch_adv[:, ~space.mutable] = clean[:, ~space.mutable]
        x_adv[s] = batch_adv
        if progress is not None:
            progress(s.stop, n)
    return _result(logits_fn, inputs, x_adv, batch_size, {"lost_to_rounding": lost}, clip=False)
