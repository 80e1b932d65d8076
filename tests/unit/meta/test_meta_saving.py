from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from meta_testdata import ALGORITHMS, TrainedLearner

from meta.saving import (
    MANIFEST_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    ModelIntegrityError,
    load_learner,
    read_model_description,
    save_learner,
)

DESCRIPTION = {"feature_schema": {"columns": ["a", "b"]}, "training_data_sha256": "0" * 64}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_save_then_load_gives_identical_predictions(
    trained_learners: dict[str, TrainedLearner], algorithm: str, tmp_path: Path
) -> None:
    item = trained_learners[algorithm]
    learner, blobs = item.learner, item.blobs
    digest = save_learner(learner, tmp_path / "model", description=DESCRIPTION)
    loaded = load_learner(tmp_path / "model", expected_sha256=digest)
    assert loaded.algorithm == algorithm
    assert loaded.hyperparameters() == learner.hyperparameters()
    assert loaded.seen_classes == learner.seen_classes
    support = np.concatenate([np.flatnonzero(blobs.y == c)[:4] for c in ("class_02", "class_07")])
    before = learner.adapt(blobs.x[support], blobs.y[support])
    after = loaded.adapt(blobs.x[support], blobs.y[support])
    np.testing.assert_array_equal(after.predict_proba(blobs.x), before.predict_proba(blobs.x))
    np.testing.assert_array_equal(after.unknown_score(blobs.x), before.unknown_score(blobs.x))
    np.testing.assert_array_equal(loaded.embed(blobs.x), learner.embed(blobs.x))
    model = read_model_description(tmp_path / "model")
    assert model["description"] == DESCRIPTION


@pytest.fixture
def saved(trained_learners: dict[str, TrainedLearner], tmp_path: Path) -> tuple[Path, str]:
    directory = tmp_path / "model"
    digest = save_learner(trained_learners["protonet"].learner, directory, description={})
    return directory, digest


def test_tampered_weights_file_is_refused(saved: tuple[Path, str]) -> None:
    directory, _ = saved
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1e-3
    np.savez(directory / WEIGHTS_FILE, **arrays)
    with pytest.raises(ModelIntegrityError, match="modified after saving"):
        load_learner(directory)


def test_tampered_model_json_is_refused(saved: tuple[Path, str]) -> None:
    directory, _ = saved
    model = json.loads((directory / MODEL_FILE).read_text())
    model["algorithm"] = "maml"
    (directory / MODEL_FILE).write_text(json.dumps(model))
    with pytest.raises(ModelIntegrityError, match=MODEL_FILE):
        load_learner(directory)


def test_a_model_other_than_the_pinned_one_is_refused(saved: tuple[Path, str]) -> None:
    directory, digest = saved
    assert json.loads((directory / MANIFEST_FILE).read_text())["sha256"] == digest
    with pytest.raises(ModelIntegrityError, match="expected"):
        load_learner(directory, expected_sha256="f" * 64)


def test_missing_manifest_is_refused(saved: tuple[Path, str]) -> None:
    directory, _ = saved
    (directory / MANIFEST_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_learner(directory)


def test_description_must_be_plain_json(
    trained_learners: dict[str, TrainedLearner], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="JSON"):
        save_learner(trained_learners["protonet"].learner, tmp_path / "m",
                     description={"bad": object()})
