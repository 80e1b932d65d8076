"""Labels → screening → adaptation → canary → checked activation: the agent learning.

Triggers: a class reaching ``adaptation.min_labels`` new accepted labels (checked right after a
label arrives through the API and by a scheduled job for labels given with the CLI),
``metasentry adapt`` and ``POST /v1/adapt``. One process at a time adapts (a database lock,
so several replicas on one PostgreSQL never build rival versions). A run:

1. screens the pending labels (:mod:`agent.screening`) and holds the suspicious ones;
2. enrols the accepted ones into a *candidate* version built on the serving one (memory-style
   learners write them into the memory; prototype and gradient learners re-adapt);
3. evaluates the candidate on the canary set and on earlier accepted labels
   (:mod:`agent.canary`) and compares it with the version serving now;
4. registers it: ``active`` in the same transaction that retires the old version, or
   ``rejected`` with its reasons and a ``model_rejected`` incident, the serving version
   untouched. The labels are marked ``used`` (by that version) or ``rejected``.

A crash anywhere before step 4 leaves no version behind and the labels pending; a crash
after it leaves a complete, consistent registry: there is no half-written active version.

A candidate keeps its parent's ``model.*`` settings (``SERVING_SETTINGS``). When agent.yaml
changes them, :meth:`Adapter.apply_configured_settings` (at start) builds the active version
again with the configured ones and puts it through the same check.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from agent.canary import CanaryLimits, CanaryReport, failed_limits
from agent.config import AgentConfig
from agent.metrics import Metrics
from agent.model_runtime import ModelRuntime, describe_settings
from agent.screening import ActorRecord, Candidate, screen
from agent.support import label_support
from meta.live import AlertModel
from storage import ModelVersion, NewIncident, Store

log = logging.getLogger(__name__)

ADAPTATION_SOURCE = "model-registry"


@dataclass(frozen=True)
class AdaptationOutcome:
    """What one adaptation run did."""

    status: str  # activated | rejected | waiting | busy | nothing_pending | no_model | failed
    version: str | None = None
    reasons: tuple[str, ...] = ()
    labels_used: tuple[int, ...] = ()
    labels_held: dict[int, str] = field(default_factory=dict)
    canary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "version": self.version, "reasons": list(self.reasons),
                "labels_used": list(self.labels_used),
                "labels_held": {str(k): v for k, v in self.labels_held.items()},
                "canary": self.canary, "seconds": self.seconds}


class Adapter:
    """Runs adaptations for one agent process (or one CLI invocation)."""

    def __init__(self, config: AgentConfig, store: Store, runtime: ModelRuntime,
                 metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime
        self.metrics = metrics

    def ready(self) -> bool:
        """Whether some class has enough new labels to be worth a run."""
        counts = self.store.pending_label_counts()
        return any(n >= self.config.adaptation.min_labels for n in counts.values())

    def run_if_ready(self, trigger: str) -> AdaptationOutcome | None:
        """The scheduled check: adapt when enough labels are pending."""
        if not self.ready():
            return None
        return self.run(trigger)

    def run(self, trigger: str, *, force: bool = False) -> AdaptationOutcome:
        """Screen, adapt, canary-check and register; never raises for a bad candidate."""
        started = time.perf_counter()
        with self.store.adaptation_lock(timeout_s=0.0) as acquired:
            if not acquired:
                return AdaptationOutcome(status="busy", reasons=("another process is adapting",))
            try:
                self.runtime.refresh()  # adapt on top of what is active now, wherever it came from
                outcome = self._run(trigger, force=force)
            except Exception:
                self.metrics.adaptations.labels("failed").inc()
                log.exception("adaptation (%s) failed; the serving version is unchanged", trigger)
                raise
        outcome = replace(outcome, seconds=time.perf_counter() - started)
        if outcome.status in ("activated", "rejected"):
            self.metrics.adaptations.labels(outcome.status).inc()
            self.metrics.adaptation_seconds.observe(outcome.seconds)
        return outcome

    # --- one run ---------------------------------------------------------------------------

    def _run(self, trigger: str, *, force: bool) -> AdaptationOutcome:
        parent = self.runtime.current()
        serving = self.runtime.version
        if parent is None or serving is None:
            return AdaptationOutcome(status="no_model", reasons=("no model version is serving",))
        pending = self.store.pending_labelled_records()
        if not pending:
            return AdaptationOutcome(status="nothing_pending")
        held, accepted = self._screen(pending, parent)
        counts = Counter(r.label for r in accepted)
        if not accepted or (not force and max(counts.values()) < self.config.adaptation.min_labels):
            return AdaptationOutcome(status="waiting", labels_held=held,
                                     reasons=(f"accepted labels per class {dict(counts)} below "
                                              f"min_labels {self.config.adaptation.min_labels}",))
        earlier = self.store.labelled_records(serving.label_ids)
        records = sorted([*earlier, *accepted], key=lambda r: r.label_id)
        candidate = self.runtime.build_with(parent, accepted)
        new_ids = {r.label_id for r in accepted}
        canary, reasons, figures = self._check(candidate, parent,
                                               {r.label_id for r in earlier}, new_ids)
        settings = self.runtime.settings_of(serving)  # the candidate keeps its parent's
        common = self._version_fields(
            serving, candidate, records, settings, trigger, figures,
            self.runtime.digest(serving.algorithm, serving.base_sha256 or "", records, settings))
        if reasons:
            return self._reject(common, reasons, accepted, held, figures)
        version = self.store.add_model_version(
            version=self.store.next_model_version(), activate=True, status="active",
            **common)
        self.store.set_label_status([r.label_id for r in accepted], "used",
                                    model_version=version.version)
        self.runtime.install(candidate, version, canary)
        self.metrics.labels.labels("used").inc(len(accepted))
        log.info("model version %s active (%s): enrolled %d label(s) %s; canary accuracy "
                 "%.1f%%, benign false-alarm rate %.2f%%", version.version, trigger,
                 len(accepted), dict(counts), 100 * canary.known_accuracy,
                 100 * canary.benign_false_alarm_rate)
        return AdaptationOutcome(status="activated", version=version.version,
                                 labels_used=tuple(sorted(new_ids)), labels_held=held,
                                 canary=figures)

    def _check(self, candidate: AlertModel, parent: AlertModel, earlier: set[int],
               new: set[int] | frozenset[int] = frozenset()
               ) -> tuple[CanaryReport, list[str], dict[str, Any]]:
        """The candidate's canary figures, why it may not replace ``parent`` (empty: it may),
        and both models' figures as the version records them."""
        serving_canary = self.runtime.evaluate(parent, earlier=earlier)
        canary = self.runtime.evaluate(candidate, earlier=earlier, new=new)
        limits = CanaryLimits(self.config.adaptation.max_known_drop,
                              self.config.adaptation.max_benign_increase)
        figures = {"canary": canary.to_dict(), "serving_canary": serving_canary.to_dict()}
        return canary, failed_limits(canary, serving_canary, limits), figures

    def _version_fields(self, serving: ModelVersion, candidate: AlertModel, records: list[Any],
                        settings: dict[str, Any], trigger: str, figures: dict[str, Any],
                        sha256: str) -> dict[str, Any]:
        """What a version built on ``serving`` records, all but its name and status."""
        return {
            "algorithm": serving.algorithm, "path": serving.path, "sha256": sha256,
            "metrics": figures, "base_sha256": serving.base_sha256,
            "parent": serving.version, "classes": list(candidate.classes),
            "label_ids": [r.label_id for r in records], "trigger": trigger,
            "benign_class": self.config.model.benign_class, "settings": settings,
        }

    # --- a changed setting --------------------------------------------------------------------

    def apply_configured_settings(self) -> AdaptationOutcome | None:
        """Make the configured ``model.*`` settings serve, through a checked version.

        A version keeps the settings it was registered with (its canary check passed that
        model). When the configuration says otherwise, the active version is rebuilt with the
        configured settings and the same labels, checked like an adaptation, and registered:
        active if it passes, rejected (the active version keeps serving) if not. A version with
        exactly those inputs registered before is reused: activated again, unless its check
        rejected it. ``None``: the active version already has the configured settings.
        """
        if not self._settings_differ():  # the usual start: no lock taken
            return None
        with self.store.adaptation_lock(timeout_s=3600.0) as acquired:
            if not acquired:
                log.warning("another process held the adaptation lock for an hour; the "
                            "configured model settings are applied at the next start")
                return None
            self.runtime.refresh()  # another replica may have done it already
            serving = self.runtime.version
            parent = self.runtime.current()
            if serving is None or parent is None or not self._settings_differ():
                return None
            return self._rebuild_with(serving, parent)

    def _settings_differ(self) -> bool:
        serving = self.runtime.version
        return (serving is not None
                and self.runtime.settings_of(serving) != self.runtime.configured_settings())

    def _rebuild_with(self, serving: ModelVersion, parent: AlertModel) -> AdaptationOutcome:
        recorded = self.runtime.settings_of(serving)
        settings = self.runtime.configured_settings()
        trigger = "settings: " + "; ".join(
            f"model.{name} {recorded[name]} -> {settings[name]}"
            for name in settings if recorded[name] != settings[name])
        base_sha = serving.base_sha256 or ""
        records = self.store.labelled_records(serving.label_ids)
        sha256 = self.runtime.digest(serving.algorithm, base_sha, records, settings)
        same = next((v for v in self.store.list_model_versions() if v.sha256 == sha256), None)
        if same is not None and same.status == "rejected":
            log.warning("model version %s (%s) was rejected by its canary check, so version "
                        "%s keeps serving with %s: %s", same.version, trigger, serving.version,
                        describe_settings(recorded), "; ".join(same.reasons or []))
            return AdaptationOutcome(status="rejected", version=same.version,
                                     reasons=tuple(same.reasons or ()))
        if same is not None:
            self.runtime.activate(same.version)
            log.info("model version %s (%s) registered earlier with these inputs is active "
                     "again", same.version, trigger)
            return AdaptationOutcome(status="activated", version=same.version)
        learner = self.runtime.base_learner(base_sha, serving.algorithm)
        candidate = self.runtime.rebuild(serving.algorithm, base_sha, learner, records, settings)
        canary, reasons, figures = self._check(candidate, parent,
                                               {r.label_id for r in records})
        version = self.store.add_model_version(
            version=self.store.next_model_version(), activate=not reasons,
            status="rejected" if reasons else "active", reasons=reasons or None,
            **self._version_fields(serving, candidate, records, settings, trigger, figures,
                                   sha256))
        if reasons:
            self.metrics.adaptations.labels("rejected").inc()
            log.warning("model version %s (%s) rejected, version %s keeps serving with %s: %s",
                        version.version, trigger, serving.version,
                        describe_settings(recorded), "; ".join(reasons))
            return AdaptationOutcome(status="rejected", version=version.version,
                                     reasons=tuple(reasons), canary=figures)
        self.runtime.install(candidate, version, canary)
        self.metrics.adaptations.labels("activated").inc()
        log.info("model version %s active (%s): canary accuracy %.1f%%, benign false-alarm "
                 "rate %.2f%%", version.version, trigger, 100 * canary.known_accuracy,
                 100 * canary.benign_false_alarm_rate)
        return AdaptationOutcome(status="activated", version=version.version, canary=figures)

    def _screen(self, pending: list[Any], parent: Any) -> tuple[dict[int, str], list[Any]]:
        support = label_support(pending, self.runtime.encoder)
        by_id = {int(o.split(":", 1)[1]): i for i, o in enumerate(support.origin)}
        unencodable = {r.label_id: "the record cannot be encoded with the current schema"
                       for r in pending if r.label_id not in by_id}
        candidates = [Candidate(label_id=r.label_id, label=r.label, actor=r.actor,
                                record_id=r.record_id, x=support.x[by_id[r.label_id]],
                                released=r.status == "released")
                      for r in pending if r.label_id in by_id]
        history: dict[str, ActorRecord] = defaultdict(ActorRecord)
        for actor, (screened, passed) in self.store.actor_screening_record().items():
            history[actor] = ActorRecord(screened=screened, passed=passed)
        result = screen(candidates, parent, self.config.adaptation.screening, history=history,
                        other_labels=self.store.accepted_labels_on_records(
                            [c.record_id for c in candidates]))
        held = {**unencodable, **result.held}
        if held:
            for label_id, reason in held.items():
                self.store.set_label_status([label_id], "held", reason=reason)
            self.metrics.labels.labels("held").inc(len(held))
        accepted = [r for r in pending if r.label_id in set(result.accepted)]
        return held, accepted

    def _reject(self, common: dict[str, Any], reasons: list[str], accepted: list[Any],
                held: dict[int, str], figures: dict[str, Any]) -> AdaptationOutcome:
        version = self.store.add_model_version(
            version=self.store.next_model_version(), activate=False, status="rejected",
            reasons=reasons, **common)
        self.store.set_label_status([r.label_id for r in accepted], "rejected",
                                    reason="; ".join(reasons), model_version=version.version)
        self.metrics.labels.labels("rejected").inc(len(accepted))
        incident = NewIncident(
            kind="model_rejected", severity="high", source=ADAPTATION_SOURCE,
            offset_key=f"version:{version.version}", detector="adaptation",
            explanation={"summary": f"candidate model version {version.version} rejected: "
                                    + "; ".join(reasons),
                         "reasons": reasons, "parent": common["parent"],
                         "labels": [r.label_id for r in accepted], **figures},
            record_excerpt="; ".join(reasons)[:500], model_version=version.version)
        self.store.commit_batch(source=ADAPTATION_SOURCE, position=None, incidents=[incident])
        self.metrics.incidents.labels("model_rejected", "high").inc()
        log.warning("model version %s rejected, version %s keeps serving: %s", version.version,
                    common["parent"], "; ".join(reasons))
        return AdaptationOutcome(status="rejected", version=version.version,
                                 reasons=tuple(reasons),
                                 labels_used=tuple(r.label_id for r in accepted),
                                 labels_held=held, canary=figures)
