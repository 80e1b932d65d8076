"""Pinned hashes and HMAC-signed manifests against an attacker who can rewrite the manifest.

The fault-injection attack: zero every weight (the model then answers at chance) and recompute
manifest.json. The unkeyed hashes all check out, so only a pinned sha256 or a signing key the
attacker does not hold can refuse the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from model_dirs import KEY, OTHER_KEY, TINY_DIM, reseal, save_tiny, zero_weights

from meta.saving import (
    MANIFEST_FILE,
    SIGNATURE_FIELD,
    ModelIntegrityError,
    load_learner,
    load_model,
    model_directory_sha256,
    read_model_description,
    signing_key_from_env,
)

PROBE = np.random.default_rng(0).normal(size=(6, TINY_DIM)).astype(np.float32)


def _manifest(directory: Path) -> dict[str, object]:
    data = json.loads((directory / MANIFEST_FILE).read_text())
    assert isinstance(data, dict)
    return data


# -- the attack ---------------------------------------------------------------------------------
def test_zeroed_weights_with_a_recomputed_manifest_are_refused_by_a_pinned_sha256(
    tmp_path: Path,
) -> None:
    digest = save_tiny(tmp_path)
    zero_weights(tmp_path)
    reseal(tmp_path)
    with pytest.raises(ModelIntegrityError, match=f"expected {digest}"):
        load_learner(tmp_path, expected_sha256=digest)


@pytest.mark.parametrize("attacker_signature", ["dropped", "kept", "own key"])
def test_zeroed_weights_with_a_recomputed_manifest_are_refused_by_a_signing_key(
    tmp_path: Path, attacker_signature: str
) -> None:
    save_tiny(tmp_path, signing_key=KEY)
    old_signature = _manifest(tmp_path)[SIGNATURE_FIELD]
    zero_weights(tmp_path)
    reseal(tmp_path, key=OTHER_KEY if attacker_signature == "own key" else None)
    if attacker_signature == "kept":
        manifest = _manifest(tmp_path)
        manifest[SIGNATURE_FIELD] = old_signature
        (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    expected = "is not signed" if attacker_signature == "dropped" else "signature does not match"
    with pytest.raises(ModelIntegrityError, match=expected):
        load_learner(tmp_path, signing_key=KEY)


def test_without_a_pin_or_a_key_the_zeroed_model_loads_and_serves_at_chance(
    tmp_path: Path,
) -> None:
    # Documented limit: an unkeyed manifest detects accidents, not an attacker who can write
    # the directory. Deployments pin model.sha256 or set a signing key.
    save_tiny(tmp_path)
    zero_weights(tmp_path)
    reseal(tmp_path)
    learner = load_learner(tmp_path)
    assert not np.any(learner.embed(PROBE))  # every record embeds to the origin: no signal


# -- signing --------------------------------------------------------------------------------
def test_a_signed_model_loads_with_its_key_and_keeps_its_sha256(tmp_path: Path) -> None:
    unsigned = save_tiny(tmp_path / "unsigned")
    signed = save_tiny(tmp_path / "signed", signing_key=KEY)
    assert signed == unsigned  # the hash names the content; the signature says who wrote it
    assert len(str(_manifest(tmp_path / "signed")[SIGNATURE_FIELD])) == 64
    assert SIGNATURE_FIELD not in _manifest(tmp_path / "unsigned")
    loaded = load_model(tmp_path / "signed", expected_sha256=signed, signing_key=KEY,
                        require_signature=True)
    assert loaded.sha256 == signed and loaded.signature_verified
    assert loaded.model["description"] == {"purpose": "test"}
    np.testing.assert_array_equal(loaded.learner.embed(PROBE),
                                  load_learner(tmp_path / "unsigned").embed(PROBE))


def test_a_signed_model_without_a_key_loads_and_says_the_signature_was_not_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_tiny(tmp_path, signing_key=KEY)
    with caplog.at_level(logging.INFO, logger="meta.saving"):
        loaded = load_model(tmp_path)
    assert not loaded.signature_verified
    assert any("signature was not checked" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)


def test_require_signature_without_a_key_is_the_callers_error(tmp_path: Path) -> None:
    save_tiny(tmp_path, signing_key=KEY)
    with pytest.raises(ValueError, match="require_signature needs a signing_key"):
        load_learner(tmp_path, require_signature=True)


def test_an_unsigned_model_is_refused_when_a_key_is_given(tmp_path: Path) -> None:
    save_tiny(tmp_path)
    with pytest.raises(ModelIntegrityError, match="is not signed"):
        read_model_description(tmp_path, signing_key=KEY)


def test_a_model_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    save_tiny(tmp_path, signing_key=OTHER_KEY)
    with pytest.raises(ModelIntegrityError, match="signature does not match"):
        load_learner(tmp_path, signing_key=KEY)


@pytest.mark.parametrize("recorded", [12345, "é" * 64, "00", None])
def test_a_malformed_signature_field_is_refused_not_a_crash(
    tmp_path: Path, recorded: object
) -> None:
    save_tiny(tmp_path, signing_key=KEY)
    manifest = _manifest(tmp_path)
    manifest[SIGNATURE_FIELD] = recorded
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="signature"):
        load_learner(tmp_path, signing_key=KEY)


def test_the_secret_never_reaches_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        save_tiny(tmp_path, signing_key=KEY)
        load_learner(tmp_path, signing_key=KEY)
        with pytest.raises(ModelIntegrityError) as caught:
            load_learner(tmp_path, signing_key=OTHER_KEY)
    for secret in (KEY, OTHER_KEY):
        assert secret.decode() not in caplog.text
        assert secret.decode() not in str(caught.value)
        assert secret.decode() not in (tmp_path / MANIFEST_FILE).read_text()


@pytest.mark.parametrize("key", [b"", b"short"])
def test_a_weak_signing_key_is_refused(tmp_path: Path, key: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        save_tiny(tmp_path, signing_key=key)


def test_a_text_signing_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="signing_key must be bytes"):
        save_tiny(tmp_path, signing_key=KEY.decode())  # type: ignore[arg-type]


def test_signing_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASENTRY_MODEL_KEY", raising=False)
    assert signing_key_from_env() is None
    monkeypatch.setenv("METASENTRY_MODEL_KEY", KEY.decode())
    assert signing_key_from_env() == KEY
    monkeypatch.setenv("OTHER_MODEL_KEY", OTHER_KEY.decode())
    assert signing_key_from_env("OTHER_MODEL_KEY") == OTHER_KEY


@pytest.mark.parametrize("value", ["", "hunter2"])
def test_a_set_but_weak_env_key_fails_closed_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("METASENTRY_MODEL_KEY", value)
    with pytest.raises(ValueError, match="METASENTRY_MODEL_KEY is set but") as caught:
        signing_key_from_env()
    assert not value or value not in str(caught.value)


# -- pinning --------------------------------------------------------------------------------
@pytest.mark.parametrize("pin", ["abc", "g" * 64, "f" * 63, "f" * 65, " " + "f" * 63, ""])
def test_a_pin_that_is_not_a_sha256_is_a_one_sentence_value_error(
    tmp_path: Path, pin: str
) -> None:
    save_tiny(tmp_path)
    with pytest.raises(ValueError, match="64 hexadecimal characters") as caught:
        load_learner(tmp_path, expected_sha256=pin)
    assert not isinstance(caught.value, ModelIntegrityError)


def test_a_pin_in_capitals_is_accepted(tmp_path: Path) -> None:
    digest = save_tiny(tmp_path)
    assert load_model(tmp_path, expected_sha256=digest.upper()).sha256 == digest


def test_model_directory_sha256_is_the_verified_hash(tmp_path: Path) -> None:
    digest = save_tiny(tmp_path)
    assert model_directory_sha256(tmp_path) == digest
    zero_weights(tmp_path)
    with pytest.raises(ModelIntegrityError, match="modified after saving"):
        model_directory_sha256(tmp_path)
