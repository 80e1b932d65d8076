"""The agent watching itself: readiness and source lag refreshed on a timer, never blocked.

Left to /readyz, ``metasentry_ready`` would change only when something asks, and
``metasentry_source_lag_bytes`` only after a committed batch; during a database outage neither
moves, and the alerts built on them (MetaSentryNotReady, MetaSentrySourceStalled) cannot fire.
:class:`HealthMonitor` refreshes both from a thread of its own, which nothing else shares, so
a hung pipeline or scheduler cannot stop it either.

A database that does not answer must not hang the monitor (or /readyz) in turn, so the
readiness probe runs through :class:`BoundedProbe`: past its deadline the answer is "not
ready", and a probe still hanging from an earlier call is waited on again, never duplicated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Generic, TypeVar

from agent.pipeline import observe_stream

if TYPE_CHECKING:
    from agent.service import Agent

log = logging.getLogger(__name__)

T = TypeVar("T")

#: defaults for ``metasentry run``; small enough that a 5-minute alert is not delayed
HEALTH_INTERVAL_S = 5.0
READINESS_TIMEOUT_S = 5.0


class BoundedProbe(Generic[T]):
    """Run ``probe`` in a worker thread and wait for it at most ``timeout_s`` per call.

    Parameters
    ----------
    probe
        The check; it may block for as long as it likes, only the caller's wait is bounded.
    name
        Name of the worker threads, for thread dumps.

    Examples
    --------
    >>> import time
    >>> BoundedProbe(lambda: "ok", name="doc")(timeout_s=1.0)
    'ok'
    >>> slow = BoundedProbe(lambda: time.sleep(0.5), name="doc")
    >>> slow(timeout_s=0.01)
    Traceback (most recent call last):
    ...
    TimeoutError: probe doc did not answer within 0.01s.
    """

    def __init__(self, probe: Callable[[], T], *, name: str) -> None:
        self._probe = probe
        self._name = name
        self._lock = threading.Lock()
        self._running: Future[T] | None = None

    def __call__(self, timeout_s: float) -> T:
        """The probe's answer, or ``TimeoutError`` when it takes longer than ``timeout_s``."""
        with self._lock:
            future = self._running
            if future is None or future.done():
                future = Future()
                self._running = future
                threading.Thread(target=self._run, args=(future,), name=self._name,
                                 daemon=True).start()
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"probe {self._name} did not answer within {timeout_s:g}s."
            ) from None

    def _run(self, future: Future[T]) -> None:
        try:
            future.set_result(self._probe())
        except BaseException as exc:  # handed to whoever waits, not lost in this thread
            future.set_exception(exc)


class HealthMonitor:
    """Refresh ``metasentry_ready`` and every source's lag every ``interval_s`` seconds."""

    def __init__(self, agent: Agent, *, interval_s: float = HEALTH_INTERVAL_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}.")
        self.agent = agent
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing; returns at once even while a probe hangs (the thread is a daemon)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(0.5)

    def refresh(self) -> None:
        """One round: readiness (bounded), then lag of every source (and the backlog figures
        a Redis source last read: they never wait for the server)."""
        self.agent.readiness()
        for source in list(self.agent.sources):
            observe_stream(self.agent.metrics, source)
            try:
                lag = source.lag
            except Exception:  # noqa: BLE001 - a file rotated under us; next round will tell
                log.debug("lag of source %s unavailable", source.name, exc_info=True)
                continue
            if lag is not None:
                self.agent.metrics.source_lag.labels(source.name).set(lag)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # the monitor must outlive any one failed round
                log.exception("health refresh failed")
            self._stop.wait(self.interval_s)
