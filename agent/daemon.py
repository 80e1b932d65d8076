"""``metasentry run``: the service lifecycle, with one owner of signals.

Start order: database and reference (``Agent.prepare``), sources, metrics endpoint, API,
scheduler, then the pipeline thread. On SIGTERM or SIGINT the main thread, which alone
handles signals, stops fetching, lets the batch in flight finish and commit, stops the
scheduler (waiting for running jobs), stops the API and exits 0 — within
``pipeline.shutdown_timeout_s``. uvicorn's own signal handling is switched off so it cannot
race with ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from prometheus_client import start_http_server

from agent.api import create_app
from agent.config import AgentConfig
from agent.scheduler import build_scheduler
from agent.service import Agent, tune_garbage_collector

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers: the daemon's main thread owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness and stopping; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


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
    agent = Agent(config)
    agent.prepare()
    agent.attach_configured_sources()
    tune_garbage_collector()

    failures: list[BaseException] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in flight and stopping",
                 signal.Signals(signum).name)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

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

    def pipeline_main() -> None:
        try:
            agent.run_sources(stop_when_exhausted=False)
        except BaseException as exc:  # surfaced to the main thread, which exits non-zero
            failures.append(exc)
            log.exception("pipeline stopped on an error")
            agent.stop_event.set()

    worker = threading.Thread(target=pipeline_main, name="pipeline")
    worker.start()
    _sd_notify("READY=1")
    log.info("agent running: %d source(s); stop with SIGTERM or Ctrl-C", len(agent.sources))

    while not agent.stop_event.wait(0.5):
        pass

    _sd_notify("STOPPING=1")
    agent.metrics.ready.set(0)
    budget = config.pipeline.shutdown_timeout_s
    worker.join(budget)
    clean = not worker.is_alive()
    if not clean:
        log.error("the batch in flight did not finish within %.0fs; it will be replayed", budget)
    scheduler.shutdown(wait=True)
    if api_server is not None and api_thread is not None:
        api_server.should_exit = True
        api_thread.join(5)
    if metrics_server is not None:
        metrics_server.shutdown()
    if clean:
        agent.close()
    log.info("agent stopped")
    return 0 if clean and not failures else 1
