"""Windows by record timestamp: a schedule a restart reproduces, and a rule for disorder.

Window ``k`` covers ``[k * step, k * step + length)`` in seconds since the epoch, so its
boundaries follow from the timestamps alone, never from when the detector started: a restarted
detector fed the same records draws the same windows. ``step == length`` gives tumbling
windows, a shorter step overlapping ones, a longer step gaps whose records are only counted.

Records arrive in stream order, not in time order. The rule, applied record by record:

* ``newest`` is the largest timestamp accepted so far and ``newest - allowed_lateness`` the
  *watermark*. A record at or after the watermark is accepted and joins the window(s) its own
  timestamp falls in (a window still open: a window closes only once the watermark passes its
  end). A record before the watermark is *late*: counted (``late_records``) and left out of
  every window, never slipped into a window that was already tested.
* A record without a timestamp is counted (``untimed_records``) and left out.
* One record stamped far in the future moves ``newest`` with it, and what follows is late
  until the stream catches up: the late count is where a source's broken clock shows.
* A window closes when the watermark reaches its end: with the default lateness of 0, when a
  record arrives whose timestamp is at or past the window's end. That record *closes* the
  window (it belongs to a later one), and the window's report is placed on it:
  :attr:`ClosedWindow.closed_at` counts the records fed up to and including it, exactly as a
  count window's report is placed on the record that completes it. The window's own records
  lie before it (``first_record`` .. ``last_record``). Placing the report on the closing
  record keeps it inside the batch that produced it, so a caller that names reports after a
  record of the current batch, and skips reports of records it re-reads after a restart,
  never points into an earlier batch.
* A window's late and untimed counts are those that arrived while it was open (from its first
  record to its closing record), so that they depend only on the records a restart re-reads.

A restarted detector re-fed the records from the first record of the oldest open window
(:meth:`TimeWindows.records_to_replay`) accepts, rejects and groups every later record exactly
as the uninterrupted one did: no record before that point can be newer than it without
belonging to a window that is still open. It may rebuild a window the uninterrupted detector
had already closed; that window closes again on the same, re-read, record.

A busy stream can put more records in one window than are worth testing (a day at 1,000
records/s), so each window keeps at most ``max_records`` of them: a uniform sample chosen by
a fixed hash of the window and each record's rank in it (bottom-k sampling), which keeps the
same records whatever the batch sizes and after a restart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from detectors.base import DriftReport

__all__ = [
    "ClosedWindow",
    "TimeSchedule",
    "TimeWindows",
    "TimedDriftReport",
    "mix64",
    "parse_duration",
    "time_schedule",
    "window_kind",
]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def parse_duration(value: object) -> float:
    """Seconds in a duration such as ``30s``, ``5m``, ``1h``, ``1d`` or ``2w``."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as '30s', '5m', '1h' or '1d', got {value!r}")


