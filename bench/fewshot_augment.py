"""Task augmentation for meta-training: every training episode is changed before the learner
sees it, so that a few training classes yield many more distinct tasks.

Only training episodes are changed; validation and test episodes never are. Two families:

* **Glyphs** (`GlyphAugmentation`, Omniglot). Each class of an episode gets one random affine
  map (rotation, scale per axis, shear) applied to all its images, which makes a new
  look-alike character out of it, and each image a small jitter of its own (shift, rotation,
  scale), like another person's drawing of it. The same idea as adding rotated characters as
  new classes, without being limited to four rotations.
* **Records** (`RecordAugmentation`, NSL-KDD). ``"mask"``: one random set of features is hidden
  (set to 0, the fitting mean of a z-scored field and "no value" of a one-hot one) in a whole
  episode, and every record gets Gaussian noise: each episode must be solved without some of
  the features the learner could lean on. ``"mix"``: each record is moved towards another record
  of its class from the same side of the episode (support with support, queries with
  queries), the within-class interpolation of mixup that keeps labels exact.

`AugmentedSampler` is a `meta.episodes.EpisodeSampler` whose batches pass through one of
them; its augmentation generator is seeded apart from the episode draws, so the episodes
themselves are the plain sampler's. (Its state is not part of a training checkpoint: the
benchmarks never resume one.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from meta.episodes import EpisodeBatch, EpisodeSampler

Augmentation = Callable[[EpisodeBatch, np.random.Generator], EpisodeBatch]
AugmentKind = Literal["mask", "mix"]


class AugmentedSampler(EpisodeSampler):
    """An episode sampler whose meta-batches are changed by ``augment`` (training only)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, augment: Augmentation, seed: int,
                 **options: Any) -> None:
        super().__init__(x, y, seed=seed, **options)
        self._augment = augment
        self._augment_rng = np.random.default_rng([seed, 0xA06])

    def sample_batch(self, tasks: int) -> EpisodeBatch:
        return self._augment(super().sample_batch(tasks), self._augment_rng)


def episode_sampler(x: np.ndarray, y: np.ndarray, *, augment: Augmentation | None = None,
                    **options: Any) -> EpisodeSampler:
    """A training sampler: plain, or an `AugmentedSampler` when ``augment`` is given."""
    if augment is None:
        return EpisodeSampler(x, y, **options)
    return AugmentedSampler(x, y, augment=augment, **options)


def _joined(batch: EpisodeBatch) -> tuple[np.ndarray, np.ndarray]:
    """Support and query records side by side per task, with their episode labels."""
    return (np.concatenate([batch.support_x, batch.query_x], axis=1),
            np.concatenate([batch.support_y, batch.query_y], axis=1))


def _split(batch: EpisodeBatch, x: np.ndarray) -> EpisodeBatch:
    shots = batch.support_x.shape[1]
    return EpisodeBatch(support_x=x[:, :shots].astype(batch.support_x.dtype),
                        support_y=batch.support_y,
                        query_x=x[:, shots:].astype(batch.query_x.dtype),
                        query_y=batch.query_y, classes=batch.classes)


# --------------------------------------------------------------------------- glyphs


@dataclass(frozen=True)
class GlyphAugmentation:
    """Per-class affine maps and per-image jitter for ``[tasks, n, h, w, c]`` images with ink
    on a zero background.

    Parameters
    ----------
    class_rotation_deg, class_scale, class_shear:
        Ranges of the map shared by a class's images: rotation within ±degrees, scale per axis
        within ``[1 - class_scale, 1 + class_scale]``, shear within ±``class_shear``.
    image_shift_px, image_rotation_deg, image_scale:
        Ranges of each image's own jitter.
    """

    class_rotation_deg: float = 10.0
    class_scale: float = 0.2
    class_shear: float = 0.3
    image_shift_px: float = 2.0
    image_rotation_deg: float = 5.0
    image_scale: float = 0.05

    def __call__(self, batch: EpisodeBatch, rng: np.random.Generator) -> EpisodeBatch:
        x, labels = _joined(batch)
        tasks, per_task = labels.shape
        ways = int(labels.max()) + 1
        images = x.reshape((tasks * per_task,) + x.shape[2:])
        # The class map's draw for every image: index (task, episode label).
        owner = (np.arange(tasks)[:, None] * ways + labels).reshape(-1)
        shared = self._draw(rng, tasks * ways, self.class_rotation_deg, self.class_scale,
                            self.class_shear, 0.0)
        images = _warp(images, *(part[owner] for part in shared))
        own = self._draw(rng, len(images), self.image_rotation_deg, self.image_scale, 0.0,
                         self.image_shift_px)
        images = _warp(images, *own)
        return _split(batch, images.reshape(x.shape))

    @staticmethod
    def _draw(rng: np.random.Generator, n: int, rotation_deg: float, scale: float,
              shear: float, shift: float) -> tuple[np.ndarray, ...]:
        return (np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, n)),
                rng.uniform(1 - scale, 1 + scale, n), rng.uniform(1 - scale, 1 + scale, n),
                rng.uniform(-shear, shear, n), rng.uniform(-shift, shift, n),
                rng.uniform(-shift, shift, n))


