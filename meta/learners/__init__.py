"""Meta-learners behind one interface, and the factory that builds them by name."""

from __future__ import annotations

from typing import Any

from meta.encoders import EncoderSpec
from meta.learners.base import (
    ALGORITHMS,
    Adapted,
    AdaptedClassifier,
    EpisodicLearner,
    MetaLearner,
    TrainHistory,
    TrainProgress,
)
from meta.learners.maml import FOMAML, MAML, GradientMetaLearner, MetaSGD
from meta.learners.memory import MemoryLearner
from meta.learners.protonet import ProtoNet

_LEARNERS: dict[str, type[EpisodicLearner]] = {
    "protonet": ProtoNet,
    "maml": MAML,
    "fomaml": FOMAML,
    "metasgd": MetaSGD,
    "memory": MemoryLearner,
}


def build_learner(algorithm: str, encoder_spec: EncoderSpec, **hyper: Any) -> EpisodicLearner:
    """Construct a learner by algorithm name; ``hyper`` are that learner's keyword arguments."""
    try:
        cls = _LEARNERS[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown meta-learning algorithm {algorithm!r}; use one of {list(ALGORITHMS)}."
        ) from None
    return cls(encoder_spec, **hyper)


__all__ = [
    "ALGORITHMS",
    "Adapted",
    "AdaptedClassifier",
    "EpisodicLearner",
    "FOMAML",
    "GradientMetaLearner",
    "MAML",
    "MemoryLearner",
    "MetaLearner",
    "MetaSGD",
    "ProtoNet",
    "TrainHistory",
    "TrainProgress",
    "build_learner",
]
