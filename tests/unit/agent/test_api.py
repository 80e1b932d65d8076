"""The API as a client sees it: authorisation, limits, validation and error bodies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from agent.api import INCIDENT_STATUSES, create_app
from agent.api_errors import ErrorBody, ValidationErrorBody
from agent.config import load_config
from agent.service import Agent
from storage import STATUSES, NewIncident
from tests.conftest import SAMPLE
from tests.pg import private_schema_url


def _agent(write_config: Callable[..., Path], **overrides: object) -> Agent:
    agent = Agent(load_config(write_config(**overrides), need_token=False))
    agent.prepare()
    agent.store.commit_batch(source="s", position=None, incidents=[
        NewIncident(kind="drift", severity="medium", source="s", offset_key=f"k{i}",
                    detector="feature_drift", p_value=0.001, explanation={"summary": "x"})
        for i in range(3)])
    return agent


def test_writes_refused_without_configured_token(write_config: Callable[..., Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASENTRY_API_TOKEN", raising=False)
    client = TestClient(create_app(_agent(write_config)))
    response = client.post("/v1/incidents/1/label", json={"label": "x"},
                           headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "METASENTRY_API_TOKEN" in response.json()["detail"]


def test_reads_can_require_the_token(write_config: Callable[..., Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "tok")
    client = TestClient(create_app(_agent(write_config, **{"api.read_requires_token": True})))
    assert client.get("/v1/incidents").status_code == 401
    ok = client.get("/v1/incidents", headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 200 and len(ok.json()["incidents"]) == 3
    assert client.get("/healthz").status_code == 200  # probes never need a token


def test_pagination_and_validation(write_config: Callable[..., Path],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "tok")
    client = TestClient(create_app(_agent(write_config)))
    first = client.get("/v1/incidents", params={"limit": 2}).json()
    assert len(first["incidents"]) == 2 and first["next_before_id"] is not None
    rest = client.get("/v1/incidents", params={"before_id": first["next_before_id"]}).json()
    assert len(rest["incidents"]) == 1
    assert client.get("/v1/incidents", params={"status": "bogus"}).status_code == 422
    bad_body = client.post("/v1/incidents/1/label", json={"label": ""},
                           headers={"Authorization": "Bearer tok"})
    assert bad_body.status_code == 422


def test_readyz_reports_each_check(write_config: Callable[..., Path]) -> None:
    agent = _agent(write_config)
    client = TestClient(create_app(agent))
    assert client.get("/readyz").json()["ready"] is True
    agent.store.close()
    unprepared = Agent(agent.config)
    body = TestClient(create_app(unprepared)).get("/readyz")
    assert body.status_code == 503
    assert body.json()["checks"]["reference_fitted"] is False


# --- ordinary bad input is a 4xx with a JSON body, never a 500 -----------------------------

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG_ID = str(2**63)
PG_ID = str(2**31)  # one past PostgreSQL's integer


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           default_config_data: dict[str, Any]) -> Iterator[TestClient]:
    """One prepared agent per backend for the module's many small requests (fitting is slow)."""
    tmp = tmp_path_factory.mktemp("api")
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp / 'api.db'}" if request.param == "sqlite"
               else stack.enter_context(private_schema_url("metasentry_api")))
        data = default_config_data | {
            "reference": default_config_data["reference"] | {
                "path": str(SAMPLE / "reference.csv.gz")},
            "storage": {"url": url}, "metrics": {"enabled": False}}
        (tmp / "agent.yaml").write_text(yaml.safe_dump(data))
        monkeypatch = stack.enter_context(pytest.MonkeyPatch.context())
        monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
        agent = Agent(load_config(tmp / "agent.yaml", check_environment=False))
        agent.prepare()
        agent.store.commit_batch(source="s", position=None, incidents=[NewIncident(
            kind="drift", severity="medium", source="s", offset_key="k", detector="d")])
        stack.callback(agent.close)
        yield TestClient(create_app(agent), raise_server_exceptions=False)


def _label(client: TestClient, body: object, incident: str = "1") -> httpx.Response:
    return client.post(f"/v1/incidents/{incident}/label", json=body, headers=AUTH)


def _raw_label(client: TestClient, raw: bytes) -> httpx.Response:
    return client.post("/v1/incidents/1/label", content=raw,
                       headers=AUTH | {"Content-Type": "application/json"})


