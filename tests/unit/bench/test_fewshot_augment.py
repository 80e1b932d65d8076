"""Task augmentation: the episodes are the plain sampler's, only their records change, and each
augmentation changes them the way it says; and the test-time support shifts of the Omniglot
ideas (no training, no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.fewshot_augment import (  # noqa: E402
    AugmentedSampler,
    GlyphAugmentation,
    RecordAugmentation,
    episode_sampler,
)
from bench.fewshot_baselines import NearestCentroid  # noqa: E402
from bench.fewshot_omniglot_ideas import (  # noqa: E402
    SHIFTS,
    ShiftedPrototypes,
    markdown,
    shift_stack,
    shifted,
)
from meta.episodes import EpisodeBatch, EpisodeSampler  # noqa: E402

RNG = np.random.default_rng(0)


def records(classes: int = 6, per_class: int = 12, features: int = 8) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    x = RNG.normal(size=(classes * per_class, features)).astype(np.float32)
    return x, np.repeat(np.arange(classes), per_class)


def test_an_augmented_sampler_draws_the_plain_samplers_episodes_and_changes_only_records(
) -> None:
    x, y = records()
    plain = EpisodeSampler(x, y, ways=3, shots=2, queries=3, seed=4).sample_batch(5)
    changed = AugmentedSampler(x, y, ways=3, shots=2, queries=3, seed=4,
                               augment=RecordAugmentation("mask", 0.3)).sample_batch(5)
    assert changed.classes == plain.classes
    np.testing.assert_array_equal(changed.support_y, plain.support_y)
    np.testing.assert_array_equal(changed.query_y, plain.query_y)
    assert changed.support_x.shape == plain.support_x.shape
    assert changed.support_x.dtype == plain.support_x.dtype
    assert not np.allclose(changed.query_x, plain.query_x)


def test_a_training_sampler_is_augmented_only_when_asked() -> None:
    x, y = records()
    plain = episode_sampler(x, y, ways=3, shots=2, queries=3, seed=4)
    changed = episode_sampler(x, y, augment=RecordAugmentation("mix", 0.3), ways=3, shots=2,
                              queries=3, seed=4)
    assert type(plain) is EpisodeSampler
    assert isinstance(changed, AugmentedSampler)
    assert not np.allclose(plain.sample_batch(2).query_x, changed.sample_batch(2).query_x)


def batch_of(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
             query_y: np.ndarray) -> EpisodeBatch:
    tasks = len(support_x)
    return EpisodeBatch(support_x=support_x, support_y=support_y, query_x=query_x,
                        query_y=query_y, classes=tuple(("a", "b"),) * tasks)


def test_masking_hides_the_same_features_in_every_record_of_an_episode() -> None:
    x, _ = records(features=400)
    support, query = x[:4].reshape(2, 2, 400), x[4:12].reshape(2, 4, 400)
    labels = np.array([[0, 1], [0, 1]]), np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    out = RecordAugmentation("mask", 0.3)(batch_of(support, labels[0], query, labels[1]),
                                          np.random.default_rng(1))
    for task in range(2):
        hidden = np.concatenate([out.support_x[task], out.query_x[task]]) == 0
        assert (hidden.all(axis=0) == hidden.any(axis=0)).all(), "a feature hidden for some only"
        assert 0.2 < hidden[0].mean() < 0.4
    hidden_in = [np.flatnonzero(out.support_x[t, 0] == 0) for t in range(2)]
    assert not np.array_equal(*hidden_in), "each episode hides its own features"


def test_mixing_keeps_records_between_members_of_their_class_on_their_side() -> None:
    # One-dimensional records: class 0 at 0 and 1, class 1 at 10 and 11 (support), 20 and 21
    # for class 1's queries, so a record pulled across sides or classes would show.
    support = np.array([[[0.0], [1.0], [10.0], [11.0]]])
    query = np.array([[[0.0], [1.0], [20.0], [21.0]]])
    labels = np.array([[0, 0, 1, 1]])
    out = RecordAugmentation("mix", 0.5)(batch_of(support, labels, query, labels),
                                         np.random.default_rng(2))
    assert ((0 <= out.support_x[0, :2]) & (out.support_x[0, :2] <= 1)).all()
    assert ((10 <= out.support_x[0, 2:]) & (out.support_x[0, 2:] <= 11)).all()
    assert ((20 <= out.query_x[0, 2:]) & (out.query_x[0, 2:] <= 21)).all()


def test_a_class_with_one_record_on_its_side_is_not_mixed() -> None:
    support = np.array([[[3.0], [7.0]]])
    out = RecordAugmentation("mix", 0.9)(
        batch_of(support, np.array([[0, 1]]), support, np.array([[0, 1]])),
        np.random.default_rng(3))
    np.testing.assert_array_equal(out.support_x, support)


@pytest.mark.parametrize("kind, strength", [("drop", 0.1), ("mask", 0.0), ("mix", 1.0)])
def test_record_augmentation_checks_its_arguments(kind: str, strength: float) -> None:
    with pytest.raises(ValueError):
        RecordAugmentation(kind, strength)  # type: ignore[arg-type]


def glyphs() -> np.ndarray:
    """Two 9×9 images per task for 2 tasks: a dot off centre, one per class."""
    images = np.zeros((2, 2, 9, 9, 1), np.float32)
    images[:, 0, 2, 6] = 1.0
    images[:, 1, 6, 3] = 1.0
    return images


def test_glyph_augmentation_with_no_ranges_is_the_identity() -> None:
    images = glyphs()
    none = GlyphAugmentation(class_rotation_deg=0, class_scale=0, class_shear=0,
                             image_shift_px=0, image_rotation_deg=0, image_scale=0)
    labels = np.array([[0, 1], [0, 1]])
    out = none(batch_of(images, labels, images, labels), np.random.default_rng(0))
    np.testing.assert_allclose(out.support_x, images, atol=1e-6)
    np.testing.assert_allclose(out.query_x, images, atol=1e-6)


def test_a_class_map_moves_all_its_images_alike_and_each_class_differently() -> None:
    images = glyphs()
    class_only = GlyphAugmentation(class_rotation_deg=40, class_scale=0.3, class_shear=0.3,
                                   image_shift_px=0, image_rotation_deg=0, image_scale=0)
    labels = np.array([[0, 1], [0, 1]])
    out = class_only(batch_of(images, labels, images, labels), np.random.default_rng(5))
    for task in range(2):
        for label in range(2):  # the support image and the identical query image
            np.testing.assert_allclose(out.support_x[task, label], out.query_x[task, label],
                                       atol=1e-6)
    assert not np.allclose(out.support_x[0], out.support_x[1]), "tasks draw their own maps"
    assert out.support_x.sum() > 0, "the ink stays in the frame"


# --- test-time support shifts (bench/fewshot_omniglot_ideas.py) ---------------------------


def test_a_shift_moves_ink_by_whole_pixels_and_drops_what_leaves_the_frame() -> None:
    images = np.zeros((1, 4, 4, 1), np.float32)
    images[0, 1, 2] = 1.0
    images[0, 0, 3] = 2.0  # on the edge the shift leaves by
    out = shifted(images, -1, 1)  # up one row, right one column
    assert out[0, 0, 3, 0] == 1.0
    assert out.sum() == 1.0
    np.testing.assert_array_equal(shifted(images, 0, 0), images)


def test_shifted_prototypes_with_one_copy_are_nearest_centroid() -> None:
    x = RNG.normal(size=(12, 5))
    y = np.repeat(np.arange(4), 3)
    queries = RNG.normal(size=(7, 5))
    np.testing.assert_allclose(ShiftedPrototypes(copies=1).adapt(x, y).logits(queries),
                               NearestCentroid().adapt(x, y).logits(queries))


def test_a_shifted_prototype_averages_the_copies_and_queries_use_the_image_itself() -> None:
    def embed(images: np.ndarray) -> np.ndarray:  # where the ink is: row and column
        flat = images.reshape(len(images), -1)
        return np.stack([flat @ np.repeat(np.arange(5.0), 5), flat @ np.tile(np.arange(5.0), 5)],
                        axis=1)

    image = np.zeros((1, 5, 5, 1))
    image[0, 2, 2] = 1.0
    stack = shift_stack(embed, image)
    assert stack.shape == (1, 2 * len(SHIFTS))
    model = ShiftedPrototypes().adapt(stack, np.array([0]))
    # The nine copies average back to the centre; a query is scored on its first block only.
    np.testing.assert_allclose(model.logits(stack), [[0.0]])


def test_the_omniglot_ideas_report_has_a_row_per_idea() -> None:
    accuracy = {"mean": 0.9, "ci95": 0.01}
    row = {"idea": "protonet", "training": {"episodes_run": 960}, "validation_20w1s": accuracy,
           "test_20w1s": accuracy, "official_runs": accuracy}
    text = markdown({"rows": [row, row | {"idea": "augmented"}], "ways": 20,
                     "training_episodes": 960, "seed": 0, "validation_episodes": 200,
                     "test_episodes": 600})
    assert "| protonet | 960 | 90.0 ± 1.0 | 90.0 ± 1.0 | 90.0 ± 1.0 |" in text
    assert "| augmented |" in text
