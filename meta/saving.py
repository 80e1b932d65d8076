"""Saving and loading meta-learners as verifiable, pickle-free model directories.

A model that decides which alerts an analyst sees is a security asset: a swapped weights file
is an attack. A model directory therefore holds only data formats that cannot execute code
(``weights.npz`` read with ``allow_pickle=False``, ``model.json``) plus ``manifest.json`` with the
sha256 of each file and the directory's own hash (what :func:`save_learner` returns).

Those hashes are unkeyed: they catch accidents, not an attacker who can write the directory,
since such an attacker recomputes the manifest too (zeroed weights behind a fresh manifest load
and serve at chance). Two things stop that attacker:

- **pinning**: ``expected_sha256`` (``model.sha256`` in the config, ``--sha256`` on the command
  line, the hash the registry recorded) refuses any directory whose hash differs;
- **signing**: with a secret key (``METASENTRY_MODEL_KEY``, see :func:`signing_key_from_env`)
  the manifest carries an HMAC-SHA256 over its files and hash; a loader given the key refuses
  an unsigned manifest or a bad signature. Signing leaves the directory hash unchanged.

Loading reads each file once, hashes those bytes and parses the same bytes, so nothing can be
swapped between the check and the use; then every field of model.json and every weight is
checked, so malformed content behind a valid manifest is one :class:`ModelIntegrityError`
sentence rather than a traceback from deep inside NumPy or TensorFlow.

Layout::

    model.json     algorithm, encoder spec, hyperparameters, seen classes, metrics, description
    weights.npz    one array per named weight
    manifest.json  {"files": {name: sha256}, "sha256": directory hash[, "hmac_sha256": hex]}
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from meta.device import DeviceName
from meta.encoders import EncoderSpec
from meta.learners import ALGORITHMS, EpisodicLearner, build_learner

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FIELD = "hmac_sha256"
SIGNING_KEY_ENV = "METASENTRY_MODEL_KEY"
MIN_SIGNING_KEY_BYTES = 16

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Constructor arguments that are runtime objects, never hyperparameters read from a file.
_NOT_HYPERPARAMETERS = frozenset({"strategy"})
# What np.load and the zip reader raise on a truncated, empty or forged archive.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError,
    RuntimeError,
)


class ModelIntegrityError(Exception):
    """A model directory is incomplete, altered, malformed, or not the one that was expected."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: the learner, its model.json, and the directory hash it was loaded from.

    ``signature_verified`` is true only when a signing key was given and the signature matched.
    """

    learner: EpisodicLearner
    model: dict[str, Any]
    sha256: str
    signature_verified: bool


@dataclass(frozen=True)
class _VerifiedFiles:
    sha256: str
    contents: dict[str, bytes]
    signature_verified: bool


def save_learner(
    learner: EpisodicLearner,
    directory: Path | str,
    *,
    description: dict[str, Any],
    signing_key: bytes | None = None,
) -> str:
    """Write ``learner`` to ``directory`` and return the directory's sha256.

    ``description`` is stored verbatim in model.json (must be JSON-serialisable): the feature
    schema and fitted encoder state, a hash of the training data, evaluation metrics. With
    ``signing_key`` the manifest is signed (HMAC-SHA256); the returned hash is the same either way.
    """
    if signing_key is not None:
        _check_signing_key(signing_key)
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
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "files": files, "sha256": digest}
    if signing_key is not None:
        manifest[SIGNATURE_FIELD] = _signature(signing_key, files, digest)
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True)
    _atomic_write(directory / MANIFEST_FILE, manifest_text.encode())
    logger.info("saved %s model to %s (sha256 %s%s)", learner.algorithm, directory, digest,
                ", signed" if signing_key is not None else "")
    return digest


def load_model(
    directory: Path | str,
    *,
    expected_sha256: str | None = None,
    signing_key: bytes | None = None,
    require_signature: bool = False,
    device: str | None = None,
) -> LoadedModel:
    """Verify and load a model directory written by :func:`save_learner`.

    ``expected_sha256`` pins the directory hash (64 hex characters, any case). ``signing_key``
    verifies the manifest's HMAC and refuses an unsigned manifest; ``require_signature`` makes
    the key mandatory. ``device`` overrides the saved ``auto|cpu|gpu`` choice (a model trained on
    a GPU box is often served on a CPU one).

    Raises :class:`ModelIntegrityError` when the directory is incomplete, altered, malformed,
    unsigned or badly signed (with a key), or not the pinned one; ``ValueError``/``TypeError``
    for bad arguments, before the directory is read.
    """
    directory = Path(directory)
    if device is not None and device not in get_args(DeviceName):
        raise ValueError(f"device must be one of {list(get_args(DeviceName))}, got {device!r}.")
    verified = _verify_files(directory, expected_sha256, signing_key, require_signature)
    model, spec = _parse_model(directory / MODEL_FILE, verified.contents[MODEL_FILE])
    arrays = _parse_weights(directory / WEIGHTS_FILE, verified.contents[WEIGHTS_FILE])
    learner = _build(directory / MODEL_FILE, model, spec, device)
    _load_weights(directory / WEIGHTS_FILE, learner, arrays)
    learner.seen_classes = tuple(model["seen_classes"])
    learner.metrics = dict(model["metrics"])
    return LoadedModel(learner=learner, model=model, sha256=verified.sha256,
                       signature_verified=verified.signature_verified)


def load_learner(
    directory: Path | str,
    *,
    expected_sha256: str | None = None,
    signing_key: bytes | None = None,
    require_signature: bool = False,
    device: str | None = None,
) -> EpisodicLearner:
    """The learner of :func:`load_model` (same arguments, same checks, same errors)."""
    return load_model(directory, expected_sha256=expected_sha256, signing_key=signing_key,
                      require_signature=require_signature, device=device).learner


def read_model_description(
    directory: Path | str,
    *,
    expected_sha256: str | None = None,
    signing_key: bytes | None = None,
    require_signature: bool = False,
) -> dict[str, Any]:
    """The verified, well-formed model.json of a model directory (without building the learner).

    Checks as :func:`load_model` does, except the hyperparameters and the weights, which only
    building the learner can check.
    """
    directory = Path(directory)
    verified = _verify_files(directory, expected_sha256, signing_key, require_signature)
    model, _ = _parse_model(directory / MODEL_FILE, verified.contents[MODEL_FILE])
    return model


def model_directory_sha256(directory: Path | str) -> str:
    """The directory hash recorded in the manifest, after verifying every file against it.

    The signature is not checked (it does not change the hash); load with a key for that.
    """
    return _verify_files(Path(directory), None, None, False).sha256


def parse_sha256(value: str) -> str:
    """``value`` as a lower-case sha256 hex digest; ``ValueError`` unless 64 hex characters."""
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value.lower()):
        raise ValueError(
            "a model sha256 must be 64 hexadecimal characters (as printed by meta-train), "
            f"got {value!r}."
        )
    return value.lower()


def signing_key_from_env(var: str = SIGNING_KEY_ENV) -> bytes | None:
    """The manifest signing key held in environment variable ``var``, or None when it is unset.

    A variable that is set but shorter than ``MIN_SIGNING_KEY_BYTES`` is a ``ValueError`` (fail
    closed: an empty value must not silently turn verification off). The secret is never logged
    nor put in a message.
    """
    value = os.environ.get(var)
    if value is None:
        return None
    key = value.encode()
    if len(key) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(
            f"{var} is set but holds {len(key)} bytes; use a secret of at least "
            f"{MIN_SIGNING_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`) or unset it."
        )
    return key


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


# -- verification ------------------------------------------------------------------------------
def _verify_files(
    directory: Path,
    expected_sha256: str | None,
    signing_key: bytes | None,
    require_signature: bool,
) -> _VerifiedFiles:
    """Read every file once, check it against the manifest, the signature and the pin."""
    pinned = parse_sha256(expected_sha256) if expected_sha256 is not None else None
    if signing_key is not None:
        _check_signing_key(signing_key)
    elif require_signature:
        raise ValueError("require_signature needs a signing_key to verify the signature with.")
    manifest_path = directory / MANIFEST_FILE
    manifest = _parse_json(manifest_path, _read_file(manifest_path))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelIntegrityError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})."
        )
    files = manifest.get("files")
    if (not isinstance(files, dict) or set(files) != {MODEL_FILE, WEIGHTS_FILE}
            or not all(isinstance(v, str) for v in files.values())):
        raise ModelIntegrityError(
            f"{manifest_path} must list exactly {MODEL_FILE} and {WEIGHTS_FILE} with their sha256."
        )
    contents: dict[str, bytes] = {}
    for name, recorded in files.items():
        path = directory / name
        contents[name] = _read_file(path)
        actual = hashlib.sha256(contents[name]).hexdigest()
        if actual != recorded:
            raise ModelIntegrityError(
                f"{path} has sha256 {actual} but the manifest records {recorded}: the file was "
                "modified after saving; refusing to load it."
            )
    digest = directory_sha256(files)
    if digest != manifest.get("sha256"):
        raise ModelIntegrityError(f"{manifest_path}: directory hash does not match.")
    signature_verified = _check_signature(manifest_path, manifest, files, digest, signing_key)
    if pinned is not None and digest != pinned:
        raise ModelIntegrityError(
            f"model {directory} has sha256 {digest}, expected {pinned}; refusing to load "
            "a model other than the pinned one."
        )
    return _VerifiedFiles(sha256=digest, contents=contents, signature_verified=signature_verified)


def _check_signature(
    manifest_path: Path,
    manifest: dict[str, Any],
    files: dict[str, str],
    digest: str,
    signing_key: bytes | None,
) -> bool:
    recorded = manifest.get(SIGNATURE_FIELD)
    if signing_key is None:
        if recorded is not None:
            logger.info("%s is signed but no signing key was given: the signature was not "
                        "checked", manifest_path)
        return False
    if recorded is None:
        raise ModelIntegrityError(
            f"{manifest_path} is not signed (no {SIGNATURE_FIELD} signature) but a signing key "
            "was given; refusing an unsigned model: re-save it with the key."
        )
    expected = _signature(signing_key, files, digest)
    if not isinstance(recorded, str) or not hmac.compare_digest(
        expected.encode(), recorded.encode("utf-8", "replace")
    ):
        raise ModelIntegrityError(
            f"{manifest_path}: the {SIGNATURE_FIELD} signature does not match: the manifest was "
            "altered or signed with another key; refusing to load it."
        )
    return True


def _signature(key: bytes, files: dict[str, str], digest: str) -> str:
    """HMAC-SHA256 over the canonical JSON of the manifest's files and directory hash."""
    content = json.dumps({"files": files, "sha256": digest}, sort_keys=True,
                         separators=(",", ":"))
    return hmac.new(key, content.encode(), hashlib.sha256).hexdigest()


