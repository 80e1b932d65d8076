"""Activation clustering: planted records form a small, tight cluster of their own class.

Chen et al. (2018): reduce a class's representations to a few principal components, split
them with 2-means, and the planted records fall into the smaller cluster. The popular
implementation leaves the decision to thresholds on cluster size and silhouette that an
analyst must tune (with its defaults it flags about a fifth of the records); here the cluster
is judged against the same procedure run on clean reference subsamples of the same size: the
class gate opens when the smaller cluster is farther from the bulk (along the line through
both centres, in standard deviations of the clean reference) than in every clean run, and a
record is flagged when it lies in that cluster and its own distance past the bulk has a
conformal p-value of at most ``alpha``. The window, checkpoints and calibration are shared
with spectral signatures (:mod:`detectors._poisoning`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from detectors._poisoning import PoisoningConfig, WindowedPoisoningDetector
from detectors.base import ModelHandle

__all__ = ["ActivationClusteringConfig", "ActivationClusteringDetector"]


class ActivationClusteringConfig(PoisoningConfig):
    """``detectors:`` entry of ``type: activation_clustering`` (needs ``schema.label``)."""

    type: Literal["activation_clustering"] = "activation_clustering"
    n_components: int = Field(default=10, ge=2, le=100)


class ActivationClusteringDetector(WindowedPoisoningDetector):
    """Flags labelled records in a small cluster that stands apart from the rest of their class.

    Parameters
    ----------
    name
        Configured id.
    alpha
        Share of correctly labelled records flagged at most, in (0, 1).
    window
        Recent labelled stream records the class clusterings are fitted on.
    stride
        Stream records between refits (checkpoints at fixed stream positions, so verdicts do
        not depend on batch boundaries).
    min_class_records
        Records a class needs in the window to be clustered; fewer are screened against the
        reference alone.
    n_components
        Principal components the class's representations are reduced to before 2-means.
    calibration_runs
        Clean reference subsamples per class and size; the class gate opens when the small
        cluster is more separated than in every one of them.
    max_reference
        Reference records kept (a random sample when the reference is larger).
    model
        The live model's handle; its embeddings are the representation when it serves one.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.base import FeatureBatch
    >>> rng = np.random.default_rng(0)
    >>> def batch(x, y):
    ...     return FeatureBatch(numeric=x, numeric_names=tuple(f"f{i}" for i in range(5)),
    ...                         categorical=np.zeros((len(x), 0)), categorical_names=(),
    ...                         categorical_vocab=(), encoded=x, labels=y)
    >>> def stream(n, planted=0):
    ...     x = rng.normal(0, 1, (n, 5))
    ...     x[:planted, :2] += 8.0  # a trigger on two features
    ...     return batch(x, np.full(n, "benign", dtype=object))
    >>> # Splits are refitted every `stride` records, so planted records are caught once the
    >>> # window holds some: the first 100 of the planted stream only teach the split.
    >>> detector = ActivationClusteringDetector(window=400, stride=100, n_components=3)
    >>> detector.fit(stream(1000))
    >>> _ = detector.inspect(stream(400))
    >>> _ = detector.inspect(stream(100, planted=10))
    >>> verdict = detector.inspect(stream(400, planted=40))
    >>> int(verdict.flagged[:40].sum()), int(verdict.flagged[40:].sum())
    (40, 0)
    """

    method: ClassVar[str] = "activation_clustering"
    Config: ClassVar[type[ActivationClusteringConfig]] = ActivationClusteringConfig

    def __init__(self, name: str = "activation_clustering", *, alpha: float = 0.01,
                 window: int = 2000, stride: int = 200, min_class_records: int = 30,
                 n_components: int = 10, calibration_runs: int = 20,
                 max_reference: int = 20_000, model: ModelHandle | None = None) -> None:
        if (isinstance(n_components, bool) or not isinstance(n_components, int)
                or n_components < 2):
            raise ValueError(f"n_components must be an integer of at least 2, got "
                             f"{n_components!r}.")
        super().__init__(name, alpha=alpha, window=window, stride=stride,
                         min_class_records=min_class_records,
                         calibration_runs=calibration_runs, max_reference=max_reference,
                         components=n_components, model=model)
        self.n_components = n_components

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "n_components": self.n_components}

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [{"name": "activation_clustering", "alpha": 0.01},
                {"name": "activation_clustering_short", "alpha": 0.05, "window": 300,
                 "stride": 50, "min_class_records": 20, "n_components": 4,
                 "calibration_runs": 10}]

    @classmethod
    def invalid_params(cls) -> list[dict[str, Any]]:
        return [*super().invalid_params(), {"n_components": 1}]
