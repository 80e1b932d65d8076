"""The detector contract: what detectors see, what they return, and how they are built.

Every detector is fitted on reference data and then judges new data against it, in one of
three families that the pipeline runs side by side on every batch:

* **window detectors** (:class:`WindowDetector`) accumulate records and test whole windows
  against the reference, returning :class:`DriftReport` objects;
* **record detectors** (:class:`RecordDetector`) give every record of a batch a calibrated
  verdict of its own (:class:`Verdict`, one p-value per record);
* **labelled-data detectors** (:class:`LabelledDetector`) judge records *together with their
  labels* (mislabelled or planted records in a labelled stream, suspicious analyst labels).

A detector class builds itself from its ``detectors:`` entry in ``agent.yaml``
(:meth:`Detector.from_config`, with its own pydantic ``Config`` model) and a
:class:`DetectorContext` (the reference batch, and the live model when one is loaded), so the
pipeline constructs whatever is configured through :data:`detectors.DETECTOR_TYPES` without
knowing any class by name. Results are frozen dataclasses rather than tuples so that they can
grow fields without breaking callers, and every result carries a p-value or a calibrated
threshold plus an explanation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Detector",
    "DetectorConfig",
    "DetectorContext",
    "DriftReport",
    "FeatureBatch",
    "FeatureResult",
    "FeatureSchemaError",
    "LabelledDetector",
    "NotFittedError",
    "RecordDetector",
    "TensorLayout",
    "Verdict",
    "WindowDetector",
]


class NotFittedError(RuntimeError):
    """Raised when a detector is used before :meth:`Detector.fit` gave it a reference."""


class FeatureSchemaError(ValueError):
    """Raised when a batch's features do not match the reference the detector was fitted on.

    A detector compares like with like: the same feature names in the same order and, for
    categorical features, the same vocabulary (codes are positions in it). A mismatch usually
    means the encoder was refitted or reconfigured without refitting the detector.
    """


@dataclass(frozen=True)
class FeatureBatch:
    """One batch of encoded records, as every detector sees it.

    Raw-scale columns are kept beside the model input so that explanations can speak in the
    units an analyst knows ("src_bytes mean 120→5400") rather than in scaled model inputs.
    Arrays are converted to the documented dtypes on construction (without copying when they
    already match) and checked for shape, finiteness and code range, so that a detector never
    has to defend against a malformed batch.

    Attributes
    ----------
    numeric
        float64 ``[n, n_numeric]``: raw numeric values, before scaling; finite.
    numeric_names
        One name per numeric column.
    categorical
        int32 ``[n, n_categorical]``: codes ``0..len(vocab)``; code ``len(vocab)`` is the
        unknown bucket (a value the encoder's vocabulary does not hold). Booleans arrive here as
        categorical features with vocabulary ``("false", "true")``.
    categorical_names
        One name per categorical column.
    categorical_vocab
        Per categorical column, the fitted vocabulary (without the unknown bucket).
    encoded
        float32 ``[n, d]``: the model input matrix (``d`` may be 0 when no model is involved).
    labels
        object ``[n]``: each record's label (``str``, or ``None`` where a record carries none),
        when the schema names a label field; ``None`` otherwise. Labelled-data detectors read it.
    embeddings
        float32 ``[n, D]``: the live model's representation of each record, computed once per
        batch by the pipeline when a model is loaded and shared by every detector that asks for
        it (``uses_embeddings``); ``None`` when no model is loaded.
    times
        float64 ``[n]``: each record's timestamp in seconds since the epoch (NaN where a record
        has no readable one), when the schema names a timestamp field; ``None`` otherwise.
        Time-windowed and seasonal detectors read it; the others ignore it.
    """

    numeric: np.ndarray
    numeric_names: tuple[str, ...]
    categorical: np.ndarray
    categorical_names: tuple[str, ...]
    categorical_vocab: tuple[tuple[str, ...], ...]
    encoded: np.ndarray
    labels: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        numeric = np.asarray(self.numeric, dtype=np.float64)
        categorical = np.asarray(self.categorical, dtype=np.int32)
        encoded = np.asarray(self.encoded, dtype=np.float32)
        numeric_names = tuple(self.numeric_names)
        categorical_names = tuple(self.categorical_names)
        vocab = tuple(tuple(v) for v in self.categorical_vocab)
        for attribute, value in (
            ("numeric", numeric),
            ("numeric_names", numeric_names),
            ("categorical", categorical),
            ("categorical_names", categorical_names),
            ("categorical_vocab", vocab),
            ("encoded", encoded),
        ):
            object.__setattr__(self, attribute, value)
        if self.labels is not None:
            object.__setattr__(self, "labels", np.asarray(self.labels, dtype=object))
        if self.embeddings is not None:
            object.__setattr__(self, "embeddings", np.asarray(self.embeddings, dtype=np.float32))
        if self.times is not None:
            object.__setattr__(self, "times", np.asarray(self.times, dtype=np.float64))
        self._check_shapes()
        self._check_values()

    def _check_shapes(self) -> None:
        for attribute in ("numeric", "categorical", "encoded"):
            array = getattr(self, attribute)
            if array.ndim != 2:
                raise ValueError(f"FeatureBatch.{attribute} must be 2-D, got shape {array.shape}.")
        n = self.numeric.shape[0]
        if self.categorical.shape[0] != n or self.encoded.shape[0] != n:
            raise ValueError(
                "FeatureBatch arrays must have the same number of rows, got "
                f"numeric={n}, categorical={self.categorical.shape[0]}, "
                f"encoded={self.encoded.shape[0]}."
            )
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(
                f"FeatureBatch.labels must hold one entry per record ({n}), got shape "
                f"{self.labels.shape}."
            )
        if self.times is not None and self.times.shape != (n,):
            raise ValueError(
                f"FeatureBatch.times must hold one entry per record ({n}), got shape "
                f"{self.times.shape}."
            )
        if self.embeddings is not None and (
            self.embeddings.ndim != 2 or self.embeddings.shape[0] != n
        ):
            raise ValueError(
                f"FeatureBatch.embeddings must be [{n}, D], got shape {self.embeddings.shape}."
            )
        if self.numeric.shape[1] != len(self.numeric_names):
            raise ValueError(
                f"FeatureBatch.numeric has {self.numeric.shape[1]} columns but "
                f"{len(self.numeric_names)} numeric_names."
            )
        if not (
            self.categorical.shape[1] == len(self.categorical_names) == len(self.categorical_vocab)
        ):
            raise ValueError(
                f"FeatureBatch.categorical has {self.categorical.shape[1]} columns, "
                f"{len(self.categorical_names)} categorical_names and "
                f"{len(self.categorical_vocab)} vocabularies; they must agree."
            )
        names = self.numeric_names + self.categorical_names
        if len(set(names)) != len(names):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(
                f"FeatureBatch feature names must be unique, got duplicates {duplicates}."
            )

    def _check_values(self) -> None:
        if self.embeddings is not None and not np.isfinite(self.embeddings).all():
            raise ValueError("FeatureBatch.embeddings holds non-finite values.")
        if self.times is not None and np.isinf(self.times).any():
            raise ValueError("FeatureBatch.times holds infinite values; use NaN for a record "
                             "without a timestamp.")
        finite = np.isfinite(self.numeric)
        if not finite.all():
            column = int(np.flatnonzero(~finite.all(axis=0))[0])
            raise ValueError(
                f"FeatureBatch.numeric column {self.numeric_names[column]!r} holds non-finite "
                "values."
            )
        if self.categorical.size:
            unknown_codes = np.array([len(v) for v in self.categorical_vocab], dtype=np.int64)
            in_range = (self.categorical >= 0) & (self.categorical <= unknown_codes)
            if not in_range.all():
                column = int(np.flatnonzero(~in_range.all(axis=0))[0])
                raise ValueError(
                    f"FeatureBatch.categorical column {self.categorical_names[column]!r} holds "
                    f"codes outside 0..{unknown_codes[column]} (the last is the unknown bucket)."
                )

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Numeric names, then categorical names: the order detectors report features in."""
        return self.numeric_names + self.categorical_names

    def same_schema(self, other: FeatureBatch) -> bool:
        """Whether ``other`` has the same features in the same order, with the same vocabularies."""
        return (
            self.numeric_names == other.numeric_names
            and self.categorical_names == other.categorical_names
            and self.categorical_vocab == other.categorical_vocab
            and self.encoded.shape[1] == other.encoded.shape[1]
        )

    def take(self, index: slice | Sequence[int] | np.ndarray) -> FeatureBatch:
        """Row subset by slice, integer positions or boolean mask."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return FeatureBatch(
            numeric=self.numeric[index],
            numeric_names=self.numeric_names,
            categorical=self.categorical[index],
            categorical_names=self.categorical_names,
            categorical_vocab=self.categorical_vocab,
            encoded=self.encoded[index],
            labels=None if self.labels is None else self.labels[index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
            times=None if self.times is None else self.times[index],
        )

    def with_embeddings(self, embeddings: np.ndarray | None) -> FeatureBatch:
        """The same records carrying the live model's embeddings (or none)."""
        return dataclasses.replace(self, embeddings=embeddings)

    def with_labels(self, labels: np.ndarray | None) -> FeatureBatch:
        """The same records carrying labels (or none)."""
        return dataclasses.replace(self, labels=labels)

    def with_times(self, times: np.ndarray | None) -> FeatureBatch:
        """The same records carrying timestamps in epoch seconds (or none)."""
        return dataclasses.replace(self, times=times)

    @staticmethod
    def concat(batches: Sequence[FeatureBatch]) -> FeatureBatch:
        """Stack batches of one schema row-wise, in order.

        Labels, embeddings and times are kept only when every batch carries them.
        """
        if not batches:
            raise ValueError("FeatureBatch.concat needs at least one batch.")
        first = batches[0]
        for position, batch in enumerate(batches[1:], start=1):
            if not first.same_schema(batch):
                raise FeatureSchemaError(
                    f"FeatureBatch.concat: batch {position} has a different schema from batch 0."
                )
        labelled = all(b.labels is not None for b in batches)
        embedded = all(b.embeddings is not None for b in batches)
        timed = all(b.times is not None for b in batches)
        return FeatureBatch(
            numeric=np.concatenate([b.numeric for b in batches], axis=0),
            numeric_names=first.numeric_names,
            categorical=np.concatenate([b.categorical for b in batches], axis=0),
            categorical_names=first.categorical_names,
            categorical_vocab=first.categorical_vocab,
            encoded=np.concatenate([b.encoded for b in batches], axis=0),
            labels=np.concatenate([b.labels for b in batches]) if labelled else None,  # type: ignore[misc]
            embeddings=(np.concatenate([b.embeddings for b in batches], axis=0)  # type: ignore[misc]
                        if embedded else None),
            times=np.concatenate([b.times for b in batches]) if timed else None,  # type: ignore[misc]
        )


