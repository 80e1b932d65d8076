from __future__ import annotations

import numpy as np
import pytest

from meta.episodes import EpisodeSampler, class_counts, split_classes


def _labelled(counts: dict[str, int], dim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.full(n, label) for label, n in counts.items()])
    x = np.arange(len(y) * dim, dtype=np.float32).reshape(len(y), dim)
    return x, y


def test_same_seed_gives_same_episodes_and_different_seed_differs() -> None:
    x, y = _labelled({c: 30 for c in "abcdefg"})
    first = EpisodeSampler(x, y, ways=3, shots=2, queries=4, seed=7).sample_batch(5)
    again = EpisodeSampler(x, y, ways=3, shots=2, queries=4, seed=7).sample_batch(5)
    other = EpisodeSampler(x, y, ways=3, shots=2, queries=4, seed=8).sample_batch(5)
    np.testing.assert_array_equal(first.support_x, again.support_x)
    np.testing.assert_array_equal(first.query_x, again.query_x)
    assert first.classes == again.classes
    assert not np.array_equal(first.support_x, other.support_x)


def test_episode_shapes_labels_and_no_support_query_overlap() -> None:
    x, y = _labelled({c: 30 for c in "abcdef"})
    batch = EpisodeSampler(x, y, ways=4, shots=3, queries=5, seed=0).sample_batch(6)
    assert batch.support_x.shape == (6, 12, 3) and batch.query_x.shape == (6, 20, 3)
    assert batch.support_y.dtype == np.int32
    np.testing.assert_array_equal(batch.support_y[0], np.repeat(np.arange(4), 3))
    for t in range(batch.tasks):
        rows = {tuple(r) for r in batch.support_x[t]} | {tuple(r) for r in batch.query_x[t]}
        assert len(rows) == 12 + 20  # every record drawn at most once per episode
        # the episode-local label points at the original class of the record
        row_index = batch.query_x[t][:, 0].astype(int) // 3
        np.testing.assert_array_equal(
            y[row_index], np.asarray(batch.classes[t])[batch.query_y[t]]
        )


def test_small_classes_are_excluded_and_reported() -> None:
    x, y = _labelled({"a": 30, "b": 30, "c": 30, "tiny": 4, "small": 6})
    sampler = EpisodeSampler(x, y, ways=3, shots=2, queries=5, seed=0)
    assert sampler.excluded == ("small", "tiny")
    assert sampler.classes == ("a", "b", "c")
    for _ in range(10):
        assert set(sampler.sample().classes) <= {"a", "b", "c"}


def test_too_few_usable_classes_is_an_error_naming_the_excluded() -> None:
    x, y = _labelled({"a": 30, "b": 30, "tiny": 3})
    with pytest.raises(ValueError, match="tiny"):
        EpisodeSampler(x, y, ways=3, shots=2, queries=5, seed=0)


def test_base_rate_mode_always_has_benign_first_and_dominant() -> None:
    x, y = _labelled({"normal": 500, "a": 20, "b": 20, "c": 20, "d": 20})
    sampler = EpisodeSampler(
        x, y, ways=3, shots=2, queries=5, seed=0, benign_class="normal",
        query_mode="base_rate", benign_queries=100, attack_queries_per_class=2,
    )
    assert sampler.query_size == 104
    for _ in range(20):
        episode = sampler.sample()
        assert episode.classes[0] == "normal"
        assert np.mean(episode.query_y == 0) == pytest.approx(100 / 104)
        assert episode.query_x.shape[0] == sampler.query_size


def test_base_rate_requires_a_benign_class() -> None:
    x, y = _labelled({c: 30 for c in "abc"})
    with pytest.raises(ValueError, match="benign_class"):
        EpisodeSampler(x, y, ways=2, shots=1, queries=1, seed=0, query_mode="base_rate")


def test_sampler_state_round_trip_resumes_the_sequence() -> None:
    x, y = _labelled({c: 30 for c in "abcdef"})
    sampler = EpisodeSampler(x, y, ways=3, shots=1, queries=2, seed=3)
    sampler.sample_batch(4)
    state = sampler.get_state()
    expected = sampler.sample()
    sampler.set_state(state)
    np.testing.assert_array_equal(sampler.sample().support_x, expected.support_x)


def test_split_classes_is_disjoint_reproducible_and_reports_small_classes() -> None:
    counts = {f"c{i}": 20 + i for i in range(12)} | {"rare": 2}
    x, y = _labelled(counts)
    split = split_classes(y, val=2, test=3, seed=1, min_count=10, always_train=["c0"])
    assert split == split_classes(y, val=2, test=3, seed=1, min_count=10, always_train=["c0"])
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(split.val) == 2 and len(split.test) == 3 and "c0" in split.train
    assert split.excluded == ("rare",)
    assert set().union(*parts) == {f"c{i}" for i in range(12)}
    assert split_classes(y, val=2, test=3, seed=2, min_count=10).test != split.test
    assert class_counts(y)["rare"] == 2


def test_split_classes_refuses_to_hold_out_everything() -> None:
    _, y = _labelled({c: 20 for c in "abcd"})
    with pytest.raises(ValueError, match="cannot hold out"):
        split_classes(y, val=2, test=2, seed=0)
