"""The throughput benchmark's limits, profile and storage figures, and the soak run, in small."""

from __future__ import annotations

import math
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bench.soak import soak
from bench.throughput import SAMPLE, _replay_once
from bench.throughput_limits import (
    STAGES,
    _table_bytes,
    decompressed,
    parse_limits,
    report_storage,
    stage_profile,
    year_on_disk,
)


def test_the_parsing_limits_read_every_record_of_the_sample() -> None:
    data = decompressed(SAMPLE / "stream.csv.gz", 1)[:200_000]
    data = data[: data.rindex(b"\n") + 1]
    limits = parse_limits(data, repeats=1)
    assert limits["records"] == data.count(b"\n")
    assert limits["pyarrow_csv_records_per_s"] > 0 and limits["csv_reader_float_records_per_s"] > 0


def test_a_year_of_reports_is_reports_per_second_times_a_year() -> None:
    assert year_on_disk(1000.0, records_per_s=10_000, window=1_000) == 1000 * 10 * 86_400 * 365


def test_the_profile_splits_a_replay_into_its_stages_and_reports_are_measured_on_disk(
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shares: dict[str, float] = {}
        totals, _, _ = _replay_once(Path(tmp), 2000, 1, None,
                                    wrap=lambda run: shares.update(stage_profile(run)))
        storage = report_storage(Path(tmp) / "bench.db")
    assert totals.received == 10_000
    assert set(STAGES) <= set(shares)
    assert all(0.0 <= share <= 1.0 for share in shares.values())
    assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6)
    assert shares["read and parse (source fetch)"] > 0 and shares["encode"] > 0
    assert storage["reports"] == 10 and storage["bytes_per_report"] > 0


class _WithoutDbstat:
    """A connection whose SQLite has no dbstat table, as TensorFlow's bundled build."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "dbstat" in sql:
            raise sqlite3.OperationalError("no such table: dbstat")
        return self.connection.execute(sql, *args)


def test_table_bytes_are_counted_without_dbstat_too(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "t.db")) as connection:
        connection.execute("CREATE TABLE reports (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("CREATE INDEX reports_body ON reports (body)")
        connection.execute("CREATE TABLE other (blob TEXT)")
        connection.executemany("INSERT INTO reports (body) VALUES (?)",
                               [("x" * 200,) for _ in range(2000)])
        connection.executemany("INSERT INTO other VALUES (?)", [("y" * 500,)] * 2000)
        connection.commit()
        fallback = _table_bytes(_WithoutDbstat(connection), "reports")  # type: ignore[arg-type]
        assert 2000 * 200 * 2 <= fallback <= 2000 * 200 * 3  # the rows twice: table, index
        try:
            exact = _table_bytes(connection, "reports")
        except sqlite3.OperationalError:
            pytest.skip("this process's SQLite has no dbstat table to compare with "
                        "(TensorFlow's bundled SQLite was loaded first)")
        assert abs(fallback - exact) <= 0.1 * exact


@pytest.mark.slow
def test_the_soak_run_samples_the_agents_memory_until_every_record_is_processed() -> None:
    result = soak(60_000, model=False, ahead=20_000, every_s=0.2)
    assert result["records"] >= 60_000
    assert len(result["samples"]) >= 2
    assert all(sample["rss_mib"] > 10 for sample in result["samples"])
    assert result["rss_end_mib"] >= result["rss_start_mib"] * 0.5
