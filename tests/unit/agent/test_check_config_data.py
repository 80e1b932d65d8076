"""check-config reads the data: a schema that does not fit its files is an error (exit 2),
with the feature's YAML path, the file, how many records fail and an example value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from agent.cli import main


def _write(tmp_path: Path, records: list[dict[str, object]], features: list[dict[str, object]],
           **detector: object) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {
        "version": 1,
        "schema": {"label": "label", "features": features},
        "reference": {"path": str(data)},
        "sources": [{"name": "s", "type": "jsonl_file", "path": str(data), "mode": "replay"}],
        "detectors": [{"type": "feature_drift", "name": "drift", "window": 100,
                       "min_window": 50, **detector}],
        "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        "api": {"enabled": False}, "metrics": {"enabled": False},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check-config", str(path)], env={})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


RECORDS = [{"bytes": i, "proto": "tcp", "flag": ["on", "off", "yes", "0"][i % 4],
            "label": "normal"} for i in range(20)]


def test_a_fitting_schema_passes_and_on_off_are_booleans(tmp_path: Path) -> None:
    code, out = _check(_write(tmp_path, RECORDS, [
        {"name": "bytes", "type": "numeric"}, {"name": "proto", "type": "categorical"},
        {"name": "flag", "type": "boolean"}]))
    assert code == 0, out


def test_each_mismatch_is_named_with_its_yaml_path_and_an_example(tmp_path: Path) -> None:
    records = [{**r, "bytes": "lots" if i % 2 else r["bytes"]} for i, r in enumerate(RECORDS)]
    code, out = _check(_write(tmp_path, records, [
        {"name": "bytes", "type": "numeric"}, {"name": "proto", "type": "boolean"},
        {"name": "duration", "type": "numeric"}]))
    assert code == 2
    assert ("schema.features[0] (bytes): 10 of the first 20 records of reference.path "
            "(data.jsonl) cannot be read as numeric: not a number, e.g. 'lots'") in out
    assert "schema.features[1] (proto): 20 of the first 20 records" in out
    assert "not a boolean (true/false, yes/no, on/off, 1/0), e.g. 'tcp'" in out
    assert ("schema.features[2] (duration): no record of reference.path (data.jsonl) has this "
            "field (its fields: bytes, flag, label, proto)") in out
    assert "sources[0].path" in out  # the stream file is checked too
    assert "Traceback" not in out


def test_cross_field_rules_are_checked_at_config_time(tmp_path: Path) -> None:
    code, out = _check(_write(tmp_path, RECORDS, [{"name": "bytes", "type": "numeric"}],
                              min_window=500))
    assert code == 2
    assert "min_window (500) must not exceed window (100)" in out


def test_an_unparseable_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, RECORDS, [{"name": "bytes", "type": "numeric"}])
    (tmp_path / "data.jsonl").write_text("not json\n" * 5)
    code, out = _check(path)
    assert code == 2
    assert "none of the first lines of data.jsonl could be parsed" in out
    assert "Traceback" not in out


def test_values_are_stripped_and_mapped_before_they_are_read(tmp_path: Path) -> None:
    from agent.config import SchemaConfig
    from agent.schema import Encoder

    schema = SchemaConfig.model_validate({"features": [
        {"name": "level", "type": "numeric", "strip": True, "map": {"high": 1, "low": 0}},
        {"name": "proto", "type": "categorical", "strip": True},
        {"name": "up", "type": "boolean", "map": {"si": True}}]})
    records = [{"level": " high ", "proto": " tcp", "up": "si"},
               {"level": "low", "proto": "tcp ", "up": "off"},
               {"level": " 0.5", "proto": "udp", "up": "on"}]
    encoder = Encoder.from_config(schema).fit(records, textual=True)
    encoded = encoder.encode(records, textual=True)
    assert not encoded.errors
    assert encoded.features.numeric[:, 0].tolist() == [1.0, 0.0, 0.5]
    assert encoded.features.categorical[:, 0].tolist()[:2] == [0, 0]  # one category, 'tcp'
    assert encoded.features.categorical[:, 1].tolist() == [1, 0, 1]
    again = Encoder.from_state(encoder.state_dict())  # the saved state keeps the cleaning
    assert np.array_equal(again.encode(records, textual=True).x, encoded.x)
