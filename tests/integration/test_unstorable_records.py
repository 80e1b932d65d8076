"""A record the database cannot store is quarantined or degraded, never a reason to stop.

Runs on the real PostgreSQL server, where a NUL byte used to crash-loop the agent: the
quarantined line's excerpt was refused, the error was not retryable, and every restart read
the same batch again.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pg_faults import PG_URL
from sqlalchemy import make_url

from agent.cli import main
from agent.config import load_config
from agent.datafile import open_file_source
from agent.metrics import Metrics
from agent.salvage import commit_salvaging
from agent.service import Agent
from storage import NewDriftReport, QuarantinedRecord, Store

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
pytestmark = pytest.mark.postgres


def _direct_url(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def _sample_lines(n: int) -> list[str]:
    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as sample:
        return [next(sample).rstrip("\n") for _ in range(n)]


def test_a_nul_byte_is_quarantined_and_ingestion_goes_on(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        tmp_path: Path) -> None:
    lines = _sample_lines(1200)
    # One NUL inside a numeric field, and a line of nothing but NULs, mid-stream.
    lines[300] = lines[300].replace(",", "\x00,", 1)
    lines[700] = "\x00\x00\x00"
    stream = tmp_path / "stream.csv"
    stream.write_bytes(("\n".join(lines) + "\n").encode())
    config_path = write_config(**{"storage.url": _direct_url(fresh_database("metasentry_nul"))})

    runs = [CliRunner().invoke(main, ["replay", "--config", str(config_path), "--json",
                                      str(stream)]) for _ in range(2)]

    for run in runs:  # the second run is the restart that used to crash again
        assert run.exit_code == 0, run.output
    first, again = (json.loads(run.stdout) for run in runs)
    assert first["records"] == 1200
    assert first["processed"] == 1198
    assert sum(first["rejected"].values()) == 2
    assert again["records"] == 0, "the restart resumes after the committed batch"
    store = Store(load_config(config_path, need_token=False).storage_url())
    entries = {e.offset_key: e for e in store.list_quarantine()}
    assert len(entries) == 2
    assert {e.raw_excerpt for e in entries.values()} == {
        lines[300].replace("\x00", "\ufffd"), "\ufffd\ufffd\ufffd"}
    assert all("\x00" not in e.raw_excerpt + e.detail for e in entries.values())
    print(f"\nnul: records 1200, processed {first['processed']}, quarantined "
          f"{first['rejected']}, restart read {again['records']}")
    store.close()


def test_a_row_the_database_refuses_is_stored_degraded_and_counted(
        write_config: Callable[..., Path], fresh_database: Callable[..., str],
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A LATIN1 database stores no snowman: a refusal no sanitising can foresee.
    database = fresh_database("metasentry_latin1", encoding="LATIN1")
    lines = _sample_lines(1000)
    lines[400] = "\u2603," + lines[400].split(",", 1)[1]
    stream = tmp_path / "stream.csv"
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(write_config(**{"storage.url": _direct_url(database),
                                         "pipeline.batch_size": 300}), need_token=False)
    metrics = Metrics()
    agent = Agent(config, metrics=metrics)
    agent.prepare()
    agent.attach(open_file_source("latin1", stream, columns=config.schema.columns,
                                  header=False))

    with caplog.at_level(logging.WARNING, logger="agent.pipeline"):
        totals = agent.run_sources(stop_when_exhausted=True)

    assert (totals.received, totals.processed) == (1000, 999)
    position = agent.store.load_position("latin1")
    assert position is not None and position["processed"] + position["rejected"] == 1000
    (entry,) = agent.store.list_quarantine()
    assert entry.raw_excerpt.startswith("\\u2603,")
    assert entry.reason == "wrong_type"
    degraded = metrics.registry.get_sample_value(
        "metasentry_store_rows_degraded_total", {"table": "quarantine", "outcome": "degraded"})
    assert degraded == 1
    assert any("refused a batch from source latin1" in r.getMessage() for r in caplog.records)
    assert agent.store.count_incidents().get("drift", 0) >= 1, "the rest of the batch is in"
    counted = {s.labels["table"]: s.value for s in metrics.rows_degraded.collect()[0].samples
               if s.value and s.name.endswith("_total")}
    print(f"\nlatin1: records 1000, processed {totals.processed}, quarantined "
          f"{position['rejected']}, rows degraded {counted}")
    agent.close()


def test_a_row_refused_even_degraded_is_dropped_loudly_and_the_rest_committed(
        fresh_database: Callable[..., str], caplog: pytest.LogCaptureFixture) -> None:
    store = Store(_direct_url(fresh_database("metasentry_refused")))
    store.upgrade()

    def report(end: str, n_window: int) -> NewDriftReport:
        return NewDriftReport(source="s", detector="d", window_end_key=end, n_reference=10,
                              n_window=n_window, statistic=0.1, p_value=0.5, rejected=False,
                              features=[], top_features=[])

    # 2**40 overflows PostgreSQL's integer column whatever the text around it.
    reports = [report("1", 10), report("2", 2**40), report("3", 10)]
    quarantine = [QuarantinedRecord(source="s", offset_key=str(i), reason="not_json",
                                    detail="", raw_excerpt="{") for i in range(5)]
    with caplog.at_level(logging.ERROR, logger="agent.salvage"):
        result, salvage = commit_salvaging(store.commit_batch, source="s",
                                           position={"offset": 9}, quarantine=quarantine,
                                           drift_reports=reports)

    assert (result.quarantined, result.drift_reports) == (5, 2)
    assert dict(salvage.dropped) == {"drift_reports": 1}
    assert not salvage.degraded
    assert store.load_position("s") == {"offset": 9}
    assert [r.window_end_key for r in store.list_drift_reports()] == ["3", "1"]
    assert any("window_end_key 2" in r.getMessage() for r in caplog.records)
    store.close()
