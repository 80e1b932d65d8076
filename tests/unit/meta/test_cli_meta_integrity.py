"""meta-train signs with METASENTRY_MODEL_KEY; fewshot-eval pins --sha256 and checks signatures.

A refused model is one ``Error:`` line and exit status 1: never a traceback, never click's
``Aborted!`` (which an EOFError from an empty weights file used to trigger).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from model_dirs import KEY, OTHER_KEY, edit_model_json, reseal, zero_weights

from agent.cli_meta import fewshot_eval, meta_train
from meta.saving import MANIFEST_FILE, SIGNATURE_FIELD, WEIGHTS_FILE, load_model

REPO = Path(__file__).resolve().parents[3]
STREAM = REPO / "examples" / "nsl-kdd" / "stream.csv.gz"
ENV = "METASENTRY_MODEL_KEY"


@click.group()
def cli() -> None:
    """Stand-in for the main ``metasentry`` group."""


cli.add_command(meta_train)
cli.add_command(fewshot_eval)


@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A small model trained by meta-train with the signing key set: (config, model, output)."""
    if not STREAM.exists():
        pytest.skip(f"bundled NSL-KDD sample missing: {STREAM}")
    base = tmp_path_factory.mktemp("cli-integrity")
    sample = REPO / "examples" / "nsl-kdd"
    config_path = base / "agent.yaml"
    config_path.write_text((REPO / "agent.yaml").read_text().replace("examples/nsl-kdd/",
                                                                     f"{sample}/"))
    out = base / "model"
    result = CliRunner(env={ENV: KEY.decode()}).invoke(cli, [
        "meta-train", "--config", str(config_path), "--episodes", "16", "--meta-batch", "8",
        "--val-every", "16", "--hidden", "8", "--embedding-dim", "4", "--out", str(out),
        "--benign-class", "normal",
    ])
    assert result.exit_code == 0, result.output
    return config_path, out, result.output


def _eval(config: Path, model: Path, *extra: str, key: bytes | None = None) -> Result:
    env = {ENV: key.decode() if key is not None else None}
    return CliRunner(env=env).invoke(cli, [
        "fewshot-eval", "--config", str(config), "--model", str(model), "--data", str(STREAM),
        "--episodes", "3", "--queries", "5", "--json", *extra,
    ])


def _assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # click's handled exit, not a crash
    assert "Traceback" not in result.output and "Aborted!" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _copy(model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("checkpoint"))
    return copy


def test_meta_train_signs_with_the_key_from_the_environment_and_prints_the_sha256(
    signed_model: tuple[Path, Path, str],
) -> None:
    _, out, output = signed_model
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert f"sha256 {manifest['sha256']}, signed with {ENV}" in output
    assert len(manifest[SIGNATURE_FIELD]) == 64
    assert load_model(out, signing_key=KEY).signature_verified
    assert KEY.decode() not in output


def test_meta_train_refuses_a_weak_key_before_training(signed_model: tuple[Path, Path, str],
                                                       tmp_path: Path) -> None:
    config, _, _ = signed_model
    result = CliRunner(env={ENV: "short"}).invoke(cli, [
        "meta-train", "--config", str(config), "--out", str(tmp_path / "m"),
    ])
    _assert_one_error_line(result, f"{ENV} is set but holds 5 bytes")
    assert "step " not in result.output and not (tmp_path / "m").exists()


def test_fewshot_eval_with_the_pinned_sha256_and_the_key_reports_both(
    signed_model: tuple[Path, Path, str],
) -> None:
    config, out, _ = signed_model
    digest = json.loads((out / MANIFEST_FILE).read_text())["sha256"]
    result = _eval(config, out, "--sha256", digest.upper(), key=KEY)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["sha256"] == digest and report["signature_verified"] is True


def test_fewshot_eval_refuses_a_model_other_than_the_pinned_one(
    signed_model: tuple[Path, Path, str],
) -> None:
    config, out, _ = signed_model
    result = _eval(config, out, "--sha256", "f" * 64)
    _assert_one_error_line(result, f"expected {'f' * 64}")


@pytest.mark.parametrize("pin", ["abc", "z" * 64])
def test_fewshot_eval_refuses_a_pin_that_is_not_a_sha256_as_a_usage_error(
    signed_model: tuple[Path, Path, str], pin: str
) -> None:
    config, out, _ = signed_model
    result = _eval(config, out, "--sha256", pin)
    assert result.exit_code == 2
    assert "64 hexadecimal characters" in result.output and "Traceback" not in result.output


def test_fewshot_eval_verifies_the_signature_when_the_key_is_set(
    signed_model: tuple[Path, Path, str],
) -> None:
    config, out, _ = signed_model
    _assert_one_error_line(_eval(config, out, key=OTHER_KEY), "signature does not match")


def test_fewshot_eval_refuses_a_weak_key(signed_model: tuple[Path, Path, str]) -> None:
    config, out, _ = signed_model
    result = CliRunner(env={ENV: ""}).invoke(cli, [
        "fewshot-eval", "--config", str(config), "--model", str(out), "--data", str(STREAM),
    ])
    _assert_one_error_line(result, f"{ENV} is set but holds 0 bytes")


@pytest.mark.parametrize("defence", ["pin", "key"])
def test_fewshot_eval_refuses_zeroed_weights_behind_a_recomputed_manifest(
    signed_model: tuple[Path, Path, str], tmp_path: Path, defence: str
) -> None:
    config, out, _ = signed_model
    copy = _copy(out, tmp_path)
    digest = json.loads((copy / MANIFEST_FILE).read_text())["sha256"]
    zero_weights(copy)
    reseal(copy)  # the attacker cannot sign: the key is not theirs
    if defence == "pin":
        result = _eval(config, copy, "--sha256", digest)
        _assert_one_error_line(result, f"expected {digest}")
    else:
        _assert_one_error_line(_eval(config, copy, key=KEY), "is not signed")


def test_fewshot_eval_reports_empty_weights_as_one_error_not_aborted(
    signed_model: tuple[Path, Path, str], tmp_path: Path
) -> None:
    config, out, _ = signed_model
    copy = _copy(out, tmp_path)
    (copy / WEIGHTS_FILE).write_bytes(b"")
    reseal(copy)
    _assert_one_error_line(_eval(config, copy), str(copy / WEIGHTS_FILE), "weights archive")


def test_fewshot_eval_reports_an_unknown_algorithm_as_one_error(
    signed_model: tuple[Path, Path, str], tmp_path: Path
) -> None:
    config, out, _ = signed_model
    copy = _copy(out, tmp_path)
    edit_model_json(copy, lambda model: model.update(algorithm="xgboost"))
    reseal(copy, key=KEY)  # an insider holding the key: the signature checks out, the content not
    _assert_one_error_line(_eval(config, copy, key=KEY), "unknown algorithm 'xgboost'")