def window_kind(value: object, name: str, *, minimum: int) -> Literal["count", "time"]:
    """``"count"`` for an integer of at least ``minimum``, ``"time"`` for a positive duration."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum:
        return "count"
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = 0.0
        if seconds > 0.0:
            return "time"
    raise ValueError(f"{name} must be an integer of at least {minimum} (records) or a duration "
                     f"such as '30s', '5m', '1h' or '1d', got {value!r}.")


def time_schedule(window: int | str, step: int | str | None, allowed_lateness: str,
                  max_records: int) -> TimeSchedule | None:
    """The schedule of a time window (``None`` for a count window), or a ValueError."""
    kind = window_kind(window, "window", minimum=2)
    if step is not None and window_kind(step, "step", minimum=1) != kind:
        raise ValueError(f"step must count records for a count window and be a duration for a "
                         f"time window, got window={window!r} and step={step!r}.")
    try:
        lateness = parse_duration(allowed_lateness)
    except ValueError:
        raise ValueError(f"allowed_lateness must be a duration such as '0s' or '30s', got "
                         f"{allowed_lateness!r}.") from None
    if isinstance(max_records, bool) or not isinstance(max_records, int | np.integer) or (
            max_records < 2):
        raise ValueError(f"max_window_records must be an integer of at least 2, got "
                         f"{max_records!r}.")
    if kind == "count":
        if lateness:
            raise ValueError(f"allowed_lateness applies to time windows only (window: 5m), "
                             f"got {allowed_lateness!r} with window={window!r}.")
        return None
    assert isinstance(window, str)
    length = parse_duration(window)
    return TimeSchedule(length, length if step is None else parse_duration(step), lateness,
                        int(max_records))


def mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 of each value: a fixed pseudo-random order that no numpy version changes."""
    z = np.asarray(values).astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class TimedDriftReport(DriftReport):
    """A drift report that also says where its window lies in time and what it left out.

    ``window_start``/``window_end`` are epoch seconds (``None`` for a count window);
    ``records_in_window`` counts the window's records before sampling down to
    ``max_window_records`` (``n_window`` is what was tested); ``first_record`` and
    ``last_record`` are the stream positions (counted like ``records_seen``) of its first
    and last record. ``late_records`` and ``untimed_records`` arrived while the window was open
    and were left out (for a count window: the window's records without a timestamp).
    ``seasonal_fallback_phases`` are the window's phases with no reference record, whose
    ``seasonal_fallback_records`` records were compared with the whole reference instead.
    """

    window_start: float | None = None
    window_end: float | None = None
    records_in_window: int = 0
    first_record: int = 0
    last_record: int = 0
    late_records: int = 0
    untimed_records: int = 0
    seasonality: str = "none"
    seasonal_fallback_phases: tuple[int, ...] = ()
    seasonal_fallback_records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "window_start": self.window_start,
            "window_end": self.window_end,
            "records_in_window": self.records_in_window,
            "first_record": self.first_record,
            "last_record": self.last_record,
            "late_records": self.late_records,
            "untimed_records": self.untimed_records,
            "seasonality": self.seasonality,
            "seasonal_fallback_phases": list(self.seasonal_fallback_phases),
            "seasonal_fallback_records": self.seasonal_fallback_records,
        }


@dataclass(frozen=True)
class TimeSchedule:
    """Window length and step, allowed lateness (all in seconds) and the per-window sample cap."""

    length: float
    step: float
    lateness: float
    max_records: int

    def start(self, k: int) -> float:
        return k * self.step

    def end(self, k: int) -> float:
        return k * self.step + self.length

    def windows_of(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and last window index holding each time (last < first: in a gap).

        Float division can land a boundary time on the wrong side, so each index is checked
        against the same ``k * step (+ length)`` expressions the closing rule uses.
        """
        step, length = self.step, self.length
        last = np.floor(t / step).astype(np.int64)
        last += t >= (last + 1) * step
        last -= t < last * step
        first = np.floor((t - length) / step).astype(np.int64) + 1
        first -= (first - 1) * step + length > t
        first += first * step + length <= t
        return first, last


@dataclass(frozen=True)
class ClosedWindow:
    """A window's (possibly sampled) records and where it lies in the stream and in time."""

    start: float
    end: float
    numeric: np.ndarray
    categorical: np.ndarray
    times: np.ndarray
    records: int
    first_record: int
    last_record: int
    closed_at: int
    late_records: int
    untimed_records: int


@dataclass
class _Rows:
    numeric: np.ndarray
    categorical: np.ndarray
    times: np.ndarray
    ordinal: np.ndarray  # rank of each record among the window's records, in arrival order

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate([getattr(p, name) for p in parts], axis=0)
                       for name in ("numeric", "categorical", "times", "ordinal")))

    def take(self, index: np.ndarray) -> _Rows:
        return _Rows(self.numeric[index], self.categorical[index], self.times[index],
                     self.ordinal[index])


