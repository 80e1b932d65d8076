"""Capped backoff and once-per-outage logging for a source that talks to a server.

A network source must neither hammer a server that is down nor fill the log with one line per
attempt: an outage of an hour at one attempt per second would be 3,600 identical warnings and
hide everything else. `Outage` keeps the schedule of attempts (doubling from ``initial_s`` up to
``max_s``) and logs one WARNING when the server stops answering and one INFO when it answers
again, saying for how long it was gone; the attempts in between are logged at DEBUG only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Outage:
    """Whether a server is reachable, and when to try it again if not.

    Parameters
    ----------
    what:
        Names the server in log lines, e.g. ``"source 'events': redis://cache:6379/0"``;
        it must not hold a secret (pass a redacted URL).
    initial_s, max_s:
        First wait after a failure, and the cap the doubling stops at.
    clock:
        Monotonic seconds; replaceable in tests.

    Examples
    --------
    >>> now = [0.0]
    >>> outage = Outage("doc", initial_s=1.0, max_s=4.0, clock=lambda: now[0])
    >>> outage.failed(ConnectionError("refused")); outage.down, outage.wait_s()
    (True, 1.0)
    >>> now[0] = 1.0; outage.failed(ConnectionError("refused")); outage.wait_s()
    2.0
    >>> outage.succeeded(); outage.down, outage.wait_s()
    (False, 0.0)
    """

    def __init__(self, what: str, *, initial_s: float = 0.2, max_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be positive, got {initial_s}.")
        if max_s < initial_s:
            raise ValueError(f"max_s must be at least initial_s ({initial_s}), got {max_s}.")
        self.what = what
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._down_since: float | None = None
        self._delay = initial_s
        self._retry_at = 0.0
        self.outages = 0
        """How many outages began since this object was made."""

    @property
    def down(self) -> bool:
        """True from a failure until the next success."""
        return self._down_since is not None

    def wait_s(self) -> float:
        """Seconds until the next attempt is due; 0 when the server is up or the wait is over."""
        if self._down_since is None:
            return 0.0
        return max(0.0, self._retry_at - self._clock())

    def failed(self, error: BaseException) -> None:
        """An attempt failed: schedule the next one, and log if this starts an outage."""
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._delay = self.initial_s
            self.outages += 1
            logger.warning("%s unreachable (%s); retrying with backoff up to %gs, nothing is "
                           "read or acknowledged until it answers", self.what,
                           _one_line(error), self.max_s)
        else:
            logger.debug("%s still unreachable (%s)", self.what, _one_line(error))
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, self.max_s)

    def succeeded(self) -> None:
        """An attempt worked: the outage, if any, is over."""
        if self._down_since is None:
            return
        logger.info("%s answers again after %.1fs", self.what, self._clock() - self._down_since)
        self._down_since = None
        self._delay = self.initial_s
        self._retry_at = 0.0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]
