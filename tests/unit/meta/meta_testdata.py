"""Test data for the meta-learning tests: the bundled NSL-KDD sample and synthetic classes.

The encoding (``log1p`` then z-score for numeric fields, one-hot for the three symbolic ones,
fitted on the reference file) is done here rather than through ``agent.schema`` so the meta
tests exercise only ``meta/``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "nsl-kdd"
SYMBOLIC = (1, 2, 3)  # protocol_type, service, flag
N_FEATURES = 41


@dataclass(frozen=True)
class LabelledSample:
    train_x: np.ndarray
    train_y: np.ndarray
    stream_x: np.ndarray
    stream_y: np.ndarray


def _read(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as handle:
        rows = [line.rstrip("\n").split(",") for line in handle if line.strip()]
    return np.array(rows, dtype=object)


def encode_nsl_kdd(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    numeric = [i for i in range(N_FEATURES) if i not in SYMBOLIC]

    def numbers(rows: np.ndarray) -> np.ndarray:
        return np.log1p(np.maximum(rows[:, numeric].astype(np.float64), 0.0))

    ref_numeric = numbers(reference)
    mean, std = ref_numeric.mean(axis=0), ref_numeric.std(axis=0)
    std[std < 1e-12] = 1.0
    vocabularies = [np.unique(reference[:, i]) for i in SYMBOLIC]

    def encode(rows: np.ndarray) -> np.ndarray:
        blocks = [(numbers(rows) - mean) / std]
        for column, vocabulary in zip(SYMBOLIC, vocabularies, strict=True):
            blocks.append((rows[:, column][:, None] == vocabulary[None, :]).astype(np.float64))
        return np.concatenate(blocks, axis=1).astype(np.float32)

    return encode(reference), encode(other)


@pytest.fixture(scope="session")
def nsl_sample() -> LabelledSample:
    reference_path = SAMPLE / "reference.csv.gz"
    stream_path = SAMPLE / "stream.csv.gz"
    if not reference_path.exists() or not stream_path.exists():
        pytest.skip(f"bundled NSL-KDD sample missing under {SAMPLE}")
    reference, stream = _read(reference_path), _read(stream_path)
    train_x, stream_x = encode_nsl_kdd(reference, stream)
    return LabelledSample(
        train_x=train_x,
        train_y=reference[:, N_FEATURES].astype(str),
        stream_x=stream_x,
        stream_y=stream[:, N_FEATURES].astype(str),
    )


@dataclass(frozen=True)
class Blobs:
    """Gaussian classes in a low-dimensional space: easy, fast, and fully controlled."""

    x: np.ndarray
    y: np.ndarray
    centres: np.ndarray


def make_blobs(classes: int, per_class: int, dim: int, spread: float, seed: int) -> Blobs:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    x = (centres[y] + rng.normal(0.0, 1.0, (y.size, dim))).astype(np.float32)
    return Blobs(x=x, y=np.array([f"class_{c:02d}" for c in y]), centres=centres)


ALGORITHMS = ("protonet", "maml", "fomaml", "metasgd", "memory")
BLOB_DIM = 12


@dataclass(frozen=True)
class TrainedLearner:
    learner: object
    history: object
    blobs: Blobs


@pytest.fixture(scope="session")
def trained_learners() -> dict[str, TrainedLearner]:
    """Every algorithm, briefly meta-trained on the same synthetic classes (built once)."""
    from meta.encoders import EncoderSpec
    from meta.episodes import EpisodeSampler
    from meta.learners import build_learner

    blobs = make_blobs(classes=10, per_class=30, dim=BLOB_DIM, spread=1.0, seed=0)
    spec = EncoderSpec(kind="mlp", input_shape=(BLOB_DIM,), hidden=(32,), embedding_dim=16)
    trained = {}
    for algorithm in ALGORITHMS:
        gradient_based = algorithm in ("maml", "fomaml", "metasgd")
        hyper = {"inner_steps": 2, "inner_lr": 0.3} if gradient_based else {}
        learner = build_learner(algorithm, spec, seed=0, meta_lr=3e-3, device="cpu", **hyper)
        sampler = EpisodeSampler(blobs.x, blobs.y, ways=5, shots=3, queries=4, seed=1)
        history = learner.meta_train(sampler, episodes=160, meta_batch=4)
        trained[algorithm] = TrainedLearner(learner, history, blobs)
    return trained
