"""Classic sequential change detectors over a univariate stream of detector scores.

CUSUM, Page–Hinkley and ADWIN watch a stream of per-record scores (a classifier's error, a
record's novelty, its distance to the reference) and raise an alarm when the stream's mean
moves. Each ``update(values)`` returns the positions within ``values`` where an alarm fired;
the detector then starts afresh (for ADWIN: an empty window), so run lengths between false
alarms are independent and :func:`calibrate` can choose the alarm level from bootstrap
streams of null scores so that the mean run length is at least an expected run time (ERT).

Results do not depend on how the stream is cut into ``update`` calls: values are standardised
by the null ``mean``/``std`` (or, when not given, by those of the first ``warmup`` values after
each reset: a self-starting detector), clipped to ±8 standard deviations (one wild score moves
the statistic by at most that much) and quantised to 2⁻¹⁶ standard deviations, so that every
sum is an exact integer sum whatever the chunking. Uncalibrated, the default thresholds give
roughly one false alarm in a few thousand values on Gaussian or 0/1 error streams; use
:func:`calibrate` for a stated ERT. CUSUM and Page–Hinkley are vectorised with
cumulative sums (a Python loop runs only once per alarm); ADWIN keeps an exponential
histogram (Bifet & Gavaldà 2007) and inserts a whole ``clock`` of values at a time, which
yields the same buckets as inserting them one by one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

__all__ = ["Adwin", "Calibration", "Cusum", "Direction", "Method", "PageHinkley",
           "RunLengthFit", "Scan", "calibrate", "calibrate_threshold", "run_length_threshold"]

Direction = Literal["up", "down", "both"]
RESOLUTION = 2**16  # integer units per standard deviation
CLIP = 8.0
_CHUNK = 4096  # values per vectorised step: bounds the work an alarm can waste
_NULL_SAMPLE = 20_000


@dataclass(frozen=True)
class Scan:
    """What one :meth:`update` saw: alarm positions and the statistic after every value.

    At an alarm, ``statistic`` holds the value that crossed the threshold (before the reset).
    """

    alarms: np.ndarray
    statistic: np.ndarray


def _check_number(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


class _ChangeDetector(ABC):
    """Shared parameters, standardisation, the alarm loop and persistence.

    Subclasses keep the statistic: ``_reset_statistic`` forgets it and ``_advance`` feeds it
    values until the first alarm. Values are standardised by ``mean`` and ``std``; a detector
    given neither learns them from the first ``warmup`` values after every reset (a
    self-starting detector, for streams whose null is not known in advance; no alarm while
    it learns).
    """

    name: ClassVar[str]
    _state_fields: ClassVar[tuple[str, ...]]

    def __init__(self, threshold: float, *, mean: float | None, std: float | None,
                 warmup: int, grace_period: int) -> None:
        self.threshold = _check_number("threshold", threshold)
        self.mean = None if mean is None else _check_number("mean", mean)
        self.std = None if std is None else _check_number("std", std, positive=True)
        self.warmup = _check_int("warmup", warmup, 2)
        self.grace_period = _check_int("grace_period", grace_period, 1)
        self.reset()

    def reset(self) -> None:
        """Forget everything since the last reset (what happens after every alarm)."""
        self._count = 0
        self._statistic = -math.inf
        self._center = math.nan if self.mean is None else self.mean
        self._spread = math.nan if self.std is None else self.std
        self._warm = np.zeros(0)
        self._reset_statistic()

    @abstractmethod
    def _reset_statistic(self) -> None:
        ...

    @property
    def statistic(self) -> float:
        """The statistic after the last value (``-inf`` before any)."""
        return self._statistic

    @property
    def count(self) -> int:
        """Values seen since the last reset."""
        return self._count

    @property
    def memory(self) -> int:
        """How many of the most recent values determine the state: a fresh detector fed them
        is in the same state (for restarts that replay records instead of saving state)."""
        return self._count

    @property
    def learning(self) -> bool:
        """Whether the detector is still learning its standardisation (self-starting)."""
        return math.isnan(self._center) or math.isnan(self._spread)

    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed ``values`` in order; the positions within them where an alarm fired."""
        return self.scan(values).alarms

    def scan(self, values: np.ndarray) -> Scan:
        """Feed ``values``: alarm positions within them and the statistic after each."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise ValueError(f"{type(self).__name__}.update needs finite values.")
        statistic = np.full(values.size, -np.inf)
        alarms: list[int] = []
        position = 0
        while position < values.size:
            if self.learning:
                take = min(values.size - position, self.warmup - self._warm.size)
                self._warm = np.concatenate([self._warm, values[position:position + take]])
                self._count += take
                position += take
                if self._warm.size == self.warmup:
                    self._learn()
                continue
            stat, alarm = self._advance(values[position:])
            statistic[position:position + stat.size] = stat
            if alarm is None:
                break
            alarms.append(position + alarm)
            self.reset()
            position += alarm + 1
        return Scan(np.asarray(alarms, dtype=np.int64), statistic)

    def _learn(self) -> None:
        if self.mean is None:
            self._center = float(self._warm.mean())
        if self.std is None:
            # A constant warm-up says nothing about the scale: fall back to the data's units.
            self._spread = float(self._warm.std(ddof=1)) or 1.0

    @abstractmethod
    def _advance(self, values: np.ndarray) -> tuple[np.ndarray, int | None]:
        """Feed ``values`` up to the first alarm: the statistic after each value fed and the
        alarm's position (``None``: all fed, no alarm)."""
        ...

    @abstractmethod
    def null_paths(self, values: np.ndarray) -> np.ndarray:
        """Statistic paths of fresh detectors over the rows of ``values``, never alarming;
        ``-inf`` where no alarm may fire."""
        ...

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """Standardised, clipped values in integer units of 2⁻¹⁶ standard deviations."""
        z = np.clip((np.asarray(values, dtype=np.float64) - self._center) / self._spread,
                    -CLIP, CLIP)
        return np.rint(z * RESOLUTION).astype(np.int64)

    def _fixed_scale(self) -> None:
        if self.mean is None or self.std is None:
            raise ValueError(f"{type(self).__name__} needs mean and std for null paths; "
                             "calibrate() sets them from the null scores.")

    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        ...

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({arguments})"

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and state as plain arrays (``numpy.savez``-ready, no pickle)."""
        state = {f"params.{k}": np.asarray(_storable(v)) for k, v in self.get_params().items()}
        state.update({f"state.{k}": np.asarray(getattr(self, f"_{k}")) for k in
                      ("count", "statistic", "center", "spread", "warm",
                       *self._state_fields)})
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Resume from :meth:`state_dict`; the parameters must match this instance's."""
        saved = {k[7:]: state[k].item() for k in state if k.startswith("params.")}
        current = {k: _storable(v) for k, v in self.get_params().items()}
        if saved != current:
            raise ValueError(f"The state was saved with parameters {saved}, not {current}.")
        self._count = int(state["state.count"])
        self._statistic = float(state["state.statistic"])
        self._center = float(state["state.center"])
        self._spread = float(state["state.spread"])
        self._warm = np.array(state["state.warm"], dtype=np.float64)
        for key in self._state_fields:
            value = np.asarray(state[f"state.{key}"])
            setattr(self, f"_{key}", value.copy() if value.ndim else value.item())


