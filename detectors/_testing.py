"""Conformance checks that every registered detector must pass, and the data they run on.

Following river's ``checks`` module: :func:`yield_checks` yields plain functions that take a
detector class and raise ``AssertionError`` on failure; ``tests/contract/test_detectors.py``
runs them over every entry of :data:`detectors.DETECTOR_TYPES`. A detector class opts in by
providing two classmethods, ``example_params()`` (constructor arguments to build instances
from) and ``invalid_params()`` (arguments that must raise ``ValueError``).

The checks use a synthetic stream shaped like network-security records: continuous features,
heavily tied ones (mostly zeros, small counts, rates in steps of 0.01), a constant one, a
sparse categorical feature whose rarest values fall into the unknown bucket, and a boolean.
This module is shipped with the package so that third-party detectors can be checked too; it
imports nothing from pytest.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from detectors.base import (
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    NotFittedError,
)

__all__ = [
    "CATEGORICAL_NAMES",
    "NUMERIC_NAMES",
    "Shift",
    "false_alarm_budget",
    "synthetic_batch",
    "yield_checks",
]

NUMERIC_NAMES = ("latency_ms", "score", "src_bytes", "count", "error_rate", "constant")
CATEGORICAL_NAMES = ("protocol", "service", "is_guest")
_PROTOCOLS = ("tcp", "udp", "icmp")
_PROTOCOL_SHARES = (0.8, 0.15, 0.05)
_N_SERVICES = 50
_SERVICE_VOCAB_SIZE = (
    40  # the ten rarest services were never fitted: they land in the unknown bucket
)
_SERVICE_SHARES = 1.0 / np.arange(1, _N_SERVICES + 1) ** 1.3
_SERVICE_SHARES = _SERVICE_SHARES / _SERVICE_SHARES.sum()
_VOCAB = (
    _PROTOCOLS,
    tuple(f"service_{i:02d}" for i in range(_SERVICE_VOCAB_SIZE)),
    ("false", "true"),
)


@dataclass(frozen=True)
class Shift:
    """A known change to the synthetic distribution, for power and explanation checks.

    ``score_mean`` moves the ``score`` feature's mean (its standard deviation is 1);
    ``new_service_share`` replaces that share of ``service`` values by a never-seen service.
    """

    score_mean: float = 0.0
    new_service_share: float = 0.0


def synthetic_batch(rng: np.random.Generator, n: int, shift: Shift | None = None) -> FeatureBatch:
    """``n`` independent synthetic records; the same ``rng`` state gives the same batch."""
    shift = shift or Shift()
    zero_inflated = rng.random(n) < 0.85
    numeric = np.column_stack(
        [
            rng.lognormal(3.0, 0.5, n),
            rng.normal(shift.score_mean, 1.0, n),
            np.where(zero_inflated, 0.0, np.round(rng.lognormal(6.0, 1.5, n))),
            rng.poisson(3.0, n).astype(np.float64),
            np.where(rng.random(n) < 0.9, 0.0, np.round(rng.beta(0.5, 0.5, n), 2)),
            np.zeros(n),
        ]
    )
    protocol = rng.choice(len(_PROTOCOLS), size=n, p=_PROTOCOL_SHARES)
    service = rng.choice(_N_SERVICES, size=n, p=_SERVICE_SHARES)
    service = np.minimum(service, _SERVICE_VOCAB_SIZE)  # unfitted services -> unknown bucket
    if shift.new_service_share > 0.0:
        service = np.where(rng.random(n) < shift.new_service_share, _SERVICE_VOCAB_SIZE, service)
    is_guest = (rng.random(n) < 0.03).astype(np.int32)
    return FeatureBatch(
        numeric=numeric,
        numeric_names=NUMERIC_NAMES,
        categorical=np.column_stack([protocol, service, is_guest]).astype(np.int32),
        categorical_names=CATEGORICAL_NAMES,
        categorical_vocab=_VOCAB,
        encoded=np.zeros((n, 0), dtype=np.float32),
    )


def false_alarm_budget(n_windows: int, alpha: float, tail: float = 1e-3) -> int:
    """Most false alarms a calibrated detector may raise in ``n_windows`` stationary windows.

    The smallest count ``c`` with ``P(X > c) <= tail`` for ``X ~ Binomial(n_windows, alpha)``:
    were every window to raise an alarm with probability exactly ``alpha`` independently, more
    than ``c`` alarms would happen with probability at most ``tail``. Detectors calibrated
    conservatively (as tests on tied data are) stay well below it.
    """
    return int(stats.binom.isf(tail, n_windows, alpha))


def yield_checks(detector_class: type[Any]) -> Iterator[Callable[[type[Any]], None]]:
    """The conformance checks that apply to ``detector_class``."""
    yield check_params_are_stored
    yield check_bad_params_rejected
    yield check_not_fitted
    if hasattr(detector_class, "update") and hasattr(detector_class, "test"):
        yield check_schema_mismatch_rejected
        yield check_reports_are_well_formed
        yield check_deterministic
        yield check_batch_size_invariant
        yield check_input_not_mutated
        yield check_no_false_alarm_on_stationary_stream
        yield check_detects_shift
        yield check_refit_resets_window
    if hasattr(detector_class, "state_dict") and hasattr(detector_class, "load_state"):
        yield check_state_round_trip


# -- the checks ----------------------------------------------------------------------------


def check_params_are_stored(detector_class: type[Any]) -> None:
    """Hyperparameters live under their argument names, and the repr names the class."""
    for params in detector_class.example_params():
        detector = detector_class(**params)
        for key, value in params.items():
            assert getattr(detector, key) == value, f"{key} not stored under its argument name"
        assert repr(detector).startswith(detector_class.__name__ + "(")
        assert isinstance(detector.name, str) and detector.name


def check_bad_params_rejected(detector_class: type[Any]) -> None:
    """Each invalid argument set raises a one-sentence ValueError."""
    invalid = detector_class.invalid_params()
    assert invalid, "invalid_params() must list at least one bad argument set"
    for params in invalid:
        try:
            detector_class(**params)
        except ValueError as error:
            message = str(error)
            assert message and message.endswith("."), f"unclear message {message!r} for {params}"
        else:
            raise AssertionError(f"{detector_class.__name__}(**{params}) was accepted")


def check_not_fitted(detector_class: type[Any]) -> None:
    """Using a detector before fit raises NotFittedError."""
    detector = _build(detector_class)
    batch = synthetic_batch(np.random.default_rng(0), 10)
    for call in _fitted_only_calls(detector, batch):
        try:
            call()
        except NotFittedError:
            continue
        raise AssertionError(f"{call} before fit did not raise NotFittedError")


def check_schema_mismatch_rejected(detector_class: type[Any]) -> None:
    """A batch with other features than the reference is refused, not silently compared."""
    detector = _build(detector_class)
    rng = np.random.default_rng(1)
    detector.fit(synthetic_batch(rng, 2000))
    batch = synthetic_batch(rng, 50)
    renamed = dataclasses.replace(batch, numeric_names=("renamed",) + batch.numeric_names[1:])
    try:
        detector.update(renamed)
    except FeatureSchemaError:
        return
    raise AssertionError("a batch with renamed features was accepted")


def check_reports_are_well_formed(detector_class: type[Any]) -> None:
    """Reports name the detector, carry a valid p-value and serialise to strict JSON."""
    for params in detector_class.example_params():
        detector = detector_class(**params)
        reports = _run_stream(detector, seed=2, shift_at=None)
        assert reports, "a stream of several windows produced no report"
        for report in reports:
            assert isinstance(report, DriftReport)
            assert report.detector == detector.name
            assert 0.0 <= report.p_value <= 1.0
            assert report.rejected == (report.p_value <= report.alpha)
            rejected_names = {test.name for test in report.features if test.rejected}
            assert set(report.top_features) <= rejected_names
            json.dumps(report.to_dict(), allow_nan=False)
            summary = report.summary()
            assert isinstance(summary, str) and "\n" not in summary


def check_deterministic(detector_class: type[Any]) -> None:
    """The same data gives the same reports."""
    for params in detector_class.example_params():
        first = _run_stream(detector_class(**params), seed=3, shift_at=0.5)
        second = _run_stream(detector_class(**params), seed=3, shift_at=0.5)
        assert [r.to_dict() for r in first] == [r.to_dict() for r in second]


def check_batch_size_invariant(detector_class: type[Any]) -> None:
    """Reports depend on the records, not on how they were split into batches."""
    for params in detector_class.example_params():
        rng = np.random.default_rng(4)
        reference = synthetic_batch(rng, 3000)
        stream = synthetic_batch(rng, 3 * _window_of(detector_class(**params)) + 17)
        outcomes = []
        for batch_size in (len(stream), 97, 1):
            detector = detector_class(**params)
            detector.fit(reference)
            reports = []
            for start in range(0, len(stream), batch_size):
                reports.extend(detector.update(stream.take(slice(start, start + batch_size))))
            outcomes.append([r.to_dict() for r in reports])
        assert outcomes[0], "the stream produced no report"
        assert outcomes[0] == outcomes[1] == outcomes[2]


def check_input_not_mutated(detector_class: type[Any]) -> None:
    """fit and update leave the caller's arrays untouched."""
    detector = _build(detector_class)
    rng = np.random.default_rng(5)
    reference, batch = synthetic_batch(rng, 2000), synthetic_batch(rng, 700)
    copies = [(b, b.numeric.copy(), b.categorical.copy()) for b in (reference, batch)]
    detector.fit(reference)
    detector.update(batch)
    for original, numeric, categorical in copies:
        assert np.array_equal(original.numeric, numeric)
        assert np.array_equal(original.categorical, categorical)