@dataclass(frozen=True)
class Verdict:
    """A record or labelled-data detector's judgement of one batch, one entry per record.

    ``flagged`` says which records the detector reports at its configured false-alarm rate;
    ``score`` orders records by suspicion (higher = more suspicious); ``p_value`` is each
    record's calibrated p-value (``None`` only for detectors calibrated by threshold rather
    than by test). ``kind`` names what a flagged record is (for the classifier ``"attack"`` or
    ``"novel"``; empty for unflagged records) and ``predicted_class``/``confidence`` carry a
    classifier's answer for every record; all three are ``None`` when a detector has nothing
    to say there. ``explanation`` is about the batch as a whole; per-record explanations come
    from :meth:`RecordDetector.explain` for the few records a person will look at.
    """

    detector: str
    flagged: np.ndarray
    score: np.ndarray
    p_value: np.ndarray | None
    explanation: Mapping[str, Any] = field(default_factory=dict)
    kind: np.ndarray | None = None
    predicted_class: np.ndarray | None = None
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        flagged = np.asarray(self.flagged, dtype=bool)
        score = np.asarray(self.score, dtype=np.float64)
        if flagged.shape != score.shape:
            raise ValueError(
                f"Verdict.flagged and Verdict.score must have one shape, got {flagged.shape} "
                f"and {score.shape}."
            )
        object.__setattr__(self, "flagged", flagged)
        object.__setattr__(self, "score", score)
        if self.p_value is not None:
            p_value = np.asarray(self.p_value, dtype=np.float64)
            if p_value.shape != score.shape:
                raise ValueError(
                    f"Verdict.p_value must have the shape of Verdict.score {score.shape}, "
                    f"got {p_value.shape}."
                )
            object.__setattr__(self, "p_value", p_value)
        for name, dtype in (("kind", object), ("predicted_class", object),
                            ("confidence", np.float64)):
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value, dtype=dtype)
            if array.shape != score.shape:
                raise ValueError(
                    f"Verdict.{name} must have the shape of Verdict.score {score.shape}, "
                    f"got {array.shape}."
                )
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def kind_of(self, index: int, default: str) -> str:
        """The finding kind of record ``index``, or ``default`` when the detector names none."""
        if self.kind is None:
            return default
        return str(self.kind[index] or default)


