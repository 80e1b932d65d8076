"""Draining the alert outbox: every queued alert reaches its sink, in order, at least once,
without a slow or dead sink ever holding up ingestion.

The pipeline never talks to a sink. It commits incidents, and the store queues each one for
the sinks that want it in the same transaction (``storage.outbox``). Here, one daemon thread
per sink leases the head of that sink's queue, hands it to the sink (``adapters.sinks``),
and records the outcome:

- delivered: the row is marked delivered (if the database is down at that moment, the ids
  are kept in memory and recorded before anything else is claimed, not sent again);
- unavailable (timeout, connection, 5xx, 408/429, disk full): the row is retried after a
  capped exponential backoff with jitter (``Retry-After`` honoured up to the cap), for ever,
  and the rows behind it wait: a sink receives its alerts in order;
- refused (any other 4xx, a redirect): retried a few times, in case the refusal was a
  receiver's passing mistake, then given up on. The row is kept as ``failed`` with its last
  error, counted in ``metasentry_alert_permanent_failures_total`` and logged at WARNING, and
  the queue moves on.

Each pass is bounded (at most ``sink.batch_limit`` alerts and half the lease), so a stop or
a lease running out waits for one delivery at most. A clean stop gives the thread's leases
back, so the next start (or another replica) goes on at once; after a crash the lease runs
out (:data:`LEASE_S`, longer for a slow webhook) and the alerts are sent again: receivers
de-duplicate by delivery id.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from adapters.sinks import Delivery, JsonlSink, SendFailure, Sink, WebhookSink
from agent.config import AgentConfig, WebhookSinkConfig
from agent.metrics import Metrics
from agent.version import __version__
from storage import OutboxAlert, Store, StoreUnavailable
from storage.urls import redact_text, redact_url

log = logging.getLogger(__name__)

#: how long a claim holds a sink's queue at least; a worker that died gives it up after this
#: long (a webhook's lease is longer when its timeout is: see :func:`lease_for`)
LEASE_S = 60.0
#: how often an idle sink looks for new alerts
POLL_INTERVAL_S = 1.0
#: the first retry's delay; each further failure doubles it, up to the sink's max_backoff_s
BASE_BACKOFF_S = 1.0
#: refusals of one alert (4xx) before it is given up on
REFUSALS_BEFORE_GIVING_UP = 3
#: a file sink's longest wait between retries (a full disk may be cleaned up any moment)
JSONL_MAX_BACKOFF_S = 60.0
EVENT_TYPE = "incident"


@dataclass(frozen=True)
class SinkPlan:
    """A sink, how long its retries may wait, how it appears in logs (secrets masked), and
    how long a claim on its queue lasts."""

    sink: Sink
    max_backoff_s: float
    describe: str
    lease_s: float = LEASE_S


def lease_for(timeout_s: float) -> float:
    """A lease that outlasts a pass: half of it for sending, plus the attempt then in flight.

    A pass starts no delivery after half its lease, and the one in flight then waits at most
    ``timeout_s`` to connect and ``timeout_s`` for the answer; with ``lease >= 6 * timeout_s``
    it is over with a sixth of the lease to spare, so another replica never takes over a queue
    whose worker is still sending.
    """
    return max(LEASE_S, 6.0 * timeout_s)


def build_sinks(config: AgentConfig) -> list[SinkPlan]:
    """The configured sinks, ready to send; secrets are read from the environment here."""
    plans: list[SinkPlan] = []
    for entry in config.sinks:
        if isinstance(entry, WebhookSinkConfig):
            secret = os.environ.get(entry.secret_env, "")
            if not secret:
                raise ValueError(f"sink {entry.name}: environment variable {entry.secret_env} "
                                 "is not set or empty (the webhook's signing key)")
            sink: Sink = WebhookSink(entry.name, config.sink_url(entry),
                                     secret=secret.encode("utf-8"), timeout_s=entry.timeout_s,
                                     user_agent=f"MetaSentry/{__version__}")
            plans.append(SinkPlan(sink, entry.max_backoff_s, f"webhook {redact_url(entry.url)}",
                                  lease_for(entry.timeout_s)))
        else:
            path = config.resolve(entry.path)
            plans.append(SinkPlan(JsonlSink(entry.name, path), JSONL_MAX_BACKOFF_S,
                                  f"jsonl {path}"))
    return plans


def worker_name() -> str:
    """A name for this process's claims: host, pid and a random part (unique per start)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _SinkState:
    plan: SinkPlan
    holder: str
    #: outbox ids the sink took whose "delivered" is not yet recorded (the database was down)
    unrecorded: list[int] = field(default_factory=list)
    #: refusals so far, per outbox id (in memory: a restart only grants a few more attempts)
    refusals: dict[int, int] = field(default_factory=dict)
    failing: int = 0
    outbox_down: bool = False


