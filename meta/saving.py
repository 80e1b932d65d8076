"""Saving and loading meta-learners as verifiable, pickle-free model directories.

A model that decides which alerts an analyst sees is a security asset: a swapped weights file
is an attack. A model directory therefore holds only data formats that cannot execute code
(``weights.npz`` read with ``allow_pickle=False``, ``model.json``) plus ``manifest.json`` with the
sha256 of each file; loading verifies every hash, and the directory's own hash (what
``save_learner`` returns and what deployments pin) is checked against ``expected_sha256``.

Layout::

    model.json     algorithm, encoder spec, hyperparameters, seen classes, metrics, description
    weights.npz    one array per named weight
    manifest.json  {"files": {name: sha256}, "sha256": directory hash}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from meta.encoders import EncoderSpec
from meta.learners import EpisodicLearner, build_learner

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
MANIFEST_FILE = "manifest.json"


class ModelIntegrityError(Exception):
    """A model directory is incomplete, altered, or not the one that was expected."""


def save_learner(
    learner: EpisodicLearner, directory: Path | str, *, description: dict[str, Any]
) -> str:
    """Write ``learner`` to ``directory`` and return the directory's sha256.

    ``description`` is stored verbatim in model.json (must be JSON-serialisable): the feature
    schema and fitted encoder state, a hash of the training data, evaluation metrics.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = {
        "format_version": FORMAT_VERSION,
        "algorithm": learner.algorithm,
        "encoder": learner.encoder_spec.to_dict(),
        "hyperparameters": learner.hyperparameters(),
        "seen_classes": [_json_label(c) for c in learner.seen_classes],
        "metrics": learner.metrics,
        "description": description,
    }
    try:
        model_text = json.dumps(model, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model description is not plain JSON: {error}") from error
    _atomic_write(directory / MODEL_FILE, model_text.encode())
    weights_tmp = directory / (WEIGHTS_FILE + ".tmp.npz")
    np.savez(weights_tmp, **learner.state_arrays())  # type: ignore[arg-type]
    os.replace(weights_tmp, directory / WEIGHTS_FILE)

    files = {name: file_sha256(directory / name) for name in (MODEL_FILE, WEIGHTS_FILE)}
    digest = directory_sha256(files)
    manifest = {"format_version": FORMAT_VERSION, "files": files, "sha256": digest}
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True)
    _atomic_write(directory / MANIFEST_FILE, manifest_text.encode())
    logger.info("saved %s model to %s (sha256 %s)", learner.algorithm, directory, digest)
    return digest


def load_learner(
    directory: Path | str,
    *,
    expected_sha256: str | None = None,
    device: str | None = None,
) -> EpisodicLearner:
    """Verify and load a model directory written by :func:`save_learner`.

    ``device`` overrides the saved ``auto|cpu|gpu`` choice (a model trained on a GPU box is
    often served on a CPU one). Raises :class:`ModelIntegrityError` on any mismatch.
    """
    directory = Path(directory)
    model = read_model_description(directory, expected_sha256=expected_sha256)
    hyper = dict(model["hyperparameters"])
    if device is not None:
        hyper["device"] = device
    spec = EncoderSpec.from_dict(model["encoder"])
    learner = build_learner(model["algorithm"], spec, **hyper)
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    try:
        learner.load_state_arrays(arrays)
    except ValueError as error:
        raise ModelIntegrityError(f"{directory / WEIGHTS_FILE}: {error}") from error
    learner.seen_classes = tuple(model["seen_classes"])
    learner.metrics = dict(model.get("metrics") or {})
    return learner


def read_model_description(
    directory: Path | str, *, expected_sha256: str | None = None
) -> dict[str, Any]:
    """The verified model.json of a model directory (without building the learner)."""
    directory = Path(directory)
    manifest = _read_json(directory / MANIFEST_FILE)
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {MODEL_FILE, WEIGHTS_FILE}:
        raise ModelIntegrityError(
            f"{directory / MANIFEST_FILE} must list exactly {MODEL_FILE} and {WEIGHTS_FILE}."
        )
    for name, recorded in files.items():
        path = directory / name
        if not path.is_file():
            raise ModelIntegrityError(f"{path} is missing from the model directory.")
        actual = file_sha256(path)
        if actual != recorded:
            raise ModelIntegrityError(
                f"{path} has sha256 {actual} but the manifest records {recorded}: the file was "
                "modified after saving; refusing to load it."
            )
    digest = directory_sha256(files)
    if digest != manifest.get("sha256"):
        raise ModelIntegrityError(f"{directory / MANIFEST_FILE}: directory hash does not match.")
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelIntegrityError(
            f"model {directory} has sha256 {digest}, expected {expected_sha256}; refusing to load "
            "a model other than the pinned one."
        )
    model = _read_json(directory / MODEL_FILE)
    if model.get("format_version") != FORMAT_VERSION:
        raise ModelIntegrityError(
            f"{directory / MODEL_FILE}: format_version {model.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})."
        )
    return model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def directory_sha256(files: dict[str, str]) -> str:
    """Hash of the sorted ``name:sha256`` lines: changes when any file or file name changes."""
    lines = "".join(f"{name}:{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelIntegrityError(f"{path} is missing; is this a MetaSentry model directory?")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelIntegrityError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{path} must hold a JSON object.")
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_label(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label
