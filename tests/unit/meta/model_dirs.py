"""Model directories for the integrity tests: a tiny untrained learner, and an attacker's tools.

An attacker who can write to a model directory can also rewrite manifest.json: ``reseal``
recomputes it after a change, exactly as ``save_learner`` would, so a test can put malformed
or hostile content behind a manifest whose hashes all check out.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from meta.learners import EpisodicLearner
from meta.saving import (
    MANIFEST_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    directory_sha256,
    file_sha256,
    save_learner,
)

TINY_DIM = 4
KEY = b"test-signing-key-0123456789abcdef"
OTHER_KEY = b"an-attackers-own-key-0123456789ab"


@lru_cache(maxsize=1)
def tiny_learner() -> EpisodicLearner:
    """An untrained ProtoNet on 4 features (saving never mutates it, so one serves every test)."""
    from meta.encoders import EncoderSpec
    from meta.learners import build_learner

    spec = EncoderSpec(kind="mlp", input_shape=(TINY_DIM,), hidden=(8,), embedding_dim=4)
    learner = build_learner("protonet", spec, seed=0, device="cpu")
    learner.seen_classes = ("benign", "scan")
    return learner


def save_tiny(directory: Path, signing_key: bytes | None = None) -> str:
    return save_learner(tiny_learner(), directory, description={"purpose": "test"},
                        signing_key=signing_key)


def reseal(directory: Path, key: bytes | None = None) -> str:
    """Recompute manifest.json over the directory's current files (signed with ``key`` if given)."""
    files = {name: file_sha256(directory / name) for name in (MODEL_FILE, WEIGHTS_FILE)}
    digest = directory_sha256(files)
    manifest: dict[str, Any] = {"format_version": 1, "files": files, "sha256": digest}
    if key is not None:
        content = json.dumps({"files": files, "sha256": digest}, sort_keys=True,
                             separators=(",", ":")).encode()
        manifest["hmac_sha256"] = hmac.new(key, content, hashlib.sha256).hexdigest()
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    return digest


def edit_model_json(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    model = json.loads((directory / MODEL_FILE).read_text())
    change(model)
    (directory / MODEL_FILE).write_text(json.dumps(model))


def read_weights(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def write_weights(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    (directory / WEIGHTS_FILE).write_bytes(buffer.getvalue())


def zero_weights(directory: Path) -> None:
    """The fault-injection attack: every weight zeroed, so the model answers at chance."""
    write_weights(directory, {name: np.zeros_like(value)
                              for name, value in read_weights(directory).items()})
