"""What the API accepts: ids and text the store can hold, and only the parameters a route declares.

Every input is checked against the store's columns before a route runs, so ordinary bad
input is a 422, never a 500 from the database: ids fit PostgreSQL's 32-bit ``integer``
columns, text fits its column (the widths come from :mod:`storage.records`) and holds no NUL
or other control character. PostgreSQL cannot store NUL at all; the other control characters
have no business in a label and can forge log lines or terminal output. Unpaired surrogates,
which JSON's ``"\\ud800"`` escapes can produce but UTF-8 cannot encode, are refused too.

Each type documents its rule in the OpenAPI schema (``pattern``, ``maxLength``, ``maximum``)
as well as enforcing it, so generated clients and fuzzers know what is valid.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Path, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from storage.records import (
    MAX_ACTOR_CHARS,
    MAX_DETECTOR_CHARS,
    MAX_KIND_CHARS,
    MAX_LABEL_CHARS,
    MAX_MODEL_VERSION_CHARS,
    MAX_OFFSET_KEY_CHARS,
    MAX_SOURCE_CHARS,
)

MAX_ID = 2**31 - 1  # PostgreSQL `integer`, the type of every id column
MAX_NOTE_CHARS = 2000

_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"  # C0, DEL and C1
_CONTROL_BUT_LINES = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"  # the same less tab, LF, CR
_SURROGATES = "\\ud800-\\udfff"
_CONTROL_CHARS = re.compile(f"[{_CONTROL}{_SURROGATES}]")
_CONTROL_CHARS_BUT_LINES = re.compile(f"[{_CONTROL_BUT_LINES}{_SURROGATES}]")
# The same rules for the OpenAPI schema, so generated clients (and fuzzers) know them; the
# validators below give the readable error. (JSON text cannot hold a surrogate anyway.)
_ONE_LINE_PATTERN = f"^[^{_CONTROL}]*$"
_NON_BLANK_ONE_LINE_PATTERN = f"^[^{_CONTROL}]*[^\\s{_CONTROL}][^{_CONTROL}]*$"
_LINES_PATTERN = f"^[^{_CONTROL_BUT_LINES}]*$"


def _one_line(value: str) -> str:
    found = _CONTROL_CHARS.search(value)
    if found:
        raise ValueError(f"must not contain control characters or unpaired surrogates "
                         f"(found U+{ord(found[0]):04X} at {found.start()})")
    return value


def _lines(value: str) -> str:
    found = _CONTROL_CHARS_BUT_LINES.search(value)
    if found:
        raise ValueError(f"must not contain control characters other than tab and newline, "
                         f"or unpaired surrogates (found U+{ord(found[0]):04X} at "
                         f"{found.start()})")
    return value


# Names (labels, actors): surrounding whitespace dropped, then 1..N characters on one line.
LabelText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LABEL_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _NON_BLANK_ONE_LINE_PATTERN}),
]
ActorText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ACTOR_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _NON_BLANK_ONE_LINE_PATTERN}),
]
NoteText = Annotated[
    str, StringConstraints(max_length=MAX_NOTE_CHARS),
    AfterValidator(_lines), Field(json_schema_extra={"pattern": _LINES_PATTERN}),
]
# Filters are compared as given (never stripped): they must match a stored value exactly.
KindFilter = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_KIND_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _ONE_LINE_PATTERN}),
]
SourceFilter = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_SOURCE_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _ONE_LINE_PATTERN}),
]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The incident's id.")]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]



OffsetText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_OFFSET_KEY_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _ONE_LINE_PATTERN}),
]
VersionPath = Annotated[str, Path(min_length=1, max_length=MAX_MODEL_VERSION_CHARS,
                                  pattern=r"^[A-Za-z0-9_.:-]+$",
                                  description="A model version, e.g. `3`.")]
LabelIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The label's id.")]
ReferenceIdPath = Annotated[int, Path(ge=1, le=MAX_ID,
                                      description="The reference version's row id.")]
DetectorFilter = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_DETECTOR_CHARS),
    AfterValidator(_one_line), Field(json_schema_extra={"pattern": _ONE_LINE_PATTERN}),
]


class ReferenceRollbackRequest(BaseModel):
    """Make an earlier version of a source/detector's reference the active one again."""

    model_config = ConfigDict(extra="forbid")

    source: SourceFilter
    detector: DetectorFilter
    version: int = Field(ge=1, le=MAX_ID, description="The version number to restore.")
    actor: ActorText = "api"
    note: NoteText | None = None


class LabelRequest(BaseModel):
    """An analyst's verdict on an incident, from the API or the command line."""

    model_config = ConfigDict(extra="forbid")

    label: LabelText = Field(description="The class the analyst assigns (`benign`-like "
                                         "classes and new names are classes too).")
    actor: ActorText = "api"
    note: NoteText | None = None
    records: list[OffsetText] | None = Field(
        default=None, max_length=100,
        description="Offsets of the example records to label; default: every example record.")


class ReleaseRequest(BaseModel):
    """Who overrides screening for a held label."""

    model_config = ConfigDict(extra="forbid")

    actor: ActorText = "api"


class ModelChangeRequest(BaseModel):
    """Who activates or rolls back a model version (what the audit log records)."""

    model_config = ConfigDict(extra="forbid")

    actor: ActorText = "api"


def api_origin(request: Request) -> str:
    """``api:<client ip>``: where a write came from, as the audit log records it.

    The address the connection came from (behind a proxy, the proxy's; uvicorn's
    ``--forwarded-allow-ips`` decides whether forwarded headers replace it). Never a header
    value the client chose, and never the token.
    """
    return f"api:{request.client.host if request.client else 'unknown'}"


class AdaptRequest(BaseModel):
    """An on-demand adaptation."""

    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Adapt even if no class has "
                                                   "`adaptation.min_labels` new labels.")



# --- query strings ---------------------------------------------------------------------------


def known_query_only(request: Request) -> None:
    """Reject query parameters the route does not declare, or repeats of a single-valued one.

    The body rejects unknown keys for the same reason: a misspelt filter (``?knd=drift``)
    would otherwise be ignored and answer every incident, and of ``?source=a&source=b`` only
    the last would count.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    takes_many = _query_fields(route.dependant)
    issues = []
    for name in sorted(set(request.query_params)):
        if name not in takes_many:
            issues.append({"type": "extra_forbidden", "loc": ("query", name),
                           "msg": "Unknown query parameter (check its spelling)"})
        elif not takes_many[name] and len(request.query_params.getlist(name)) > 1:
            issues.append({"type": "too_long", "loc": ("query", name),
                           "msg": "Give this parameter once"})
    if issues:
        raise RequestValidationError(issues)


def _query_fields(dependant: Dependant) -> dict[str, bool]:
    """Each query parameter of the route (and its dependencies): whether it takes a list."""
    fields = {field.alias: _is_sequence(field.field_info.annotation)
              for field in dependant.query_params}
    for sub in dependant.dependencies:
        fields |= _query_fields(sub)
    return fields


def _is_sequence(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (
        annotation,)
    return any(get_origin(option) in (list, tuple, set, frozenset)
               or option in (list, tuple, set, frozenset) for option in options)