def _storable(value: Any) -> Any:
    """A parameter as a no-pickle array holds it (``None`` as the text ``"none"``)."""
    return "none" if value is None else value


class _CumulativeDetector(_ChangeDetector):
    """A detector whose statistic along a chunk follows from cumulative sums (CUSUM, PH)."""

    def __init__(self, threshold: float, *, drift: float, direction: Direction,
                 mean: float | None, std: float | None, warmup: int, grace_period: int) -> None:
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be one of ['up', 'down', 'both'], got "
                             f"{direction!r}.")
        self.drift = _check_number("drift", drift)
        if self.drift < 0:
            raise ValueError(f"drift must not be negative, got {drift!r}.")
        self.direction: Direction = direction
        super().__init__(threshold, mean=mean, std=std, warmup=warmup,
                         grace_period=grace_period)

    def get_params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "drift": self.drift, "direction": self.direction,
                "mean": self.mean, "std": self.std, "warmup": self.warmup,
                "grace_period": self.grace_period}

    @abstractmethod
    def path(self, q: np.ndarray, state: dict[str, Any] | None = None
             ) -> tuple[np.ndarray, dict[str, Any]]:
        """Statistic after each value of ``q`` (last axis) without alarms, and the end state.

        ``state`` defaults to this detector's; a fresh state (``{}``) gives null paths for
        calibration, row by row when ``q`` is 2-D.
        """
        ...

    def null_paths(self, values: np.ndarray) -> np.ndarray:
        """Statistic paths of fresh detectors over the rows of ``values``, never alarming;
        ``-inf`` where the grace period forbids an alarm."""
        self._fixed_scale()
        values = np.atleast_2d(values)
        stat, _ = self.path(self.quantise(values), {})
        stat[:, : self.grace_period - 1] = -np.inf
        return stat

    def _own_state(self) -> dict[str, Any]:
        return {k: getattr(self, f"_{k}") for k in self._state_fields}

    def _advance(self, values: np.ndarray) -> tuple[np.ndarray, int | None]:
        fed: list[np.ndarray] = []
        done = 0
        while done < values.size:
            chunk = self.quantise(values[done:done + _CHUNK])
            stat, end_state = self.path(chunk, self._own_state())
            counts = self._count + np.arange(1, chunk.size + 1)
            crossed = np.flatnonzero((stat > self.threshold) & (counts >= self.grace_period))
            if crossed.size:
                first = int(crossed[0])
                fed.append(stat[: first + 1])
                self._count += first + 1
                return np.concatenate(fed), done + first
            for key, value in end_state.items():
                setattr(self, f"_{key}", value)
            self._count += chunk.size
            self._statistic = float(stat[-1])
            fed.append(stat)
            done += chunk.size
        return np.concatenate(fed), None


