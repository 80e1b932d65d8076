"""A dead database is retried with bounded buffering, and nothing is lost when it returns.

The outage is real: the agent talks to PostgreSQL through a TCP relay that the test cuts
and restores, so connections fail the way they do when a database host goes away.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.datafile import open_file_source
from agent.metrics import Metrics
from agent.service import Agent

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"
DB_NAME = "metasentry_outage_test"
PG_URL = os.environ.get("METASENTRY_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Relay:
    """A TCP relay to PostgreSQL that can be cut (all connections dropped) and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                # close() alone leaves a thread blocked in accept() listening; shutdown wakes it.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {admin} is not answering ({exc})")
    with conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    yield DB_NAME
    with contextlib.suppress(Exception), psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


@pytest.mark.postgres
def test_outage_is_retried_and_nothing_is_lost(write_config: Callable[..., Path],
                                               fresh_database: str) -> None:
    relay = Relay(("127.0.0.1", 5432))
    relay.up()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{relay.port}/{fresh_database}"
    config = load_config(write_config(**{"storage.url": url, "pipeline.batch_size": 500,
                                         "storage.retry_max_backoff_s": 0.5}), need_token=False)
    metrics = Metrics()
    agent = Agent(config, metrics=metrics)
    agent.prepare()
    agent.attach(open_file_source("outage", SAMPLE / "stream.csv.gz",
                                  columns=config.schema.columns, header=False))
    relay.down()
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("totals", agent.run_sources(stop_when_exhausted=True)))
    worker.start()

    def retries() -> float:
        return metrics.registry.get_sample_value("metasentry_store_commit_retries_total") or 0.0

    deadline = time.monotonic() + 30
    while retries() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert retries() >= 3, "commits were retried while the database was down"
    assert metrics.registry.get_sample_value("metasentry_store_buffered_batches") == 1
    assert worker.is_alive(), "the pipeline waits for the database instead of dying"

    relay.up()
    worker.join(120)
    assert not worker.is_alive()
    assert metrics.registry.get_sample_value("metasentry_store_buffered_batches") == 0
    position = agent.store.load_position("outage")
    assert position is not None
    assert position["processed"] + position["rejected"] == 10_000
    assert agent.store.count_incidents().get("drift", 0) >= 8
    agent.close()
    relay.down()
