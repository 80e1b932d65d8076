"""``metasentry run``: the service lifecycle, with one owner of signals.

Start order: database and reference (``Agent.prepare``), sources, metrics endpoint, API,
scheduler, health monitor, alert delivery, then the pipeline thread. On SIGTERM or SIGINT the
main thread, which alone handles signals, stops fetching, lets the batch in flight finish and
commit, stops alert delivery (an alert still in flight is sent again at the next start), stops
the scheduler (waiting for running jobs), stops the API and exits 0 — within
``pipeline.shutdown_timeout_s``. SIGHUP reopens the alert sinks' files (after log rotation)
and changes nothing else. uvicorn's own signal handling is switched off so it cannot race with
ours.

Shutdown is bounded even when the database hangs a commit or a scheduled job: every wait has
a deadline, the pipeline thread is a daemon, and if anything is still running when the budget
is spent the agent says so, exits 1 (the batch in flight is replayed at the next start), and
forces the exit should the interpreter still wait on a hung thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from prometheus_client import start_http_server

from agent.api import create_app
from agent.config import AgentConfig
from agent.health import HealthMonitor
from agent.metrics import Metrics
from agent.native_logs import capture_native_stderr
from agent.scheduler import build_scheduler
from agent.service import Agent, tune_garbage_collector
from agent.systemd import Watchdog, notify, watchdog_interval_s

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the daemon's main thread owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _listen_errors(config: AgentConfig) -> list[str]:
    """Addresses the agent would listen on but cannot bind, found before anything starts.

    uvicorn reports a busy port from its own thread and ends that thread only; checking first
    turns it into one clear line and a non-zero exit instead of an agent without its API.
    """
    errors = []
    endpoints = (("metrics.listen", config.metrics.enabled, config.metrics.listen),
                 ("api.listen", config.api.enabled, config.api.listen))
    for key, enabled, listen in endpoints:
        if not enabled:
            continue
        host, port = _split(listen)
        try:
            with socket.create_server((host, port)):
                pass
        except OSError as exc:
            errors.append(f"{key}: cannot listen on {listen} ({exc.strerror})")
    return errors


def run_service(config: AgentConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    errors = _listen_errors(config)
    if errors:
        for line in errors:
            log.error(line)
        return 2
    if config.logging.json_format:
        capture_native_stderr()  # TensorFlow's C++ logs would break the one-JSON-per-line stream
    agent = Agent(config)
    agent.prepare()
    agent.attach_configured_sources()
    tune_garbage_collector()

    failures: list[BaseException] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in flight and stopping",
                 signal.Signals(signum).name)
        agent.stop_event.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # Only sets flags: the sink threads reopen their files before their next write.
        log.info("received SIGHUP: reopening the alert sinks' files")
        agent.reopen_sinks()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)

    metrics_server = None
    if config.metrics.enabled:
        host, port = _split(config.metrics.listen)
        metrics_server, _ = start_http_server(port, addr=host, registry=agent.metrics.registry)
        log.info("metrics on http://%s/metrics", config.metrics.listen)

    api_server: _QuietServer | None = None
    api_thread: threading.Thread | None = None
    if config.api.enabled:
        host, port = _split(config.api.listen)
        api_server = _QuietServer(uvicorn.Config(create_app(agent), host=host, port=port,
                                                 log_config=None, access_log=False,
                                                 lifespan="off"))
        api_thread = threading.Thread(target=api_server.run, name="api", daemon=True)
        api_thread.start()
        log.info("API on http://%s", config.api.listen)

    scheduler = build_scheduler(agent)
    scheduler.start()
    monitor = HealthMonitor(agent)
    monitor.start()
    agent.start_delivery()

    def pipeline_main() -> None:
        try:
            agent.run_sources(stop_when_exhausted=False)
        except BaseException as exc:  # surfaced to the main thread, which exits non-zero
            failures.append(exc)
            log.exception("pipeline stopped on an error")
            agent.stop_event.set()

    # A daemon: a commit hung in the database must not keep the process alive after shutdown.
    worker = threading.Thread(target=pipeline_main, name="pipeline", daemon=True)
    worker.start()
    watchdog = _start_watchdog(config, agent, worker)
    notify("READY=1")
    log.info("agent running: %d source(s); stop with SIGTERM or Ctrl-C", len(agent.sources))

    while not agent.stop_event.wait(0.5):
        pass

    notify("STOPPING=1")
    if watchdog is not None:
        watchdog.stop()  # the drain is bounded by TimeoutStopSec from here, not the watchdog
    monitor.stop()
    agent.metrics.ready.set(0)
    budget = config.pipeline.shutdown_timeout_s
    deadline = time.monotonic() + budget
    worker.join(budget)
    clean = not worker.is_alive()
    if not clean:
        log.error("the batch in flight did not finish within %.0fs; it will be replayed", budget)
    # What the pipeline left of the budget, and at least a short grace, shared by the rest.
    deadline = max(deadline, time.monotonic() + _SHUTDOWN_GRACE_S)
    # Not a reason to exit 1: an alert in flight stays in the outbox and is sent again.
    agent.stop_delivery(min(_left(deadline) / 2, _DELIVERY_STOP_S))
    if not _within(lambda: scheduler.shutdown(wait=True), _left(deadline), "scheduler"):
        clean = False
    if api_server is not None and api_thread is not None:
        api_server.should_exit = True
        api_thread.join(_left(deadline))
    if metrics_server is not None:
        metrics_server.shutdown()
    if clean:
        agent.close()
    code = 0 if clean and not failures else 1
    if not clean:
        _exit_anyway_after(_FORCED_EXIT_GRACE_S, code)
    log.info("agent stopped")
    return code


#: at least this long for the scheduler and the API together, even after a pipeline that used
#: the whole budget; then at most this long for the interpreter before the exit is forced.
#: With systemd's TimeoutStopSec=30 and the default 20 s budget, 20 + 2 + 2 leaves room.
_SHUTDOWN_GRACE_S = 2.0
_FORCED_EXIT_GRACE_S = 2.0
#: at most this long for the alert sinks' threads at shutdown (they stop between deliveries)
_DELIVERY_STOP_S = 1.0


def pipeline_stall(config: AgentConfig, metrics: Metrics, worker: threading.Thread
                   ) -> Callable[[], str | None]:
    """What withholds the watchdog's heartbeat: None while the pipeline makes progress, else
    why not. A commit may legitimately wait up to the store's own deadline
    (``storage.timeouts.operation_s``, after which it fails and is retried); twice that means
    the deadline itself is stuck, and only a restart helps."""
    stalled_after = 2 * config.storage.timeouts.operation_s

    def stall() -> str | None:
        if not worker.is_alive():
            return "the pipeline thread has ended"
        age = metrics.in_flight.oldest_age()
        if age > stalled_after:
            return f"a batch commit has been in flight for {age:.0f}s (limit {stalled_after:g}s)"
        return None

    return stall


def _start_watchdog(config: AgentConfig, agent: Agent, worker: threading.Thread
                    ) -> Watchdog | None:
    """Heartbeats for systemd's ``WatchdogSec`` while the pipeline makes progress, when
    systemd asked for them."""
    interval = watchdog_interval_s()
    if interval is None:
        return None
    watchdog = Watchdog(pipeline_stall(config, agent.metrics, worker), interval)
    watchdog.start()
    log.info("systemd watchdog: a heartbeat every %.1fs while the pipeline makes progress",
             interval)
    return watchdog


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _within(stop: Callable[[], object], seconds: float, what: str) -> bool:
    """Run ``stop`` in a helper thread; False (logged) when it has not returned in time."""
    helper = threading.Thread(target=stop, name=f"stop-{what}", daemon=True)
    helper.start()
    helper.join(seconds)
    if helper.is_alive():
        log.error("the %s did not stop within %.1fs; a job is probably hung on the database",
                  what, seconds)
        return False
    return True


def _exit_anyway_after(seconds: float, code: int) -> None:
    """Exit with ``code`` after ``seconds`` even if a hung non-daemon thread holds the exit.

    The interpreter joins every non-daemon thread before it exits, and the scheduler's job
    threads are non-daemon: one hung in the database would keep the process alive for ever.
    """

    def force() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
