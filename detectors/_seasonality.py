"""Seasonal references: compare a window with reference records from the same time of day/week.

A stream with a daily cycle (traffic at 3 a.m. is not traffic at 3 p.m.) drifts away from a
reference that mixes every hour, every night and every morning, and a drift test would page
someone twice a day. With ``seasonality`` set, each record gets a *phase* (hour of day 0–23,
day of week 0–6 from Monday, or hour of week 0–167, in ``timezone``), and a window is compared
with reference records drawn phase by phase in the window's own phase mix: a window of 80 %
02:00 records and 20 % 03:00 records meets a reference of the same shares.

The comparison reference is as large as the scarcest phase allows: for window phase counts
``w_p`` (``m`` records) and reference phase counts ``r_p`` it holds
``N = min_p floor(r_p * m / w_p)`` records (at most the whole reference), ``N * w_p / m`` of
phase ``p`` (at least one). Which ones is fixed: the first ones of each phase in a permutation
of the reference drawn once by a hash, so the same window always meets the same records, on
every run and after a restart. Phases of the window with no reference record, and records
without a timestamp, take their share from the whole reference instead; the report names
those phases, so that an operator sees a reference that does not cover the cycle yet.

Summaries of a selection are cached (least recently used): a window of one phase (an hourly
window with ``hour_of_day``) always meets the whole of that phase, so those hit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from detectors._time_windows import mix64

__all__ = ["PERIODS", "SEASONALITIES", "Seasonality", "SeasonalReference", "Selection",
           "phases", "zone"]

Seasonality = Literal["none", "hour_of_day", "day_of_week", "hour_of_week"]
SEASONALITIES: tuple[str, ...] = ("none", "hour_of_day", "day_of_week", "hour_of_week")
PERIODS: Mapping[str, int] = {"hour_of_day": 24, "day_of_week": 7, "hour_of_week": 168}
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is day 0 as in datetime.weekday()

Summary = TypeVar("Summary")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or a ValueError saying how to get the zone database."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        raise ValueError(
            f"timezone must be an IANA zone name such as 'UTC' or 'Europe/Paris', got "
            f"{name!r} ({error}); without a system zone database, `pip install tzdata`."
        ) from None


def phases(times: np.ndarray, seasonality: str, tz: ZoneInfo) -> np.ndarray:
    """Each record's phase (int64), -1 where it has no timestamp."""
    local = times + _utc_offsets(times, tz)
    known = np.isfinite(local)
    safe = np.where(known, local, 0.0)
    hour = np.floor(safe / 3600.0).astype(np.int64)
    day = np.floor(safe / 86400.0).astype(np.int64)
    weekday = np.mod(day + _EPOCH_WEEKDAY, 7)
    phase = {"hour_of_day": np.mod(hour, 24), "day_of_week": weekday,
             "hour_of_week": weekday * 24 + np.mod(hour, 24)}[seasonality]
    return np.where(known, phase, -1)


def _utc_offsets(times: np.ndarray, tz: ZoneInfo) -> np.ndarray:
    """Seconds to add to each time for ``tz``'s wall clock, looked up once per hour of data.

    Offsets change only at a zone's transitions, so one lookup at each end of every distinct
    hour settles all records of that hour but those few around a transition, which are looked
    up one by one. Times the calendar cannot hold get NaN (no phase).
    """
    offsets = np.full(times.shape, np.nan)
    if tz.key == "UTC":
        return np.where(np.isfinite(times), 0.0, np.nan)
    finite = np.flatnonzero(np.isfinite(times))
    hours = np.floor(times[finite] / 3600.0)
    for hour in np.unique(hours).tolist():
        rows = finite[hours == hour]
        start, end = _offset(hour * 3600.0, tz), _offset(hour * 3600.0 + 3599.999, tz)
        if start == end:
            offsets[rows] = start
        else:
            offsets[rows] = [_offset(t, tz) for t in times[rows].tolist()]
    return offsets


