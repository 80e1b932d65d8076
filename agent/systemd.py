"""systemd's notify protocol: readiness, stopping, status and the watchdog, without libsystemd.

``Type=notify`` lets ``systemctl start`` return only once the agent is really serving (its
reference fitted, its sources attached), and ``WatchdogSec=`` lets systemd restart an agent that
is alive but stuck: a process whose pipeline hangs still answers signals, so only a heartbeat
that depends on the pipeline's progress tells the two apart. The heartbeat comes from its own
thread (:class:`Watchdog`) and is sent only while ``healthy()`` says the pipeline thread is
alive and no batch commit has been in flight for longer than the store's own deadlines allow;
when it stops, systemd kills the service after ``WatchdogSec`` and restarts it, and the batch
in flight is replayed from the last committed position.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op. The protocol is one datagram per
message on the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET`` (a leading ``@`` names an abstract
socket); ``WATCHDOG_USEC`` gives the watchdog period and ``WATCHDOG_PID``, when set, the process
it is meant for (see sd_notify(3) and sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notify message (``READY=1``, ``STOPPING=1``, ``WATCHDOG=1``, ``STATUS=...``);
    whether it was sent. Errors are swallowed: a missing supervisor must never stop the agent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval_s(environ: Mapping[str, str] | None = None,
                        pid: int | None = None) -> float | None:
    """Half the watchdog period systemd asked for (the interval sd_watchdog_enabled(3)
    recommends), or None when no watchdog is set for this process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (a parent that exec'd us keeps its own)
    try:
        period = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; no watchdog", usec)
        return None
    return period / 2e6 if period > 0 else None


class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval_s`` while ``healthy()`` returns None, and says
    once (log and ``STATUS=``) why it stopped when ``healthy()`` returns a reason instead.

    Parameters
    ----------
    healthy
        None when the agent is making progress, else one line saying what is stuck.
    interval_s
        Seconds between heartbeats; :func:`watchdog_interval_s` when systemd set a watchdog.
    environ
        Where ``NOTIFY_SOCKET`` is read (tests pass their own).
    """

    def __init__(self, healthy: Callable[[], str | None], interval_s: float, *,
                 environ: Mapping[str, str] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}.")
        self.healthy = healthy
        self.interval_s = interval_s
        self._environ = environ
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self.pings = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        stuck: str | None = None
        while not self._stop.is_set():
            reason = None
            try:
                reason = self.healthy()
            except Exception as exc:  # a broken probe is a reason too, not a dead watchdog
                reason = f"health probe failed: {exc!r}"
            if reason is None:
                if stuck is not None:
                    log.info("the pipeline moves again; watchdog heartbeats resumed")
                    notify("STATUS=running", self._environ)
                    stuck = None
                if notify("WATCHDOG=1", self._environ):
                    self.pings += 1
            elif reason != stuck:
                log.error("watchdog heartbeats withheld: %s (systemd restarts the agent when "
                          "WatchdogSec passes without one)", reason)
                with contextlib.suppress(Exception):
                    notify(f"STATUS=stuck: {reason}", self._environ)
                stuck = reason
            self._stop.wait(self.interval_s)
