"""meta-train and fewshot-eval end to end on the bundled NSL-KDD sample (headerless CSV)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from agent.cli_meta import fewshot_eval, meta_train
from meta.saving import load_learner, read_model_description

REPO = Path(__file__).resolve().parents[3]
STREAM = REPO / "examples" / "nsl-kdd" / "stream.csv.gz"


@click.group()
def cli() -> None:
    """Stand-in for the main ``metasentry`` group."""


cli.add_command(meta_train)
cli.add_command(fewshot_eval)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not STREAM.exists():
        pytest.skip(f"bundled NSL-KDD sample missing: {STREAM}")
    base = tmp_path_factory.mktemp("cli")
    config = (REPO / "agent.yaml").read_text()
    sample = REPO / "examples" / "nsl-kdd"
    config = config.replace("examples/nsl-kdd/", f"{sample}/")
    config_path = base / "agent.yaml"
    config_path.write_text(config)
    out = base / "model"
    result = CliRunner().invoke(cli, [
        "meta-train", "--config", str(config_path), "--episodes", "64", "--meta-batch", "8",
        "--val-every", "32", "--hidden", "32", "--embedding-dim", "16", "--out", str(out),
        "--benign-class", "normal",
    ])
    assert result.exit_code == 0, result.output
    return config_path, out


def test_meta_train_writes_a_verified_model_with_progress(trained_model: tuple[Path, Path]
                                                          ) -> None:
    _, out = trained_model
    model = read_model_description(out)
    description = model["description"]
    assert model["algorithm"] == "protonet"
    assert "normal" in description["classes"]["train"]
    assert len(description["classes"]["val"]) == 3
    assert set(model["seen_classes"]) == set(description["classes"]["train"]) | set(
        description["classes"]["val"])
    assert description["encoder_state"]["vocab"]["protocol_type"]
    assert len(description["training_data"]["sha256"]) == 64
    assert load_learner(out).algorithm == "protonet"


def test_rerun_with_the_same_out_resumes(trained_model: tuple[Path, Path]) -> None:
    config_path, out = trained_model
    result = CliRunner().invoke(cli, [
        "meta-train", "--config", str(config_path), "--episodes", "80", "--meta-batch", "8",
        "--val-every", "32", "--hidden", "32", "--embedding-dim", "16", "--out", str(out),
        "--benign-class", "normal",
    ])
    assert result.exit_code == 0, result.output
    assert "step 10/10" in result.output  # only the two missing steps ran
    assert "80 episodes" in result.output


def test_fewshot_eval_reports_accuracy_with_ci_on_unseen_classes(
    trained_model: tuple[Path, Path]
) -> None:
    config_path, out = trained_model
    result = CliRunner().invoke(cli, [
        "fewshot-eval", "--config", str(config_path), "--model", str(out), "--data", str(STREAM),
        "--episodes", "30", "--queries", "10", "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    seen = set(read_model_description(out)["seen_classes"])
    assert report["classes"] and not set(report["classes"]) & seen
    assert 0.5 < report["accuracy"] <= 1.0
    assert 0.0 < report["ci95"] < 0.1
    assert report["episodes"] == 30 and report["ways"] == 5


def test_fewshot_eval_refuses_a_tampered_model(trained_model: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    config_path, out = trained_model
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.json", "weights.npz", "manifest.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    (copy / "model.json").write_text((out / "model.json").read_text().replace("protonet", "maml"))
    result = CliRunner().invoke(cli, [
        "fewshot-eval", "--config", str(config_path), "--model", str(copy), "--data", str(STREAM),
        "--episodes", "5",
    ])
    assert result.exit_code == 1
    assert "modified after saving" in result.output


def test_members_are_for_the_memory_learner_only(trained_model: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    config_path, _ = trained_model
    result = CliRunner().invoke(cli, ["meta-train", "--config", str(config_path), "--algorithm",
                                      "maml", "--members", "3", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "only the memory learner has members, not maml" in result.output
    assert not (tmp_path / "m").exists()


def test_meta_train_builds_a_memory_ensemble_on_request(trained_model: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    config_path, _ = trained_model
    out = tmp_path / "memory"
    result = CliRunner().invoke(cli, [
        "meta-train", "--config", str(config_path), "--algorithm", "memory", "--members", "3",
        "--episodes", "16", "--meta-batch", "8", "--val-every", "16", "--hidden", "16",
        "--embedding-dim", "8", "--out", str(out), "--benign-class", "normal"])
    assert result.exit_code == 0, result.output
    model = read_model_description(out)
    assert model["hyperparameters"]["members"] == 3
    assert model["description"]["members"] == 3
    learner = load_learner(out)
    width = learner.encoder_spec.input_shape[0]
    assert learner.project(np.zeros((1, width), np.float32)).shape == (1, 3 * 8)


def test_config_errors_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("version: 1\nschema: {features: []}\n")
    result = CliRunner().invoke(cli, ["meta-train", "--config", str(bad), "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_fewshot_eval_reads_jsonl_and_honours_classes(trained_model: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.datafile import read_records

    config_path, out = trained_model
    config = load_config(config_path, need_token=False)
    records = read_records(STREAM, columns=config.schema.columns, header=False).records
    wanted = ("apache2", "mailbomb", "saint")
    jsonl = tmp_path / "labelled.jsonl"

    def typed(record: dict[str, str]) -> dict[str, object]:
        # JSON carries numbers as numbers (the CSV reader yields text).
        return {k: float(v) if v.replace(".", "", 1).isdigit() else v for k, v in record.items()}

    jsonl.write_text("".join(json.dumps(typed(r)) + "\n" for r in records if r["label"] in wanted))
    result = CliRunner().invoke(cli, [
        "fewshot-eval", "--config", str(config_path), "--model", str(out), "--data", str(jsonl),
        "--ways", "3", "--episodes", "10", "--queries", "5", "--classes", ",".join(wanted),
        "--json",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert tuple(report["classes"]) == wanted and report["ways"] == 3


def test_fewshot_eval_explains_data_that_does_not_match_the_schema(
    trained_model: tuple[Path, Path], tmp_path: Path
) -> None:
    config_path, out = trained_model
    jsonl = tmp_path / "wrong.jsonl"
    jsonl.write_text(json.dumps({"duration": "not a number", "label": "x"}) + "\n")
    result = CliRunner().invoke(cli, [
        "fewshot-eval", "--config", str(config_path), "--model", str(out), "--data", str(jsonl),
    ])
    assert result.exit_code == 1
    assert "could be encoded" in result.output
