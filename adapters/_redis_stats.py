"""What a Redis consumer group says about its backlog, and what it cannot say.

Read from ``XINFO GROUPS``, ``XINFO STREAM`` and the ``XPENDING`` summary every few seconds by
the source; exported by the agent as ``metasentry_stream_*`` metrics. Three figures need care:

* **lag** (entries added to the stream and not yet delivered to the group) comes from the
  group's ``lag`` field, which only Redis 7 and later report. On Redis 6.2 it is ``None``
  (exported as NaN), and so it is whenever the server itself reports ``nil``: after ``XDEL``
  of an entry the group has not read yet, or for a group whose read counter the server lost
  track of. Once the group has been delivered the stream's newest entry nothing is waiting,
  and the lag is 0 whatever the server's counters say.
* **unread trimmed entries**: Redis 7.0 (measured on 7.0.15) keeps counting, in the group's
  ``lag``, entries that ``MAXLEN``/``MINID`` trimming removed before the group read them, even
  after the group has read everything that is left. At that moment (the group delivered the
  newest entry) the server's ``lag`` is exactly the number of entries added that the group
  never saw: it is reported as ``unread_trimmed``. Servers that report ``nil`` instead leave
  it unknown (``None``), and it keeps its last known value in between.
* **oldest pending**: the millisecond time in the id of the oldest entry delivered and not
  yet acknowledged, so its age is "how long ago it was added" (for auto-generated ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"1718000000000-3"`` -> ``(1718000000000, 3)``, comparable in stream order.

    >>> parse_id(b"5-1") < parse_id("10-0")
    True
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class GroupFigures:
    """The server-side part of `StreamStats`."""

    pending: int
    group_lag: int | None
    unread_trimmed: int | None
    oldest_pending_ms: int | None


def group_figures(group: Mapping[str, Any], stream: Mapping[str, Any],
                  pending: Mapping[str, Any]) -> GroupFigures:
    """Figures from one ``XINFO GROUPS`` entry, ``XINFO STREAM`` and the ``XPENDING`` summary.

    >>> group = {"lag": 5, "last-delivered-id": b"9-0", "pending": 0}
    >>> group_figures(group, {"last-generated-id": b"9-0"}, {"pending": 0, "min": None})
    GroupFigures(pending=0, group_lag=0, unread_trimmed=5, oldest_pending_ms=None)
    >>> group_figures({"lag": 3, "last-delivered-id": b"6-0"}, {"last-generated-id": b"9-0"},
    ...               {"pending": 2, "min": b"4-0"})
    GroupFigures(pending=2, group_lag=3, unread_trimmed=None, oldest_pending_ms=4)
    """
    count = int(pending.get("pending") or 0)
    oldest = pending.get("min")
    oldest_ms = parse_id(oldest)[0] if count and oldest else None
    if "lag" not in group:  # Redis < 7 keeps no read counter
        return GroupFigures(count, None, None, oldest_ms)
    lag = group["lag"]
    lag = None if lag is None else int(lag)
    caught_up = parse_id(group["last-delivered-id"]) >= parse_id(stream["last-generated-id"])
    if caught_up:
        return GroupFigures(count, 0, lag, oldest_ms)
    return GroupFigures(count, lag, None, oldest_ms)
