"""``POST /v1/ingest``: records over HTTP, answered only once they are committed.

The route exists when ``sources:`` holds an ``http_ingest`` entry. It takes NDJSON
(``application/x-ndjson``, one JSON object per line) or a JSON array of objects
(``application/json``), parses it here, checks every parsed record against the agent's encoder,
and hands all of them to the `adapters.http_ingest.HttpIngestSource` queue, whole or not at all.
It then waits, without holding a thread, until the pipeline has committed every batch holding
one of them, and answers 200 with the counts and the per-record errors.

Which errors the answer reports: a record that cannot be parsed (``not_json``, ``not_object``,
``oversize``, ``decode``, ``blank``) or that the encoder refuses (``missing_field``,
``wrong_type``, ``non_finite``, ``bad_shape``) is named by its index. Both kinds are queued like
good records, so the pipeline commits them to the quarantine as it does for every source:
they are accounted for, not dropped. The encoder's verdict is taken here, on the same fitted
encoder the pipeline uses, because the pipeline tells a source only that a batch was committed,
not which of its records went to quarantine; ``GET`` of the quarantine stays the record of truth.

Refusals: 400 (a JSON body that is not an array), 409 (an ``Idempotency-Key`` reused for another
body), 413 (a body over the cap, or more records than the queue holds), 415 (another content
type), 422 (a malformed ``Idempotency-Key``), 429 with ``Retry-After`` (the queue is full: the
pipeline is behind), 503 with ``Retry-After`` (not committed within ``wait_timeout_s``, or the
agent is starting or stopping). After a 503 the records may still be committed: retrying with
the same ``Idempotency-Key`` is safe, it waits for (or returns) the first attempt's answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from adapters.base import RawRecord
from adapters.http_ingest import (
    HttpIngestSource,
    IngestClosed,
    KeyConflict,
    NotAnArray,
    QueueFull,
    Ticket,
    TooLarge,
    parse_json_array,
    parse_ndjson,
)
from agent.api_errors import ErrorBody, documented
from agent.config import HttpIngestSourceConfig
from agent.service import Agent

RouterFactory = Callable[..., APIRouter]

NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/ndjson"})
JSON_TYPE: Final = "application/json"
MAX_ERRORS: Final = 1000
"""Errors listed in one answer; the counts are always exact."""
MAX_REPLAYED_ERRORS: Final = 20
"""Errors kept for answering retries: ``remember_keys`` answers stay small in memory."""
MAX_DETAIL_CHARS: Final = 300
KEY_PATTERN: Final = r"^[A-Za-z0-9_.:-]+$"
MAX_KEY_CHARS: Final = 128  # "<key>:<index>" must fit the store's 255-character offset column

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer", "minimum": 1}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **documented(400, 409, 413),
    415: {"model": ErrorBody,
          "description": "Content-Type other than application/x-ndjson or application/json."},
    429: {"model": ErrorBody, "headers": _RETRY_AFTER,
          "description": "The ingest queue is full (the pipeline is behind); nothing was "
                         "queued. Retry after `Retry-After` seconds."},
    503: {"model": ErrorBody, "headers": _RETRY_AFTER,
          "description": "Not committed within the wait timeout (the records may still be: "
                         "retry with the same Idempotency-Key), or the agent is starting or "
                         "stopping, or the database is unavailable."},
}
_RECORDS_SCHEMA = {"type": "array", "items": {"type": "object"}}
_BODY = {"requestBody": {"required": True, "content": {
    "application/x-ndjson": {"schema": _RECORDS_SCHEMA},
    JSON_TYPE: {"schema": _RECORDS_SCHEMA},
}}}

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=MAX_KEY_CHARS, pattern=KEY_PATTERN,
    description="Names this request's records: a retry with the same key and body is "
                "committed once. Default: a fresh id per request.")]


class RecordProblem(BaseModel):
    index: int = Field(description="0-based line (NDJSON) or element (array) of the record.")
    reason: str = Field(description="A stable code: not_json, not_object, missing_field, ...")
    detail: str = Field(description="What was wrong, in one line.")


class IngestAnswer(BaseModel):
    """What a committed request answers: every record accounted for."""

    request_id: str = Field(description="The Idempotency-Key, or the id given to the request; "
                                        "records are stored under offset `<id>:<index>`.")
    received: int = Field(description="Records in the body (empty lines are not records).")
    accepted: int = Field(description="Records committed for detection.")
    quarantined: int = Field(description="Records committed to the quarantine (the errors).")
    errors: list[RecordProblem] = Field(description=f"The first {MAX_ERRORS} errors.")
    errors_truncated: bool = Field(description="More errors than were listed.")
    replayed: bool = Field(description="Answered for an earlier request with this "
                                       "Idempotency-Key; nothing was queued again.")


def ingest_routes(agent: Agent, router: RouterFactory) -> list[APIRouter]:
    """``POST /v1/ingest`` when an ``http_ingest`` source is configured, else nothing."""
    spec = next((s for s in agent.config.sources if isinstance(s, HttpIngestSourceConfig)),
                None)
    if spec is None:
        return []
    body_cap = min(spec.max_body_bytes or agent.config.api.max_body_bytes,
                   agent.config.api.max_body_bytes)
    max_record_bytes = agent.config.schema.max_record_bytes
    metrics = agent.metrics

    def source() -> HttpIngestSource | None:
        return next((s for s in agent.sources
                     if isinstance(s, HttpIngestSource) and s.name == spec.name), None)

    metrics.ingest_queue_records.labels(spec.name).set_function(
        lambda: float(found.lag) if (found := source()) else 0.0)
    metrics.ingest_queue_bytes.labels(spec.name).set_function(
        lambda: float(found.queued_bytes) if (found := source()) else 0.0)

    def refuse(outcome: str, status: int, detail: str, retry_after_s: int | None = None
               ) -> HTTPException:
        metrics.ingest_requests.labels(outcome).inc()
        headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
        return HTTPException(status, detail, headers=headers)

    def check(records: list[RawRecord]) -> dict[str, Any]:
        """The answer a commit of ``records`` will give: counts and per-record errors."""
        problems = [(r.offset_key, r.error, r.detail or "") for r in records
                    if r.error is not None]
        parsed = [r for r in records if r.fields is not None]
        encoder = agent.encoder
        if encoder is not None and parsed:
            encoded = encoder.encode([r.fields for r in parsed])  # type: ignore[misc]
            problems += [(parsed[e.index].offset_key, e.reason, e.detail)
                         for e in encoded.errors]
        listed = sorted((int(key.rsplit(":", 1)[1]), reason, detail)
                        for key, reason, detail in problems)
        return {"received": len(records), "accepted": len(records) - len(problems),
                "quarantined": len(problems),
                "errors": [{"index": index, "reason": reason, "detail": detail[:MAX_DETAIL_CHARS]}
                           for index, reason, detail in listed[:MAX_ERRORS]],
                "errors_truncated": len(listed) > MAX_ERRORS}

    def prepare(body: bytes, key: str, ndjson: bool) -> tuple[list[RawRecord], dict[str, Any]]:
        parse = parse_ndjson if ndjson else parse_json_array
        records = parse(body, key, max_record_bytes)
        return records, check(records)

    writes = router(needs_token=True, prefix="/v1", tags=["ingest"])

    @writes.post("/ingest", responses=_RESPONSES, openapi_extra=_BODY)
    async def ingest(request: Request, idempotency_key: IdempotencyKey = None
                     ) -> IngestAnswer:
        """Submit records (NDJSON or a JSON array); answered once they are committed.

        200 may list per-record errors: those records are in the quarantine, the others
        are judged. See docs/SOURCES.md, "HTTP ingest", for the whole contract.
        """
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in NDJSON_TYPES and media != JSON_TYPE:
            raise refuse("unsupported_media_type", 415,
                         f"Content-Type {media or 'missing'!r} is not accepted; send "
                         "application/x-ndjson or application/json (an array of objects)")
        body = await request.body()
        if len(body) > body_cap:
            raise refuse("too_large", 413, f"body larger than {body_cap} bytes "
                                           f"(sources.{spec.name}.max_body_bytes)")
        queue = source()
        if queue is None or not queue.accepting:
            raise refuse("unavailable", 503, "the ingest source is not running (the agent is "
                                             "starting or stopping); retry later", 5)
        key = idempotency_key or uuid.uuid4().hex
        digest = hashlib.sha256(media.encode() + b"\n" + body).hexdigest()
        ticket = queue.ticket(key)
        report: dict[str, Any] | None = None
        mine = False
        if ticket is None:
            try:
                records, report = await run_in_threadpool(prepare, body, key,
                                                          media in NDJSON_TYPES)
            except NotAnArray as exc:
                raise refuse("invalid", 400, str(exc)) from None
            ticket = _submit(queue, key, digest, records, report, refuse)
            mine = ticket.report is report
            if mine:
                ticket.on_done(lambda t: _settle_report(metrics, t))
        elif ticket.digest != digest:
            raise refuse("conflict", 409, f"Idempotency-Key {key!r} was used for a different "
                                          "body; use a new key for new records")
        if not await _settled(ticket, spec.wait_timeout_s):
            raise refuse("timeout", 503, f"records not committed within {spec.wait_timeout_s} s "
                                         "(they may still be); retry with the same "
                                         "Idempotency-Key", queue.retry_after_s())
        if not ticket.committed:
            raise refuse("unavailable", 503, "the agent stopped before the records were "
                                             "committed; retry with the same Idempotency-Key",
                         5)
        answer = IngestAnswer(request_id=key, replayed=not mine,
                              **(report if mine and report is not None else ticket.report))
        outcome = "partial" if answer.quarantined else "accepted"
        outcome = outcome if mine else "replayed"
        metrics.ingest_requests.labels(outcome).inc()
        return answer

    return [writes]


def _submit(queue: HttpIngestSource, key: str, digest: str, records: list[RawRecord],
            report: dict[str, Any] | None, refuse: Callable[..., HTTPException]) -> Ticket:
    try:
        return queue.submit(key, digest, records, report)
    except QueueFull as exc:
        raise refuse("throttled", 429, str(exc), exc.retry_after_s) from None
    except TooLarge as exc:
        raise refuse("too_large", 413, str(exc)) from None
    except KeyConflict as exc:
        raise refuse("conflict", 409, str(exc)) from None
    except IngestClosed as exc:
        raise refuse("unavailable", 503, f"{exc}; retry later", 5) from None


def _settle_report(metrics: Any, ticket: Ticket) -> None:
    """Count a committed request's records once, and shrink what is kept for its retries."""
    if not ticket.committed:
        return
    report = ticket.report
    metrics.ingest_records.labels("accepted").inc(report["accepted"])
    metrics.ingest_records.labels("quarantined").inc(report["quarantined"])
    errors = report["errors"]
    if len(errors) > MAX_REPLAYED_ERRORS:
        ticket.report = report | {"errors": errors[:MAX_REPLAYED_ERRORS],
                                  "errors_truncated": True}


async def _settled(ticket: Ticket, timeout_s: float) -> bool:
    """Wait for ``ticket`` without a thread; False when it is still pending at the timeout.

    The ticket is settled on the pipeline thread, so the news crosses into this event loop
    with ``call_soon_threadsafe``.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not done.done():
            done.set_result(None)

    ticket.on_done(lambda _ticket: loop.call_soon_threadsafe(resolve))
    try:
        await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        return False
    return True
