"""The API's error answers: their bodies, their place in the OpenAPI schema, their rendering.

Every error is JSON. ``{"detail": "one sentence"}`` for 400, 401, 403, 404, 405, 409, 413 and
503;
``{"detail": [{"loc", "msg", "type"}, ...]}`` for 422. The 422 never echoes the rejected
input: the input may be what made it invalid (a NaN, an unpaired surrogate, which JSON
cannot carry), may be large, or may be a secret pasted in the wrong field. Every string in
an answer is made encodable first, so rendering an error can never become a 500 of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from storage import StoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ErrorBody(BaseModel):
    """What every error but 422 answers."""

    detail: str = Field(description="What went wrong, in one sentence.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `path` or `query`, then the name.")
    msg: str = Field(description="What is expected there.")
    type: str = Field(description="A stable code for the kind of mistake, e.g. `too_long`.")


class ValidationErrorBody(BaseModel):
    """What a 422 answers: every problem with the request at once."""

    detail: list[ValidationIssue]


_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request: a body that is not UTF-8, "
                                             "a bad Content-Length."},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    403: {"model": ErrorBody, "description": "No API token is configured, so the route is "
                                             "disabled."},
    404: {"model": ErrorBody, "description": "No such resource."},
    409: {"model": ErrorBody, "description": "The request conflicts with the current state "
                                             "(no live model; a version that cannot be served; "
                                             "a label that is not held)."},
    413: {"model": ErrorBody, "description": "Body larger than `api.max_body_bytes`."},
    422: {"model": ValidationErrorBody, "description": "Invalid parameters or body."},
    503: {"model": ErrorBody, "description": "The database is unavailable; retry later."},
}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for these status codes, for a route or a router."""
    return {code: _RESPONSES[code] for code in codes}


def encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot carry (unpaired surrogates) escaped as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _encodable_tree(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, Mapping):
        return {encodable(str(k)): _encodable_tree(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_encodable_tree(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: strings made encodable, NaN and infinities as null."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(_encodable_tree(content), default=str,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid value")),
            "type": str(error.get("type", "value_error")),
        }
        for error in errors
    ]


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse({"detail": _issues(exc.errors())}, status_code=422)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return SafeJSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)


async def _store_unavailable(_request: Request, exc: Exception) -> Response:
    log.warning("API request failed: %s", exc)
    return SafeJSONResponse({"detail": "the database is unavailable; retry later"},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` one of the documented JSON bodies."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
