"""Windowed univariate feature drift: each feature's window distribution against its reference.

Numeric features get a two-sample Kolmogorov–Smirnov test, categorical features a chi-squared
test of homogeneity, and the per-feature p-values are adjusted for testing many features at
once. The reference is summarised once at ``fit`` (distinct sorted values with cumulative
counts, category counts), so a window test never touches the reference records again.

Windows are counted in records (``window: 1000``) or measured in time (``window: 1h``):
tumbling windows aligned to the epoch by each record's own timestamp (``FeatureBatch.times``),
with a documented rule for records that arrive out of order or without a timestamp
(:mod:`detectors._time_windows`). ``seasonality`` compares each window with reference records
of the same hour of day or of week (:mod:`detectors._seasonality`), the one case where the
reference records are kept and summarised per window. :meth:`FeatureDriftDetector.set_reference`
replaces the reference without touching the stream's windows, for a reference that moves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from detectors._chi2 import ChiSquaredResult, pooled_chi2
from detectors._feature_tests import CategoryShift, FeatureTest, categorical_feature_test
from detectors._ks import ks_p_value
from detectors._multiple_testing import CORRECTIONS, Correction, adjust_p_values
from detectors._reference_summary import (
    CategoricalReference,
    NumericReference,
    Summary,
    SummarySchema,
    count_codes,
)
from detectors._seasonality import (
    PERIODS,
    SEASONALITIES,
    Seasonality,
    SeasonalReference,
    Selection,
)
from detectors._seasonality import phases as seasonal_phases
from detectors._seasonality import zone as time_zone
from detectors._time_windows import (
    ClosedWindow,
    TimedDriftReport,
    TimeWindows,
    parse_duration,
    time_schedule,
    window_kind,
)
from detectors.base import (
    DetectorConfig,
    DetectorContext,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    NotFittedError,
    params_repr,
)

__all__ = [
    "CategoryShift",
    "ChiSquaredResult",
    "FeatureDriftConfig",
    "FeatureDriftDetector",
    "FeatureTest",
    "TimedDriftReport",
    "ks_p_value",
    "pooled_chi2",
]

logger = logging.getLogger(__name__)

_STATE_FORMAT_VERSION = 1


class FeatureDriftConfig(DetectorConfig):
    """``detectors:`` entry of ``type: feature_drift`` (the defaults are the agent's)."""

    type: Literal["feature_drift"] = "feature_drift"
    # Records per window, or a duration (30s, 5m, 1h, 1d) for tumbling windows by timestamp.
    window: int | str = 1000
    step: int | str | None = None
    alpha: float = Field(default=0.01, gt=0, lt=1)
    correction: Literal["bh", "bonferroni"] = "bh"
    top_k: int = Field(default=5, gt=0)
    min_window: int = Field(default=100, gt=0)
    # Effect-size floor (KS distance for numeric features, total-variation distance for
    # categorical ones, both in [0, 1]): globally, and per feature by name.
    min_effect: float = Field(default=0.0, ge=0, le=1)
    min_effect_by_feature: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict)
    # Time windows only: how far behind the newest timestamp a record may arrive and still
    # join its window, and how many records one window keeps for its test (a uniform sample).
    allowed_lateness: str = "0s"
    max_window_records: int = Field(default=100_000, gt=1)
    # Compare each window with reference records of the same phase, on the clock of `timezone`.
    seasonality: Seasonality = "none"
    timezone: str = "UTC"

    # These messages follow the configuration's error format: the loader puts the YAML path
    # before them and the value after them. Fields are checked in order, so `step` and
    # `allowed_lateness` see the window already checked (in ``info.data``).
    @field_validator("window", "step", mode="before")
    @classmethod
    def _count_or_duration(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.field_name == "step":
            return value
        minimum = 2 if info.field_name == "window" else 1
        try:
            kind = window_kind(value, str(info.field_name), minimum=minimum)
        except ValueError:
            raise ValueError(f"expected a record count (an integer of at least {minimum}) "
                             "or a duration such as 30s, 5m, 1h or 1d") from None
        window = info.data.get("window")
        if info.field_name == "step" and window is not None and (
                kind != window_kind(window, "window", minimum=2)):
            raise ValueError(f"expected a duration such as 1m, as window is one ({window})"
                             if kind == "count" else
                             f"expected a record count, as window counts records ({window})")
        return value

    @field_validator("allowed_lateness")
    @classmethod
    def _lateness_form(cls, value: str, info: ValidationInfo) -> str:
        try:
            lateness = parse_duration(value)
        except ValueError:
            raise ValueError("expected a duration such as 0s, 30s or 5m") from None
        if lateness and isinstance(info.data.get("window"), int):
            raise ValueError(f"applies to time windows only (window: 5m), not to a window of "
                             f"{info.data['window']} records")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            time_zone(value)
        except ValueError:
            raise ValueError("expected an IANA time zone such as UTC or Europe/Paris (without a "
                             "system zone database: pip install tzdata)") from None
        return value

    @model_validator(mode="after")
    def _min_window_fits(self) -> FeatureDriftConfig:
        if isinstance(self.window, int) and self.min_window > self.window:
            raise ValueError(f"min_window ({self.min_window}) must not exceed window "
                             f"({self.window})")
        return self


class FeatureDriftDetector:
    """Tests each feature of a sliding window against the reference, corrected for multiplicity.

    Records arrive through :meth:`update` and are kept in a window of the last ``window``
    records. The first report comes when the window first fills, then one every ``step``
    records (``step < window``: overlapping windows; ``step > window``: records between windows
    are only counted). :meth:`test` tests the window as it is, for a timer on a slow stream.

    Each numeric feature gets a two-sample Kolmogorov–Smirnov test; each categorical feature a
    chi-squared homogeneity test over its categories and the unknown bucket, with sparse
    categories pooled. The per-feature p-values are adjusted by Benjamini–Hochberg (``"bh"``) or
    Bonferroni, and the window is flagged when any adjusted p-value is at most ``alpha``: on a
    stationary stream of independent (or positively dependent) features at most a fraction
    ``alpha`` of windows raise a false alarm. Windows that overlap share records, so their
    alarms are correlated.

    With a duration as ``window`` (``"1h"``) the windows are tumbling windows by the records'
    own timestamps (``FeatureBatch.times``), aligned to multiples of the duration since the
    epoch, so a restart draws the same ones. A window closes when a record at or past its end
    arrives; it is reported on that record (``records_seen`` counts it), or skipped when it
    holds fewer than ``min_window`` records (``windows_skipped``), so a quiet hour raises no
    noisy test. A record older than the newest timestamp by more than ``allowed_lateness`` is
    late, and one without a timestamp untimed: both are counted (``late_records``,
    ``untimed_records``, and per window in its :class:`TimedDriftReport`) and left out of
    every window. :mod:`detectors._time_windows` states the rule in full.

    Parameters
    ----------
    name
        Configured id, used in reports and as a metric label.
    window
        Records per tested window (at least 2), or a duration (``"30s"``, ``"5m"``, ``"1h"``,
        ``"1d"``) for windows by timestamp.
    step
        New records (or, for a time window, the duration) between two scheduled windows;
        defaults to ``window`` (disjoint windows).
    alpha
        Per-window false-alarm level, in ``(0, 1)``.
    correction
        ``"bh"`` (Benjamini–Hochberg, default) or ``"bonferroni"``.
    top_k
        How many drifted features a report names in ``top_features``.
    min_window
        Fewest records :meth:`test` will test (at most a count ``window``); for time windows
        also the fewest a scheduled window needs to be tested rather than skipped.
    min_effect, min_effect_by_feature
        Effect-size floor a feature must move, globally and per feature name.
    allowed_lateness
        Time windows: how far behind the newest timestamp a record may be and still join its
        window (``"0s"``: any record older than the newest is late).
    max_window_records
        Time windows: the most records one window keeps for its test, a uniform sample beyond.
    seasonality
        ``"none"``, ``"hour_of_day"``, ``"day_of_week"`` or ``"hour_of_week"``: compare each
        window with reference records of the same phases, in the window's phase mix
        (:mod:`detectors._seasonality`). Needs timestamps on the reference and the stream.
    timezone
        IANA zone whose wall clock defines the phases (``"UTC"``).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors import FeatureBatch, FeatureDriftDetector
    >>> rng = np.random.default_rng(7)
    >>> def latency_batch(mean, n):
    ...     return FeatureBatch(
    ...         numeric=rng.normal(mean, 1.0, size=(n, 1)), numeric_names=("latency",),
    ...         categorical=np.zeros((n, 0)), categorical_names=(), categorical_vocab=(),
    ...         encoded=np.zeros((n, 0)))
    >>> detector = FeatureDriftDetector(window=500)
    >>> detector.fit(latency_batch(0.0, 5000))
    >>> [report.rejected for report in detector.update(latency_batch(0.0, 1000))]
    [False, False]
    >>> report = detector.update(latency_batch(0.5, 500))[0]
    >>> report.rejected, report.top_features
    (True, ('latency',))
    >>> report.feature("latency").describe_movement(), report.p_value < 1e-10
    ('latency mean -0.01911→0.4679', True)
    """

    kind: ClassVar[str] = "drift"
    family: ClassVar[Literal["window"]] = "window"
    Config: ClassVar[type[FeatureDriftConfig]] = FeatureDriftConfig

    def __init__(
        self,
        name: str = "feature_drift",
        *,
        window: int | str = 1000,
        step: int | str | None = None,
        alpha: float = 0.01,
        correction: Correction = "bh",
        top_k: int = 5,
        min_window: int = 100,
        min_effect: float = 0.0,
        min_effect_by_feature: dict[str, float] | None = None,
        allowed_lateness: str = "0s",
        max_window_records: int = 100_000,
        seasonality: Seasonality = "none",
        timezone: str = "UTC",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}.")
        schedule = time_schedule(window, step, allowed_lateness, max_window_records)
        if seasonality not in SEASONALITIES:
            raise ValueError(f"seasonality must be one of {list(SEASONALITIES)}, got "
                             f"{seasonality!r}.")
        zone = time_zone(timezone)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}.")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {list(CORRECTIONS)}, got {correction!r}.")
        if not _is_int(top_k) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if not _is_int(min_window) or min_window < 1:
            raise ValueError(f"min_window must be a positive integer, got {min_window!r}.")
        if schedule is None and min_window > int(window):
            raise ValueError(
                f"min_window must not exceed window (got min_window={min_window}, "
                f"window={window}); lower min_window as well."
            )
        floors = {"min_effect": min_effect, **(min_effect_by_feature or {})}
        for label, floor in floors.items():
            if isinstance(floor, bool) or not isinstance(floor, int | float) or not (
                    0.0 <= floor <= 1.0):
                raise ValueError(f"effect floors are numbers in [0, 1] (KS or total-variation "
                                 f"distance), got {label}={floor!r}.")
        self.name = name
        self.min_effect = float(min_effect)
        self.min_effect_by_feature = {str(k): float(v)
                                      for k, v in (min_effect_by_feature or {}).items()}
        resolved_step = window if step is None else step
        self.window: int | str = window if schedule else int(window)
        self.step: int | str = resolved_step if schedule else int(resolved_step)
        self.allowed_lateness = allowed_lateness
        self.max_window_records = int(max_window_records)
        self.seasonality: Seasonality = seasonality
        self.timezone = timezone
        self._schedule = schedule
        self._zone = zone
        self.alpha = float(alpha)
        self.correction: Correction = correction
        self.top_k = int(top_k)
        self.min_window = int(min_window)
        self._lock = threading.RLock()
        self._schema: SummarySchema | None = None
        self._numeric_reference: NumericReference | None = None
        self._categorical_reference: CategoricalReference | None = None
        self._window_numeric = np.zeros((0, 0))
        self._window_categorical = np.zeros((0, 0), dtype=np.int32)
        self._write_position = 0
        self._fill = 0
        self._records_seen = 0
        self._next_report_at = self.window if isinstance(self.window, int) else 0
        self._windows_tested = 0
        self._time_windows: TimeWindows | None = None
        self._window_times = np.zeros(0)
        self._seasonal: SeasonalReference[Summary] | None = None
        self._windows_skipped = 0
        self._untimed_total = 0

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: FeatureDriftConfig, context: DetectorContext
                    ) -> FeatureDriftDetector:
        """Build from a ``detectors:`` entry and fit on the context's reference."""
        min_window = (min(config.min_window, config.window) if isinstance(config.window, int)
                      else config.min_window)
        detector = cls(config.resolved_name(), window=config.window, step=config.step,
                       alpha=config.alpha, correction=config.correction, top_k=config.top_k,
                       min_window=min_window, min_effect=config.min_effect,
                       min_effect_by_feature=dict(config.min_effect_by_feature),
                       allowed_lateness=config.allowed_lateness,
                       max_window_records=config.max_window_records,
                       seasonality=config.seasonality, timezone=config.timezone)
        detector.fit(context.reference)
        return detector

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments the conformance suite builds instances from."""
        return [
            {"name": "feature_drift", "window": 400, "alpha": 0.01},
            {
                "name": "feature_drift_bonferroni",
                "window": 300,
                "step": 150,
                "alpha": 0.01,
                "correction": "bonferroni",
                "top_k": 3,
                "min_window": 50,
            },
            {"name": "feature_drift_floor", "window": 400, "min_effect": 0.1,
             "min_effect_by_feature": {"score": 0.2}},
        ]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        """Constructor arguments that must be rejected with a ValueError."""
        return [
            {"name": ""},
            {"window": 1},
            {"window": 10.5},
            {"step": 0},
            {"alpha": 0.0},
            {"alpha": 1.0},
            {"alpha": "0.01"},
            {"correction": "holm"},
            {"top_k": 0},
            {"min_window": 0},
            {"window": 50, "min_window": 100},
            {"min_effect": 1.5},
            {"min_effect": -0.1},
            {"min_effect_by_feature": {"score": "big"}},
            {"window": "5x"},
            {"window": "0s"},
            {"window": "5m", "step": 60},
            {"window": 100, "step": "1m"},
            {"window": 100, "allowed_lateness": "10s"},
            {"window": "5m", "allowed_lateness": "-1s"},
            {"window": "5m", "max_window_records": 1},
            {"seasonality": "monthly"},
            {"timezone": "Mars/Olympus_Mons"},
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with (step resolved)."""
        return {
            "name": self.name,
            "window": self.window,
            "step": self.step,
            "alpha": self.alpha,
            "correction": self.correction,
            "top_k": self.top_k,
            "min_window": self.min_window,
            "min_effect": self.min_effect,
            "min_effect_by_feature": dict(self.min_effect_by_feature),
            "allowed_lateness": self.allowed_lateness,
            "max_window_records": self.max_window_records,
            "seasonality": self.seasonality,
            "timezone": self.timezone,
        }

    def __repr__(self) -> str:
        return params_repr(self)

    # -- state exposed read-only -------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self._schema is not None

    @property
    def window_fill(self) -> int:
        """Records currently in the window (at most a count ``window``); for time windows, in
        the oldest open window, the one the next report will test."""
        if self._time_windows is not None:
            return self._time_windows.oldest_fill
        return self._fill

    @property
    def windows_tested(self) -> int:
        """Windows tested since the last fit, by :meth:`update` and :meth:`test` together."""
        return self._windows_tested

    @property
    def windows_skipped(self) -> int:
        """Time windows closed with fewer than ``min_window`` records, left untested."""
        return self._windows_skipped

    @property
    def late_records(self) -> int:
        """Time windows: records since the last fit that arrived too late to join their window."""
        return 0 if self._time_windows is None else self._time_windows.late_total

    @property
    def untimed_records(self) -> int:
        """Records since the last fit without a timestamp, where the windows or the seasonal
        reference needed one (left out of time windows; compared with the whole reference
        in a seasonal count window)."""
        if self._time_windows is not None:
            return self._time_windows.untimed_total
        return self._untimed_total

    @property
    def records_seen(self) -> int:
        """Records received through :meth:`update` since the last fit."""
        return self._records_seen

    @property
    def n_reference(self) -> int:
        self._require_fitted()
        assert self._numeric_reference is not None
        return self._numeric_reference.n

    # -- the detector protocol ---------------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Summarise ``reference`` and start afresh: an empty window, schedule and counters."""
        self._check_reference(reference)
        if self._schedule is not None and reference.times is None:
            raise ValueError(
                f"{self.name}: window={self.window!r} is a time window but the reference "
                "records carry no timestamps; name the timestamp field in the schema "
                "(schema.timestamp) or count records instead (window: 1000)."
            )
        with self._lock:
            self._schema = SummarySchema.of(reference)
            self._install_reference(reference)
            self._reset_window(len(reference.numeric_names), len(reference.categorical_names))
        logger.info(
            "%s fitted on %d reference records (%d numeric, %d categorical features)",
            self.name,
            len(reference),
            len(reference.numeric_names),
            len(reference.categorical_names),
        )

    def set_reference(self, reference: FeatureBatch) -> None:
        """Replace the reference, keeping the window, the schedule and every counter.

        A reference that moves (a rolling reference following the stream, an analyst's
        approved window) must not restart the stream as :meth:`fit` does: the records already
        in the window are tested against the new reference when their window is due, and the
        reports stay on the schedule a restart reproduces.
        """
        self._check_reference(reference)
        with self._lock:
            self._require_fitted()
            assert self._schema is not None
            if not self._schema.matches(reference):
                raise FeatureSchemaError(
                    f"{self.name}: the new reference's features differ from the fitted ones; "
                    "call fit(reference) to change the features (it restarts the window)."
                )
            self._install_reference(reference)
        logger.info("%s tests against a new reference of %d records", self.name, len(reference))

    def update(self, batch: FeatureBatch) -> list[DriftReport]:
        """Append ``batch`` to the window; one report per window that became due meanwhile."""
        with self._lock:
            self._check_batch(batch)
            if self._time_windows is not None:
                return self._update_by_time(batch)
            if self._seasonal is not None:
                assert batch.times is not None
                self._untimed_total += int(np.isnan(batch.times).sum())
            reports: list[DriftReport] = []
            start, n = 0, len(batch)
            while start < n:
                take = min(n - start, self._next_report_at - self._records_seen)
                chunk = slice(start, start + take)
                self._append(batch.numeric[chunk], batch.categorical[chunk],
                             None if batch.times is None else batch.times[chunk])
                start += take
                self._records_seen += take
                if self._records_seen == self._next_report_at:
                    reports.append(self._test_current_window())
                    assert isinstance(self.step, int)
                    self._next_report_at += self.step
            return reports

    def records_to_replay(self) -> int:
        """Recent records the next scheduled window will hold (re-fed after a restart).

        The next report falls when ``records_seen`` reaches the next multiple of the schedule
        (window, then every step); its window starts ``window`` records before that. Records
        from there to now are what a fresh detector must see again to report identically. For
        time windows: the records since the first record of the oldest open window.
        """
        with self._lock:
            if self._time_windows is not None:
                return self._time_windows.records_to_replay(self._records_seen)
            assert isinstance(self.window, int)
            first_of_next_window = max(0, self._next_report_at - self.window)
            return max(0, self._records_seen - first_of_next_window)

    def test(self) -> DriftReport | None:
        """Test the window as it is now; ``None`` if it holds fewer than ``min_window`` records.

        Does not move the schedule of :meth:`update`'s reports. For time windows it tests the
        oldest open window, the one the next scheduled report will cover.
        """
        with self._lock:
            self._require_fitted()
            if self._time_windows is not None:
                window = self._time_windows.current(self._records_seen)
                if window is None or window.records < self.min_window:
                    return None
                return self._test_time_window(window)
            if self._fill < self.min_window:
                return None
            return self._test_current_window()

    # -- persistence without pickle ------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume, as a flat mapping of numpy arrays.

        Suitable for ``numpy.savez`` and ``numpy.load(..., allow_pickle=False)``.
        """
        with self._lock:
            self._require_fitted()
            assert self._schema is not None
            assert self._numeric_reference is not None
            assert self._categorical_reference is not None
            state: dict[str, np.ndarray] = {
                "format_version": np.asarray(_STATE_FORMAT_VERSION),
                "window.numeric": self._window_numeric.copy(),
                "window.categorical": self._window_categorical.copy(),
                "window.times": self._window_times.copy(),
                "window.write_position": np.asarray(self._write_position),
                "window.fill": np.asarray(self._fill),
                "stream.records_seen": np.asarray(self._records_seen),
                "stream.next_report_at": np.asarray(self._next_report_at),
                "stream.windows_tested": np.asarray(self._windows_tested),
                "stream.windows_skipped": np.asarray(self._windows_skipped),
                "stream.untimed_records": np.asarray(self._untimed_total),
            }
            for key, value in self.get_params().items():
                if key != "name":
                    state[f"params.{key}"] = np.asarray(_param_state(value))
            parts = [
                ("schema", self._schema.to_state()),
                ("numeric_reference", self._numeric_reference.to_state()),
                ("categorical_reference", self._categorical_reference.to_state()),
            ]
            if self._time_windows is not None:
                parts.append(("time", self._time_windows.to_state()))
            if self._seasonal is not None:
                parts.append(("seasonal", self._seasonal.to_state()))
            for prefix, part in parts:
                state.update({f"{prefix}.{key}": value.copy() for key, value in part.items()})
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Resume from :meth:`state_dict`; the hyperparameters (but not the name) must match."""
        if int(state["format_version"]) != _STATE_FORMAT_VERSION:
            raise ValueError(
                f"Unsupported state format {int(state['format_version'])}; "
                f"this version reads format {_STATE_FORMAT_VERSION}."
            )
        current = {key: _param_state(value) for key, value in self.get_params().items()
                   if key != "name"}
        # A state saved before a parameter existed was saved with its default.
        saved = {key: state[f"params.{key}"].item() if f"params.{key}" in state
                 else _default_params()[key] for key in current}
        if saved != current:
            raise ValueError(f"The state was saved with parameters {saved}, not {current}.")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {
                key[len(prefix) + 1 :]: value
                for key, value in state.items()
                if key.startswith(prefix + ".")
            }

        with self._lock:
            self._schema = SummarySchema.from_state(part("schema"))
            self._numeric_reference = NumericReference.from_state(part("numeric_reference"))
            self._categorical_reference = CategoricalReference.from_state(
                part("categorical_reference")
            )
            self._window_numeric = np.array(state["window.numeric"], dtype=np.float64)
            self._window_categorical = np.array(state["window.categorical"], dtype=np.int32)
            self._window_times = np.array(state.get("window.times", np.zeros(0)),
                                          dtype=np.float64)
            self._write_position = int(state["window.write_position"])
            self._fill = int(state["window.fill"])
            self._records_seen = int(state["stream.records_seen"])
            self._next_report_at = int(state["stream.next_report_at"])
            self._windows_tested = int(state["stream.windows_tested"])
            self._windows_skipped = int(state.get("stream.windows_skipped", 0))
            self._untimed_total = int(state.get("stream.untimed_records", 0))
            self._time_windows = None
            if self._schedule is not None:
                self._time_windows = TimeWindows(self._schedule, len(self._schema.numeric_names),
                                                 len(self._schema.categorical_names))
                self._time_windows.load_state(part("time"))
            self._seasonal = None
            if self.seasonality != "none":
                seasonal = part("seasonal")
                self._seasonal = self._seasonal_reference(
                    seasonal["phase"], seasonal["numeric"], seasonal["categorical"])

    # -- internals ---------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if self._schema is None:
            raise NotFittedError(f"{self!r} is not fitted; call fit(reference) first.")

    def _check_reference(self, reference: FeatureBatch) -> None:
        if len(reference) == 0:
            raise ValueError("The reference batch must hold at least one record.")
        if not reference.feature_names:
            raise ValueError("The reference batch has no numeric or categorical feature to test.")
        if self.seasonality != "none" and (
                reference.times is None or np.isnan(reference.times).all()):
            raise ValueError(
                f"{self.name}: seasonality={self.seasonality!r} needs reference records with "
                "timestamps; name the timestamp field in the schema (schema.timestamp) or set "
                "seasonality: none."
            )

    def _check_batch(self, batch: FeatureBatch) -> None:
        self._require_fitted()
        assert self._schema is not None
        if not self._schema.matches(batch):
            raise FeatureSchemaError(
                f"{self.name}: the batch's features differ from the reference's "
                f"(numeric {batch.numeric_names} vs {self._schema.numeric_names}, categorical "
                f"{batch.categorical_names} vs {self._schema.categorical_names}, or their "
                "vocabularies); refit the detector after changing the encoder."
            )
        if batch.times is None and (self._schedule is not None or self._seasonal is not None):
            needs = (f"window={self.window!r}" if self._schedule is not None
                     else f"seasonality={self.seasonality!r}")
            raise ValueError(
                f"{self.name}: {needs} needs each record's timestamp but the batch carries "
                "none; name the timestamp field in the schema (schema.timestamp)."
            )

    def _install_reference(self, reference: FeatureBatch) -> None:
        self._numeric_reference = NumericReference.summarise(reference.numeric)
        self._categorical_reference = CategoricalReference.summarise(
            reference.categorical, reference.categorical_vocab
        )
        self._seasonal = None
        if self.seasonality != "none":
            assert reference.times is not None
            self._seasonal = self._seasonal_reference(
                seasonal_phases(reference.times, self.seasonality, self._zone),
                reference.numeric, reference.categorical)

    def _seasonal_reference(self, phase: np.ndarray, numeric: np.ndarray,
                            categorical: np.ndarray) -> SeasonalReference[Summary]:
        assert self._schema is not None
        vocab = self._schema.categorical_vocab

        def summarise(numeric: np.ndarray, categorical: np.ndarray) -> Summary:
            return (NumericReference.summarise(numeric),
                    CategoricalReference.summarise(categorical, vocab))

        return SeasonalReference(phase, PERIODS[self.seasonality],
                                 {"numeric": numeric, "categorical": categorical}, summarise)

    def _reset_window(self, n_numeric: int, n_categorical: int) -> None:
        self._records_seen = 0
        self._windows_tested = 0
        self._windows_skipped = 0
        self._untimed_total = 0
        self._write_position = 0
        self._fill = 0
        if self._schedule is not None:
            self._time_windows = TimeWindows(self._schedule, n_numeric, n_categorical)
            return
        assert isinstance(self.window, int)
        self._window_numeric = np.zeros((self.window, n_numeric), dtype=np.float64)
        self._window_categorical = np.zeros((self.window, n_categorical), dtype=np.int32)
        self._window_times = np.full(self.window if self._seasonal is not None else 0, np.nan)
        self._next_report_at = self.window

    def _append(self, numeric: np.ndarray, categorical: np.ndarray,
                times: np.ndarray | None) -> None:
        """Write rows into the ring buffer; only the last ``window`` rows of a long chunk matter."""
        assert isinstance(self.window, int)
        if self._window_times.size == 0:
            times = None  # only a seasonal count window needs its records' times
        n = numeric.shape[0]
        if n >= self.window:
            self._window_numeric[:] = numeric[-self.window :]
            self._window_categorical[:] = categorical[-self.window :]
            if times is not None:
                self._window_times[:] = times[-self.window :]
            self._write_position = 0
            self._fill = self.window
            return
        rows = (self._write_position + np.arange(n)) % self.window
        self._window_numeric[rows] = numeric
        self._window_categorical[rows] = categorical
        if times is not None:
            self._window_times[rows] = times
        self._write_position = (self._write_position + n) % self.window
        self._fill = min(self.window, self._fill + n)

    def _update_by_time(self, batch: FeatureBatch) -> list[DriftReport]:
        assert self._time_windows is not None and batch.times is not None
        closed = self._time_windows.feed(batch.numeric, batch.categorical, batch.times,
                                         self._records_seen)
        self._records_seen += len(batch)
        reports: list[DriftReport] = []
        for window in closed:
            if window.records >= self.min_window:
                reports.append(self._test_time_window(window))
                continue
            self._windows_skipped += 1
            logger.debug("%s skipped the window from %s: %d records, fewer than min_window %d",
                         self.name, window.start, window.records, self.min_window)
        return reports

    def _test_time_window(self, window: ClosedWindow) -> TimedDriftReport:
        report, selection = self._test_window(window.numeric, window.categorical, window.times,
                                              records_seen=window.closed_at)
        self._windows_tested += 1
        return _timed(report, selection, self.seasonality, window_start=window.start,
                      window_end=window.end, records_in_window=window.records,
                      first_record=window.first_record, last_record=window.last_record,
                      late_records=window.late_records, untimed_records=window.untimed_records)

    def _test_current_window(self) -> DriftReport:
        # Before the ring wraps the records occupy [0, fill); after, the whole buffer. Order
        # does not matter to either test.
        fill = self._fill
        times = self._window_times[:fill] if self._seasonal is not None else None
        report, selection = self._test_window(
            self._window_numeric[:fill], self._window_categorical[:fill], times,
            records_seen=self._records_seen)
        self._windows_tested += 1
        logger.debug(
            "%s tested %d records at record %d: rejected=%s p=%.3g",
            self.name,
            report.n_window,
            report.records_seen,
            report.rejected,
            report.p_value,
        )
        if times is None:
            return report
        return _timed(report, selection, self.seasonality, records_in_window=fill,
                      first_record=self._records_seen - fill + 1, last_record=self._records_seen,
                      untimed_records=int(np.isnan(times).sum()))

    def _test_window(self, numeric: np.ndarray, categorical: np.ndarray,
                     times: np.ndarray | None, *, records_seen: int
                     ) -> tuple[DriftReport, Selection | None]:
        assert self._schema is not None
        assert self._numeric_reference is not None
        assert self._categorical_reference is not None
        selection: Selection | None = None
        if self._seasonal is not None:
            assert times is not None
            (numeric_reference, categorical_reference), selection = self._seasonal.summary(
                seasonal_phases(times, self.seasonality, self._zone))
        else:
            numeric_reference, categorical_reference = (
                self._numeric_reference,
                self._categorical_reference,
            )
        n_window = numeric.shape[0]
        ks_statistics = numeric_reference.ks_statistics(numeric)
        ks_p_values = ks_p_value(ks_statistics, numeric_reference.n, n_window)
        window_counts = count_codes(categorical, categorical_reference.offsets)
        chi2_results: list[ChiSquaredResult] = []
        total_variation: list[float] = []
        for j in range(len(self._schema.categorical_names)):
            start, stop = categorical_reference.offsets[j], categorical_reference.offsets[j + 1]
            reference_counts = categorical_reference.feature_counts(j)
            chi2_results.append(pooled_chi2(reference_counts, window_counts[start:stop]))
            total_variation.append(
                0.5
                * float(
                    np.abs(
                        reference_counts / categorical_reference.n
                        - window_counts[start:stop] / n_window
                    ).sum()
                )
            )
        p_values = np.concatenate([ks_p_values, [result.p_value for result in chi2_results]])
        adjusted = adjust_p_values(p_values, self.correction)
        effect_sizes = np.concatenate([ks_statistics, total_variation])
        # Practical significance: a feature counts only when it moved at least its effect
        # floor, so a real but tiny shift on a large window pages nobody.
        names = (*self._schema.numeric_names, *self._schema.categorical_names)
        floors = np.array([self.min_effect_by_feature.get(name, self.min_effect)
                           for name in names])
        large_enough = effect_sizes >= floors
        rejected = (adjusted <= self.alpha) & large_enough

        features: list[FeatureTest] = []
        window_mean = numeric.mean(axis=0) if n_window else np.zeros(ks_statistics.size)
        window_std = numeric.std(axis=0) if n_window else np.zeros(ks_statistics.size)
        for j, name in enumerate(self._schema.numeric_names):
            features.append(
                FeatureTest(
                    name=name,
                    kind="numeric",
                    test="ks",
                    statistic=float(ks_statistics[j]),
                    p_value=float(ks_p_values[j]),
                    adjusted_p_value=float(adjusted[j]),
                    rejected=bool(rejected[j]),
                    effect_size=float(effect_sizes[j]),
                    reference_mean=float(numeric_reference.mean[j]),
                    window_mean=float(window_mean[j]),
                    reference_std=float(numeric_reference.std[j]),
                    window_std=float(window_std[j]),
                )
            )
        n_numeric = len(self._schema.numeric_names)
        for j, name in enumerate(self._schema.categorical_names):
            position = n_numeric + j
            start, stop = categorical_reference.offsets[j], categorical_reference.offsets[j + 1]
            features.append(
                categorical_feature_test(
                    name=name,
                    vocab=self._schema.categorical_vocab[j],
                    reference_counts=categorical_reference.feature_counts(j),
                    window_counts=window_counts[start:stop],
                    chi2=chi2_results[j],
                    adjusted_p_value=float(adjusted[position]),
                    rejected=bool(rejected[position]),
                    effect_size=float(effect_sizes[position]),
                )
            )
        # Strongest first: smallest adjusted p, then smallest raw p, then largest effect (p-values
        # of a strong shift underflow to 0 together, and the effect size still separates them).
        order = np.lexsort((-effect_sizes, p_values, adjusted))
        top_features = tuple(features[i].name for i in order if rejected[i])[: self.top_k]
        return DriftReport(
            detector=self.name,
            n_reference=numeric_reference.n,
            n_window=int(n_window),
            alpha=self.alpha,
            correction=self.correction,
            statistic=float(effect_sizes.max()),
            p_value=float(adjusted[large_enough].min()) if large_enough.any() else 1.0,
            rejected=bool(rejected.any()),
            features=tuple(features),
            top_features=top_features,
            records_seen=records_seen,
        ), selection


def _timed(report: DriftReport, selection: Selection | None, seasonality: str,
           **window: Any) -> TimedDriftReport:
    """``report`` with where its window lies and which reference records it met."""
    base: dict[str, Any] = {f.name: getattr(report, f.name)
                            for f in dataclasses.fields(DriftReport)}
    if selection is not None:
        base.update(seasonal_fallback_phases=selection.fallback_phases,
                    seasonal_fallback_records=selection.fallback_records)
    return TimedDriftReport(**base, seasonality=seasonality, **window)


@functools.cache
def _default_params() -> dict[str, Any]:
    """Every hyperparameter's default, as a state holds it (for states saved before it)."""
    return {key: _param_state(value) for key, value in FeatureDriftDetector().get_params().items()}


def _param_state(value: Any) -> Any:
    """A hyperparameter as a state array can hold it (mappings as canonical JSON text)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
