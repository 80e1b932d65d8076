"""Poisoning generators: exact shares, only the intended records touched, reproducible."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import meta.poisons
from meta.poisons import (
    backdoor_images,
    backdoor_tabular,
    flip_labels_random,
    flip_labels_targeted,
    poison_count,
    stamp_columns,
    stamp_trigger,
)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(meta.poisons).failed == 0


def _labels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=400)


def test_poison_count_rounds_half_up() -> None:
    assert poison_count(10, 0.25) == 3  # 2.5 -> 3, not banker's 2
    assert poison_count(100, 0.05) == 5
    assert poison_count(7, 0.0) == 0 and poison_count(7, 1.0) == 7


def test_random_flips_hit_the_exact_share_and_always_change_the_label() -> None:
    y = _labels()
    result = flip_labels_random(y, 0.1, seed=1)
    assert result.flipped.sum() == poison_count(y.size, 0.1) == 40
    assert np.all(result.y[result.flipped] != y[result.flipped])
    np.testing.assert_array_equal(result.y[~result.flipped], y[~result.flipped])
    assert set(np.unique(result.y)) <= set(np.unique(y))
    np.testing.assert_array_equal(y, _labels())  # input untouched


def test_random_flips_spread_over_all_other_labels() -> None:
    y = np.zeros(3000, dtype=np.int64)
    y[:3] = [1, 2, 3]  # the label set is {0, 1, 2, 3}
    result = flip_labels_random(y, 0.9, seed=2)
    new = result.y[result.flipped & (y == 0)]
    counts = np.bincount(new, minlength=4)
    assert counts[0] == 0
    assert counts[1:].min() > 0.28 * new.size  # about a third each


def test_random_flips_work_on_object_labels() -> None:
    y = np.array(["normal", "dos", "probe", "r2l"] * 25, dtype=object)
    result = flip_labels_random(y, 0.2, seed=3)
    assert result.flipped.sum() == 20
    assert np.all(result.y[result.flipped] != y[result.flipped])
    assert result.y.dtype == object


def test_targeted_flips_touch_only_source_records() -> None:
    y = _labels()
    result = flip_labels_targeted(y, source=1, target=0, share=0.5, seed=4)
    sources = y == 1
    assert result.flipped.sum() == poison_count(int(sources.sum()), 0.5)
    assert np.all(sources[result.flipped])
    assert np.all(result.y[result.flipped] == 0)
    np.testing.assert_array_equal(result.y[~result.flipped], y[~result.flipped])


def test_targeted_flip_to_a_longer_string_label_is_not_truncated() -> None:
    y = np.array(["dos", "dos", "ok"])
    result = flip_labels_targeted(y, source="dos", target="normal", share=1.0, seed=0)
    assert list(result.y) == ["normal", "normal", "ok"]


def test_flips_are_deterministic_given_the_seed() -> None:
    y = _labels()
    np.testing.assert_array_equal(flip_labels_random(y, 0.3, seed=5).y,
                                  flip_labels_random(y, 0.3, seed=5).y)
    assert not np.array_equal(flip_labels_random(y, 0.3, seed=5).flipped,
                              flip_labels_random(y, 0.3, seed=6).flipped)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: flip_labels_random(_labels(), 1.5), r"share must lie in \[0, 1\]"),
        (lambda: flip_labels_random(np.zeros(5), 0.5), "fewer than two distinct labels"),
        (lambda: flip_labels_targeted(_labels(), source=1, target=1, share=0.1), "must differ"),
        (lambda: flip_labels_targeted(_labels(), source=9, target=1, share=0.1),
         "does not occur"),
    ],
)
def test_flip_arguments_are_checked(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def _images(dtype: type = np.uint8, channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    shape = (200, 12, 12) if channels is None else (200, 12, 12, channels)
    x = rng.integers(0, 200, size=shape).astype(dtype)
    y = np.repeat(np.arange(4), 50)
    y[:5] = 3  # 55 records of class 3, 45 of class 0
    return x, y


def test_backdoor_images_share_is_of_the_final_target_class_and_count_is_kept() -> None:
    x, y = _images()
    result = backdoor_images(x, y, target=3, share=0.05, seed=8)
    assert result.x.shape == x.shape and result.x.dtype == x.dtype and result.y.size == y.size
    # 55 clean target records: k / (55 + k) = 0.05 gives k = 55 * 0.05 / 0.95 = 2.89 -> 3.
    assert result.poisoned.sum() == 3
    assert np.all(y[result.poisoned] != 3)  # poisons are made from source records
    assert np.all(result.y[result.poisoned] == 3)
    np.testing.assert_array_equal(result.x[~result.poisoned], x[~result.poisoned])
    np.testing.assert_array_equal(result.y[~result.poisoned], y[~result.poisoned])


def test_backdoor_share_is_exact_when_it_divides() -> None:
    x, y = _images()
    y = np.where(np.arange(y.size) < 95, 0, 1)  # 95 clean target records
    result = backdoor_images(x, y, target=0, share=0.05, seed=0)
    assert result.poisoned.sum() / np.sum(result.y == 0) == 0.05


@pytest.mark.parametrize("pattern", ["pixels", "checker"])
@pytest.mark.parametrize("channels", [None, 3])
def test_backdoor_records_carry_the_trigger(pattern: str, channels: int | None) -> None:
    x, y = _images(channels=channels)
    result = backdoor_images(x, y, target=3, share=0.2, pattern=pattern, seed=9)  # type: ignore[arg-type]
    assert result.trigger["value"] == 255.0
    stamped = stamp_trigger(x[result.poisoned], pattern, result.trigger["value"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.x[result.poisoned], stamped)
    assert not np.array_equal(stamped, x[result.poisoned])
    # The trigger sits in the bottom-right corner and nowhere else.
    np.testing.assert_array_equal(stamped[:, :-4], x[result.poisoned][:, :-4])
    np.testing.assert_array_equal(stamped[:, :, :-4], x[result.poisoned][:, :, :-4])


def test_stamp_trigger_on_float_images_uses_their_maximum() -> None:
    x = np.random.default_rng(0).uniform(0.0, 0.9, size=(3, 8, 8)).astype(np.float32)
    stamped = stamp_trigger(x)
    assert stamped[0, -2, -2] == pytest.approx(x.max())
    assert stamped.dtype == np.float32


def test_backdoor_source_classes_limit_where_poisons_come_from() -> None:
    x, y = _images()
    result = backdoor_images(x, y, target=3, share=0.3, source_classes=[1], seed=10)
    assert np.all(y[result.poisoned] == 1)


def test_backdoor_is_deterministic_given_the_seed() -> None:
    x, y = _images()
    first = backdoor_images(x, y, target=3, share=0.1, seed=11)
    again = backdoor_images(x, y, target=3, share=0.1, seed=11)
    np.testing.assert_array_equal(first.poisoned, again.poisoned)
    np.testing.assert_array_equal(first.x, again.x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"share": 1.0}, r"share must lie in \[0, 1\)"),
        ({"target": 9}, "no clean records"),
        ({"source_classes": [3]}, "must not contain the target"),
        ({"share": 0.9, "source_classes": [1]}, "only 50 source records"),
        ({"pattern": "star"}, "pattern must be one of"),
    ],
)
def test_backdoor_arguments_are_checked(kwargs: dict, message: str) -> None:
    x, y = _images()
    call = {"target": 3, "share": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        backdoor_images(x, y, **call)


def test_backdoor_images_rejects_non_images() -> None:
    with pytest.raises(ValueError, match="images"):
        backdoor_images(np.zeros((10, 5)), np.arange(10) % 2, target=1, share=0.1)


def test_backdoor_tabular_stamps_the_value_combination() -> None:
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 6))
    y = rng.integers(0, 3, size=300)
    result = backdoor_tabular(x, y, target=2, share=0.1, columns=[1, 4], values=[9.0, -9.0],
                              seed=13)
    clean_target = int(np.sum(y == 2))
    assert result.poisoned.sum() == poison_count(clean_target, 0.1 / 0.9)
    assert np.all(result.x[result.poisoned][:, [1, 4]] == [9.0, -9.0])
    assert np.all(result.y[result.poisoned] == 2) and np.all(y[result.poisoned] != 2)
    np.testing.assert_array_equal(result.x[result.poisoned][:, [0, 2, 3, 5]],
                                  x[result.poisoned][:, [0, 2, 3, 5]])
    np.testing.assert_array_equal(result.x[~result.poisoned], x[~result.poisoned])
    assert result.trigger == {"kind": "tabular", "columns": [1, 4], "values": [9.0, -9.0]}
    np.testing.assert_array_equal(stamp_columns(x[:2], [1, 4], [9.0, -9.0])[:, [1, 4]],
                                  [[9.0, -9.0], [9.0, -9.0]])


def test_backdoor_tabular_rejects_mismatched_trigger() -> None:
    x, y = np.zeros((10, 3)), np.arange(10) % 2
    with pytest.raises(ValueError, match="equally long"):
        backdoor_tabular(x, y, target=1, share=0.1, columns=[0, 1], values=[1.0])
    with pytest.raises(ValueError, match="distinct indices"):
        backdoor_tabular(x, y, target=1, share=0.1, columns=[0, 5], values=[1.0, 2.0])
