"""The gradient learners' diagnosis: the embedding reads use the embedding they name, and the
report carries every table (tiny learners, no data)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_baselines import NearestCentroid, NearestNeighbour  # noqa: E402
from bench.fewshot_gradient_diagnosis import EmbeddingRead, markdown  # noqa: E402
from meta.encoders import EncoderSpec  # noqa: E402
from meta.learners import FOMAML  # noqa: E402

SPEC = EncoderSpec(kind="mlp", input_shape=(5,), hidden=(8,), embedding_dim=4)


def _support() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 4)
    x = (rng.normal(size=(12, 5)) + 2.0 * np.eye(3, 5)[y]).astype(np.float32)
    return x, y, rng.normal(size=(20, 5)).astype(np.float32)


def test_embedding_reads_use_the_meta_trained_or_the_adapted_embedding() -> None:
    learner = FOMAML(SPEC, seed=2, device="cpu", inner_lr=0.5)
    x, y, queries = _support()
    plain = EmbeddingRead(learner, NearestNeighbour).adapt(x, y).logits(queries)
    expected = NearestNeighbour().adapt(learner.embed(x), y).logits(learner.embed(queries))
    np.testing.assert_allclose(plain, expected)
    adapted = learner.adapt(x, y)
    moved = EmbeddingRead(learner, NearestCentroid, adapted=True).adapt(x, y).logits(queries)
    expected = NearestCentroid().adapt(adapted.embed(x), y).logits(adapted.embed(queries))
    np.testing.assert_allclose(moved, expected, rtol=1e-5)
    assert not np.allclose(adapted.embed(queries), learner.embed(queries))


def test_the_report_has_the_three_tables_and_marks_the_validation_choice() -> None:
    cell = {"validation": {"5w1s": 0.8, "5w5s": 0.9}, "test": {"5w1s": 0.7, "5w5s": 0.88}}
    grid = {"cells": [{"steps": 5, "rate_scale": 1.0, **cell},
                      {"steps": 25, "rate_scale": 1.0, **cell}],
            "chosen": {"steps": 25, "rate_scale": 1.0, "test": cell["test"]},
            "best_on_test": cell["test"]}
    result = {
        "validation_episodes": 200, "test_episodes": 600,
        "validation_classes": ["neptune", "pod"],
        "baselines": {"raw 1-NN": cell},
        "learners": {"maml": {"episodes": 640, "own adaptation": cell,
                              "reads": {"1-NN on the meta-trained embedding": cell},
                              "inner_loop": grid},
                     "memory": {"episodes": 960, "own adaptation": cell, "reads": {}}},
        "meta_batch": {"maml": {"16": {"episodes": 640, **cell}}},
    }
    text = markdown(result)
    for heading in ("## The head or the embedding", "## The inner loop",
                    "## The batch of tasks"):
        assert heading in text
    assert "| maml | 25 (chosen on validation) | 1 | 80.0 / 90.0 | 70.0 / 88.0 |" in text
    assert "| maml | 5 | 1 |" in text
    assert "| memory (960 episodes) | own adaptation |" in text
    assert "best on test, per task (a bound, not a result)" in text
