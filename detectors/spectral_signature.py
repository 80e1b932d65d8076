"""Spectral signatures: planted records stand out along the top singular vector of their class.

Tran, Li and Madry (2018): backdoor records relabelled into a class shift that class's
representations along one direction, so after *centring* the class the top right singular
vector points at them and their projections on it are the largest. (Scoring uncentred
features, as a popular implementation does, points the vector at the class mean instead and
misses the plant.) Here the projections are split exactly in two (1-D 2-means), the smaller
side is the suspect group, and each record's distance past the bulk's median is measured in
standard deviations of the *clean reference* on that direction and turned into a conformal
p-value against clean reference subsamples of the same size — no analyst threshold. The
window, checkpoints, class gate and calibration are shared with activation clustering
(:mod:`detectors._poisoning`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from detectors._poisoning import PoisoningConfig, WindowedPoisoningDetector
from detectors.base import ModelHandle

__all__ = ["SpectralSignatureConfig", "SpectralSignatureDetector"]


class SpectralSignatureConfig(PoisoningConfig):
    """``detectors:`` entry of ``type: spectral_signature`` (needs ``schema.label``)."""

    type: Literal["spectral_signature"] = "spectral_signature"


class SpectralSignatureDetector(WindowedPoisoningDetector):
    """Flags labelled records that form a small group along their class's top singular vector.

    Parameters
    ----------
    name
        Configured id.
    alpha
        Share of correctly labelled records flagged at most, in (0, 1).
    window
        Recent labelled stream records the class splits are fitted on.
    stride
        Stream records between refits (checkpoints at fixed stream positions, so verdicts do
        not depend on batch boundaries).
    min_class_records
        Records a class needs in the window to be split; fewer are screened against the
        reference alone.
    calibration_runs
        Clean reference subsamples per class and size; the class gate opens when the split is
        more separated than every one of them.
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
    >>> detector = SpectralSignatureDetector(window=400, stride=100)
    >>> detector.fit(stream(1000))
    >>> _ = detector.inspect(stream(400))
    >>> _ = detector.inspect(stream(100, planted=10))
    >>> verdict = detector.inspect(stream(400, planted=40))
    >>> int(verdict.flagged[:40].sum()), int(verdict.flagged[40:].sum())
    (40, 0)
    """

    method: ClassVar[str] = "spectral_signature"
    Config: ClassVar[type[SpectralSignatureConfig]] = SpectralSignatureConfig

    def __init__(self, name: str = "spectral_signature", *, alpha: float = 0.01,
                 window: int = 2000, stride: int = 200, min_class_records: int = 30,
                 calibration_runs: int = 20, max_reference: int = 20_000,
                 model: ModelHandle | None = None) -> None:
        super().__init__(name, alpha=alpha, window=window, stride=stride,
                         min_class_records=min_class_records,
                         calibration_runs=calibration_runs, max_reference=max_reference,
                         components=1, model=model)

    @classmethod
    def example_params(cls) -> list[dict[str, Any]]:
        return [{"name": "spectral_signature", "alpha": 0.01},
                {"name": "spectral_signature_short", "alpha": 0.05, "window": 300,
                 "stride": 50, "min_class_records": 20, "calibration_runs": 10}]
