"""Shared machinery of the poisoning detectors: class splits, clean calibration, the stream.

Spectral signatures (Tran et al. 2018) and activation clustering (Chen et al. 2018) share one
shape, which lives here; each detector only says how it finds a class's suspect group:

* **class split** (:class:`ClassSplit`): the records of one class are centred, reduced to a
  basis (the top singular vector; the top principal components) and split in two; the smaller
  group is the *suspect* one, the larger the *bulk*. The axis from the bulk to the suspect
  group scores every record (how far past the bulk's median it lies, in units of the *clean
  reference's* spread on that axis — clean, so planted records cannot inflate it) and the
  suspect group's distance from the bulk on it is the class-level ``separation``.
* **calibration without tuning** (:class:`NullCalibration`): the same split, fitted on clean
  reference subsamples of the class (as many records as the window holds, capped at half the
  reference class) and scored on the held-out reference records, gives the null distribution
  of the record score (pooled over runs: conformal p-values) and of the separation (the class
  gate). A record is flagged when its class's separation exceeds every clean run (the gate),
  it sits in the suspect group, and its own p-value is at most ``alpha``; on clean data the
  record p-value alone keeps the false-alarm rate at ``alpha``, and the gate and membership
  keep the bulk of a poisoned class from being flagged at that rate too, which the precision
  of a 5 % plant needs.
* **the stream** (:class:`WindowedPoisoningDetector`): the last ``window`` labelled records,
  with class splits refitted at fixed stream *checkpoints* every ``stride`` records (positions
  counted from the fit, independent of batch boundaries). A record is judged on arrival by
  its class's split from the last checkpoint before it (out of sample, like the held-out
  calibration records), so its verdict depends on the records before it and never on how the
  stream was cut into batches, and every record gets its verdict in its own batch. Until a
  class has ``min_class_records`` records in the window at a checkpoint, its records are
  screened against the clean reference alone (squared distance to the class's reference mean,
  leave-one-out calibrated), so gross label flips are caught from the first record on.

The representation is the live model's embedding when a model is loaded (the reference is
embedded with the same model version; everything reference-side, and the window's
representation, is recomputed when the version changes), else the encoded model input.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors._distances import squared_distances
from detectors.base import (
    DetectorConfig,
    DetectorContext,
    FeatureBatch,
    ModelHandle,
    Verdict,
    params_repr,
    require_schema,
)

__all__ = ["ClassSplit", "NullCalibration", "PoisoningConfig", "WindowedPoisoningDetector",
           "fit_split", "top_directions", "two_means", "two_means_1d"]

_MIN_FIT = 10  # fewer records than this cannot be split meaningfully
_SCALE_FLOOR = 1e-9
_SIZE_GRID = np.unique(np.floor(_MIN_FIT * 1.5 ** np.arange(40)).astype(np.int64))


# --- numerics ---------------------------------------------------------------------------------


def top_directions(centred: np.ndarray, k: int) -> np.ndarray:
    """``[D, k]`` top right singular vectors of a centred ``[m, D]`` matrix."""
    m, d = centred.shape
    k = max(1, min(k, d))
    if d <= m:  # the D x D scatter matrix is the cheaper eigenproblem
        _, vectors = np.linalg.eigh(centred.T @ centred)
        return np.ascontiguousarray(vectors[:, ::-1][:, :k])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.ascontiguousarray(vt[:k].T)


def two_means_1d(values: np.ndarray) -> np.ndarray | None:
    """The exact 2-means split of 1-D values (bool: upper group), or None for constant values."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    m = v.size
    if m < 2 or v[0] == v[-1]:
        return None
    s1 = np.cumsum(v)
    s2 = np.cumsum(v * v)
    k = np.arange(1, m)  # the lower group holds the k smallest values
    left = s2[:-1] - s1[:-1] ** 2 / k
    right = (s2[-1] - s2[:-1]) - (s1[-1] - s1[:-1]) ** 2 / (m - k)
    cost = np.where(v[1:] > v[:-1], left + right, np.inf)  # never split tied values
    cut = int(np.argmin(cost)) + 1
    upper = np.zeros(m, dtype=bool)
    upper[order[cut:]] = True
    return upper


