"""Label consistency: labelled records whose label their nearest labelled neighbours contradict.

The simplest strong check against mislabelled or planted records (in the spirit of confident
learning and of k-NN label cleaning): a record is suspicious when most of its ``neighbours``
nearest labelled records — the reference's, and the recent records of the same labelled
stream — carry another label. The disagreement share is turned into a conformal p-value
against the same share computed leave-one-out on the reference, so ``alpha`` is the share of
correctly labelled records (like the reference's) that get flagged.

The same computation screens the labels analysts give the agent (:func:`neighbour_votes`):
feedback is training data too, and a poisoned label is a planted record.

Neighbours are searched in the encoded features by default, or (``representation:
embeddings``) in the live model's embedding, where records of one class sit together even
when their raw features do not (images): the reference and the window are embedded again
whenever the serving model version changes, and the calibration with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from detectors.base import (
    DetectorConfig,
    DetectorContext,
    FeatureBatch,
    ModelHandle,
    NotFittedError,
    Verdict,
    params_repr,
    require_schema,
)

__all__ = ["LabelConsistencyConfig", "LabelConsistencyDetector", "NeighbourVotes",
           "neighbour_votes"]

logger = logging.getLogger(__name__)

_CHUNK = 2048


@dataclass(frozen=True)
class NeighbourVotes:
    """What the ``k`` nearest labelled records say about each query record."""

    disagreement: np.ndarray  # float [n]: share of neighbours whose label differs
    majority: np.ndarray  # object [n]: the most common neighbour label
    majority_share: np.ndarray  # float [n]
    nearest_distance: np.ndarray  # float [n]
    index: np.ndarray  # int [n, k]: neighbour positions in the memory


def neighbour_votes(query: np.ndarray, labels: np.ndarray, memory: np.ndarray,
                    memory_labels: np.ndarray, k: int, *,
                    visible: np.ndarray | None = None) -> NeighbourVotes:
    """Votes of each query row's ``k`` nearest memory rows (Euclidean).

    ``visible`` (bool ``[n, m]``, optional) hides memory rows from some queries: a record never
    votes for itself, and a stream record sees only the records that came before it.
    """
    query = np.asarray(query, np.float32)
    memory = np.asarray(memory, np.float32)
    labels = np.asarray(labels, dtype=object)
    memory_labels = np.asarray(memory_labels, dtype=object)
    n = query.shape[0]
    k = max(1, min(k, memory.shape[0]))
    index = np.zeros((n, k), dtype=np.int64)
    nearest = np.zeros(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        q = query[rows]
        squared = ((q * q).sum(1)[:, None] - 2.0 * (q @ memory.T)
                   + (memory * memory).sum(1)[None, :]).astype(np.float64)
        if visible is not None:
            squared = np.where(visible[rows], squared, np.inf)
        part = np.argpartition(squared, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(squared, part, axis=1)
        order = np.argsort(chosen, axis=1, kind="stable")
        index[rows] = np.take_along_axis(part, order, axis=1)
        nearest[rows] = np.sqrt(np.maximum(np.take_along_axis(chosen, order, axis=1)[:, 0], 0))
    neighbour_labels = memory_labels[index]
    if visible is not None:
        seen = np.take_along_axis(visible, index, axis=1)
        neighbour_labels = neighbour_labels.copy()
        neighbour_labels[~seen] = None
    else:
        seen = np.ones_like(index, dtype=bool)
    counted = np.maximum(seen.sum(axis=1), 1)
    agree = (neighbour_labels == labels[:, None]) & seen
    disagreement = 1.0 - agree.sum(axis=1) / counted
    # Votes per label for every row at once: labels as codes into their sorted set (ties go
    # to the first label in that order), counted with one scatter-add.
    shown = np.asarray(np.where(seen, neighbour_labels, ""), dtype=str)
    names, codes = np.unique(shown, return_inverse=True)
    codes = codes.reshape(seen.shape)
    votes = np.zeros((n, names.size), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), seen.shape[1]), codes.ravel()), seen.ravel())
    best = votes.argmax(axis=1)
    has_votes = seen.any(axis=1)
    majority = np.asarray(names[best], dtype=object)
    majority[~has_votes] = None
    majority_share = np.where(has_votes, votes[np.arange(n), best] / counted, 0.0)
    return NeighbourVotes(disagreement=disagreement, majority=majority,
                          majority_share=majority_share, nearest_distance=nearest, index=index)


class LabelConsistencyConfig(DetectorConfig):
    """``detectors:`` entry of ``type: label_consistency`` (needs ``schema.label``)."""

    type: Literal["label_consistency"] = "label_consistency"
    alpha: float = Field(default=0.01, gt=0, lt=1)
    neighbours: int = Field(default=10, ge=3, le=100)
    window: int = Field(default=2000, ge=0, le=100_000)
    max_reference: int = Field(default=20_000, ge=10)
    # Where neighbours are searched: the encoded features, or the live model's embedding.
    representation: Literal["encoded", "embeddings"] = "encoded"


class LabelConsistencyDetector:
    """Flags labelled records whose nearest labelled neighbours mostly carry another label.

    Parameters
    ----------
    name
        Configured id.
    alpha
        Share of correctly labelled records flagged, in (0, 1).
    neighbours
        Labelled neighbours consulted per record (at least 3).
    window
        Recent labelled stream records kept as neighbours besides the reference (0: none).
    max_reference
        Reference records kept (a stratified sample when the reference is larger).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.base import FeatureBatch
    >>> rng = np.random.default_rng(0)
    >>> def batch(x, y):
    ...     return FeatureBatch(numeric=x, numeric_names=("a", "b"),
    ...                         categorical=np.zeros((len(x), 0)), categorical_names=(),
    ...                         categorical_vocab=(), encoded=x, labels=y)
    >>> x = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(8, 1, (300, 2))])
    >>> y = np.array(["normal"] * 300 + ["scan"] * 300, dtype=object)
    >>> detector = LabelConsistencyDetector(alpha=0.01, window=0)
    >>> detector.fit(batch(x, y))
    >>> verdict = detector.inspect(batch(np.array([[0.1, 0.2], [8.2, 7.9]]),
    ...                                  np.array(["scan", "scan"], dtype=object)))
    >>> verdict.flagged.tolist()
    [True, False]
    """

    family: ClassVar[Literal["labelled"]] = "labelled"
    kind: ClassVar[str] = "poisoning"
    uses_embeddings: bool = False  # per instance: True with representation="embeddings"
    requires_model: ClassVar[bool] = False
    Config: ClassVar[type[LabelConsistencyConfig]] = LabelConsistencyConfig

    def __init__(self, name: str = "label_consistency", *, alpha: float = 0.01,
                 neighbours: int = 10, window: int = 2000, max_reference: int = 20_000,
                 representation: Literal["encoded", "embeddings"] = "encoded",
                 model: ModelHandle | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string.")
        if isinstance(alpha, bool) or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}.")
        for label, value, low in (("neighbours", neighbours, 3), ("window", window, 0),
                                  ("max_reference", max_reference, 10)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an integer of at least {low}, got {value!r}.")
        if representation not in ("encoded", "embeddings"):
            raise ValueError(f"representation must be 'encoded' or 'embeddings', got "
                             f"{representation!r}.")
        self.name = name
        self.representation = representation
        self.uses_embeddings = representation == "embeddings"
        self.model = model
        self.alpha = alpha
        self.neighbours = neighbours
        self.window = window
        self.max_reference = max_reference
        self._reference_encoded: np.ndarray | None = None
        self._reference_x: np.ndarray | None = None  # in the representation searched
        self._reference_y: np.ndarray | None = None
        self._space: str | None = None  # "encoded", or the model version embedded with
        self._calibration_rows = np.zeros(0, dtype=bool)
        self._calibration = np.zeros(0)
        self._window_encoded = np.zeros((0, 0), np.float32)
        self._window_x = np.zeros((0, 0), np.float32)
        self._window_y = np.zeros(0, dtype=object)
        self._window_at = np.zeros(0, dtype=np.int64)  # stream position of each window record
        self._records_seen = 0
        self._schema: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    @classmethod
    def from_config(cls, config: LabelConsistencyConfig, context: DetectorContext
                    ) -> LabelConsistencyDetector:
        if config.representation == "embeddings" and context.model is None:
            raise ValueError(
                f"detector {config.resolved_name()!r} (type label_consistency) searches the "
                "live model's embeddings; set `model.enabled: true` or `representation: "
                "encoded`.")
        detector = cls(config.resolved_name(), alpha=config.alpha, neighbours=config.neighbours,
                       window=config.window, max_reference=config.max_reference,
                       representation=config.representation, model=context.model)
        detector.fit(context.reference)
        return detector

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [{"name": "label_consistency", "alpha": 0.01, "window": 0},
                {"name": "label_consistency_windowed", "alpha": 0.05, "neighbours": 5,
                 "window": 200},
                {"name": "label_consistency_embedded", "alpha": 0.01, "window": 100,
                 "representation": "embeddings"}]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        return [{"name": ""}, {"alpha": 0.0}, {"alpha": 1.5}, {"neighbours": 2},
                {"window": -1}, {"max_reference": 5}, {"representation": "pixels"}]

    def get_params(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "neighbours": self.neighbours,
                "window": self.window, "max_reference": self.max_reference,
                "representation": self.representation}

    def __repr__(self) -> str:
        return params_repr(self)

    @property
    def is_fitted(self) -> bool:
        return self._reference_encoded is not None

    # --- the labelled-data protocol -----------------------------------------------------------

    def fit(self, reference: FeatureBatch) -> None:
        """Keep (a stratified sample of) the labelled reference and calibrate on it."""
        if reference.labels is None:
            raise ValueError(
                f"{self.name} needs labelled reference records; name the label field in "
                "`schema.label`."
            )
        labelled = np.flatnonzero([label is not None for label in reference.labels])
        if labelled.size < self.neighbours + 1:
            raise ValueError(
                f"{self.name} needs more than {self.neighbours} labelled reference records, got "
                f"{labelled.size}."
            )
        if labelled.size > self.max_reference:
            rng = np.random.default_rng(0)
            labelled = np.sort(rng.choice(labelled, self.max_reference, replace=False))
        x = np.asarray(reference.encoded[labelled], np.float32)
        y = np.asarray(reference.labels[labelled], dtype=object)
        self._reference_encoded, self._reference_y = x, y
        # In a model's embedding, records the model was trained on sit closer to their class
        # than new ones: calibrate on the rows it never saw when the handle names them.
        held_out = np.asarray(getattr(self.model, "held_out_rows", np.zeros(0)), np.int64)
        self._calibration_rows = np.isin(labelled, held_out)
        if self._calibration_rows.sum() <= self.neighbours:
            self._calibration_rows = np.ones(len(labelled), dtype=bool)
        self._space = None
        self._window_encoded = np.zeros((0, x.shape[1]), np.float32)
        self._window_x = np.zeros((0, 0), np.float32)
        self._window_y = np.zeros(0, dtype=object)
        self._window_at = np.zeros(0, dtype=np.int64)
        self._records_seen = 0
        self._schema = (reference.numeric_names, reference.categorical_names)
        self._refresh_space()

    def inspect(self, batch: FeatureBatch) -> Verdict:
        """Judge the batch's labelled records against their neighbours, in stream order."""
        self._check(batch)
        n = len(batch)
        score = np.zeros(n)
        p_value = np.ones(n)
        flagged = np.zeros(n, dtype=bool)
        majority = np.full(n, None, dtype=object)
        labels = batch.labels if batch.labels is not None else np.full(n, None, dtype=object)
        rows = np.flatnonzero([label is not None for label in labels])
        self._refresh_space()
        if rows.size:
            represented = self._represent(batch)[rows]
            votes = self._votes(represented, np.asarray(labels[rows], dtype=object))
            score[rows] = votes.disagreement
            p_value[rows] = self._p_values(votes.disagreement)
            majority[rows] = votes.majority
            flagged[rows] = (p_value[rows] <= self.alpha) & (votes.disagreement > 0.5)
            self._remember(np.asarray(batch.encoded[rows], np.float32), represented,
                           np.asarray(labels[rows], dtype=object), self._records_seen + rows)
        self._records_seen += n
        kind = np.where(flagged, self.kind, "").astype(object)
        return Verdict(detector=self.name, flagged=flagged, score=score, p_value=p_value,
                       kind=kind, predicted_class=majority,
                       explanation={"alpha": self.alpha, "neighbours": self.neighbours})

    def records_to_replay(self) -> int:
        """Records since the oldest one still in the window (re-fed after a restart)."""
        if not self.window or self._window_at.size == 0:
            return 0
        return int(self._records_seen - self._window_at[0])

    def explain(self, batch: FeatureBatch, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The neighbours' labels that contradict each record's label."""
        self._check(batch)
        rows = np.asarray(indices, dtype=np.int64)
        labels = batch.labels if batch.labels is not None else np.full(len(batch), None)
        self._refresh_space()
        assert self._reference_x is not None and self._reference_y is not None
        memory_y = np.concatenate([self._reference_y, self._window_y])
        memory_x = np.concatenate([self._reference_x, self._window_x])
        votes = neighbour_votes(self._represent(batch.take(rows)),
                                np.asarray(labels[rows], dtype=object), memory_x, memory_y,
                                self.neighbours)
        return [{
            "label": None if labels[r] is None else str(labels[r]),
            "neighbour_majority": votes.majority[i],
            "neighbour_majority_share": round(float(votes.majority_share[i]), 3),
            "disagreement": round(float(votes.disagreement[i]), 3),
        } for i, r in enumerate(rows)]

    # --- helpers -------------------------------------------------------------------------------

    def _check(self, batch: FeatureBatch) -> None:
        require_schema(self.name, self._schema, batch)

    def _current_model(self) -> Any:
        if self.representation != "embeddings" or self.model is None:
            return None
        return self.model.current()

    def _refresh_space(self) -> None:
        """Embed the reference and the window with the serving model version, when it
        changed, and calibrate there (leave-one-out disagreement of the reference)."""
        if self._reference_encoded is None:
            raise NotFittedError(f"{self.name} is not fitted: call fit(reference) first.")
        model = self._current_model()
        space = "encoded" if model is None else f"model:{getattr(model, 'version', '')}"
        if space == self._space:
            return

        def embed(rows: np.ndarray) -> np.ndarray:
            if model is None or rows.shape[0] == 0:
                return rows if model is None else np.zeros((0, 0), np.float32)
            return np.asarray(model.embed(rows), np.float32)

        x = embed(self._reference_encoded)
        y = self._reference_y
        assert y is not None
        visible = np.ones((len(y), len(y)), dtype=bool)
        np.fill_diagonal(visible, False)
        votes = neighbour_votes(x, y, x, y, self.neighbours, visible=visible)
        self._reference_x = x
        calibration = (votes.disagreement[self._calibration_rows] if model is not None
                       else votes.disagreement)
        self._calibration = np.sort(calibration)
        window = embed(self._window_encoded)
        self._window_x = window if window.size else np.zeros((0, x.shape[1]), np.float32)
        self._space = space

    def _represent(self, batch: FeatureBatch) -> np.ndarray:
        """The batch's records in the representation neighbours are searched in."""
        model = self._current_model()
        if model is None:
            return np.asarray(batch.encoded, np.float32)
        if batch.embeddings is not None:
            return np.asarray(batch.embeddings, np.float32)
        return np.asarray(model.embed(batch.encoded), np.float32)

    def _votes(self, x: np.ndarray, y: np.ndarray) -> NeighbourVotes:
        """Each record sees the reference, the window, and the batch's earlier records only."""
        assert self._reference_x is not None and self._reference_y is not None
        memory_x = np.concatenate([self._reference_x, self._window_x, x])
        memory_y = np.concatenate([self._reference_y, self._window_y, y])
        n_fixed = self._reference_x.shape[0]
        n_window = self._window_x.shape[0]
        position = np.arange(len(y))
        # Stream order: record i sees window slots and batch records that are among the
        # `window` labelled records just before it.
        stream = np.arange(n_window + len(y))
        visible_stream = ((stream[None, :] < n_window + position[:, None])
                          & (stream[None, :] >= n_window + position[:, None] - self.window))
        visible = np.concatenate([np.ones((len(y), n_fixed), dtype=bool), visible_stream],
                                 axis=1)
        return neighbour_votes(x, y, memory_x, memory_y, self.neighbours, visible=visible)

    def _p_values(self, disagreement: np.ndarray) -> np.ndarray:
        calibration = self._calibration
        at_least = calibration.size - np.searchsorted(calibration, disagreement, side="left")
        return (1.0 + at_least) / (calibration.size + 1.0)

    def _remember(self, encoded: np.ndarray, x: np.ndarray, y: np.ndarray, at: np.ndarray
                  ) -> None:
        if not self.window:
            return
        self._window_encoded = np.concatenate([self._window_encoded, encoded])[-self.window:]
        self._window_x = np.concatenate([self._window_x, x])[-self.window:]
        self._window_y = np.concatenate([self._window_y, y])[-self.window:]
        self._window_at = np.concatenate([self._window_at, at])[-self.window:]