def _signed(direction: Direction) -> tuple[bool, bool]:
    return direction in ("up", "both"), direction in ("down", "both")


class Cusum(_CumulativeDetector):
    """Page's CUSUM: ``g = max(0, g + z - drift)``; alarm when ``g > threshold``.

    The optimal test for a known step of the mean by ``2 * drift`` standard deviations, and the
    natural choice when the score's null distribution is known (``mean``, ``std``). With the
    Lindley recursion written as ``g_t = S_t - min(0, min_s S_s)`` over the partial sums ``S``,
    a whole chunk is one cumulative sum. ``direction="both"`` runs an upward and a downward
    CUSUM and alarms on either.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cusum = Cusum(threshold=8.0, mean=0.0, std=1.0)
    >>> cusum.update(rng.normal(0, 1, 1000)).tolist(), cusum.update(rng.normal(2, 1, 50))[:1]
    ([], array([4]))
    """

    name = "cusum"
    _state_fields = ("up", "down", "since_up", "since_down")

    def __init__(self, threshold: float = 10.0, *, drift: float = 0.5,
                 direction: Direction = "up", mean: float | None = None,
                 std: float | None = None, warmup: int = 30, grace_period: int = 1) -> None:
        super().__init__(threshold, drift=drift, direction=direction, mean=mean, std=std,
                         warmup=warmup, grace_period=grace_period)

    def _reset_statistic(self) -> None:
        self._up = self._down = self._since_up = self._since_down = 0

    @property
    def memory(self) -> int:
        # Fed from any point before the last zero of g, a fresh CUSUM is at zero there too
        # (the recursion is monotone in its start), so only the values since then matter;
        # unless it learnt its scale since the reset.
        if self.mean is None or self.std is None:
            return self._count
        return min(self._count, max(self._since_up, self._since_down))

    def path(self, q: np.ndarray, state: dict[str, Any] | None = None
             ) -> tuple[np.ndarray, dict[str, Any]]:
        state = state or {}
        k = int(round(self.drift * RESOLUTION))
        use_up, use_down = _signed(self.direction)
        stat = np.full(q.shape, -np.inf)
        end: dict[str, Any] = {}
        for used, key, sign in ((use_up, "up", 1), (use_down, "down", -1)):
            if not used:
                end[key], end[f"since_{key}"] = 0, 0
                continue
            partial = state.get(key, 0) + np.cumsum(sign * q - k, axis=-1)
            g = partial - np.minimum(0, np.minimum.accumulate(partial, axis=-1))
            stat = np.maximum(stat, g / RESOLUTION)
            if q.ndim == 1:
                zeros = np.flatnonzero(g == 0)
                end[key] = int(g[-1])
                end[f"since_{key}"] = (int(q.size - 1 - zeros[-1]) if zeros.size
                                       else state.get(f"since_{key}", 0) + q.size)
            else:
                end[key] = g[..., -1]
        return stat, end