def _offset(t: float, tz: ZoneInfo) -> float:
    try:
        delta = datetime.fromtimestamp(t, tz).utcoffset()
    except (OverflowError, OSError, ValueError):
        return float("nan")
    return float("nan") if delta is None else delta.total_seconds()


@dataclass(frozen=True)
class Selection:
    """How many reference records of each phase a window meets, and which fell back.

    ``quotas`` are ``(phase, count)`` pairs; ``fallback`` records come from the whole
    reference for the window's ``fallback_records`` records of ``fallback_phases`` (phases
    with no reference record) or without a timestamp.
    """

    quotas: tuple[tuple[int, int], ...]
    fallback: int
    fallback_phases: tuple[int, ...]
    fallback_records: int


class SeasonalReference(Generic[Summary]):
    """The reference records indexed by phase, and the summary of a window's share of them.

    ``records`` are arrays with one row per reference record (kept whole: the comparison
    reference is chosen per window); ``summarise`` turns the selected rows of each, in that
    order, into whatever the test needs.
    """

    def __init__(self, phase: np.ndarray, n_phases: int, records: Mapping[str, np.ndarray],
                 summarise: Callable[..., Summary], cache_size: int = 32) -> None:
        self.phase = np.asarray(phase, dtype=np.int64)
        self.records = {name: np.array(values) for name, values in records.items()}
        self._summarise = summarise
        self._cache: OrderedDict[tuple[tuple[tuple[int, int], ...], int], Summary] = (
            OrderedDict())
        self._cache_size = cache_size
        self.n = int(self.phase.size)
        # One fixed permutation; each phase's records in its order, phase by phase.
        self._order = np.argsort(mix64(np.arange(self.n)), kind="stable")
        self._by_phase = self._order[np.argsort(self.phase[self._order], kind="stable")]
        self._counts = np.bincount(self.phase + 1, minlength=n_phases + 1)  # [0]: no time
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])

    def select(self, window_phase: np.ndarray) -> Selection:
        """The comparison reference's make-up for a window whose records have these phases."""
        m = int(window_phase.size)
        in_window = np.bincount(window_phase + 1, minlength=self._counts.size)
        present = np.flatnonzero(in_window)
        matched = [p for p in present.tolist() if p > 0 and self._counts[p] > 0]
        unmatched = [p for p in present.tolist() if p not in matched]
        fallback_records = int(in_window[unmatched].sum())
        bounds = [self._counts[p] * m / in_window[p] for p in matched]
        if fallback_records:
            bounds.append(self.n * m / fallback_records)
        size = int(min([self.n, *bounds])) if m else 0
        quotas = tuple((p - 1, max(1, size * int(in_window[p]) // m)) for p in matched)
        fallback = 0
        if fallback_records:
            free = self.n - sum(count for _, count in quotas)
            fallback = min(free, max(1, size * fallback_records // m))
        return Selection(quotas, fallback, tuple(p - 1 for p in unmatched if p > 0),
                         fallback_records)

    def indices(self, selection: Selection) -> np.ndarray:
        """Positions of the selected reference records, ascending."""
        parts = [self._by_phase[self._offsets[p + 1]:self._offsets[p + 1] + count]
                 for p, count in selection.quotas]
        chosen = np.concatenate([np.zeros(0, np.int64), *parts])
        if selection.fallback:
            taken = np.zeros(self.n, dtype=bool)
            taken[chosen] = True
            rest = self._order[~taken[self._order]]
            chosen = np.concatenate([chosen, rest[:selection.fallback]])
        return np.sort(chosen)

    def summary(self, window_phase: np.ndarray) -> tuple[Summary, Selection]:
        """The summary of the reference a window with these phases is compared with."""
        selection = self.select(window_phase)
        key = (selection.quotas, selection.fallback)
        cached = self._cache.get(key)
        if cached is None:
            index = self.indices(selection)
            cached = self._summarise(*(values[index] for values in self.records.values()))
            self._cache[key] = cached
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached, selection

    def to_state(self) -> dict[str, np.ndarray]:
        return {"phase": self.phase, **self.records}
