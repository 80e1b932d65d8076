"""Every kind of bad record lands in quarantine with its reason, and the agent keeps going."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from agent.cli import main
from agent.config import load_config
from storage import Store


def _config(tmp_path: Path, reference: Path, fmt: str) -> Path:
    columns = None if fmt == "jsonl" else ["x", "proto", "img", "label"]
    config = {
        "schema": {
            "columns": columns, "label": "label", "max_record_bytes": 400,
            "features": [
                {"name": "x", "type": "numeric", "transform": "log1p"},
                {"name": "proto", "type": "categorical"},
                {"name": "img", "type": "tensor", "shape": [2, 2]},
            ],
        },
        "reference": {"path": str(reference), "header": fmt == "jsonl"},
        "sources": [{"type": "stdin", "name": "unused"}],
        "storage": {"url": f"sqlite:///{tmp_path / 'q.db'}"},
        "detectors": {"feature_drift": {"window": 50, "min_window": 10}},
        "metrics": {"enabled": False}, "api": {"enabled": False},
    }
    path = tmp_path / f"{fmt}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _good(rng: np.random.Generator, i: int) -> dict:
    return {"x": float(rng.exponential(100)), "proto": ["tcp", "udp"][i % 2],
            "img": rng.normal(size=(2, 2)).round(3).tolist(), "label": "normal"}


def test_every_bad_record_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(json.dumps(_good(rng, i)) + "\n" for i in range(300)))
    bad_lines: list[tuple[bytes, str]] = [
        (b"{not json", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (json.dumps({"proto": "tcp", "img": [[0, 0], [0, 0]]}).encode(), "missing_field"),
        (json.dumps(_good(rng, 0) | {"x": "12"}).encode(), "wrong_type"),
        (json.dumps(_good(rng, 0) | {"img": [[1, 2, 3]]}).encode(), "bad_shape"),
        (json.dumps(_good(rng, 0) | {"pad": "z" * 1000}).encode(), "oversize"),
        (b'{"x": 1, "proto": "\xff\xfe"}', "decode"),
    ]
    lines: list[bytes] = []
    for i in range(200):
        lines.append(json.dumps(_good(rng, i)).encode())
        if i % 25 == 3 and bad_lines:
            lines.append(bad_lines[len(lines) % len(bad_lines)][0])
    for raw, _ in bad_lines:  # every kind at least once
        lines.append(raw)
        lines.append(json.dumps(_good(rng, 1)).encode())
    stream = tmp_path / "stream.jsonl"
    stream.write_bytes(b"\n".join(lines) + b"\n")

    config_path = _config(tmp_path, reference, "jsonl")
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                       str(stream)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == len(lines)
    expected = {reason for _, reason in bad_lines}
    assert set(summary["rejected"]) == expected
    assert summary["processed"] == 200 + len(bad_lines), "good records after bad ones still count"

    store = Store(load_config(config_path, need_token=False).storage_url())
    assert store.count_quarantine() == summary["rejected"]
    entries = store.list_quarantine(limit=1000)
    by_reason = {e.reason: e for e in entries}
    assert by_reason["not_json"].raw_excerpt.startswith("{not json")
    assert by_reason["missing_field"].detail.startswith("x")
    assert len(by_reason["oversize"].raw_excerpt) <= 2000
    assert all(e.source.startswith("replay:") and e.offset_key for e in entries)


def test_csv_column_count_and_non_finite(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)

    def row(d: dict) -> str:
        img = json.dumps(d["img"]).replace('"', '""')
        return f'{d["x"]},{d["proto"]},"{img}",{d["label"]}'

    reference = tmp_path / "reference.csv"
    reference.write_text("\n".join(row(_good(rng, i)) for i in range(200)) + "\n")
    good = [row(_good(rng, i)) for i in range(50)]
    bad = ["1,tcp", 'nan,tcp,"[[0,0],[0,0]]",normal', 'inf,udp,"[[0,0],[0,0]]",normal']
    stream = tmp_path / "stream.csv"
    stream.write_text("\n".join(good[:20] + bad + good[20:]) + "\n")
    config_path = _config(tmp_path, reference, "csv")
    result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                       str(stream)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rejected"] == {"csv_columns": 1, "non_finite": 2}
    assert summary["processed"] == 50
