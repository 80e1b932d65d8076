"""The contract every alert sink honours, and the values the delivery worker exchanges with it.

A sink is a transport: it takes :class:`Delivery` values in order and reports, in a
:class:`SendResult`, which of them the receiver now holds durably (a 2xx answer, lines
fsynced to disk) and, if one failed, why (:class:`SendFailure`). What is retried when, and
what is given up on, is the delivery worker's decision (``agent.delivery``); a sink only
classifies what happened, with a reason from :data:`FAILURE_REASONS`.

Rules every sink follows (``tests/contract/test_sinks.py`` checks each one):

- **In order, stop at the first failure.** Deliveries are sent in the order given; after a
  failure nothing later is attempted, so a receiver never sees an alert before an older one
  that has not arrived yet.
- **Never raise for a delivery problem.** A receiver that is down, slow, full or refusing is a
  ``SendFailure``; an exception out of ``send`` is a bug.
- **Delivered means durable.** A delivery id is reported delivered only once the receiver has
  it for good. Anything else may be sent again later; receivers de-duplicate by delivery id.
- **Stop when asked.** ``should_stop`` is checked between deliveries, so a shutdown (or the
  end of the worker's lease) waits for one delivery at most.
- **No secret in a failure.** ``detail`` ends up in logs and in the database: it names what
  went wrong, never a key, a password or a URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

REASON_TIMEOUT: Final = "timeout"
"""The receiver did not answer in time."""
REASON_CONNECTION: Final = "connection"
"""The receiver could not be reached, or the connection broke (DNS, refused, reset, TLS)."""
REASON_SERVER_ERROR: Final = "server_error"
"""The receiver answered 5xx: its problem, worth retrying."""
REASON_THROTTLED: Final = "throttled"
"""The receiver asked to be called later (HTTP 408 or 429)."""
REASON_REFUSED: Final = "refused"
"""The receiver refused this delivery itself (any other 4xx, or a redirect): sending it
again unchanged will most likely be refused again."""
REASON_IO_ERROR: Final = "io_error"
"""A local write failed (disk full, permissions, a missing directory)."""

FAILURE_REASONS: Final[tuple[str, ...]] = (
    REASON_TIMEOUT, REASON_CONNECTION, REASON_SERVER_ERROR, REASON_THROTTLED, REASON_REFUSED,
    REASON_IO_ERROR,
)
"""Every value ``SendFailure.reason`` takes; bounded so it can label a metric."""


@dataclass(frozen=True)
class Delivery:
    """One alert to send.

    ``delivery_id`` is the same on every attempt (receivers de-duplicate by it);
    ``payload`` is the alert itself as JSON-ready data; ``created_at`` is when it was queued;
    ``attempt`` counts from 1.
    """

    delivery_id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime
    attempt: int = 1


@dataclass(frozen=True)
class SendFailure:
    """Why the delivery ``delivery_id`` failed; the ones after it were not attempted."""

    delivery_id: str
    reason: str
    detail: str
    #: how long the receiver asked to be left alone (an HTTP ``Retry-After``), if it said
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {list(FAILURE_REASONS)}, "
                             f"got {self.reason!r}.")

    @property
    def refused(self) -> bool:
        """True when the receiver refused the delivery itself rather than being unavailable."""
        return self.reason == REASON_REFUSED


@dataclass(frozen=True)
class SendResult:
    """The delivery ids the receiver now holds, in order, and the failure that stopped it."""

    delivered: tuple[str, ...] = ()
    failure: SendFailure | None = None


def never() -> bool:
    """The default ``should_stop``: never asked to stop."""
    return False


@runtime_checkable
class Sink(Protocol):
    """Where alerts go. One worker thread calls ``send`` at a time; ``reopen`` may come
    from another thread (a signal handler) at any moment."""

    #: the sink's name from the configuration (bounded: it labels metrics)
    name: str
    #: the most deliveries one ``send`` should be given (the worker claims no more)
    batch_limit: ClassVar[int]

    def send(self, deliveries: Sequence[Delivery], *,
             should_stop: Callable[[], bool] = never) -> SendResult:
        """Send ``deliveries`` in order, stopping at the first failure or when asked."""
        ...

    def reopen(self) -> None:
        """Drop any open file or connection and open it afresh before the next send."""
        ...

    def close(self) -> None:
        """Release what the sink holds; idempotent."""
        ...