class PageHinkley(_CumulativeDetector):
    """Page–Hinkley: deviations from the running mean since the last reset, minus ``drift``.

    ``m_t = sum(z_s - mean(z_1..z_s) - drift)``; alarm when ``m_t - min m > threshold`` (and
    symmetrically downward). Unlike CUSUM it estimates the pre-change mean from the stream
    itself, so it needs no null mean, at the price of a state that depends on every value
    since the reset.
    """

    name = "page_hinkley"
    _state_fields = ("n", "total", "m_up", "low", "m_down", "high")

    def __init__(self, threshold: float = 25.0, *, drift: float = 0.1,
                 direction: Direction = "up", mean: float | None = None,
                 std: float | None = None, warmup: int = 30, grace_period: int = 30) -> None:
        super().__init__(threshold, drift=drift, direction=direction, mean=mean, std=std,
                         warmup=warmup, grace_period=grace_period)

    def _reset_statistic(self) -> None:
        self._n = self._total = self._m_up = self._low = self._m_down = self._high = 0

    def path(self, q: np.ndarray, state: dict[str, Any] | None = None
             ) -> tuple[np.ndarray, dict[str, Any]]:
        state = state or {}
        k = int(round(self.drift * RESOLUTION))
        counts = state.get("n", 0) + np.arange(1, q.shape[-1] + 1)
        totals = state.get("total", 0) + np.cumsum(q, axis=-1)
        running_mean = np.rint(totals / counts).astype(np.int64)
        use_up, use_down = _signed(self.direction)
        m_up = state.get("m_up", 0) + np.cumsum(q - running_mean - k, axis=-1)
        low = np.minimum(state.get("low", 0), np.minimum.accumulate(m_up, axis=-1))
        m_down = state.get("m_down", 0) + np.cumsum(q - running_mean + k, axis=-1)
        high = np.maximum(state.get("high", 0), np.maximum.accumulate(m_down, axis=-1))
        stat = np.full(q.shape, -np.inf)
        if use_up:
            stat = np.maximum(stat, (m_up - low) / RESOLUTION)
        if use_down:
            stat = np.maximum(stat, (high - m_down) / RESOLUTION)
        last = (lambda a: a[..., -1]) if q.ndim > 1 else (lambda a: int(a[-1]))
        end = {"n": int(counts[-1]), "total": last(totals), "m_up": last(m_up),
               "low": last(low), "m_down": last(m_down), "high": last(high)}
        return stat, end


