"""Where alerts go: signed webhooks and JSON-lines files for SIEM collectors.

Every sink implements :class:`adapters.sinks.base.Sink`: it sends deliveries in order, stops
at the first failure and reports what the receiver durably holds; the agent's delivery worker
(``agent.delivery``) decides what is retried when. See ``adapters.sinks.base`` for the
contract.
"""

from __future__ import annotations

from adapters.sinks.base import (
    FAILURE_REASONS,
    Delivery,
    SendFailure,
    SendResult,
    Sink,
)
from adapters.sinks.jsonl import JsonlSink
from adapters.sinks.webhook import WebhookSink

__all__ = [
    "FAILURE_REASONS",
    "Delivery",
    "JsonlSink",
    "SendFailure",
    "SendResult",
    "Sink",
    "WebhookSink",
]
