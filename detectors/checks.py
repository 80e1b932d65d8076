"""Conformance checks that every registered detector must pass, and the data they run on.

Following river's ``checks`` module: :func:`yield_checks` yields plain functions that take a
detector class and raise ``AssertionError`` on failure; ``tests/contract/test_detectors.py``
runs them over every entry of :data:`detectors.DETECTOR_TYPES`. A detector class opts in by
providing two classmethods, ``example_params()`` (constructor arguments to build instances
from) and ``invalid_params()`` (arguments that must raise ``ValueError``), and a ``family``
(``"window"``, ``"record"`` or ``"labelled"``) that selects the checks of its contract:

* every family: parameters stored under their names, bad parameters refused with one
  sentence, use before ``fit`` refused, a batch with other features refused;
* window detectors: well-formed reports, determinism, batch-size invariance, inputs left
  alone, false alarms within the binomial budget of ``alpha`` on a stationary stream, a shift
  detected and explained, refit resets the window, (when they save state) a round trip, and
  (when they can move their reference) ``set_reference`` keeps the stream's position;
* record detectors: one finite verdict per record with p-values in [0, 1], flags at the
  configured rate on records exchangeable with the reference, far-away records flagged,
  verdicts independent of batch size and of earlier calls, explanations that serialise;
* labelled-data detectors: flags within budget on correctly labelled data, flipped labels
  caught, batch-size invariance, and a restart (re-feeding ``records_to_replay()`` records)
  that reproduces the verdicts.

Detectors that need the live model (``requires_model = True``) get one from the
``model_factory`` passed to :func:`yield_checks`; by default a small nearest-labelled-record
model written here in numpy (:class:`NearestLabelModel`), so third-party detectors can be
checked without TensorFlow. The test suite also runs them against the real
``meta.live.AlertModel``.

The checks use a synthetic stream shaped like network-security records: continuous features,
heavily tied ones (mostly zeros, small counts, rates in steps of 0.01), a constant one, a
sparse categorical feature whose rarest values fall into the unknown bucket, and a boolean.
This module is shipped with the package so that third-party detectors can be checked too; it
imports nothing from pytest.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from detectors._distances import distances
from detectors.base import (
    DetectorContext,
    DriftReport,
    FeatureBatch,
    FeatureSchemaError,
    NotFittedError,
    Verdict,
)

__all__ = [
    "BENIGN",
    "CATEGORICAL_NAMES",
    "NUMERIC_NAMES",
    "NearestLabelModel",
    "ServedModel",
    "Shift",
    "false_alarm_budget",
    "synthetic_batch",
    "synthetic_labelled_batch",
    "yield_checks",
]

BENIGN = "normal"
ModelFactory = Callable[[FeatureBatch], Any]

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


def yield_checks(detector_class: type[Any], *, model_factory: ModelFactory | None = None
                 ) -> Iterator[Callable[[type[Any]], None]]:
    """The conformance checks that apply to ``detector_class``, by its family.

    ``model_factory(reference)`` returns an object with a ``current()`` method giving the live
    model, for detectors that need one; the default is :class:`NearestLabelModel`.
    """
    family = getattr(detector_class, "family", "window")
    factory = model_factory or _default_model_factory
    common: list[Callable[..., None]] = [check_params_are_stored, check_bad_params_rejected]
    checks: list[Callable[..., None]]
    if family == "window":
        checks = [
            *common, check_not_fitted, check_schema_mismatch_rejected,
            check_reports_are_well_formed, check_deterministic, check_batch_size_invariant,
            check_input_not_mutated, check_no_false_alarm_on_stationary_stream,
            check_detects_shift, check_refit_resets_window,
        ]
        if hasattr(detector_class, "state_dict") and hasattr(detector_class, "load_state"):
            checks.append(check_state_round_trip)
        if hasattr(detector_class, "set_reference"):
            checks.append(check_set_reference_keeps_the_stream)
    elif family == "record":
        checks = [
            *common, check_record_not_fitted, check_record_schema_mismatch_rejected,
            check_record_verdicts_well_formed, check_record_false_alarm_rate,
            check_record_flags_far_records, check_record_batch_size_invariant,
            check_record_stateless, check_record_input_not_mutated,
        ]
    elif family == "labelled":
        checks = [
            *common, check_labelled_not_fitted, check_labelled_needs_labels,
            check_labelled_schema_mismatch_rejected, check_labelled_false_alarm_rate,
            check_labelled_catches_flipped_labels, check_labelled_batch_size_invariant,
            check_labelled_restart_reproduces_verdicts,
        ]
    else:
        raise AssertionError(f"{detector_class.__name__}.family is {family!r}, not a known family")
    for check in checks:
        yield _bound(check, factory)


def _bound(check: Callable[..., None], factory: ModelFactory) -> Callable[[type[Any]], None]:
    """``check`` with the model factory filled in, keeping its name for test ids."""
    if "model_factory" not in check.__code__.co_varnames:
        return check

    @functools.wraps(check)
    def bound(detector_class: type[Any]) -> None:
        check(detector_class, model_factory=factory)

    return bound


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


def check_set_reference_keeps_the_stream(detector_class: type[Any]) -> None:
    """A new reference (a rolling or approved move) keeps the window, schedule and counters,
    and the next window is tested against it."""
    detector = _build(detector_class)
    rng = np.random.default_rng(10)
    window = _window_of(detector)
    detector.fit(synthetic_batch(rng, 3000))
    detector.update(synthetic_batch(rng, window + window // 2, Shift(score_mean=1.5)))
    fill, seen, tested = detector.window_fill, detector.records_seen, detector.windows_tested
    detector.set_reference(synthetic_batch(rng, 1500, Shift(score_mean=1.5)))
    assert (detector.window_fill, detector.records_seen, detector.windows_tested) == (
        fill, seen, tested)
    reports = detector.update(synthetic_batch(rng, window, Shift(score_mean=1.5)))
    assert reports, "no window was due"
    assert reports[-1].n_reference <= 1500
    assert not reports[-1].rejected, "the shifted stream drifts from its own new reference"


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


# -- labelled synthetic data and a minimal live model ----------------------------------------

_SCAN_SHARE = 0.15


def synthetic_labelled_batch(rng: np.random.Generator, n: int, *, far: float = 0.0
                             ) -> FeatureBatch:
    """``n`` labelled records: benign traffic and a well-separated ``scan`` class.

    ``encoded`` holds standardised numeric columns and one-hot categoricals (what a model
    reads); ``far`` moves every record that far (in standard deviations) from anything in the
    reference, for checks that far-away records are flagged.
    """
    base = synthetic_batch(rng, n)
    scan = rng.random(n) < _SCAN_SHARE
    numeric = base.numeric.copy()
    numeric[scan, 1] += 6.0  # the scan class sits six standard deviations away on `score`
    numeric[scan, 3] = numeric[scan, 3] * 10.0 + 40.0
    numeric[:, 1] += far
    scaled = np.column_stack([
        np.log1p(numeric[:, 0]) - 3.0,
        numeric[:, 1],
        np.log1p(numeric[:, 2]) / 3.0,
        np.log1p(numeric[:, 3]),
        numeric[:, 4] * 4.0,
    ])
    onehots = [np.eye(len(vocab) + 1)[base.categorical[:, j]]
               for j, vocab in enumerate(base.categorical_vocab)]
    labels = np.where(scan, "scan", BENIGN).astype(object)
    return dataclasses.replace(base, numeric=numeric,
                               encoded=np.concatenate([scaled, *onehots], axis=1),
                               labels=labels)


@dataclass(frozen=True)
class _Classified:
    predicted: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray
    novelty_p: np.ndarray
    nearest: np.ndarray

    def novel(self, alpha: float) -> np.ndarray:
        return self.novelty_p <= alpha  # every reference class may name records here


@dataclass(frozen=True)
class _Support:
    y: np.ndarray
    origin: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray


class ServedModel:
    """The model handle the agent gives detectors (:class:`detectors.base.ModelHandle`), around
    one model; assigning ``model`` stands for a new version going live."""

    def __init__(self, model: Any, novel_false_alarm_rate: float = 0.01) -> None:
        self.model = model
        self.novel_false_alarm_rate = novel_false_alarm_rate

    def current(self) -> Any:
        return self.model


class NearestLabelModel:
    """The smallest model with the live model's interface: nearest labelled record, in numpy.

    Classifies by the nearest reference record (encoded features), scores novelty as the
    distance to it and calibrates that distance per class leave-one-out, so the conformance
    suite can check detectors that need a model without TensorFlow. It is also its own
    :class:`~detectors.base.ModelHandle` (``current()`` returns itself).
    """

    version = "checks"
    novel_false_alarm_rate = 0.01

    def __init__(self, reference: FeatureBatch, benign_class: str = BENIGN) -> None:
        if reference.labels is None:
            raise ValueError("NearestLabelModel needs a labelled reference batch.")
        self.benign_class = benign_class
        self._x = np.asarray(reference.encoded, np.float64)
        y = np.asarray(reference.labels).astype(str)
        self.classes = tuple(sorted(set(y.tolist())))
        self.support = _Support(y=y, origin=np.array([f"reference:{i}" for i in range(len(y))]),
                                numeric=reference.numeric, categorical=reference.categorical)
        distance = self._distances(self._x)
        np.fill_diagonal(distance, np.inf)
        loo = distance.min(axis=1)
        self._calibration = {c: np.sort(loo[y == c]) for c in self.classes}

    def current(self) -> NearestLabelModel:
        return self

    def embed(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)

    def classify(self, x: np.ndarray, embeddings: np.ndarray | None = None) -> _Classified:
        distance = self._distances(np.asarray(x, np.float64))
        nearest = distance.argmin(axis=1)
        novelty = distance[np.arange(len(nearest)), nearest]
        predicted = self.support.y[nearest].astype(object)
        p = np.ones(len(nearest))
        for label in self.classes:
            rows = predicted == label
            scores = self._calibration[label]
            at_least = scores.size - np.searchsorted(scores, novelty[rows], side="left")
            p[rows] = (1.0 + at_least) / (scores.size + 1.0)
        return _Classified(predicted, np.ones(len(nearest)), novelty, p, nearest)

    def layers(self, x: np.ndarray) -> list[np.ndarray]:
        """One layer: the encoded features themselves."""
        return [np.asarray(x, np.float32)]

    @property
    def probability_classes(self) -> tuple[str, ...]:
        return self.classes

    def class_probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax over minus each class's nearest distance (in units of the median one)."""
        distance = self._distances(np.asarray(x, np.float64))
        per_class = np.column_stack([distance[:, self.support.y == c].min(axis=1)
                                     for c in self.classes])
        logits = -per_class / max(float(np.median(per_class)), 1e-12)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def neighbours(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        distance = self._distances(np.asarray(embeddings, np.float64))
        index = np.argsort(distance, axis=1, kind="stable")[:, :k]
        return index, np.take_along_axis(distance, index, axis=1)

    def _distances(self, x: np.ndarray) -> np.ndarray:
        return distances(x, self._x)


def _default_model_factory(reference: FeatureBatch) -> NearestLabelModel:
    return NearestLabelModel(reference)


def _context(detector_class: type[Any], reference: FeatureBatch,
             model_factory: ModelFactory) -> DetectorContext:
    model = model_factory(reference) if getattr(detector_class, "requires_model", False) else None
    return DetectorContext(reference=reference, model=model)


def _build_fitted(detector_class: type[Any], params: dict[str, Any], reference: FeatureBatch,
                  model_factory: ModelFactory) -> Any:
    context = _context(detector_class, reference, model_factory)
    detector = detector_class(**params, **({"model": context.model} if context.model else {}))
    detector.fit(reference)
    return detector


def _judge(detector: Any, batch: FeatureBatch) -> Verdict:
    return detector.score(batch) if detector.family == "record" else detector.inspect(batch)


def _assert_same_verdicts(first: list[Verdict], second: list[Verdict]) -> None:
    joined = [np.concatenate([getattr(v, name) for v in verdicts])
              for verdicts in (first, second) for name in ("flagged", "score", "p_value")]
    assert np.array_equal(joined[0], joined[3]), "flags differ"
    assert np.allclose(joined[1], joined[4], rtol=1e-5, atol=1e-6), "scores differ"
    assert np.allclose(joined[2], joined[5], rtol=1e-5, atol=1e-9), "p-values differ"


def _renamed(batch: FeatureBatch) -> FeatureBatch:
    return dataclasses.replace(batch, numeric_names=("renamed",) + batch.numeric_names[1:])


def _refused_with_one_sentence(call: Callable[[], object], error: type[Exception]) -> None:
    try:
        call()
    except error as exc:
        message = str(exc)
        assert message and message.endswith("."), f"unclear message {message!r}"
        assert "\n" not in message, "an error message must be one line"
        return
    raise AssertionError(f"{call} did not raise {error.__name__}")


# -- record detectors ------------------------------------------------------------------------


def check_record_not_fitted(detector_class: type[Any], *, model_factory: ModelFactory) -> None:
    """score and explain before fit raise NotFittedError."""
    rng = np.random.default_rng(10)
    reference = synthetic_labelled_batch(rng, 500)
    context = _context(detector_class, reference, model_factory)
    params = detector_class.example_params()[0]
    detector = detector_class(**params, **({"model": context.model} if context.model else {}))
    batch = synthetic_labelled_batch(rng, 10)
    for call in (lambda: detector.score(batch), lambda: detector.explain(batch, [0])):
        _refused_with_one_sentence(call, NotFittedError)


def check_record_schema_mismatch_rejected(detector_class: type[Any], *,
                                          model_factory: ModelFactory) -> None:
    """A batch with other features than the reference is refused in one sentence."""
    rng = np.random.default_rng(11)
    reference = synthetic_labelled_batch(rng, 1000)
    detector = _build_fitted(detector_class, detector_class.example_params()[0], reference,
                             model_factory)
    batch = _renamed(synthetic_labelled_batch(rng, 20))
    _refused_with_one_sentence(lambda: detector.score(batch), FeatureSchemaError)


def check_record_verdicts_well_formed(detector_class: type[Any], *,
                                      model_factory: ModelFactory) -> None:
    """One finite entry per record, p-values in [0, 1], kinds for flags, JSON explanations."""
    rng = np.random.default_rng(12)
    reference = synthetic_labelled_batch(rng, 1500)
    for params in detector_class.example_params():
        detector = _build_fitted(detector_class, params, reference, model_factory)
        batch = FeatureBatch.concat([synthetic_labelled_batch(rng, 300),
                                     synthetic_labelled_batch(rng, 20, far=30.0)])
        verdict = detector.score(batch)
        assert isinstance(verdict, Verdict) and verdict.detector == detector.name
        assert len(verdict) == len(batch)
        assert np.isfinite(verdict.score).all()
        assert verdict.p_value is not None
        assert ((verdict.p_value >= 0.0) & (verdict.p_value <= 1.0)).all()
        flagged = np.flatnonzero(verdict.flagged)
        assert flagged.size, "records far from the reference raised nothing"
        assert all(verdict.kind_of(int(i), detector.kind) for i in flagged)
        explanations = detector.explain(batch, flagged[:5].tolist())
        assert len(explanations) == min(5, flagged.size)
        json.dumps(explanations, allow_nan=False)
        json.dumps(dict(verdict.explanation), allow_nan=False)


def check_record_false_alarm_rate(detector_class: type[Any], *,
                                  model_factory: ModelFactory) -> None:
    """On records drawn like the reference, p <= alpha happens within the binomial budget."""
    rng = np.random.default_rng(13)
    reference = synthetic_labelled_batch(rng, 3000)
    for params in detector_class.example_params():
        detector = _build_fitted(detector_class, params, reference, model_factory)
        batch = synthetic_labelled_batch(rng, 3000)
        verdict = detector.score(batch)
        assert verdict.p_value is not None
        raised = int((verdict.p_value <= detector.alpha).sum())
        budget = false_alarm_budget(len(batch), detector.alpha)
        assert raised <= budget, f"{raised} of {len(batch)} records at p <= {detector.alpha}"
        benign = np.asarray(batch.labels) == BENIGN
        flagged_benign = int((verdict.flagged & benign).sum())
        assert flagged_benign <= false_alarm_budget(int(benign.sum()), detector.alpha), (
            f"{flagged_benign} benign records flagged")


def check_record_flags_far_records(detector_class: type[Any], *,
                                   model_factory: ModelFactory) -> None:
    """Records far from everything in the reference are flagged (almost) all."""
    rng = np.random.default_rng(14)
    reference = synthetic_labelled_batch(rng, 2000)
    detector = _build_fitted(detector_class, detector_class.example_params()[0], reference,
                             model_factory)
    verdict = detector.score(synthetic_labelled_batch(rng, 200, far=40.0))
    assert verdict.flagged.mean() >= 0.95, f"only {verdict.flagged.mean():.0%} flagged"


def check_record_batch_size_invariant(detector_class: type[Any], *,
                                      model_factory: ModelFactory) -> None:
    """Verdicts depend on the records, not on how they were split into batches."""
    rng = np.random.default_rng(15)
    reference = synthetic_labelled_batch(rng, 1500)
    stream = FeatureBatch.concat([synthetic_labelled_batch(rng, 250),
                                  synthetic_labelled_batch(rng, 30, far=25.0)])
    detector = _build_fitted(detector_class, detector_class.example_params()[0], reference,
                             model_factory)
    outcomes = []
    for size in (len(stream), 97, 1):
        outcomes.append([detector.score(stream.take(slice(start, start + size)))
                         for start in range(0, len(stream), size)])
    _assert_same_verdicts(outcomes[0], outcomes[1])
    _assert_same_verdicts(outcomes[0], outcomes[2])


def check_record_stateless(detector_class: type[Any], *, model_factory: ModelFactory) -> None:
    """Scoring other records in between changes nothing (a replay scores records again)."""
    rng = np.random.default_rng(16)
    reference = synthetic_labelled_batch(rng, 1500)
    detector = _build_fitted(detector_class, detector_class.example_params()[0], reference,
                             model_factory)
    batch = synthetic_labelled_batch(rng, 200)
    first = detector.score(batch)
    detector.score(synthetic_labelled_batch(rng, 500, far=10.0))
    _assert_same_verdicts([first], [detector.score(batch)])


def check_record_input_not_mutated(detector_class: type[Any], *,
                                   model_factory: ModelFactory) -> None:
    """fit, score and explain leave the caller's arrays untouched."""
    rng = np.random.default_rng(17)
    reference, batch = synthetic_labelled_batch(rng, 1000), synthetic_labelled_batch(rng, 100)
    copies = [(b, b.numeric.copy(), b.encoded.copy()) for b in (reference, batch)]
    detector = _build_fitted(detector_class, detector_class.example_params()[0], reference,
                             model_factory)
    verdict = detector.score(batch)
    detector.explain(batch, np.flatnonzero(verdict.flagged)[:3].tolist() or [0])
    for original, numeric, encoded in copies:
        assert np.array_equal(original.numeric, numeric)
        assert np.array_equal(original.encoded, encoded)


# -- labelled-data detectors ------------------------------------------------------------------


def check_labelled_not_fitted(detector_class: type[Any], *, model_factory: ModelFactory) -> None:
    """inspect and explain before fit raise NotFittedError."""
    detector = detector_class(**detector_class.example_params()[0])
    batch = synthetic_labelled_batch(np.random.default_rng(20), 10)
    for call in (lambda: detector.inspect(batch), lambda: detector.explain(batch, [0])):
        _refused_with_one_sentence(call, NotFittedError)


def check_labelled_needs_labels(detector_class: type[Any], *,
                                model_factory: ModelFactory) -> None:
    """Fitting on a reference without labels is refused in one sentence."""
    detector = detector_class(**detector_class.example_params()[0])
    unlabelled = synthetic_labelled_batch(np.random.default_rng(21), 500).with_labels(None)
    _refused_with_one_sentence(lambda: detector.fit(unlabelled), ValueError)


def check_labelled_schema_mismatch_rejected(detector_class: type[Any], *,
                                            model_factory: ModelFactory) -> None:
    """A batch with other features than the reference is refused in one sentence."""
    rng = np.random.default_rng(22)
    detector = _build_fitted(detector_class, detector_class.example_params()[0],
                             synthetic_labelled_batch(rng, 800), model_factory)
    batch = _renamed(synthetic_labelled_batch(rng, 20))
    _refused_with_one_sentence(lambda: detector.inspect(batch), FeatureSchemaError)


def _flip(batch: FeatureBatch, rng: np.random.Generator, share: float
          ) -> tuple[FeatureBatch, np.ndarray]:
    labels = np.asarray(batch.labels, dtype=object).copy()
    flipped = rng.random(len(labels)) < share
    labels[flipped] = np.where(labels[flipped] == BENIGN, "scan", BENIGN)
    return batch.with_labels(labels), flipped


def check_labelled_false_alarm_rate(detector_class: type[Any], *,
                                    model_factory: ModelFactory) -> None:
    """Correctly labelled records are flagged within the binomial budget of alpha."""
    rng = np.random.default_rng(23)
    reference = synthetic_labelled_batch(rng, 2000)
    for params in detector_class.example_params():
        detector = _build_fitted(detector_class, params, reference, model_factory)
        batch = synthetic_labelled_batch(rng, 2000)
        flagged = int(detector.inspect(batch).flagged.sum())
        budget = false_alarm_budget(len(batch), detector.alpha)
        assert flagged <= budget, f"{flagged} of {len(batch)} correct labels flagged"


def check_labelled_catches_flipped_labels(detector_class: type[Any], *,
                                          model_factory: ModelFactory) -> None:
    """Labels flipped between two well-separated classes are caught (at least 80%)."""
    rng = np.random.default_rng(24)
    reference = synthetic_labelled_batch(rng, 2000)
    for params in detector_class.example_params():
        detector = _build_fitted(detector_class, params, reference, model_factory)
        batch, flipped = _flip(synthetic_labelled_batch(rng, 1000), rng, 0.1)
        verdict = detector.inspect(batch)
        caught = verdict.flagged[flipped].mean()
        assert caught >= 0.8, f"only {caught:.0%} of flipped labels flagged"
        explanations = detector.explain(batch, np.flatnonzero(verdict.flagged)[:3].tolist())
        json.dumps(explanations, allow_nan=False)


def check_labelled_batch_size_invariant(detector_class: type[Any], *,
                                        model_factory: ModelFactory) -> None:
    """Verdicts depend on the records and their order, not on the batch boundaries."""
    rng = np.random.default_rng(25)
    reference = synthetic_labelled_batch(rng, 1500)
    stream, _ = _flip(synthetic_labelled_batch(rng, 300), rng, 0.05)
    for params in detector_class.example_params():
        outcomes = []
        for size in (len(stream), 97, 1):
            detector = _build_fitted(detector_class, params, reference, model_factory)
            outcomes.append([detector.inspect(stream.take(slice(start, start + size)))
                             for start in range(0, len(stream), size)])
        _assert_same_verdicts(outcomes[0], outcomes[1])
        _assert_same_verdicts(outcomes[0], outcomes[2])


def check_labelled_restart_reproduces_verdicts(detector_class: type[Any], *,
                                               model_factory: ModelFactory) -> None:
    """A fresh detector fed the last ``records_to_replay()`` records judges on identically."""
    rng = np.random.default_rng(26)
    reference = synthetic_labelled_batch(rng, 1500)
    head, _ = _flip(synthetic_labelled_batch(rng, 400), rng, 0.05)
    tail, _ = _flip(synthetic_labelled_batch(rng, 200), rng, 0.05)
    for params in detector_class.example_params():
        original = _build_fitted(detector_class, params, reference, model_factory)
        original.inspect(head)
        replay = original.records_to_replay()
        assert 0 <= replay <= len(head)
        restarted = _build_fitted(detector_class, params, reference, model_factory)
        if replay:
            restarted.inspect(head.take(slice(len(head) - replay, len(head))))
        _assert_same_verdicts([original.inspect(tail)], [restarted.inspect(tail)])