def two_means(z: np.ndarray, iterations: int = 50) -> np.ndarray | None:
    """2-means (Lloyd) from two deterministic starts, the lower inertia kept; None if degenerate.

    Starts: the record farthest from the mean and the one farthest from it (which finds a small
    far cluster at once), and the split on the first coordinate's sign (a balanced split).
    """
    if z.shape[0] < 2:
        return None
    far = z[int(np.argmax((z * z).sum(1)))]
    other = z[int(np.argmax(((z - far) ** 2).sum(1)))]
    best: tuple[float, np.ndarray] | None = None
    for start in (np.stack([far, other]), _means(z, z[:, 0] > 0)):
        if start is None:
            continue
        result = _lloyd(z, start, iterations)
        if result is not None and (best is None or result[0] < best[0]):
            best = result
    return None if best is None else best[1]


def _means(z: np.ndarray, group: np.ndarray) -> np.ndarray | None:
    if group.all() or not group.any():
        return None
    return np.stack([z[~group].mean(0), z[group].mean(0)])


def _lloyd(z: np.ndarray, centres: np.ndarray, iterations: int
           ) -> tuple[float, np.ndarray] | None:
    group = np.zeros(z.shape[0], dtype=bool)
    for _ in range(iterations):
        distance = ((z[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        group = distance[:, 1] < distance[:, 0]
        updated = _means(z, group)
        if updated is None:
            return None
        if np.array_equal(updated, centres):
            break
        centres = updated
    inertia = float(((z - centres[group.astype(np.int64)]) ** 2).sum())
    return inertia, group


@dataclass(frozen=True)
class ClassSplit:
    """One class's records split into a bulk and a (smaller) suspect group, in one basis.

    ``score`` is a record's signed distance past the bulk's median along the bulk→suspect axis,
    in standard deviations of clean reference records on that axis; ``separation`` is the
    suspect group's median score (0 without a suspect group).
    """

    mean: np.ndarray  # [D]
    basis: np.ndarray  # [D, k]
    bulk_centre: np.ndarray  # [k]
    suspect_centre: np.ndarray | None  # [k]; None when the records did not split
    axis: np.ndarray  # [D], unit
    centre: float
    scale: float
    separation: float
    suspect_share: float

    def score(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.axis - self.centre) / self.scale

    def members(self, x: np.ndarray) -> np.ndarray:
        """Whether each record lies nearer the suspect group's centre than the bulk's."""
        if self.suspect_centre is None:
            return np.zeros(len(x), dtype=bool)
        z = (np.asarray(x, np.float64) - self.mean) @ self.basis
        to_suspect = ((z - self.suspect_centre) ** 2).sum(1)
        to_bulk = ((z - self.bulk_centre) ** 2).sum(1)
        return to_suspect < to_bulk


def fit_split(fit: np.ndarray, clean: np.ndarray, components: int) -> ClassSplit:
    """Split ``fit`` records in a ``components``-dimensional basis; scale on ``clean`` ones.

    One component is the spectral signature (the top singular vector, split exactly); more
    are activation clustering (2-means on the top principal components).
    """
    fit = np.asarray(fit, np.float64)
    mean = fit.mean(0)
    centred = fit - mean
    basis = top_directions(centred, min(components, max(1, fit.shape[0] - 1)))
    z = centred @ basis
    group = two_means_1d(z[:, 0]) if basis.shape[1] == 1 else two_means(z)
    if group is not None and group.sum() * 2 > group.size:
        group = ~group  # the suspect group is the smaller one
    if group is None or not group.any():
        axis = basis[:, 0]
        projection = centred @ axis
        scale = _scale(clean, mean, axis)
        return ClassSplit(mean, basis, z.mean(0), None, axis, float(np.median(projection)),
                          scale, 0.0, 0.0)
    bulk_centre, suspect_centre = z[~group].mean(0), z[group].mean(0)
    direction = basis @ (suspect_centre - bulk_centre)
    axis = direction / max(float(np.linalg.norm(direction)), _SCALE_FLOOR)
    projection = centred @ axis
    centre = float(np.median(projection[~group]))
    scale = _scale(clean, mean, axis)
    separation = (float(np.median(projection[group])) - centre) / scale
    return ClassSplit(mean, basis, bulk_centre, suspect_centre, axis, centre, scale,
                      separation, float(group.mean()))


def _scale(clean: np.ndarray, mean: np.ndarray, axis: np.ndarray) -> float:
    spread = float(np.std((np.asarray(clean, np.float64) - mean) @ axis))
    return max(spread, _SCALE_FLOOR)


@dataclass(frozen=True)
class NullCalibration:
    """Record scores and separations of splits fitted on clean reference subsamples."""

    scores: np.ndarray  # sorted, pooled over runs
    separations: np.ndarray  # sorted, one per run

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return _conformal(self.scores, scores)

    def gate_p_value(self, separation: float) -> float:
        return float(_conformal(self.separations, np.array([separation]))[0])


def _conformal(calibration_sorted: np.ndarray, scores: np.ndarray) -> np.ndarray:
    at_least = calibration_sorted.size - np.searchsorted(calibration_sorted, scores, side="left")
    return (1.0 + at_least) / (calibration_sorted.size + 1.0)


# --- reference side -----------------------------------------------------------------------------


@dataclass
class _ClassReference:
    rows: np.ndarray  # positions in the reference representation
    mean: np.ndarray
    screen: np.ndarray  # sorted leave-one-out squared distances to the class mean


@dataclass
class _Reference:
    """The reference in one representation (one model version), and what derives from it."""

    x: np.ndarray  # [n, D] float64
    y: np.ndarray  # object [n]
    classes: dict[Any, _ClassReference]
    nulls: dict[tuple[Any, int], NullCalibration]


@dataclass
class _Judged:
    p_value: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    method: str


@dataclass(frozen=True)
class _ClassModel:
    split: ClassSplit
    null: NullCalibration
    gate_p: float
    gate_open: bool
    n_window: int
    share_flagged: float  # of the window's records of the class, at the checkpoint


# --- configuration -------------------------------------------------------------------------------


class PoisoningConfig(DetectorConfig):
    """Fields the poisoning detectors share (``type`` is set by each detector's config)."""

    alpha: float = Field(default=0.01, gt=0, lt=1)
    window: int = Field(default=2000, ge=10, le=100_000)
    stride: int = Field(default=200, ge=1, le=100_000)
    min_class_records: int = Field(default=30, ge=10)
    calibration_runs: int = Field(default=20, ge=5, le=1000)
    max_reference: int = Field(default=20_000, ge=100)


# --- the stream -----------------------------------------------------------------------------------


class WindowedPoisoningDetector:
    """Base of the poisoning detectors: a subclass names its ``method`` and passes how many
    directions its class split uses (``components``: 1 for the spectral signature, the
    reduced dimension for activation clustering)."""

    family: ClassVar[Literal["labelled"]] = "labelled"
    kind: ClassVar[str] = "poisoning"
    uses_embeddings: ClassVar[bool] = True
    requires_model: ClassVar[bool] = False
    method: ClassVar[str] = ""

    def __init__(self, name: str, *, alpha: float, window: int, stride: int,
                 min_class_records: int, calibration_runs: int, max_reference: int,
                 components: int, model: ModelHandle | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string.")
        if isinstance(alpha, bool) or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}.")
        for label, value, low in (("window", window, 10), ("stride", stride, 1),
                                  ("min_class_records", min_class_records, 10),
                                  ("calibration_runs", calibration_runs, 5),
                                  ("max_reference", max_reference, 100)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer of at least {low}, got {value!r}.")
        if min_class_records > window:
            raise ValueError(
                f"min_class_records ({min_class_records}) must not exceed window ({window}).")
        self.name = name
        self.alpha = alpha
        self.window = window
        self.stride = stride
        self.min_class_records = min_class_records
        self.calibration_runs = calibration_runs
        self.max_reference = max_reference
        self.model = model
        self._components = components
        self._schema: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._reference_encoded = np.zeros((0, 0), np.float32)
        self._reference_labels = np.zeros(0, dtype=object)
        self._reference: _Reference | None = None
        self._key: Any = None
        self._buffer_encoded = np.zeros((0, 0), np.float32)
        self._buffer_x = np.zeros((0, 0))  # the representation of the buffered records
        self._buffer_y = np.zeros(0, dtype=object)
        self._buffer_at = np.zeros(0, dtype=np.int64)  # stream position of each record
        self._models: dict[Any, _ClassModel] = {}  # class splits fitted at the checkpoint
        self._checkpoint = 0
        self._records_seen = 0

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "window": self.window,
                "stride": self.stride, "min_class_records": self.min_class_records,
                "calibration_runs": self.calibration_runs, "max_reference": self.max_reference}

    def __repr__(self) -> str:
        return params_repr(self)

    @property
    def is_fitted(self) -> bool:
        return self._schema is not None

    @classmethod
    def from_config(cls, config: PoisoningConfig, context: DetectorContext) -> Any:
        """Built from its ``detectors:`` entry (every field but type/name/enabled is a
        constructor argument) and fitted on the context's reference."""
        params = config.model_dump(exclude={"type", "name", "enabled"})
        detector = cls(config.resolved_name(), model=context.model, **params)
        detector.fit(context.reference)
        return detector

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        return [{"name": ""}, {"alpha": 0.0}, {"alpha": 1.5}, {"window": 5}, {"stride": 0},
                {"min_class_records": 5}, {"window": 20, "min_class_records": 30},
                {"calibration_runs": 2}, {"max_reference": 10}]

    # --- the labelled-data protocol ---------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Keep (a sample of) the labelled reference; calibration follows the representation."""
        if reference.labels is None:
            raise ValueError(
                f"{self.name} needs labelled reference records; name the label field in "
                "`schema.label`."
            )
        labelled = np.flatnonzero([label is not None for label in reference.labels])
        if labelled.size < 2 * self.min_class_records:
            raise ValueError(
                f"{self.name} needs at least {2 * self.min_class_records} labelled reference "
                f"records, got {labelled.size}."
            )
        # In a model's embedding, records the model was trained on sit tighter around their
        # class than new ones: the clean null comes from the rows it never saw, when the
        # handle names enough of them.
        held_out = np.asarray(getattr(self.model, "held_out_rows", np.zeros(0)), np.int64)
        unseen = labelled[np.isin(labelled, held_out)]
        if unseen.size >= 2 * self.min_class_records:
            labelled = unseen
        if labelled.size > self.max_reference:
            rng = np.random.default_rng(0)
            labelled = np.sort(rng.choice(labelled, self.max_reference, replace=False))
        self._reference_encoded = np.asarray(reference.encoded[labelled], np.float32)
        self._reference_labels = np.asarray(reference.labels[labelled], dtype=object)
        self._schema = (reference.numeric_names, reference.categorical_names)
        self._reference = None
        self._key = None
        self._reset_stream(self._reference_encoded.shape[1])

    def inspect(self, batch: FeatureBatch) -> Verdict:
        """Judge the batch's labelled records on arrival, refitting splits at checkpoints."""
        require_schema(self.name, self._schema, batch)
        model = self._sync()
        representation = self._represent(batch, model)
        n = len(batch)
        labels = batch.labels if batch.labels is not None else np.full(n, None, dtype=object)
        labelled = np.array([label is not None for label in labels], dtype=bool)
        p_value = np.ones(n)
        flagged = np.zeros(n, dtype=bool)
        start = 0
        while start < n:
            position = self._records_seen + start
            checkpoint = (position // self.stride + 1) * self.stride
            stop = min(n, start + checkpoint - position)
            rows = start + np.flatnonzero(labelled[start:stop])
            if rows.size:
                judged = self._judge(representation[rows], labels[rows])
                p_value[rows], flagged[rows] = judged.p_value, judged.flagged
                self._remember(np.asarray(batch.encoded[rows], np.float32),
                               representation[rows], labels[rows], position - start + rows)
            if self._records_seen + stop == checkpoint:
                self._refit(checkpoint)
            start = stop
        self._records_seen += n
        kind = np.where(flagged, self.kind, "").astype(object)
        return Verdict(detector=self.name, flagged=flagged, score=-np.log10(p_value),
                       p_value=p_value, kind=kind,
                       predicted_class=np.asarray(labels, dtype=object).copy(),
                       explanation={"method": self.method, "alpha": self.alpha,
                                    "score": "-log10(p_value)",
                                    "classes": self._class_summary()})

    def records_to_replay(self) -> int:
        """Records back to the checkpoint phase before the oldest record of the last fit's window.

        A restarted detector fed them refits, at the same checkpoint, the same splits the
        running one judges with now, and places later checkpoints on the same records.
        """
        if self._buffer_at.size and self._buffer_at[0] < self._checkpoint:
            first = int(self._buffer_at[0]) // self.stride * self.stride
        else:
            first = self._checkpoint
        return int(self._records_seen - first)

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Each record's label, method, score and p-value, its class's split, nearest references."""
        require_schema(self.name, self._schema, batch)
        model = self._sync()
        reference = self._reference
        assert reference is not None
        rows = np.asarray(indices, dtype=np.int64)
        x = self._represent(batch, model)[rows]
        labels = batch.labels if batch.labels is not None else np.full(len(batch), None)
        squared = squared_distances(x, reference.x)
        out: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            label = labels[row]
            entry: dict[str, Any] = {"label": None if label is None else str(label),
                                     "method": self.method, "alpha": self.alpha}
            if label is not None:
                judged = self._judge(x[i:i + 1], np.array([label], dtype=object))
                entry.update(method=judged.method, score=round(float(judged.score[0]), 4),
                             p_value=float(judged.p_value[0]),
                             flagged=bool(judged.flagged[0]))
                entry.update(self._class_entry(label, x[i:i + 1]))
                entry.update(_nearest(squared[i], reference.y, label))
            out.append(entry)
        return out

    # --- judging ----------------------------------------------------------------------------------

    def _judge(self, x: np.ndarray, labels: np.ndarray) -> _Judged:
        """Verdicts for records of any labels, each by its class's split or the screen."""
        reference = self._reference
        assert reference is not None
        n = len(labels)
        judged = _Judged(np.ones(n), np.zeros(n), np.zeros(n, dtype=bool), "none")
        for label in _distinct(labels):
            rows = np.flatnonzero(labels == label)
            model = self._models.get(label)
            if model is not None:
                score = model.split.score(x[rows])
                p = model.null.p_values(score)
                judged.flagged[rows] = ((p <= self.alpha) & model.gate_open
                                        & model.split.members(x[rows]))
                judged.method = self.method
            elif label in reference.classes:
                cls = reference.classes[label]
                score = ((x[rows] - cls.mean) ** 2).sum(1)
                p = _conformal(cls.screen, score)
                judged.flagged[rows] = p <= self.alpha
                judged.method = "reference_screen"
            else:
                continue
            judged.p_value[rows], judged.score[rows] = p, score
        return judged

    def _refit(self, checkpoint: int) -> None:
        """At a checkpoint: keep the last ``window`` labelled records and refit every class."""
        keep = slice(max(0, self._buffer_y.size - self.window), None)
        self._buffer_encoded = self._buffer_encoded[keep]
        self._buffer_x = self._buffer_x[keep]
        self._buffer_y = self._buffer_y[keep]
        self._buffer_at = self._buffer_at[keep]
        self._checkpoint = checkpoint
        self._fit_models()

    def _fit_models(self) -> None:
        reference = self._reference
        assert reference is not None
        self._models = {}
        in_window = self._buffer_at < self._checkpoint
        y = self._buffer_y[in_window]
        x = self._buffer_x[in_window]
        for label in _distinct(y):
            rows = np.flatnonzero(y == label)
            if rows.size < self.min_class_records or label not in reference.classes:
                continue
            null = self._null(label, rows.size)
            if null is None:
                continue
            cls = reference.classes[label]
            split = fit_split(x[rows], reference.x[cls.rows], self._components)
            gate_p = null.gate_p_value(split.separation)
            gate_open = gate_p <= max(self.alpha, 1.0 / (self.calibration_runs + 1))
            window_flags = ((null.p_values(split.score(x[rows])) <= self.alpha) & gate_open
                            & split.members(x[rows]))
            self._models[label] = _ClassModel(split, null, gate_p, gate_open, int(rows.size),
                                              float(window_flags.mean()))

    def _null(self, label: Any, n_window: int) -> NullCalibration | None:
        """Clean-run calibration for a window of ``n_window`` records of the class (cached)."""
        reference = self._reference
        assert reference is not None
        rows = reference.classes[label].rows
        wanted = min(n_window, rows.size // 2)
        if wanted < _MIN_FIT:
            return None
        size = int(_SIZE_GRID[np.searchsorted(_SIZE_GRID, wanted, side="right") - 1])
        cached = reference.nulls.get((label, size))
        if cached is not None:
            return cached
        rng = np.random.default_rng([zlib.crc32(str(label).encode()), size])
        scores, separations = [], []
        for _ in range(self.calibration_runs):
            order = rng.permutation(rows)
            fit, held = order[:size], order[size:]
            split = fit_split(reference.x[fit], reference.x[held], self._components)
            scores.append(split.score(reference.x[held]))
            separations.append(split.separation)
        null = NullCalibration(np.sort(np.concatenate(scores)), np.sort(np.array(separations)))
        reference.nulls[(label, size)] = null
        return null

    def _class_summary(self) -> dict[str, Any]:
        return {str(label): {"n_window": m.n_window, "gate_p_value": m.gate_p,
                             "separation": round(m.split.separation, 3),
                             "suspect_share": round(m.split.suspect_share, 4),
                             "share_flagged": round(m.share_flagged, 4)}
                for label, m in sorted(self._models.items(), key=lambda item: str(item[0]))}

    def _class_entry(self, label: Any, x: np.ndarray) -> dict[str, Any]:
        """The record's class split as of the last checkpoint (None before there is one)."""
        model = self._models.get(label)
        if model is None:
            return {"class_share_flagged": None}
        return {"class_share_flagged": round(model.share_flagged, 4),
                "class_gate_p_value": model.gate_p,
                "class_separation": round(model.split.separation, 3),
                "class_suspect_share": round(model.split.suspect_share, 4),
                "in_suspect_group": bool(model.split.members(x)[0])}

    # --- representation and state ----------------------------------------------------------------

    def _sync(self) -> Any:
        """The serving model; recompute everything reference-side when its version changed."""
        if self._schema is None:
            raise AssertionError("unreachable: require_schema refuses use before fit")
        model = self.model.current() if self.model is not None else None
        key = None if model is None else (id(model), str(getattr(model, "version", "")))
        if self._reference is not None and key == self._key:
            return model
        x = self._embed(model, self._reference_encoded)
        self._reference = _build_reference(x, self._reference_labels)
        self._key = key
        if self._buffer_y.size:
            self._buffer_x = self._embed(model, self._buffer_encoded)
        self._models = {}
        if self._checkpoint > 0:
            self._fit_models()
        return model

    def _represent(self, batch: FeatureBatch, model: Any) -> np.ndarray:
        if model is None:
            return np.asarray(batch.encoded, np.float64)
        if batch.embeddings is not None:
            return np.asarray(batch.embeddings, np.float64)
        return self._embed(model, batch.encoded)

    @staticmethod
    def _embed(model: Any, encoded: np.ndarray) -> np.ndarray:
        if model is None or len(encoded) == 0:
            return np.asarray(encoded, np.float64) if model is None else np.zeros((0, 0))
        # float32 like FeatureBatch.embeddings, so the reference and the window are in the
        # same precision as the batches the pipeline embeds.
        embedded = np.asarray(model.embed(np.asarray(encoded, np.float32)), np.float32)
        return embedded.astype(np.float64)

    def _remember(self, encoded: np.ndarray, x: np.ndarray, y: np.ndarray,
                  at: np.ndarray) -> None:
        if self._buffer_x.shape[1] != x.shape[1]:
            self._buffer_x = np.zeros((0, x.shape[1]))
        self._buffer_encoded = np.concatenate([self._buffer_encoded, encoded])
        self._buffer_x = np.concatenate([self._buffer_x, x])
        self._buffer_y = np.concatenate([self._buffer_y, np.asarray(y, dtype=object)])
        self._buffer_at = np.concatenate([self._buffer_at, np.asarray(at, np.int64)])

    def _reset_stream(self, encoded_width: int) -> None:
        self._buffer_encoded = np.zeros((0, encoded_width), np.float32)
        self._buffer_x = np.zeros((0, 0))
        self._buffer_y = np.zeros(0, dtype=object)
        self._buffer_at = np.zeros(0, dtype=np.int64)
        self._models = {}
        self._checkpoint = 0
        self._records_seen = 0


def _build_reference(x: np.ndarray, y: np.ndarray) -> _Reference:
    classes: dict[Any, _ClassReference] = {}
    for label in _distinct(y):
        rows = np.flatnonzero(y == label)
        if rows.size < 2:
            continue
        mean = x[rows].mean(0)
        n = rows.size
        # Leave-one-out: x_i's distance to the mean of the others is n/(n-1) times its
        # distance to the full mean, so these rank like a new record against the full mean.
        loo = ((x[rows] - mean) ** 2).sum(1) * (n / (n - 1.0)) ** 2
        classes[label] = _ClassReference(rows=rows, mean=mean, screen=np.sort(loo))
    return _Reference(x=x, y=y, classes=classes, nulls={})


def _distinct(labels: np.ndarray) -> list[Any]:
    """The distinct labels in order of first appearance (labels may mix types)."""
    return list(dict.fromkeys(labels.tolist()))


def _nearest(squared: np.ndarray, labels: np.ndarray, label: Any) -> dict[str, Any]:
    """Distance to the nearest clean reference record of the record's class and of any other."""
    own = labels == label
    entry: dict[str, Any] = {"nearest_own_class_distance": None,
                             "nearest_other_class_distance": None, "nearest_other_class": None}
    if own.any():
        entry["nearest_own_class_distance"] = round(float(np.sqrt(squared[own].min())), 4)
    if (~own).any():
        others = np.flatnonzero(~own)
        nearest = int(others[np.argmin(squared[others])])
        entry["nearest_other_class_distance"] = round(float(np.sqrt(squared[nearest])), 4)
        entry["nearest_other_class"] = str(labels[nearest])
    return entry