class Adwin(_ChangeDetector):
    """ADWIN: alarm when two halves of an adaptive window have different means.

    The window since the last reset is kept as an exponential histogram (at most
    ``max_buckets`` buckets of each size 1, 2, 4, …; memory logarithmic in its length). Every
    ``clock`` values, each split between buckets into an older part ``W0`` and a newer part
    ``W1`` (both at least ``min_window_length``) is tested with Bernstein's bound:
    ``|mean0 - mean1| > sqrt(2 m v L) + 2 m L / 3`` where ``v`` is the window variance,
    ``m = 1/(n0 - l + 1) + 1/(n1 - l + 1)`` and ``L = ln(2 ln(n) / delta)``. Solving the bound
    for ``L`` gives each split's *margin*; the statistic is the largest margin minus
    ``ln(2 ln n)``, and an alarm is ``statistic > ln(1 / delta)``, which lets :func:`calibrate`
    choose ``delta`` like any threshold. A calibrated ``delta`` is an alarm level, not a
    probability, and may exceed 1 when the bound is loose for the stream at hand.
    """

    name = "adwin"
    _state_fields = ("sizes", "sums", "squares")

    def __init__(self, delta: float = 0.002, *, clock: int = 32, max_buckets: int = 5,
                 min_window_length: int = 5, grace_period: int = 10,
                 mean: float | None = None, std: float | None = None, warmup: int = 30,
                 max_window: int = 2**22) -> None:
        self.delta = _check_number("delta", delta, positive=True)
        self.clock = _check_int("clock", clock, 1)
        self.max_buckets = _check_int("max_buckets", max_buckets, 2)
        self.min_window_length = _check_int("min_window_length", min_window_length, 1)
        self.max_window = _check_int("max_window", max_window, 2 * self.min_window_length)
        if self.max_window > 2**24:
            raise ValueError(f"max_window must be at most 2**24 (exact integer sums), got "
                             f"{max_window!r}.")
        super().__init__(math.log(1.0 / self.delta), mean=mean, std=std, warmup=warmup,
                         grace_period=grace_period)

    def get_params(self) -> dict[str, Any]:
        return {"delta": self.delta, "clock": self.clock, "max_buckets": self.max_buckets,
                "min_window_length": self.min_window_length, "grace_period": self.grace_period,
                "mean": self.mean, "std": self.std, "warmup": self.warmup,
                "max_window": self.max_window}

    def _reset_statistic(self) -> None:
        self._sizes = np.zeros(0, dtype=np.int64)  # oldest bucket first
        self._sums = np.zeros(0, dtype=np.int64)
        self._squares = np.zeros(0, dtype=np.int64)

    @property
    def width(self) -> int:
        """Values in the window."""
        return int(self._sizes.sum())

    def _advance(self, values: np.ndarray) -> tuple[np.ndarray, int | None]:
        q = self.quantise(values)
        statistic = np.empty(q.size)
        position = 0
        while position < q.size:
            take = min(q.size - position, self.clock - self._count % self.clock)
            self._insert(q[position:position + take])
            self._count += take
            statistic[position:position + take] = self._statistic
            position += take
            if self._count % self.clock or self._count < self.grace_period:
                continue
            self._statistic = statistic[position - 1] = self._margin()
            if self._statistic > self.threshold:
                return statistic[:position], position - 1
        return statistic, None

    def null_paths(self, values: np.ndarray) -> np.ndarray:
        """Statistic paths of fresh detectors over the rows of ``values``, never alarming.

        Without alarms the buckets' sizes depend on the count only, so one template histogram
        gives every stream's bucket bounds and their sums come from prefix sums: all streams
        are tested at once. Entries between checks are ``-inf``.
        """
        self._fixed_scale()
        values = np.atleast_2d(values)
        streams, horizon = values.shape[0], values.shape[1]
        q = self.quantise(values)
        prefix = np.zeros((streams, horizon + 1), dtype=np.int64)
        np.cumsum(q, axis=1, out=prefix[:, 1:])
        prefix_squares = np.zeros_like(prefix)
        np.cumsum(q * q, axis=1, out=prefix_squares[:, 1:])
        template = Adwin(**self.get_params())
        stat = np.full((streams, horizon), -np.inf)
        for end in range(self.clock, horizon + 1, self.clock):
            template._insert(np.zeros(self.clock, dtype=np.int64))
            if end < self.grace_period:
                continue
            bounds = end - template.width + np.concatenate([[0], np.cumsum(template._sizes)])
            stat[:, end - 1] = _margins(template._sizes, np.diff(prefix[:, bounds], axis=1),
                                        np.diff(prefix_squares[:, bounds], axis=1),
                                        self.min_window_length)
        return stat

    def _insert(self, q: np.ndarray) -> None:
        """Append values as size-1 buckets, then merge the oldest pairs of every overfull size.

        Merging ``ceil((k - M) / 2)`` oldest pairs at once leaves the buckets one-at-a-time
        insertion would: that merges the two oldest whenever a size holds ``M + 1``.
        """
        sizes = np.concatenate([self._sizes, np.ones(q.size, dtype=np.int64)])
        sums = np.concatenate([self._sums, q])
        squares = np.concatenate([self._squares, q * q])
        size = 1
        while True:
            level = np.flatnonzero(sizes == size)
            if level.size <= self.max_buckets:
                break
            merges = (level.size - self.max_buckets + 1) // 2
            a, b = int(level[0]), int(level[0]) + 2 * merges
            sizes, sums, squares = (
                np.concatenate([x[:a], x[a:b].reshape(merges, 2).sum(axis=1), x[b:]])
                for x in (sizes, sums, squares))
            size *= 2
        while sizes.sum() > self.max_window:  # forget the oldest bucket
            sizes, sums, squares = sizes[1:], sums[1:], squares[1:]
        self._sizes, self._sums, self._squares = sizes, sums, squares

    def _margin(self) -> float:
        return float(_margins(self._sizes, self._sums[None], self._squares[None],
                              self.min_window_length)[0])