def _check_signing_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"signing_key must be bytes (encode the secret), got {type(key).__name__}.")
    if len(key) < MIN_SIGNING_KEY_BYTES:
        raise ValueError(
            f"signing_key holds {len(key)} bytes; use a secret of at least "
            f"{MIN_SIGNING_KEY_BYTES} bytes."
        )


# -- parsing what was verified -----------------------------------------------------------------
def _parse_model(path: Path, content: bytes) -> tuple[dict[str, Any], EncoderSpec]:
    """model.json's fields, each checked for type, and its encoder spec."""
    model = _parse_json(path, content)
    model.setdefault("metrics", {})
    model.setdefault("description", {})
    if model.get("format_version") != FORMAT_VERSION:
        raise ModelIntegrityError(
            f"{path}: format_version {model.get('format_version')!r} is not "
            f"supported (expected {FORMAT_VERSION})."
        )
    algorithm = model.get("algorithm")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ModelIntegrityError(
            f"{path}: unknown algorithm {algorithm!r}; expected one of {list(ALGORITHMS)}."
        )
    for field in ("encoder", "hyperparameters", "metrics", "description"):
        if not isinstance(model.get(field), dict):
            raise ModelIntegrityError(
                f"{path}: {field} must be a JSON object, got {type(model.get(field)).__name__}."
            )
    seen = model.get("seen_classes")
    if not isinstance(seen, list) or not all(
        isinstance(label, str | int | float) for label in seen
    ):
        raise ModelIntegrityError(
            f"{path}: seen_classes must be a list of class labels (strings or numbers)."
        )
    try:
        spec = EncoderSpec.from_dict(model["encoder"])
    except (KeyError, TypeError, ValueError) as error:
        detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        raise ModelIntegrityError(f"{path}: the encoder spec does not parse: {detail}") from error
    return model, spec