def check_no_false_alarm_on_stationary_stream(detector_class: type[Any]) -> None:
    """On a stream drawn like the reference, alarms stay within the binomial false-alarm budget."""
    for params in detector_class.example_params():
        detector = detector_class(**params)
        reports = _run_stream(detector, seed=6, shift_at=None, n_windows=20)
        alarms = sum(report.rejected for report in reports)
        budget = false_alarm_budget(len(reports), reports[0].alpha)
        assert alarms <= budget, f"{alarms} false alarms in {len(reports)} windows"


def check_detects_shift(detector_class: type[Any]) -> None:
    """The first window made only of shifted records raises an alarm naming a shifted feature."""
    for params in detector_class.example_params():
        detector = detector_class(**params)
        n_windows = 6
        reports = _run_stream(
            detector, seed=7, shift_at=0.5, n_windows=n_windows, shift=Shift(1.0, 0.2)
        )
        shift_start = (n_windows // 2) * _window_of(detector)
        after = [r for r in reports if r.records_seen - r.n_window >= shift_start]
        assert after, "no window lies entirely after the shift"
        assert after[0].rejected, "the first fully shifted window raised no alarm"
        assert after[0].top_features[0] in {"score", "service"}
        before = [r for r in reports if r.records_seen <= shift_start]
        assert not any(r.rejected for r in before), "an alarm before the shift"


def check_refit_resets_window(detector_class: type[Any]) -> None:
    """fit starts afresh: nothing accumulated before carries over."""
    detector = _build(detector_class)
    rng = np.random.default_rng(8)
    detector.fit(synthetic_batch(rng, 2000))
    detector.update(synthetic_batch(rng, _window_of(detector) + 5))
    detector.fit(synthetic_batch(rng, 2000))
    assert detector.window_fill == 0
    assert detector.windows_tested == 0
    assert detector.test() is None


def check_state_round_trip(detector_class: type[Any]) -> None:
    """A detector saved mid-stream (through npz, no pickle) resumes exactly where it stopped."""
    for params in detector_class.example_params():
        rng = np.random.default_rng(9)
        reference = synthetic_batch(rng, 3000)
        window = _window_of(detector_class(**params))
        head = synthetic_batch(rng, window + window // 3)
        tail = synthetic_batch(rng, 2 * window, Shift(score_mean=0.5))
        original = detector_class(**params)
        original.fit(reference)
        original.update(head)
        buffer = io.BytesIO()
        np.savez(buffer, **original.state_dict())
        buffer.seek(0)
        with np.load(buffer, allow_pickle=False) as saved:
            state = {key: saved[key] for key in saved.files}
        resumed = detector_class(**params)
        resumed.load_state(state)
        assert resumed.window_fill == original.window_fill
        assert resumed.windows_tested == original.windows_tested
        assert [r.to_dict() for r in resumed.update(tail)] == [
            r.to_dict() for r in original.update(tail)
        ]


# -- helpers -------------------------------------------------------------------------------


def _build(detector_class: type[Any]) -> Any:
    return detector_class(**detector_class.example_params()[0])


def _window_of(detector: Any) -> int:
    return int(getattr(detector, "window", 500))


def _fitted_only_calls(detector: Any, batch: FeatureBatch) -> list[Callable[[], object]]:
    calls: list[Callable[[], object]] = [lambda: detector.update(batch), lambda: detector.test()]
    if hasattr(detector, "state_dict"):
        calls.append(lambda: detector.state_dict())
    return calls


def _run_stream(
    detector: Any,
    *,
    seed: int,
    shift_at: float | None,
    n_windows: int = 4,
    shift: Shift | None = None,
) -> list[DriftReport]:
    """Fit on 4000 records, then feed ``n_windows`` windows in uneven batches.

    With ``shift_at`` the records from that fraction of the stream on are drawn shifted
    (by ``shift``, default one standard deviation on ``score`` and 20% new services).
    """
    rng = np.random.default_rng(seed)
    detector.fit(synthetic_batch(rng, 4000))
    n = n_windows * _window_of(detector)
    if shift_at is None:
        stream = synthetic_batch(rng, n)
    else:
        n_before = int(round(n * shift_at))
        stream = FeatureBatch.concat(
            [
                synthetic_batch(rng, n_before),
                synthetic_batch(rng, n - n_before, shift or Shift(1.0, 0.2)),
            ]
        )
    reports: list[DriftReport] = []
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n, size=7)]))
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        reports.extend(detector.update(stream.take(slice(int(start), int(stop)))))
    return reports