@runtime_checkable
class FeatureResult(Protocol):
    """One feature's share of a window test, as a drift report lists it."""

    @property
    def name(self) -> str: ...

    @property
    def rejected(self) -> bool: ...

    @property
    def p_value(self) -> float: ...

    def describe_movement(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DriftReport:
    """One window tested against the reference: the verdict and why.

    ``features`` holds one result per tested feature (for univariate drift, a
    :class:`detectors.feature_drift.FeatureTest`); multivariate detectors fill it with whatever
    per-feature attribution they have, possibly nothing.

    ``statistic`` is the largest per-feature ``effect_size`` (KS distance or total-variation
    distance, both in ``[0, 1]``), chosen over the raw test statistics because KS distances and
    chi-squared values are not comparable across features. ``p_value`` is the smallest
    multiplicity-adjusted p-value among the features that moved at least the detector's effect
    floor (1.0 when none did; without a floor, among all features), so ``rejected`` is
    ``p_value <= alpha``. ``records_seen`` is the
    number of records the detector had received since it was fitted when the window was tested,
    which places the window in the stream.
    """

    detector: str
    n_reference: int
    n_window: int
    alpha: float
    correction: Literal["bh", "bonferroni"]
    statistic: float
    p_value: float
    rejected: bool
    features: tuple[FeatureResult, ...]
    top_features: tuple[str, ...]
    records_seen: int

    def feature(self, name: str) -> FeatureResult:
        """The test of the feature called ``name``."""
        for feature_test in self.features:
            if feature_test.name == name:
                return feature_test
        raise KeyError(f"No feature named {name!r} in this report.")

    def summary(self) -> str:
        """One line naming the drifted features, strongest first, and how they moved."""
        n_features = len(self.features)
        if not self.rejected:
            return (
                f"{self.detector}: no drift in {n_features} features over {self.n_window} records "
                f"(smallest adjusted p={self.p_value:.3g})"
            )
        by_name = {feature_test.name: feature_test for feature_test in self.features}
        movements = ", ".join(by_name[name].describe_movement() for name in self.top_features)
        n_rejected = sum(feature_test.rejected for feature_test in self.features)
        return (
            f"{self.detector}: drift in {n_rejected} of {n_features} features over "
            f"{self.n_window} records (adjusted p={self.p_value:.3g}): {movements}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints, floats, strings, lists and dicts only."""
        return {
            "detector": self.detector,
            "n_reference": self.n_reference,
            "n_window": self.n_window,
            "alpha": self.alpha,
            "correction": self.correction,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "rejected": self.rejected,
            "features": [feature_test.to_dict() for feature_test in self.features],
            "top_features": list(self.top_features),
            "records_seen": self.records_seen,
        }


# --- helpers every detector uses ---------------------------------------------------------


def params_repr(detector: Any) -> str:
    """``ClassName(name='x', alpha=0.01)`` from the detector's ``get_params()``."""
    arguments = ", ".join(f"{key}={value!r}" for key, value in detector.get_params().items())
    return f"{type(detector).__name__}({arguments})"


def require_schema(name: str, fitted: tuple[tuple[str, ...], tuple[str, ...]] | None,
                   batch: FeatureBatch) -> None:
    """Refuse use before ``fit``, and a batch whose features differ from the reference's."""
    if fitted is None:
        raise NotFittedError(f"{name} is not fitted: call fit(reference) first.")
    if (batch.numeric_names, batch.categorical_names) != fitted:
        raise FeatureSchemaError(
            f"{name}: the batch's features differ from the reference's; refit the detector "
            "after changing the encoder."
        )


# --- building detectors from configuration ------------------------------------------------


class DetectorConfig(BaseModel):
    """The fields every ``detectors:`` entry has; each detector class extends it.

    ``type`` selects the class (a literal in each subclass, so the entries form a union
    discriminated on it, like ``sources:``); ``name`` is the configured id, used in incidents
    and as a metric label, so it comes from configuration and never from data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]*$", max_length=100)
    enabled: bool = True

    def resolved_name(self) -> str:
        """The configured name, or the type when the entry gives none."""
        return self.name or self.type


@runtime_checkable
class ModelHandle(Protocol):
    """Where a detector that needs the live model gets the version serving right now.

    The pipeline swaps versions between batches; a detector asks for the current one at the
    start of each batch and keeps it for that batch, so one batch is never judged by two
    models. ``None`` means no model is loaded (yet). ``novel_false_alarm_rate`` is the
    false-alarm rate the model's novelty is meant to be judged at (a detector's default
    ``alpha``), so it is configured once, with the model.
    """

    @property
    def novel_false_alarm_rate(self) -> float: ...

    def current(self) -> Any: ...


@dataclass(frozen=True)
class TensorLayout:
    """Where one tensor feature (an image) sits in ``FeatureBatch.encoded``, and its units.

    Tensor features are flattened into the encoded row and scaled by one centre and scale;
    detectors that transform images (feature squeezing) need them back in raw units, on their
    grid, with the value range the reference spans (``low``..``high``).
    """

    name: str
    shape: tuple[int, ...]
    start: int
    center: float
    scale: float
    low: float
    high: float

    @property
    def stop(self) -> int:
        return self.start + int(np.prod(self.shape))

    def raw(self, encoded: np.ndarray) -> np.ndarray:
        """``[n, *shape]`` raw values of this feature from encoded rows."""
        values = np.asarray(encoded[:, self.start:self.stop], np.float64)
        return (values * self.scale + self.center).reshape(-1, *self.shape)

    def encode(self, encoded: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """A copy of ``encoded`` with this feature's columns replaced by ``raw`` images."""
        out = np.array(encoded, dtype=np.float32, copy=True)
        flat = np.asarray(raw, np.float64).reshape(len(out), -1)
        out[:, self.start:self.stop] = (flat - self.center) / self.scale
        return out


@dataclass(frozen=True)
class DetectorContext:
    """What a detector may need besides its own configuration to get built.

    ``tensors`` locates the schema's tensor features in the encoded rows (empty without any).
    """

    reference: FeatureBatch
    model: ModelHandle | None = None
    tensors: tuple[TensorLayout, ...] = ()


# --- the three families ------------------------------------------------------------------------


@runtime_checkable
class Detector(Protocol):
    """Anything that learns what normal looks like from a reference batch.

    ``name`` is the configured id; it is also used as a metric label, so it must come from
    configuration, never from data. ``fit`` may be called again to replace the reference; it
    resets whatever the detector accumulated since the previous fit. ``from_config`` builds and
    fits an instance from its ``detectors:`` entry (an instance of the class's ``Config``).
    ``family`` says which of the three contracts below the class honours.
    """

    name: str
    family: ClassVar[Literal["window", "record", "labelled"]]

    def fit(self, reference: FeatureBatch) -> None: ...


@runtime_checkable
class WindowDetector(Detector, Protocol):
    """A detector that tests windows of records against its reference.

    ``update`` appends records and returns one report for every window that became due while
    they were appended (possibly none, possibly several for a large batch). ``test`` tests the
    records currently in the window right away, for timer-driven checks on slow streams, and
    returns ``None`` when the window holds too few records to say anything. Both raise
    :class:`NotFittedError` before ``fit`` and :class:`FeatureSchemaError` for a batch whose
    features differ from the reference's. Neither performs I/O.

    A window spans several batches, so a restarted agent must feed the detector again the
    records its next window will hold: ``records_to_replay`` says how many of the most recent
    records those are (0 when the next window starts with the next record). Re-fed after a
    restart, they make the next report fall on exactly the record it would have fallen on
    without the restart, so incidents keyed by it are not duplicated.
    """

    def update(self, batch: FeatureBatch) -> list[DriftReport]: ...

    def test(self) -> DriftReport | None: ...

    def records_to_replay(self) -> int: ...


@runtime_checkable
class RecordDetector(Detector, Protocol):
    """A detector that gives every record its own calibrated verdict.

    ``score`` returns a :class:`Verdict` with one entry per record of the batch: a score
    (higher = more suspicious), a p-value calibrated on held-out reference data, and
    ``flagged = p_value <= alpha`` for the detector's configured false-alarm rate ``alpha``, so
    that on records exchangeable with the reference at most a fraction ``alpha`` is flagged.
    Verdicts depend on the records only, never on how the stream was cut into batches, and
    ``score`` keeps no state between calls (a replay after a crash scores records again and
    gets the same answers). ``explain`` gives, for a few records a person will look at, what
    made them stand out (nearest labelled examples, the features that separate them) as
    JSON-ready mappings. ``uses_embeddings`` asks the pipeline to put the live model's
    embeddings in the batch. Errors: :class:`NotFittedError` before ``fit``,
    :class:`FeatureSchemaError` for a batch that does not match the reference.
    """

    kind: ClassVar[str]
    uses_embeddings: ClassVar[bool]

    def score(self, batch: FeatureBatch) -> Verdict: ...

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]: ...


@runtime_checkable
class LabelledDetector(Detector, Protocol):
    """A detector that judges records together with their labels.

    ``inspect`` takes a batch whose ``labels`` are set (records without a label are left
    alone) and returns a :class:`Verdict` over the batch's records: flagged records are
    suspected to be mislabelled or planted (poisoning), at the configured false-alarm rate on
    correctly labelled data. A detector may keep a sliding window of recent labelled records
    to judge a record in context; like a window detector it then says how many recent records
    a restarted agent must feed it again (``records_to_replay``). ``explain`` works as for
    record detectors.
    """

    kind: ClassVar[str]
    uses_embeddings: ClassVar[bool]

    def inspect(self, batch: FeatureBatch) -> Verdict: ...

    def records_to_replay(self) -> int: ...

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]: ...