def _parse_weights(path: Path, content: bytes) -> dict[str, np.ndarray]:
    """The arrays of weights.npz: each a finite floating-point array, no pickles, no raw bytes."""
    try:
        archive = np.load(io.BytesIO(content), allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ModelIntegrityError(f"{path} is not an .npz archive of named weights.")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except _ARCHIVE_ERRORS as error:
        # NumPy's own text for a pickle suggests loading it unsafely: never echo that advice.
        detail = ("it holds pickled data, which is never loaded" if "pickle" in str(error)
                  else f"{type(error).__name__}: {error}")
        raise ModelIntegrityError(
            f"{path} cannot be read as a weights archive ({detail}); it is truncated, empty or "
            "not what save_learner wrote."
        ) from error
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise ModelIntegrityError(f"{path}: member {name!r} is not a NumPy array.")
        if value.dtype.kind != "f":
            raise ModelIntegrityError(
                f"{path}: weight {name!r} has dtype {value.dtype}; weights are floating point."
            )
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise ModelIntegrityError(
                f"{path}: weight {name!r} holds {bad} non-finite values (NaN or infinity)."
            )
    return arrays


def _build(
    path: Path, model: dict[str, Any], spec: EncoderSpec, device: str | None
) -> EpisodicLearner:
    algorithm = model["algorithm"]
    saved = model["hyperparameters"]
    smuggled = sorted(set(saved) & _NOT_HYPERPARAMETERS)
    if smuggled:
        raise ModelIntegrityError(
            f"{path}: {smuggled[0]!r} is not a hyperparameter; refusing to pass it to the learner."
        )
    hyper = dict(saved)
    if device is not None:
        hyper["device"] = device
    try:
        learner = build_learner(algorithm, spec, **hyper)
    except (TypeError, ValueError) as error:
        raise ModelIntegrityError(
            f"{path}: the hyperparameters do not build a {algorithm} learner: {error}"
        ) from error
    missing = sorted(set(learner.hyperparameters()) - set(saved))
    if missing:
        raise ModelIntegrityError(
            f"{path}: missing hyperparameters {missing}; refusing to fill them with defaults."
        )
    return learner


def _load_weights(path: Path, learner: EpisodicLearner, arrays: dict[str, np.ndarray]) -> None:
    expected = learner.state_arrays()
    for name, value in arrays.items():
        if name in expected and value.dtype != expected[name].dtype:
            raise ModelIntegrityError(
                f"{path}: weight {name!r} has dtype {value.dtype}, expected "
                f"{expected[name].dtype}."
            )
    try:
        learner.load_state_arrays(arrays)
    except ValueError as error:
        raise ModelIntegrityError(f"{path}: {error}") from error


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelIntegrityError(
            f"{path} is missing; is this a MetaSentry model directory?"
        ) from None
    except OSError as error:
        raise ModelIntegrityError(f"{path} cannot be read: {error.strerror}.") from error


def _parse_json(path: Path, content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content.decode())
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