def _warp(images: np.ndarray, angle: np.ndarray, scale_x: np.ndarray, scale_y: np.ndarray,
          shear: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray) -> np.ndarray:
    """Each image resampled (bilinear, zero outside) through its own affine map about the
    centre; TensorFlow's projective-transform kernel does the whole batch in one call."""
    import tensorflow as tf

    n, height, width = images.shape[:3]
    cos, sin = np.cos(angle), np.sin(angle)
    # Output pixel -> input pixel: rotation @ shear @ scale.
    a00, a01 = cos * scale_x, (shear * cos - sin) * scale_y
    a10, a11 = sin * scale_x, (shear * sin + cos) * scale_y
    cx, cy = (width - 1) / 2, (height - 1) / 2
    zeros = np.zeros(n)
    transforms = np.stack([a00, a01, cx - a00 * cx - a01 * cy + shift_x,
                           a10, a11, cy - a10 * cx - a11 * cy + shift_y, zeros, zeros], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.constant(images, tf.float32), transforms=tf.constant(transforms, tf.float32),
        output_shape=tf.constant([height, width], tf.int32), fill_value=0.0,
        interpolation="BILINEAR")
    return np.asarray(warped.numpy(), dtype=images.dtype)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordAugmentation:
    """Task augmentation of tabular episodes, at ``strength`` in (0, 1).

    ``"mask"`` hides a ``strength`` share of the features in each episode and adds noise of
    standard deviation ``strength`` to every value; ``"mix"`` moves each record a share drawn
    from ``[0, strength]`` of the way to another record of its class on its side of the
    episode.
    """

    kind: AugmentKind
    strength: float

    def __post_init__(self) -> None:
        if self.kind not in ("mask", "mix"):
            raise ValueError(f"kind must be 'mask' or 'mix', got {self.kind!r}.")
        if not 0 < self.strength < 1:
            raise ValueError(f"strength must be in (0, 1), got {self.strength}.")

    def __call__(self, batch: EpisodeBatch, rng: np.random.Generator) -> EpisodeBatch:
        if self.kind == "mask":
            return self._mask(batch, rng)
        return EpisodeBatch(support_x=self._mix(batch.support_x, batch.support_y, rng),
                            support_y=batch.support_y,
                            query_x=self._mix(batch.query_x, batch.query_y, rng),
                            query_y=batch.query_y, classes=batch.classes)

    def _mask(self, batch: EpisodeBatch, rng: np.random.Generator) -> EpisodeBatch:
        x, _ = _joined(batch)
        tasks, _, features = x.shape
        keep = rng.random((tasks, 1, features)) >= self.strength
        noisy = x + rng.normal(0.0, self.strength, x.shape)
        return _split(batch, np.where(keep, noisy, 0.0))

    def _mix(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each record towards a random record of its class in its task (itself possible
        when the class has one record there: then it stays put)."""
        tasks, n = labels.shape
        partner = np.empty((tasks, n), dtype=np.int64)
        for task in range(tasks):
            for label in np.unique(labels[task]):
                members = np.flatnonzero(labels[task] == label)
                partner[task, members] = rng.choice(members, size=len(members))
        share = rng.uniform(0.0, self.strength, (tasks, n, 1))
        others = np.take_along_axis(x, partner[:, :, None], axis=1)
        return (1 - share) * x + share * others
