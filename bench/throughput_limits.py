"""What bounds the pipeline's rate: the fastest parsers on the same bytes, and where time goes.

Machines of one kind differ several-fold in speed, so the throughput goal is a ratio measured in
one run: the pipeline's end-to-end rate against the fastest single-threaded reader of the same
NSL-KDD records (pyarrow's CSV reader, every column typed as it infers) and against the
straightforward Python way (``csv.reader`` and ``float()`` on the numeric cells). A profile of
one streaming run then says which stage takes the time, and the drift-report storage figures
say what a year of a fast stream costs on disk.
"""

from __future__ import annotations

import cProfile
import csv
import gzip
import io
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

NUMERIC_CELLS = slice(4, 41)
"""NSL-KDD columns past the three categorical ones (1-3) that hold numbers (label excluded)."""

STAGES: dict[str, tuple[str, str]] = {
    "read and parse (source fetch)": ("adapters/files.py", "fetch"),
    "encode": ("agent/schema.py", "encode"),
    "window detectors (drift)": ("agent/detection.py", "feed_windows"),
    "record detectors (live model)": ("agent/detection.py", "judge"),
    "incidents and grouping": ("agent/pipeline.py", "_record_findings"),
    "commit (SQLite)": ("agent/pipeline.py", "_commit"),
}
"""Pipeline stages, by the function whose cumulative time is the stage's."""


def parse_limits(data: bytes, repeats: int) -> dict[str, float]:
    """Records/s of pyarrow's single-threaded CSV reader and of csv.reader + float, best runs."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    lines = data.count(b"\n")

    def arrow() -> None:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(use_threads=False, autogenerate_column_names=True))
        assert table.num_rows == lines

    def python_csv() -> None:
        rows = 0
        for row in csv.reader(io.StringIO(data.decode())):
            [float(cell) for cell in row[NUMERIC_CELLS]]
            rows += 1
        assert rows == lines

    return {"pyarrow_csv_records_per_s": lines / _best(arrow, repeats),
            "csv_reader_float_records_per_s": lines / _best(python_csv, repeats),
            "records": lines}


def _best(run: Callable[[], None], repeats: int) -> float:
    """The fastest of ``repeats`` timings: the limit, not the noise of a shared machine."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def stage_profile(stream: Callable[[], object]) -> dict[str, float]:
    """Share of one streaming run's time in each pipeline stage (cProfile, cumulative)."""
    profiler = cProfile.Profile()
    profiler.enable()
    stream()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(value[3] for value in stats.values())
    shares: dict[str, float] = {}
    for stage, (path, function) in STAGES.items():
        seconds = sum(value[3] for (file, _, name), value in stats.items()
                      if file.endswith(path) and name == function)
        shares[stage] = seconds / total
    shares["other (loop, metrics, gzip)"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def report_storage(database: Path) -> dict[str, float]:
    """Bytes per stored drift report in an SQLite file (table and index pages)."""
    with closing(sqlite3.connect(database)) as connection:
        reports = connection.execute(
            "SELECT count(*), sum(rejected) FROM drift_reports").fetchone()
        pages = _table_bytes(connection, "drift_reports")
        payload = connection.execute(
            "SELECT avg(length(features)), avg(length(window_span)) FROM drift_reports"
        ).fetchone()
    count, rejected = int(reports[0]), int(reports[1] or 0)
    return {"reports": count, "rejected": rejected, "bytes_per_report": pages / max(count, 1),
            "features_json_bytes": float(payload[0] or 0)}


def _table_bytes(connection: sqlite3.Connection, table: str) -> int:
    """Bytes of ``table``'s pages and its indexes' pages.

    The ``dbstat`` table counts them exactly, but not every SQLite build has it: once
    TensorFlow is loaded, Python's sqlite3 runs on the SQLite TensorFlow bundles, built
    without it. Then the table alone is copied into a fresh file and its pages counted there.
    """
    try:
        return int(connection.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name = ? "
            "OR name IN (SELECT name FROM sqlite_schema WHERE tbl_name = ?)", (table, table),
        ).fetchone()[0] or 0)
    except sqlite3.OperationalError as error:
        if "dbstat" not in str(error):
            raise
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.db"
        connection.execute("VACUUM INTO ?", (str(copy),))
        with closing(sqlite3.connect(copy)) as alone:
            others = [name for (name,) in alone.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name != ? "
                "AND name NOT LIKE 'sqlite_%'", (table,))]
            for name in others:
                alone.execute(f'DROP TABLE "{name}"')
            alone.commit()
            alone.execute("VACUUM")
            page_size = alone.execute("PRAGMA page_size").fetchone()[0]
            page_count = alone.execute("PRAGMA page_count").fetchone()[0]
    return int((page_count - 1) * page_size)  # page 1 holds the schema, not the table


def year_on_disk(bytes_per_report: float, records_per_s: float = 10_000,
                 window: int = 1_000) -> float:
    """Bytes of drift reports a year of a stream at ``records_per_s`` stores, one per window."""
    return bytes_per_report * records_per_s * 86_400 * 365 / window


def decompressed(path: Path, copies: int) -> bytes:
    """The bundled stream's bytes, ``copies`` times over, as the pipeline reads them."""
    return gzip.decompress(path.read_bytes()) * copies
