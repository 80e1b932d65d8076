"""Schemathesis over every API operation: no 5xx, and every answer is the one the schema documents.

The schema is the contract a client (or an attacker) reads. Schemathesis generates requests
from it, valid and invalid (boundary ids, over-long and control-character text, wrong types),
sends them to the real application with the token, and checks each answer: never a server
error, status code, content type and body as documented. It runs on SQLite and on PostgreSQL,
whose 32-bit ids and NUL-free text are where ordinary bad input used to become a 500.

``POST /v1/ingest`` is fuzzed too, with the pipeline running, so a valid batch is committed and
answered 200 rather than timing out. Its body is the one input where invalid data is answered
200 by design (bad records are committed to the quarantine and named in the answer), so the
check that invalid data is refused is left out for it; its refusals (400, 413, 415, 422) are
covered by tests/integration/test_http_ingest.py. That check is left out of the negative mode
altogether too (see the test): some generated invalid data never reaches the server.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import negative_data_rejection

from agent.api import create_app
from agent.config import load_config
from agent.service import Agent
from storage import NewIncident
from tests.pg import private_schema_url

TOKEN = "fuzz-token-0b7e"
EXAMPLES = 100  # per operation and mode
INGEST = {"type": "http_ingest", "name": "http", "wait_timeout_s": 30}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(_ctx: Any, value: Any) -> bytes:
    """A generated array as one JSON value per line; anything else as a single line."""
    values = value if isinstance(value, list) else [value]
    return "".join(json.dumps(v) + "\n" for v in values).encode()


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    with private_schema_url("metasentry_fuzz") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_schema(request: pytest.FixtureRequest, write_config: Callable[..., Path],
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The running application's schema, with reads behind the token too (every route guarded)."""
    overrides: dict[str, Any] = {"api.read_requires_token": True, "api.enabled": True,
                                 "sources": [INGEST]}
    if request.param == "postgres":
        overrides["storage.url"] = request.getfixturevalue("postgres_schema_url")
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    agent = Agent(load_config(write_config(**overrides)))
    agent.prepare()
    agent.attach_configured_sources()
    pipeline = threading.Thread(target=agent.run_sources, kwargs={"stop_when_exhausted": False},
                                daemon=True)
    pipeline.start()
    agent.store.commit_batch(source="s", position=None, incidents=[
        NewIncident(kind=kind, severity="medium", source="s", offset_key=f"k{i}",
                    detector="feature_drift", p_value=0.001, explanation={"summary": "x"})
        for i, kind in enumerate(["drift", "drift", "adversarial"])])
    app = create_app(agent)
    yield schemathesis.openapi.from_asgi("/openapi.json", app,
                                         headers={"Authorization": f"Bearer {TOKEN}"})
    agent.stop_event.set()
    pipeline.join(30)
    agent.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_operation_answers_5xx_or_off_schema(api_schema: Any, mode: str) -> None:
    """Every operation, valid and invalid requests: never a 5xx, always the documented answer.

    Driven through Hypothesis directly rather than schemathesis' pytest plugin, which does
    not run under pytest 9 (it reads ``Function._nodeid``, gone there).
    """
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 5
    if mode == "negative":  # nothing to get wrong in an operation without inputs
        operations = [op for op in operations if op.path_parameters or op.query or op.body]
    statuses: Counter[int] = Counter()
    # In negative mode "invalid data accepted" is no verdict: schemathesis also generates
    # invalid values a URL cannot carry (an empty list, a null) or that HTTP rightly reads as
    # valid (``before_id=900.0``), so the request arrives valid. Refusals of bad input are
    # tested where the input is known (unknown query parameters, bodies, ids: test_api.py,
    # test_api_limits.py, test_http_ingest.py); here every answer must still be documented
    # and never a 5xx.
    lenient = [negative_data_rejection] if mode == "negative" else []
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)))
        def call(case: Case) -> None:
            excluded = ([negative_data_rejection] if case.path == "/v1/ingest"
                        else lenient)
            response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                                              excluded_checks=excluded)
            statuses[response.status_code] += 1

        call()
    print(f"{mode}: {sum(statuses.values())} requests, by status {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= 2 * len(operations)
    assert not [code for code in statuses if code >= 500]