def _margins(sizes: np.ndarray, sums: np.ndarray, squares: np.ndarray, low: int) -> np.ndarray:
    """ADWIN's statistic for buckets ``sizes`` holding ``sums``/``squares`` (one row a window).

    Each split's margin is the ``L`` at which Bernstein's bound equals the gap between the
    older and the newer part's means (a quadratic in ``sqrt(L)``); the statistic is the
    largest margin minus ``ln(2 ln n)``, ``-inf`` when no split leaves ``low`` values a side.
    """
    n = int(sizes.sum())
    older = np.cumsum(sizes)[:-1]
    valid = (older >= low) & (n - older >= low)
    if n < 2 or not valid.any():
        return np.full(sums.shape[0], -np.inf)
    n0 = older[valid].astype(np.float64)
    n1 = n - n0
    total = sums.sum(axis=1, keepdims=True) / RESOLUTION
    s0 = np.cumsum(sums, axis=1)[:, :-1][:, valid] / RESOLUTION
    gap = np.abs(s0 / n0 - (total - s0) / n1)
    variance = np.maximum(squares.sum(axis=1, keepdims=True) / RESOLUTION**2 / n
                          - (total / n) ** 2, 0.0)
    m = 1.0 / (n0 - low + 1) + 1.0 / (n1 - low + 1)
    a, c = 2.0 * m * variance, 2.0 * m / 3.0
    root = (np.sqrt(a + 4.0 * c * gap) - np.sqrt(a)) / (2.0 * c)
    return (root * root).max(axis=1) - math.log(2.0 * math.log(n))


# -- calibration to an expected run time -------------------------------------------------------


@dataclass(frozen=True)
class RunLengthFit:
    """The threshold whose mean run length on null streams reaches the ERT, and the null.

    ``mean_run_length`` is the mean first-passage time over the streams, counting a stream
    that never crossed within ``horizon`` as ``horizon`` (a lower bound, so the true mean run
    length is at least this). ``null_statistics`` is a sorted sample of the statistic along
    the null streams, with the threshold itself included so that "statistic > threshold" and
    "p-value <= alpha" (see :meth:`p_value`) are the same decision.
    """

    threshold: float
    mean_run_length: float
    horizon: int
    n_streams: int
    null_statistics: np.ndarray = field(repr=False)

    def p_value(self, statistic: float) -> float:
        """Share of null positions (plus one) whose statistic is at least ``statistic``."""
        null = self.null_statistics
        at_least = null.size - int(np.searchsorted(null, statistic, side="left"))
        return (1.0 + at_least) / (1.0 + null.size)

    @property
    def alpha(self) -> float:
        """:meth:`p_value` just above the threshold: what a null position exceeds it with."""
        null = self.null_statistics
        above = null.size - int(np.searchsorted(null, self.threshold, side="right"))
        return (1.0 + above) / (1.0 + null.size)


def run_length_threshold(paths: Iterable[np.ndarray], ert: float, *, seed: int = 0,
                         null_sample: int = _NULL_SAMPLE) -> RunLengthFit:
    """Smallest threshold whose mean first-passage time over null streams is at least ``ert``.

    ``paths`` yields blocks ``[streams, horizon]``: the statistic after each value of a stream
    from a fresh start, never reset, ``-inf`` where no alarm may fire. An alarm falls on the
    first value whose statistic exceeds the threshold, so a stream's run length for every
    threshold follows from the times its running maximum rises (its ladder points), which
    is all that is kept.
    """
    rng = np.random.default_rng(seed)
    rows, times, values, sample = [], [], [], []
    n_streams, horizon = 0, 0
    for block in paths:
        block = np.asarray(block, dtype=np.float64)
        horizon = block.shape[1]
        running = np.maximum.accumulate(block, axis=1)
        rises = np.empty(running.shape, dtype=bool)
        rises[:, 0] = np.isfinite(running[:, 0])
        rises[:, 1:] = running[:, 1:] > running[:, :-1]
        row, time = np.nonzero(rises)
        rows.append(row + n_streams)
        times.append(time + 1)
        values.append(running[row, time])
        finite = block[np.isfinite(block)]
        sample.append(rng.choice(finite, size=min(finite.size, null_sample), replace=False))
        n_streams += block.shape[0]
    if n_streams == 0 or horizon < ert:
        raise ValueError(f"run_length_threshold needs null streams at least ert={ert} long.")
    row_of, time_of, value_of = (np.concatenate(x) for x in (rows, times, values))

    def mean_run_length(threshold: float) -> float:
        above = value_of > threshold
        crossed_rows, crossed_times = row_of[above], time_of[above]
        first = np.flatnonzero(np.diff(crossed_rows, prepend=-1))
        crossed = crossed_times[first]
        return float(crossed.sum() + (n_streams - first.size) * horizon) / n_streams

    candidates = np.unique(value_of)
    low, high = 0, candidates.size - 1  # mean_run_length(candidates[-1]) == horizon >= ert
    while low < high:
        middle = (low + high) // 2
        if mean_run_length(float(candidates[middle])) >= ert:
            high = middle
        else:
            low = middle + 1
    threshold = float(candidates[low])
    pooled = np.concatenate(sample)
    if pooled.size > null_sample:
        pooled = rng.choice(pooled, size=null_sample, replace=False)
    return RunLengthFit(threshold=threshold, mean_run_length=mean_run_length(threshold),
                        horizon=int(horizon), n_streams=n_streams,
                        null_statistics=np.sort(np.append(pooled, threshold)))