BAD_REQUESTS: dict[str, Callable[[TestClient], httpx.Response]] = {
    "label one over the store's width": lambda c: _label(c, {"label": "x" * 101}),
    "actor one over the store's width": lambda c: _label(c, {"label": "x", "actor": "a" * 101}),
    "whitespace-only label": lambda c: _label(c, {"label": " \t "}),
    "whitespace-only actor": lambda c: _label(c, {"label": "x", "actor": "  "}),
    "NUL in label": lambda c: _label(c, {"label": "port\x00scan"}),
    "NUL in actor": lambda c: _label(c, {"label": "x", "actor": "a\x00"}),
    "NUL in note": lambda c: _label(c, {"label": "x", "note": "n\x00"}),
    "terminal escape in label": lambda c: _label(c, {"label": "\x1b[31mred"}),
    "NaN for the label": lambda c: _raw_label(c, b'{"label": NaN}'),
    "lone surrogate label": lambda c: _raw_label(c, b'{"label": "\\ud800"}'),
    "lone surrogate key": lambda c: _raw_label(c, b'{"label": "x", "\\udfff": NaN}'),
    "unknown body key": lambda c: _label(c, {"label": "x", "lable": "y"}),
    "id 2^63 in the path": lambda c: c.get(f"/v1/incidents/{BIG_ID}"),
    "id 2^31 in the path": lambda c: c.get(f"/v1/incidents/{PG_ID}"),
    "id 2^63 when labelling": lambda c: _label(c, {"label": "x"}, incident=BIG_ID),
    "id 0": lambda c: c.get("/v1/incidents/0"),
    "before_id 2^63": lambda c: c.get("/v1/incidents", params={"before_id": BIG_ID}),
    "before_id 2^31": lambda c: c.get("/v1/incidents", params={"before_id": PG_ID}),
    "NUL in kind": lambda c: c.get("/v1/incidents", params={"kind": "dr\x00ift"}),
    "NUL in source": lambda c: c.get("/v1/incidents", params={"source": "s\x00"}),
    "unknown status": lambda c: c.get("/v1/incidents", params={"status": "bogus"}),
    "misspelt filter": lambda c: c.get("/v1/incidents", params={"knd": "drift"}),
    "repeated filter": lambda c: c.get("/v1/incidents?source=s&source=t"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_ordinary_bad_input_is_422_with_a_json_body(client: TestClient, case: str) -> None:
    response = BAD_REQUESTS[case](client)
    assert response.status_code == 422, response.text
    issues = response.json()["detail"]
    assert issues and all({"loc", "msg", "type"} <= set(issue) for issue in issues)
    assert all("input" not in issue for issue in issues)  # never echoed back


def test_text_at_the_store_limits_is_accepted(client: TestClient) -> None:
    labelled = _label(client, {"label": "  " + "x" * 100 + " ", "actor": "a" * 100,
                               "note": "line one\n\tline two"})
    assert labelled.status_code == 200, labelled.text
    assert labelled.json()["analyst_label"] == "x" * 100  # stored without the padding
    assert client.get(f"/v1/incidents/{2**31 - 1}").status_code == 404


def test_unknown_incident_is_404(client: TestClient) -> None:
    assert client.get("/v1/incidents/999").json() == {"detail": "no incident 999"}
    assert _label(client, {"label": "x"}, incident="999").status_code == 404


def test_every_error_body_is_the_one_the_schema_documents(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    app = create_app(_agent(write_config, **{"api.max_body_bytes": 1000}))
    client = TestClient(app, raise_server_exceptions=False)
    answers = {
        401: client.post("/v1/incidents/1/label", json={"label": "x"}),
        404: _label(client, {"label": "x"}, incident="999"),
        413: _label(client, {"label": "x" * 2000}),
        422: _label(client, {"label": ""}),
    }
    monkeypatch.delenv("METASENTRY_API_TOKEN")
    answers[403] = _label(client, {"label": "x"})
    documented = app.openapi()["paths"]["/v1/incidents/{incident_id}/label"]["post"]["responses"]
    models = {"ErrorBody": ErrorBody, "ValidationErrorBody": ValidationErrorBody}
    for code, response in answers.items():
        assert response.status_code == code, response.text
        assert response.headers["content-type"] == "application/json"
        ref = documented[str(code)]["content"]["application/json"]["schema"]["$ref"]
        models[ref.rsplit("/", 1)[-1]].model_validate(response.json())


# --- the token is checked, and the body capped, before the body is read ----------------------


def _send_post(app: Any, headers: dict[str, str], total_bytes: int,
               chunk_bytes: int = 65536) -> tuple[int, dict[bytes, bytes], int]:
    """POST a body of ``total_bytes`` through ``app`` at the ASGI level.

    Returns the status, the response headers and how many body bytes the application took
    from receive(): what a server would have had to hold in memory.
    """
    taken = 0

    async def receive() -> dict[str, Any]:
        nonlocal taken
        if taken >= total_bytes:  # the body is over; the client waits for the answer
            await asyncio.sleep(3600)
        chunk = min(chunk_bytes, total_bytes - taken)
        taken += chunk
        return {"type": "http.request", "body": b"x" * chunk, "more_body": taken < total_bytes}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/incidents/1/label", "raw_path": b"/v1/incidents/1/label",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), taken


HUNDRED_MB = 100_000_000


@pytest.mark.parametrize("auth, expected", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic dG9rOg=="}, 401),
])
def test_unauthenticated_body_is_refused_unread(write_config: Callable[..., Path],
                                                monkeypatch: pytest.MonkeyPatch,
                                                auth: dict[str, str], expected: int) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    app = create_app(_agent(write_config))
    status, headers, taken = _send_post(
        app, auth | {"Content-Type": "application/json", "Content-Length": str(HUNDRED_MB)},
        HUNDRED_MB)
    assert (status, taken) == (expected, 0)
    assert headers[b"connection"] == b"close"  # so the server stops receiving the upload


def test_small_unauthenticated_body_keeps_the_connection(write_config: Callable[..., Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    app = create_app(_agent(write_config))
    status, headers, taken = _send_post(app, {"Content-Length": "20"}, 20)
    # The server drains 20 bytes cheaply; closing could reset the client before it reads 401.
    assert (status, taken) == (401, 0) and b"connection" not in headers


def test_writes_without_a_configured_token_are_refused_unread(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METASENTRY_API_TOKEN", raising=False)
    app = create_app(_agent(write_config))
    status, _, taken = _send_post(app, AUTH | {"Content-Length": str(HUNDRED_MB)}, HUNDRED_MB)
    assert (status, taken) == (403, 0)


def test_declared_oversize_body_is_413_unread(write_config: Callable[..., Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    app = create_app(_agent(write_config))
    status, _, taken = _send_post(app, AUTH | {"Content-Length": str(HUNDRED_MB)}, HUNDRED_MB)
    assert (status, taken) == (413, 0)


def test_chunked_body_is_cut_off_at_the_cap(write_config: Callable[..., Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    app = create_app(_agent(write_config, **{"api.max_body_bytes": 100_000}))
    status, headers, taken = _send_post(app, AUTH | {"Transfer-Encoding": "chunked"},
                                        HUNDRED_MB, chunk_bytes=10_000)
    assert status == 413 and headers[b"connection"] == b"close"
    assert taken <= 100_000 + 10_000  # counted as it arrived: one chunk past the cap at most


def test_body_under_the_cap_reaches_the_route(write_config: Callable[..., Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    client = TestClient(create_app(_agent(write_config)))
    chunks = (part for part in (b'{"label": ', b'"port-scan"', b"}"))
    response = client.post("/v1/incidents/1/label", content=chunks,
                           headers=AUTH | {"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["analyst_label"] == "port-scan"


# --- the documentation is behind the token when reads are -----------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_need_the_token_when_reads_do(write_config: Callable[..., Path],
                                           monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", TOKEN)
    closed = TestClient(create_app(_agent(write_config, **{"api.read_requires_token": True})))
    assert closed.get(path).status_code == 401
    assert closed.get(path, headers=AUTH).status_code == 200
    assert closed.get("/readyz").status_code == 200
    open_ = TestClient(create_app(_agent(write_config)))
    assert open_.get(path).status_code == 200


def test_status_filter_names_the_store_statuses() -> None:
    assert INCIDENT_STATUSES == STATUSES


def test_reference_versions_read_and_roll_back_with_the_token(
        write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from storage import NewReferenceVersion

    monkeypatch.setenv("METASENTRY_API_TOKEN", "tok")
    agent = _agent(write_config)
    for version in (1, 2):
        data = f"records v{version}".encode()
        agent.store.commit_batch(source="s", position=None, references=[NewReferenceVersion(
            source="s", detector="feature_drift", data=data,
            origin="initial" if version == 1 else "rolling",
            sha256=hashlib.sha256(data).hexdigest(), n_records=5,
            summary={"applied_candidates": []}, version=version,
            parent=None if version == 1 else 1)])
    client = TestClient(create_app(agent))
    listed = client.get("/v1/references").json()
    assert listed["mode"] == "fixed"
    assert [r["version"] for r in listed["references"]] == [2, 1]
    assert "data" not in listed["references"][0]
    one = client.get(f"/v1/references/{listed['references'][1]['id']}").json()
    assert one["origin"] == "initial"
    assert client.get("/v1/references/999").status_code == 404
    body = {"source": "s", "detector": "feature_drift", "version": 1, "actor": "ana"}
    assert client.post("/v1/references/rollback", json=body).status_code == 401
    rolled = client.post("/v1/references/rollback", json=body,
                         headers={"Authorization": "Bearer tok"})
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["version"], rolled.json()["origin"]) == (3, "rollback")
    missing = client.post("/v1/references/rollback", json={**body, "version": 9},
                          headers={"Authorization": "Bearer tok"})
    assert missing.status_code == 404
