"""Malformed content behind a valid manifest: one ModelIntegrityError sentence, never a traceback.

Every case writes a valid model directory, alters one thing, and recomputes the manifest (as an
attacker or a broken export tool would), so the hashes check out and only the content is wrong.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_dirs import edit_model_json, read_weights, reseal, save_tiny, write_weights

from meta.saving import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModelIntegrityError,
    load_learner,
    read_model_description,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    save_tiny(directory)
    return directory


def _hyper(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda model: change(model["hyperparameters"])


def _encoder(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda model: change(model["encoder"])


MODEL_JSON_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown algorithm": (lambda m: m.update(algorithm="xgboost"), "unknown algorithm 'xgboost'"),
    "algorithm not a string": (lambda m: m.update(algorithm=["protonet"]), "unknown algorithm"),
    "extra hyperparameter": (_hyper(lambda h: h.update(dropout=0.5)), "dropout"),
    "strategy smuggled in as a hyperparameter": (
        _hyper(lambda h: h.update(strategy="mirrored")), "'strategy' is not a hyperparameter"),
    "missing hyperparameter": (_hyper(lambda h: h.pop("trim_fraction")),
                               "missing hyperparameters \\['trim_fraction'\\]"),
    "wrong-typed hyperparameter": (_hyper(lambda h: h.update(meta_lr="fast")),
                                   "do not build a protonet learner"),
    "out-of-range hyperparameter": (_hyper(lambda h: h.update(prototype="mode")),
                                    "prototype must be one of"),
    "unknown device": (_hyper(lambda h: h.update(device="tpu")), "device must be one of"),
    "hyperparameters not an object": (lambda m: m.update(hyperparameters=[1, 2]),
                                      "hyperparameters must be a JSON object"),
    "encoder spec missing a field": (_encoder(lambda e: e.pop("input_shape")),
                                     "encoder spec does not parse.*input_shape"),
    "encoder spec with a non-numeric shape": (_encoder(lambda e: e.update(input_shape=["four"])),
                                              "encoder spec does not parse"),
    "encoder spec of an unknown kind": (_encoder(lambda e: e.update(kind="rnn")),
                                        "encoder kind must be"),
    "encoder spec with an unknown field": (_encoder(lambda e: e.update(dropout=0.1)),
                                           "encoder spec does not parse"),
    "encoder spec not an object": (lambda m: m.update(encoder="mlp"),
                                   "encoder must be a JSON object"),
    "seen_classes not a list": (lambda m: m.update(seen_classes="benign,scan"),
                                "seen_classes must be a list"),
    "seen_classes holding a non-label": (lambda m: m.update(seen_classes=["benign", ["scan"]]),
                                         "seen_classes must be a list"),
    "metrics not an object": (lambda m: m.update(metrics=[0.9]), "metrics must be a JSON object"),
    "description not an object": (lambda m: m.update(description="x"),
                                  "description must be a JSON object"),
    "format_version too new": (lambda m: m.update(format_version=2), "format_version 2"),
    "format_version as text": (lambda m: m.update(format_version="1"), "format_version '1'"),
    "model.json an empty object": (lambda m: m.clear(), "format_version None"),
}


@pytest.mark.parametrize("case", sorted(MODEL_JSON_CASES))
def test_malformed_model_json_behind_a_valid_manifest_is_one_clear_error(
    model_dir: Path, case: str
) -> None:
    change, message = MODEL_JSON_CASES[case]
    edit_model_json(model_dir, change)
    reseal(model_dir)
    with pytest.raises(ModelIntegrityError, match=message) as caught:
        load_learner(model_dir)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["seen_classes not a list", "description not an object",
                                  "unknown algorithm", "encoder spec missing a field"])
def test_read_model_description_checks_what_it_returns(model_dir: Path, case: str) -> None:
    change, message = MODEL_JSON_CASES[case]
    edit_model_json(model_dir, change)
    reseal(model_dir)
    with pytest.raises(ModelIntegrityError, match=message):
        read_model_description(model_dir)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip_with_raw_member(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in read_weights(directory):
            archive.writestr(f"{name}.npy", b"not an array")
    return buffer.getvalue()


WEIGHTS_BYTES_CASES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "empty": (lambda d: b"", "cannot be read as a weights archive"),
    "truncated": (lambda d: (d / WEIGHTS_FILE).read_bytes()[:200],
                  "cannot be read as a weights archive"),
    "cut at the end": (lambda d: (d / WEIGHTS_FILE).read_bytes()[:-30],
                       "cannot be read as a weights archive"),
    "text": (lambda d: b"these are not weights\n", "cannot be read as a weights archive"),
    "a bare .npy array": (lambda d: _npy_bytes(np.zeros(3, np.float32)),
                          "is not an .npz archive"),
    "members that are not arrays": (_zip_with_raw_member, "is not a NumPy array"),
    "an object array": (lambda d: _npz_bytes(x=np.array([{"a": 1}], dtype=object)),
                        "cannot be read as a weights archive"),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS_BYTES_CASES))
def test_unreadable_weights_behind_a_valid_manifest_are_one_clear_error(
    model_dir: Path, case: str
) -> None:
    content, message = WEIGHTS_BYTES_CASES[case]
    (model_dir / WEIGHTS_FILE).write_bytes(content(model_dir))
    reseal(model_dir)
    with pytest.raises(ModelIntegrityError, match=message) as caught:
        load_learner(model_dir)
    assert str(model_dir / WEIGHTS_FILE) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "unsafe" not in str(caught.value)  # NumPy's advice to load a pickle is not echoed


def _first(arrays: dict[str, np.ndarray]) -> str:
    return sorted(arrays)[0]


def _replace_first(value: Callable[[np.ndarray], np.ndarray]
                   ) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        name = _first(arrays)
        arrays[name] = value(arrays[name])
    return change


def _with_nan(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flat[0] = np.nan
    return array


WEIGHTS_ARRAY_CASES: dict[str, tuple[Callable[[dict[str, np.ndarray]], None], str]] = {
    "float64 instead of float32": (_replace_first(lambda a: a.astype(np.float64)),
                                   "has dtype float64, expected float32"),
    "integers": (_replace_first(lambda a: a.astype(np.int32)), "has dtype int32"),
    "text": (_replace_first(lambda a: a.astype(str)), "has dtype <U"),
    "a NaN": (_replace_first(_with_nan), "non-finite"),
    "an infinity": (_replace_first(lambda a: np.full_like(a, np.inf)), "non-finite"),
    "a missing weight": (lambda arrays: arrays.__delitem__(_first(arrays)), "missing"),
    "no weights at all": (lambda arrays: arrays.clear(), "missing"),
    "an extra weight": (lambda arrays: arrays.update(backdoor=np.zeros(2, np.float32)),
                        "unexpected \\['backdoor'\\]"),
    "a wrong shape": (_replace_first(lambda a: np.zeros((*a.shape, 2), a.dtype)), "has shape"),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS_ARRAY_CASES))
def test_wrong_weights_behind_a_valid_manifest_are_one_clear_error(
    model_dir: Path, case: str
) -> None:
    change, message = WEIGHTS_ARRAY_CASES[case]
    arrays = read_weights(model_dir)
    change(arrays)
    write_weights(model_dir, arrays)
    reseal(model_dir)
    with pytest.raises(ModelIntegrityError, match=message) as caught:
        load_learner(model_dir)
    assert "\n" not in str(caught.value)


def test_a_manifest_of_another_format_version_is_refused(model_dir: Path) -> None:
    manifest = (model_dir / MANIFEST_FILE).read_text()
    (model_dir / MANIFEST_FILE).write_text(
        manifest.replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(ModelIntegrityError, match="format_version 7"):
        load_learner(model_dir)


def test_an_invalid_device_override_is_the_callers_error_not_the_models(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="device must be one of") as caught:
        load_learner(model_dir, device="tpu")
    assert not isinstance(caught.value, ModelIntegrityError)