@dataclass
class _OpenWindow:
    k: int
    first_seen: int  # 0-based stream position of its first record
    last_seen: int
    late_at_open: int  # the detector's late/untimed totals before its first record
    untimed_at_open: int
    count: int = 0
    parts: list[_Rows] = field(default_factory=list)
    stored: int = 0

    def add(self, rows: _Rows, last_seen: int, cap: int) -> None:
        self.parts.append(rows)
        self.count += len(rows.times)
        self.stored += len(rows.times)
        self.last_seen = last_seen
        if self.stored > 2 * cap:  # amortised: compact only once the buffer doubled
            self.parts = [self.kept(cap)]
            self.stored = len(self.parts[0].times)

    def kept(self, cap: int) -> _Rows:
        """The records a test sees: at most ``cap``, chosen by hash rank, in arrival order."""
        rows = _Rows.concat(self.parts) if len(self.parts) != 1 else self.parts[0]
        if len(rows.times) > cap:
            salt = int(mix64(np.array([self.k]))[0] >> np.uint64(1))  # a window of its own
            priority = mix64(rows.ordinal ^ salt)
            chosen = np.lexsort((rows.ordinal, priority))[:cap]
            rows = rows.take(np.sort(chosen))
        return rows


class TimeWindows:
    """The open windows of a time-windowed detector and the counters of left-out records."""

    def __init__(self, schedule: TimeSchedule, n_numeric: int, n_categorical: int) -> None:
        self.schedule = schedule
        self._shape = (n_numeric, n_categorical)
        self.newest = -math.inf
        self.late_total = 0
        self.untimed_total = 0
        self._open: dict[int, _OpenWindow] = {}

    @property
    def oldest_fill(self) -> int:
        """Records in the window the next report will test (0 when none is open)."""
        oldest = self._oldest()
        return 0 if oldest is None else oldest.count

    def records_to_replay(self, records_seen: int) -> int:
        """Records from the oldest open window's first record to now (0 when none is open)."""
        if not self._open:
            return 0
        return records_seen - min(w.first_seen for w in self._open.values())

    def feed(self, numeric: np.ndarray, categorical: np.ndarray, times: np.ndarray,
             seen_before: int) -> list[ClosedWindow]:
        """Take a batch in stream order; the windows it closed, in the order they closed."""
        n = len(times)
        lateness = self.schedule.lateness
        untimed = np.isnan(times)
        timed = np.where(untimed, -np.inf, times)
        # A late record is older than the newest, so taking it into the running maximum
        # changes nothing: the running maximum is the sequential rule's ``newest``, vectorised.
        newest = np.maximum.accumulate(np.concatenate([[self.newest], timed]))
        late = ~untimed & (timed < newest[:-1] - lateness)
        watermark = newest[1:] - lateness
        late_upto = self.late_total + np.cumsum(late)
        untimed_upto = self.untimed_total + np.cumsum(untimed)

        self._join(np.flatnonzero(~untimed & ~late), numeric, categorical, times, seen_before,
                   late_upto, untimed_upto)
        closed = self._close_due(watermark, seen_before, late_upto, untimed_upto)
        if n:
            self.newest = float(newest[-1])
            self.late_total = int(late_upto[-1])
            self.untimed_total = int(untimed_upto[-1])
        return closed

    def _join(self, rows: np.ndarray, numeric: np.ndarray, categorical: np.ndarray,
              times: np.ndarray, seen_before: int, late_upto: np.ndarray,
              untimed_upto: np.ndarray) -> None:
        """Add the accepted ``rows`` of a batch to every window their times fall in."""
        first, last = self.schedule.windows_of(times[rows])
        spans = np.maximum(last - first + 1, 0)  # several windows when they overlap, 0 in a gap
        member = np.repeat(rows, spans)
        member_k = np.repeat(first, spans) + (
            np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans))
        order = np.argsort(member_k, kind="stable")  # by window, in arrival order within one
        member, member_k = member[order], member_k[order]
        edges = [0, *(np.flatnonzero(np.diff(member_k)) + 1).tolist(), member.size]
        for begin, stop in zip(edges[:-1], edges[1:], strict=True):
            if begin == stop:
                continue
            group, k = member[begin:stop], int(member_k[begin])
            window = self._open.get(k)
            if window is None:
                at = int(group[0])
                window = self._open[k] = _OpenWindow(
                    k, seen_before + at, seen_before + at,
                    int(late_upto[at]), int(untimed_upto[at]))
            ordinal = np.arange(window.count, window.count + group.size)
            window.add(_Rows(numeric[group], categorical[group], times[group], ordinal),
                       seen_before + int(group[-1]), self.schedule.max_records)

    def _close_due(self, watermark: np.ndarray, seen_before: int, late_upto: np.ndarray,
                   untimed_upto: np.ndarray) -> list[ClosedWindow]:
        """Close the windows whose end the watermark reached, each on the record it did so."""
        due = []
        for k in self._open:
            at = int(np.searchsorted(watermark, self.schedule.end(k), side="left"))
            if at < watermark.size:
                due.append((at, k))
        return [self._closed(self._open.pop(k), closed_at=seen_before + at + 1,
                             late=int(late_upto[at]), untimed=int(untimed_upto[at]))
                for at, k in sorted(due)]

    def current(self, records_seen: int) -> ClosedWindow | None:
        """The oldest open window as it is now (the one the next report will test)."""
        oldest = self._oldest()
        if oldest is None:
            return None
        return self._closed(oldest, closed_at=records_seen, late=self.late_total,
                            untimed=self.untimed_total)

    def _oldest(self) -> _OpenWindow | None:
        return self._open[min(self._open)] if self._open else None

    def _closed(self, window: _OpenWindow, *, closed_at: int, late: int,
                untimed: int) -> ClosedWindow:
        rows = window.kept(self.schedule.max_records)
        return ClosedWindow(
            start=self.schedule.start(window.k), end=self.schedule.end(window.k),
            numeric=rows.numeric, categorical=rows.categorical, times=rows.times,
            records=window.count, first_record=window.first_seen + 1,
            last_record=window.last_seen + 1, closed_at=closed_at,
            late_records=late - window.late_at_open,
            untimed_records=untimed - window.untimed_at_open)

    # -- persistence ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, np.ndarray]:
        windows = [self._open[k] for k in sorted(self._open)]
        rows = [_Rows.concat([_empty_rows(self._shape), *w.parts]) for w in windows]
        joined = _Rows.concat([_empty_rows(self._shape), *rows])
        return {
            "newest": np.asarray(self.newest),
            "late_total": np.asarray(self.late_total),
            "untimed_total": np.asarray(self.untimed_total),
            "k": np.array([w.k for w in windows], dtype=np.int64),
            "first_seen": np.array([w.first_seen for w in windows], dtype=np.int64),
            "last_seen": np.array([w.last_seen for w in windows], dtype=np.int64),
            "late_at_open": np.array([w.late_at_open for w in windows], dtype=np.int64),
            "untimed_at_open": np.array([w.untimed_at_open for w in windows], dtype=np.int64),
            "count": np.array([w.count for w in windows], dtype=np.int64),
            "stored": np.array([len(r.times) for r in rows], dtype=np.int64),
            "numeric": joined.numeric,
            "categorical": joined.categorical,
            "times": joined.times,
            "ordinal": joined.ordinal,
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.newest = float(state["newest"])
        self.late_total = int(state["late_total"])
        self.untimed_total = int(state["untimed_total"])
        rows = _Rows(np.asarray(state["numeric"], dtype=np.float64),
                     np.asarray(state["categorical"], dtype=np.int32),
                     np.asarray(state["times"], dtype=np.float64),
                     np.asarray(state["ordinal"], dtype=np.int64))
        bounds = np.concatenate([[0], np.cumsum(state["stored"])]).tolist()
        self._open = {}
        for i, k in enumerate(np.asarray(state["k"]).tolist()):
            part = rows.take(np.arange(bounds[i], bounds[i + 1]))
            self._open[int(k)] = _OpenWindow(
                int(k), int(state["first_seen"][i]), int(state["last_seen"][i]),
                int(state["late_at_open"][i]), int(state["untimed_at_open"][i]),
                count=int(state["count"][i]), parts=[part], stored=len(part.times))


def _empty_rows(shape: tuple[int, int]) -> _Rows:
    return _Rows(np.zeros((0, shape[0])), np.zeros((0, shape[1]), dtype=np.int32),
                 np.zeros(0), np.zeros(0, dtype=np.int64))
