"""Meta-training on labelled records: one recipe for ``metasentry meta-train`` and the bootstrap.

Both the command line and the agent's first start (``model.bootstrap``) train the same way:
hold whole classes out for validation and early stopping, keep the benign class in training,
sample N-way K-shot episodes, and describe the result (schema, encoder state, classes,
validation figures) in the saved model so that a later load can check it matches the encoder
it is served with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPlan:
    """How to meta-train; the defaults are the command line's."""

    algorithm: str = "protonet"
    episodes: int = 2000
    ways: int = 5
    shots: int = 5
    queries: int = 10
    meta_batch: int = 8
    val_classes: int = 3
    benign_class: str | None = None
    val_every: int = 200
    patience: int = 10
    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = 64
    image_shape: tuple[int, int, int] | None = None  # (H, W, C): a Conv-4 encoder, else an MLP
    filters: int = 64
    members: int = 1  # memory learner only: an ensemble of this many, read as one memory
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be at least 1, got {self.members}.")
        if self.members > 1 and self.algorithm != "memory":
            raise ValueError(f"only the memory learner has members, not {self.algorithm}.")


@dataclass(frozen=True)
class TrainedLearner:
    """A meta-trained learner and what to write about it in model.json."""

    learner: Any
    history: Any
    split: Any
    description: dict[str, Any] = field(default_factory=dict)


def train_learner(x: np.ndarray, y: np.ndarray, plan: TrainingPlan, *,
                  checkpoint_dir: Path | None = None,
                  progress: Callable[[Any], None] | None = None) -> TrainedLearner:
    """Meta-train ``plan.algorithm`` on labelled records ``x``/``y``.

    Raises ``ValueError`` (one sentence) when the data cannot support the plan, e.g. too few
    classes with enough records to hold some out for validation.
    """
    from meta.encoders import EncoderSpec
    from meta.episodes import EpisodeSampler, split_classes
    from meta.learners import build_learner

    split = split_classes(y, val=plan.val_classes, test=0, seed=plan.seed,
                          min_count=plan.shots + plan.queries,
                          always_train=[plan.benign_class] if plan.benign_class else ())
    train = EpisodeSampler(x, y, ways=plan.ways, shots=plan.shots, queries=plan.queries,
                           seed=plan.seed, classes=split.train)
    val = EpisodeSampler(x, y, ways=min(plan.ways, len(split.val)), shots=plan.shots,
                         queries=plan.queries, seed=plan.seed + 1, classes=split.val)
    if plan.image_shape is not None:
        if int(np.prod(plan.image_shape)) != x.shape[1]:
            raise ValueError(f"records have {x.shape[1]} features, not the {plan.image_shape} "
                             "image the encoder expects.")
        spec = EncoderSpec(kind="conv4", input_shape=plan.image_shape, filters=plan.filters)
    else:
        spec = EncoderSpec(kind="mlp", input_shape=(int(x.shape[1]),), hidden=plan.hidden,
                           embedding_dim=plan.embedding_dim)
    ensemble = {"members": plan.members} if plan.members > 1 else {}
    learner = build_learner(plan.algorithm, spec, seed=plan.seed, device=plan.device, **ensemble)
    history = learner.meta_train(train, episodes=plan.episodes, meta_batch=plan.meta_batch,
                                 val=val, val_every=plan.val_every, patience=plan.patience,
                                 checkpoint_dir=checkpoint_dir, progress=progress)
    description = {
        "classes": {"train": [str(c) for c in split.train], "val": [str(c) for c in split.val],
                    "excluded": [str(c) for c in split.excluded]},
        "episodes": {"ways": plan.ways, "shots": plan.shots, "queries": plan.queries,
                     "meta_batch": plan.meta_batch, "requested": plan.episodes,
                     "run": history.episodes_run},
        "members": plan.members,
        "validation": {"best_accuracy": history.best_val_accuracy,
                       "best_step": history.best_step, "stopped_early": history.stopped_early},
    }
    return TrainedLearner(learner=learner, history=history, split=split,
                          description=description)


def image_shape_of(schema: Any, encoder: str) -> tuple[int, int, int] | None:
    """The Conv-4 input a schema calls for: ``encoder: conv4``, or (``auto``) a schema whose
    only feature is an image tensor (``[H, W]`` or ``[H, W, C]``); ``None`` means an MLP."""
    features = list(schema.features)
    image = [f for f in features if f.type == "tensor" and len(f.shape or ()) in (2, 3)]
    if encoder == "mlp" or (encoder == "auto" and (len(features) != 1 or not image)):
        return None
    if len(features) != 1 or not image:
        raise ValueError("`model.encoder: conv4` needs a schema whose only feature is a tensor "
                         "of shape [H, W] or [H, W, C].")
    shape = tuple(int(v) for v in image[0].shape)
    return (shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


class ProgressLog:
    """Meta-training progress as log lines: at most one every ``interval_s``, and every check."""

    def __init__(self, emit: Callable[[str], None] | None = None, interval_s: float = 2.0) -> None:
        self.emit = emit or log.info
        self.interval_s = interval_s
        self._last = 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.step == progress.steps_total
        if progress.val_accuracy is None and not final and now - self._last < self.interval_s:
            return
        self._last = now
        val = ""
        if progress.best_val_accuracy is not None:
            current = "" if progress.val_accuracy is None else f"val {progress.val_accuracy:.3f} "
            val = f" {current}(best {progress.best_val_accuracy:.3f})"
        self.emit(
            f"step {progress.step}/{progress.steps_total} "
            f"episodes {progress.episodes_done}/{progress.episodes_total} "
            f"loss {progress.loss:.4f} acc {progress.accuracy:.3f}{val} "
            f"elapsed {progress.elapsed_s:.0f}s ETA {progress.eta_s:.0f}s"
        )