_DETECTORS: dict[str, type[_ChangeDetector]] = {
    "cusum": Cusum, "page_hinkley": PageHinkley, "adwin": Adwin}
Method = Literal["cusum", "page_hinkley", "adwin"]


@dataclass(frozen=True)
class Calibration:
    """A detector's parameters calibrated to an ERT, with the run-length fit behind them."""

    method: Method
    params: dict[str, Any]
    fit: RunLengthFit

    @property
    def level(self) -> float:
        """The calibrated ``threshold`` (CUSUM, Page–Hinkley) or ``delta`` (ADWIN)."""
        return float(self.params["delta" if self.method == "adwin" else "threshold"])

    def build(self) -> _ChangeDetector:
        """A fresh detector with the calibrated parameters."""
        return _DETECTORS[self.method](**self.params)


def calibrate(method: Method, null_scores: np.ndarray, ert: float, *, n_streams: int = 500,
              seed: int = 0, **params: Any) -> Calibration:
    """Calibrate ``method``'s alarm level so that false alarms come every ``ert`` values or later.

    Null streams are bootstrap resamples of ``null_scores`` (scores of records like the
    reference, held out from whatever produced the scores); each runs ``4 * ert`` values past
    the grace period from a fresh detector. ``mean`` and ``std`` default to the null scores'.
    The mean run length has a relative standard error of about ``1 / sqrt(n_streams)``.
    """
    if method not in _DETECTORS:
        raise ValueError(f"method must be one of {sorted(_DETECTORS)}, got {method!r}.")
    null = np.asarray(null_scores, dtype=np.float64).ravel()
    if null.size < 2 or not np.isfinite(null).all():
        raise ValueError("null_scores must hold at least two finite scores.")
    if isinstance(ert, bool) or not isinstance(ert, int | float) or not ert >= 1:
        raise ValueError(f"ert must be a number of at least 1, got {ert!r}.")
    _check_int("n_streams", n_streams, 1)
    params.setdefault("mean", float(null.mean()))
    params.setdefault("std", float(null.std()) or 1.0)
    probe = _DETECTORS[method](**params)
    horizon = int(math.ceil(4 * ert)) + probe.grace_period
    rng = np.random.default_rng(seed)
    per_block = max(1, 2_000_000 // horizon)

    def blocks() -> Iterable[np.ndarray]:
        for start in range(0, n_streams, per_block):
            count = min(per_block, n_streams - start)
            yield probe.null_paths(null[rng.integers(0, null.size, size=(count, horizon))])

    fit = run_length_threshold(blocks(), ert, seed=seed)
    level = {"delta": math.exp(-fit.threshold)} if method == "adwin" else {
        "threshold": fit.threshold}
    return Calibration(method=method, params={**probe.get_params(), **level}, fit=fit)


def calibrate_threshold(null_scores: np.ndarray, ert: float, *, method: Method = "cusum",
                        **kwargs: Any) -> float:
    """The calibrated ``threshold`` (CUSUM, Page–Hinkley) or ``delta`` (ADWIN); see
    :func:`calibrate`."""
    return calibrate(method, null_scores, ert, **kwargs).level