class DeliveryWorker:
    """One thread per sink, draining the outbox until :meth:`stop`.

    Parameters
    ----------
    store
        The store whose outbox is drained (any replica's: claims are safe across processes).
    plans
        The sinks, from :func:`build_sinks`.
    metrics
        Where deliveries, failures and the backlog are counted.
    poll_interval_s, base_backoff_s, refusals_before_giving_up
        See the module constants; tests shorten them.
    name
        Prefix of this worker's lease holder names (default: :func:`worker_name`).
    """

    def __init__(self, store: Store, plans: Sequence[SinkPlan], metrics: Metrics, *,
                 poll_interval_s: float = POLL_INTERVAL_S,
                 base_backoff_s: float = BASE_BACKOFF_S,
                 refusals_before_giving_up: int = REFUSALS_BEFORE_GIVING_UP,
                 name: str | None = None, seed: int | None = None) -> None:
        for label, value in (("poll_interval_s", poll_interval_s),
                             ("base_backoff_s", base_backoff_s)):
            if not value > 0:
                raise ValueError(f"{label} must be positive, got {value}.")
        if refusals_before_giving_up < 1:
            raise ValueError("refusals_before_giving_up must be at least 1, got "
                             f"{refusals_before_giving_up}.")
        self.store = store
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self.base_backoff_s = base_backoff_s
        self.refusals_before_giving_up = refusals_before_giving_up
        self.name = name or worker_name()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._states: dict[str, _SinkState] = {}
        for plan in plans:
            sink_name = plan.sink.name
            if sink_name in self._states:
                raise ValueError(f"two sinks are named {sink_name!r}.")
            # One holder per sink, so stopping one thread gives back only its own leases.
            holder = f"{self.name[:90]}/{len(self._states)}"
            self._states[sink_name] = _SinkState(plan, holder)
            metrics.track_sink(sink_name)

    @property
    def sinks(self) -> list[str]:
        return list(self._states)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """One daemon thread per sink: a hung receiver never keeps the process alive."""
        self._warn_about_orphans()
        for sink_name, state in self._states.items():
            log.info("alert sink %s: %s", sink_name, state.plan.describe)
            thread = threading.Thread(target=self._run, args=(sink_name,),
                                      name=f"sink-{sink_name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop every thread, waiting at most ``timeout_s``; False if one is still sending.

        A delivery still in flight is not lost: its row stays leased, and is sent again once
        the lease runs out.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.info("alert delivery still in flight at stop (%s); it is sent again once its "
                     "lease runs out", ", ".join(busy))
        return not busy

    def _warn_about_orphans(self) -> None:
        """Alerts queued for sinks no longer configured wait for ever: say so once, at start."""
        try:
            pending = self.store.pending_alerts_by_sink()
        except StoreUnavailable:
            return  # the sink threads will report the outage
        for sink_name, count in sorted(pending.items()):
            if sink_name not in self._states:
                log.warning("%d alert(s) wait in the outbox for sink %s, which is not configured; "
                            "they are sent once it is configured again (docs/SINKS.md says how "
                            "to drop them)", count, sink_name)

    def reopen(self) -> None:
        """Ask every sink to reopen its file or connection (SIGHUP); safe in a signal handler."""
        for state in self._states.values():
            state.plan.sink.reopen()

    def _run(self, sink_name: str) -> None:
        state = self._states[sink_name]
        try:
            while not self._stop.is_set():
                busy = False
                try:
                    busy = self.run_pass(sink_name)
                    if state.outbox_down:
                        log.info("alert sink %s: the outbox answers again", sink_name)
                        state.outbox_down = False
                except StoreUnavailable as error:
                    if not state.outbox_down:
                        log.warning("alert sink %s: the outbox is unavailable (%s); alerts wait "
                                    "in the database", sink_name, error)
                        state.outbox_down = True
                except Exception:  # the thread must outlive any one failed pass
                    log.exception("alert sink %s: delivery pass failed; retrying", sink_name)
                if not busy:
                    self._stop.wait(self.poll_interval_s)
        finally:
            try:
                self.store.release_alerts(holder=state.holder)
            except Exception as error:  # the lease runs out by itself
                log.debug("alert sink %s: leases not given back (%s)", sink_name, error)
            state.plan.sink.close()

    # --- one pass --------------------------------------------------------------------------

    def run_pass(self, sink_name: str) -> bool:
        """Claim, send and record one batch for ``sink_name``.

        Returns True when everything claimed was delivered (more may be waiting: go on at
        once), False when there was nothing to do or a delivery failed (wait a little).
        Raises :class:`~storage.StoreUnavailable` when the outbox cannot be read or written.
        """
        state = self._states[sink_name]
        self._record_delivered(state)
        backlog = self.store.alert_backlog(sink_name)
        self.metrics.set_alert_backlog(sink_name, backlog.pending, backlog.oldest_created_at)
        if backlog.pending == 0:
            return False
        lease_s = state.plan.lease_s
        alerts = self.store.claim_alerts(sink_name, holder=state.holder,
                                         limit=state.plan.sink.batch_limit, lease_s=lease_s)
        if not alerts:
            return False
        pass_ends = time.monotonic() + lease_s / 2
        result = state.plan.sink.send(
            [delivery_for(alert) for alert in alerts],
            should_stop=lambda: self._stop.is_set() or time.monotonic() > pass_ends)
        by_delivery = {alert.delivery_id: alert for alert in alerts}
        if result.delivered:
            self.metrics.alerts_delivered.labels(sink_name).inc(len(result.delivered))
            for delivery_id in result.delivered:
                state.refusals.pop(by_delivery[delivery_id].id, None)
            state.unrecorded.extend(by_delivery[d].id for d in result.delivered)
            if state.failing:
                log.info("alert sink %s: delivering again after %d failed attempt(s)",
                         sink_name, state.failing)
                state.failing = 0
            self._record_delivered(state)
        if result.failure is not None:
            self._failed(state, by_delivery[result.failure.delivery_id], result.failure)
            return False
        return len(result.delivered) == len(alerts)

    def _record_delivered(self, state: _SinkState) -> None:
        if state.unrecorded:
            self.store.complete_alerts(state.unrecorded)
            state.unrecorded.clear()

    def _failed(self, state: _SinkState, alert: OutboxAlert, failure: SendFailure) -> None:
        sink_name = state.plan.sink.name
        self.metrics.alert_failures.labels(sink_name, failure.reason).inc()
        detail = redact_text(failure.detail)
        attempts = alert.attempts + 1
        state.failing += 1
        if failure.refused:
            refusals = state.refusals.get(alert.id, 0) + 1
            state.refusals[alert.id] = refusals
            if refusals >= self.refusals_before_giving_up:
                state.refusals.pop(alert.id, None)
                if self.store.fail_alert(alert.id, holder=state.holder, error=detail,
                                         retry_at=None):
                    self.metrics.alert_permanent_failures.labels(sink_name).inc()
                    log.warning("alert sink %s refused delivery %s (incident %d) %d times; "
                                "giving up on it (kept in the outbox as failed): %s",
                                sink_name, alert.delivery_id, alert.incident_id, refusals,
                                detail)
                return
        delay = self.backoff_s(attempts, state.plan.max_backoff_s, failure.retry_after_s)
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        self.store.fail_alert(alert.id, holder=state.holder, error=detail, retry_at=retry_at)
        # The first failure in a row is news; the retries of an outage are not.
        level = logging.WARNING if state.failing == 1 else logging.INFO
        log.log(level, "alert sink %s: delivery %s (incident %d) failed (%s: %s); attempt %d, "
                "retrying in %.1fs", sink_name, alert.delivery_id, alert.incident_id,
                failure.reason, detail, attempts, delay)

    def backoff_s(self, attempts: int, cap_s: float, retry_after_s: float | None = None) -> float:
        """Seconds to wait before attempt ``attempts + 1``: capped, doubling, jittered.

        The jitter (a uniform draw from the upper half) keeps replicas and sinks that failed
        together from retrying in lockstep; a receiver's ``Retry-After`` is honoured up to the
        cap.
        """
        ceiling = min(cap_s, self.base_backoff_s * 2.0 ** min(max(attempts - 1, 0), 32))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, cap_s))
        return delay


def delivery_for(alert: OutboxAlert) -> Delivery:
    """What a sink is given for an outbox row (the attempt number counts this one)."""
    return Delivery(delivery_id=alert.delivery_id, event_type=EVENT_TYPE, payload=alert.payload,
                    created_at=alert.created_at, attempt=alert.attempts + 1)
