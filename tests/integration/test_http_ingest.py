"""``POST /v1/ingest`` against the real application, pipeline and SQLite store.

Each test runs an agent whose only source is ``http_ingest``, with the pipeline loop on its own
thread as ``metasentry run`` has it, and talks to the FastAPI application in-process. What a
client is told is checked against what the store holds: a 200 means the records are committed
(the source position counts them, bad ones sit in the quarantine), and nothing is doubled by a
retry.
"""

from __future__ import annotations

import csv
import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from agent.api import create_app
from agent.config import load_config
from agent.service import Agent
from storage import Store

TOKEN = "ingest-token-5d21"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd" / "stream.csv.gz"


def sample_records(n: int, columns: list[str]) -> list[dict[str, Any]]:
    """The first ``n`` records of the bundled stream as JSON objects, numbers as numbers."""
    def value(text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    with gzip.open(SAMPLE, "rt", newline="") as lines:
        rows = [row for _, row in zip(range(n), csv.reader(lines), strict=False)]
    return [{name: value(cell) for name, cell in zip(columns, row, strict=True)} for row in rows]


def ndjson(records: list[Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@dataclass
class Running:
    agent: Agent
    client: TestClient
    columns: list[str]
    start_pipeline: Callable[[], None]

    def position(self) -> dict[str, Any]:
        return self.agent.store.load_position("http") or {}

    def metric(self, name: str, **labels: str) -> float:
        return self.agent.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def ingest_agent(write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[..., Running]]:
    """``make(pipeline=True, **source_settings)``: an agent fed only through /v1/ingest."""
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    started: list[tuple[Agent, list[threading.Thread]]] = []

    def make(*, pipeline: bool = True, **settings: Any) -> Running:
        source = {"type": "http_ingest", "name": "http", "wait_timeout_s": 20, **settings}
        agent = Agent(load_config(write_config(**{"sources": [source], "api.enabled": True})))
        agent.prepare()
        agent.attach_configured_sources()
        threads: list[threading.Thread] = []
        started.append((agent, threads))

        def start_pipeline() -> None:
            thread = threading.Thread(target=agent.run_sources,
                                      kwargs={"stop_when_exhausted": False}, daemon=True)
            thread.start()
            threads.append(thread)

        if pipeline:
            start_pipeline()
        columns = list(agent.config.schema.columns or [])
        return Running(agent, TestClient(create_app(agent)), columns, start_pipeline)

    yield make
    for agent, threads in started:
        agent.stop_event.set()
        for thread in threads:
            thread.join(10)
        agent.close()


def test_a_partly_bad_batch_is_committed_and_its_errors_named(
        ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    good = sample_records(6, run.columns)
    missing = {k: v for k, v in good[1].items() if k != "service"}
    wrong = good[2] | {"src_bytes": "lots"}
    body = ndjson([good[0], missing]) + b"not json\n\n" + ndjson([wrong, good[3], [1, 2]])
    response = run.client.post("/v1/ingest", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    key = answer["request_id"]
    assert (answer["received"], answer["accepted"], answer["quarantined"]) == (6, 2, 4)
    assert [(e["index"], e["reason"]) for e in answer["errors"]] == [
        (1, "missing_field"), (2, "not_json"), (4, "wrong_type"), (6, "not_object")]
    assert not answer["replayed"] and not answer["errors_truncated"]
    # Answered after the commit: the store already holds every record, good and bad.
    position = run.position()
    assert (position["processed"], position["rejected"]) == (2, 4)
    quarantined = {q.offset_key: q.reason
                   for q in run.agent.store.list_quarantine(source="http", limit=100)}
    assert quarantined == {f"{key}:1": "missing_field", f"{key}:2": "not_json",
                           f"{key}:4": "wrong_type", f"{key}:6": "not_object"}
    assert run.metric("metasentry_ingest_requests_total", outcome="partial") == 1
    assert run.metric("metasentry_ingest_records_total", result="accepted") == 2
    assert run.metric("metasentry_ingest_records_total", result="quarantined") == 4


def test_a_json_array_is_taken_too(ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    records = sample_records(5, run.columns)
    response = run.client.post("/v1/ingest", json=records, headers=AUTH)
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["errors"]) == (5, [])
    assert run.position()["processed"] == 5
    assert run.metric("metasentry_ingest_requests_total", outcome="accepted") == 1


def test_a_retry_with_the_same_key_is_answered_without_doubling(
        ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    body = ndjson(sample_records(4, run.columns))
    headers = NDJSON | {"Idempotency-Key": "batch-0001"}
    first = run.client.post("/v1/ingest", content=body, headers=headers)
    again = run.client.post("/v1/ingest", content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() | {"replayed": True}
    assert first.json()["request_id"] == "batch-0001"
    assert run.position()["processed"] == 4
    other = run.client.post("/v1/ingest", content=body + body, headers=headers)
    assert other.status_code == 409
    assert run.position()["processed"] == 4


def test_a_replayed_answer_keeps_the_counts_and_the_first_errors(
        ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    headers = NDJSON | {"Idempotency-Key": "noisy"}
    body = b"nope\n" * 25
    first = run.client.post("/v1/ingest", content=body, headers=headers).json()
    again = run.client.post("/v1/ingest", content=body, headers=headers).json()
    assert (first["quarantined"], len(first["errors"]), first["errors_truncated"]) == (25, 25,
                                                                                        False)
    assert (again["quarantined"], again["errors_truncated"], again["replayed"]) == (25, True,
                                                                                    True)
    assert again["errors"] == first["errors"][:20]
    assert run.position()["rejected"] == 25


def test_a_full_queue_answers_429_and_a_slow_commit_503_then_the_retry_succeeds(
        ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent(pipeline=False, max_queue_records=5, wait_timeout_s=0.3)
    records = sample_records(7, run.columns)
    first = ndjson(records[:5])
    headers = NDJSON | {"Idempotency-Key": "first"}
    waited = run.client.post("/v1/ingest", content=first, headers=headers)
    assert waited.status_code == 503 and int(waited.headers["Retry-After"]) >= 1
    throttled = run.client.post("/v1/ingest", content=ndjson(records[5:]), headers=NDJSON)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    too_many = run.client.post("/v1/ingest", content=ndjson(records[:6]), headers=NDJSON)
    assert too_many.status_code == 413  # could never fit, so waiting would not help
    assert run.position() == {}
    run.start_pipeline()
    retried = run.client.post("/v1/ingest", content=first, headers=headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["accepted"] == 5
    assert run.position()["processed"] == 5
    assert run.metric("metasentry_ingest_requests_total", outcome="throttled") == 1
    assert run.metric("metasentry_ingest_requests_total", outcome="timeout") == 1


def test_bodies_over_the_ingest_cap_are_refused(ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent(max_body_bytes=2000)
    body = ndjson(sample_records(10, run.columns))
    assert len(body) > 2000
    response = run.client.post("/v1/ingest", content=body, headers=NDJSON)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["detail"]
    huge = b"{}\n" * 600_000  # over api.max_body_bytes: the guard refuses it unread
    assert run.client.post("/v1/ingest", content=huge, headers=NDJSON).status_code == 413
    assert run.position() == {}


def test_writes_need_the_token(ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    response = run.client.post("/v1/ingest", content=b"{}\n",
                               headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 401
    wrong = run.client.post("/v1/ingest", content=b"{}\n",
                            headers={"Content-Type": "application/x-ndjson",
                                     "Authorization": "Bearer nope"})
    assert wrong.status_code == 401


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("text/plain", b"{}\n", 415),
    (None, b"{}\n", 415),
    ("application/json", b'{"not": "an array"}', 400),
    ("application/json", b"[1, 2", 400),
    ("application/json; charset=utf-8", b"[]", 200),
    ("application/x-ndjson", b"", 200),
])
def test_content_types_and_shapes(ingest_agent: Callable[..., Running],
                                  content_type: str | None, body: bytes, status: int) -> None:
    run = ingest_agent()
    headers = dict(AUTH) | ({"Content-Type": content_type} if content_type else {})
    response = run.client.post("/v1/ingest", content=body, headers=headers)
    assert response.status_code == status, response.text


def test_a_malformed_idempotency_key_is_a_422(ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent()
    response = run.client.post("/v1/ingest", content=b"{}\n",
                               headers=NDJSON | {"Idempotency-Key": "a b"})
    assert response.status_code == 422


def test_without_an_ingest_source_there_is_no_route(write_config: Callable[..., Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    agent = Agent(load_config(write_config()))
    agent.prepare()
    try:
        client = TestClient(create_app(agent))
        assert client.post("/v1/ingest", content=b"{}\n", headers=NDJSON).status_code == 404
        assert "/v1/ingest" not in client.get("/openapi.json").json()["paths"]
    finally:
        agent.close()


def test_the_queue_is_exported(ingest_agent: Callable[..., Running]) -> None:
    run = ingest_agent(pipeline=False, wait_timeout_s=0.1)
    run.client.post("/v1/ingest", content=ndjson(sample_records(3, run.columns)),
                    headers=NDJSON)
    assert run.metric("metasentry_ingest_queue_records", source="http") == 3
    assert run.metric("metasentry_ingest_queue_bytes", source="http") > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_running_agent_takes_concurrent_producers_without_loss_or_doubling(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    """``metasentry run`` over real HTTP: producers that honour 429 lose and double nothing."""
    port = _free_port()
    source = {"type": "http_ingest", "name": "http", "max_queue_records": 60}
    config = write_config(**{"sources": [source], "api.enabled": True,
                             "api.listen": f"127.0.0.1:{port}"})
    env = os.environ | {"METASENTRY_API_TOKEN": TOKEN}
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    columns = list(load_config(config, check_environment=False).schema.columns or [])
    records = sample_records(400, columns)
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)

        def produce(worker: int) -> None:
            for batch in range(5):
                start = (worker * 5 + batch) * 20
                body = ndjson(records[start:start + 20])
                headers = NDJSON | {"Idempotency-Key": f"w{worker}-b{batch}"}
                for _ in range(100):
                    answer = httpx.post(f"{base}/v1/ingest", content=body, headers=headers,
                                        timeout=60)
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        break
                    assert answer.status_code in (429, 503), answer.text
                    time.sleep(min(float(answer.headers["Retry-After"]), 0.2))

        producers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join(300)
        print(f"answers by status: {dict(Counter(statuses))}")
        assert statuses.count(200) == 20, statuses
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        print(log.read_text()[-3000:])
    store = Store(load_config(config, check_environment=False).storage_url())
    try:
        position = store.load_position("http") or {}
        assert position["processed"] + position["rejected"] == 400
    finally:
        store.close()
