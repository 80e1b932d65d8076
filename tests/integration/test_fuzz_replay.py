"""Fuzzed files through a whole ``metasentry replay``: every line read is processed or
quarantined, and the summary, the SQLite store and the metrics say the same.

The unit properties (`tests/unit/adapters/test_parser_fuzz.py`) cover the parsers and the
encoder one by one with hundreds of examples; this runs a few of the same hostile streams
through the pipeline, the detectors and the store, where a record could still be lost between
the stages (a batch cut at a bad line, an error row the store cannot hold).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import load_config
from agent.datafile import open_file_source
from agent.metrics import Metrics
from agent.service import Agent
from storage import Store
from tests.unit.adapters.test_parser_fuzz import COLUMNS, Stream, expected_starts, hostile_stream

pytestmark = pytest.mark.slow

LIMIT = 4096
"""max_record_bytes of the agent: the reference fits, the fuzzer's long lines do not."""


def _reference(csv: bool) -> bytes:
    rows = []
    for i in range(200):
        record = {"x": float(i % 37), "proto": "tcp" if i % 2 else "udp", "flag": i % 3 == 0,
                  "img": [i % 5, -(i % 7)], "label": "normal"}
        rows.append(f'{record["x"]},{record["proto"]},{str(record["flag"]).lower()},'
                    f'"{record["img"]}",normal'.encode() if csv else orjson.dumps(record))
    return b"\n".join(rows) + b"\n"


def _config(root: Path, csv: bool) -> Path:
    reference = root / ("reference.csv" if csv else "reference.jsonl")
    reference.write_bytes(_reference(csv))
    config = {
        "schema": {
            "columns": COLUMNS if csv else None, "label": "label", "max_record_bytes": LIMIT,
            "features": [
                {"name": "x", "type": "numeric", "transform": "log1p"},
                {"name": "proto", "type": "categorical"},
                {"name": "flag", "type": "boolean"},
                {"name": "img", "type": "tensor", "shape": [2]},
            ],
        },
        "reference": {"path": str(reference), "header": not csv},
        "sources": [{"type": "stdin", "name": "unused"}],
        "storage": {"url": f"sqlite:///{root / 'fuzz.db'}"},
        "detectors": {"feature_drift": {"window": 50, "min_window": 10}},
        "metrics": {"enabled": False}, "api": {"enabled": False},
    }
    path = root / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _rejected_metric(metrics: Metrics, source: str) -> float:
    return sum(sample.value for family in metrics.registry.collect()
               if family.name == "metasentry_records_rejected"
               for sample in family.samples
               if sample.name.endswith("_total") and sample.labels.get("source") == source)


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=st.booleans().flatmap(
    lambda csv: st.tuples(st.just(csv), hostile_stream(csv=csv, min_lines=30, max_lines=60))))
def test_a_fuzzed_file_replays_with_every_line_accounted_for(stream: tuple[bool, Stream]) -> None:
    csv, fuzzed = stream
    read = len(expected_starts(fuzzed.data))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config_path = _config(root, csv)
        data = root / ("stream.csv" if csv else "stream.jsonl")
        data.write_bytes(fuzzed.data)

        result = CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                           str(data)])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        rejected = sum(summary["rejected"].values())
        assert summary["records"] == read
        assert summary["processed"] + rejected == read, summary
        assert summary["committed_total"] == {"processed": summary["processed"],
                                              "rejected": rejected}
        config = load_config(config_path, need_token=False)
        store = Store(config.storage_url())
        try:
            assert sum(store.count_quarantine().values()) == rejected
        finally:
            store.close()

        # The same file once more, as the replay runs it, with the metrics kept to read.
        config = load_config(config_path, need_token=False).model_copy(deep=True)
        metrics = Metrics()
        agent = Agent(config, metrics=metrics)
        try:
            agent.prepare()
            agent.attach(open_file_source("again", data, columns=config.schema.columns,
                                          header=config.schema.columns is None,
                                          max_record_bytes=LIMIT))
            agent.run_sources(stop_when_exhausted=True)
        finally:
            agent.close()
        received = _metric(metrics, "metasentry_records_received_total", source="again")
        processed = _metric(metrics, "metasentry_records_processed_total", source="again")
        assert received == read
        assert processed + _rejected_metric(metrics, "again") == read
        assert processed == summary["processed"]
