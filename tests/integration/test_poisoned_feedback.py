"""Poisoned feedback cannot push a worse model live: screening holds it, the canary rejects it.

The campaign mixes honest labels with 30% wrong ones, the three ways the issue names: benign
records labelled as the new attack class, new-class records labelled benign, and an actor
labelling at random. Labels reach the agent in rounds, each followed by an adaptation, as they
would in service. Records are real NSL-KDD records from the bundled sample, stored as example
records of incidents (what an analyst can label).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.canary import CanaryLimits, failed_limits
from agent.config import load_config
from agent.service import Agent
from tests.integration.live_stream import (
    incident_with_examples,
    of_class,
    sample_lines,
    served_answers,
)

NEW_TYPE = "apache2"


def _label(agent: Agent, incident_id: int, key: str, label: str, actor: str) -> int:
    _, labels = agent.store.apply_label(incident_id, label, actor=actor, records=[key])
    return labels[0].id


@pytest.fixture
def agent(write_config: Callable[..., Path]) -> Agent:
    config = load_config(write_config(live_model=True), need_token=False)
    running = Agent(config)
    running.prepare()
    yield running
    running.close()


def test_a_poisoned_labelling_campaign_cannot_push_a_worse_model_live(agent: Agent) -> None:
    assert agent.runtime is not None and agent.adapter is not None
    rng = np.random.default_rng(0)
    lines = sample_lines()
    benign = of_class(lines, "normal")
    new = of_class(lines, NEW_TYPE)
    held_out_benign, held_out_new = benign[4000:6000], new[150:]
    _, alarm_before = served_answers(agent, held_out_benign)

    pool = benign[:60] + new[:60]
    ids = incident_with_examples(agent, pool, "pool", source="campaign")
    key = {i: f"pool:{i}" for i in range(len(pool))}
    plan: list[tuple[int, str, str, bool]] = []  # (pool row, label, actor, correct)
    plan += [(60 + i, NEW_TYPE, "ana", True) for i in range(14)]
    plan += [(i, "normal", "bob", True) for i in range(7)]
    plan += [(10 + i, NEW_TYPE, "mallory", False) for i in range(4)]  # benign -> new class
    plan += [(80 + i, "normal", "mallory", False) for i in range(3)]  # new class -> benign
    classes = sorted(agent.runtime.current().classes)  # type: ignore[union-attr]
    plan += [(int(rng.integers(0, len(pool))), str(rng.choice([c for c in classes
                                                               if c != "normal"])),
              "rand", False) for _ in range(2)]
    order = rng.permutation(len(plan))
    wrong: set[int] = set()
    versions = [agent.runtime.version]
    for round_start in range(0, len(plan), 10):
        for index in order[round_start:round_start + 10]:
            row, label, actor, correct = plan[index]
            label_id = _label(agent, ids, key[row], label, actor)
            if not correct:
                wrong.add(label_id)
        outcome = agent.adapter.run("labels: campaign round", force=True)
        assert outcome.status in ("activated", "rejected", "waiting"), outcome
        versions.append(agent.runtime.version)

    held = {label.id for label in agent.store.list_labels(status="held")}
    caught = len(held & wrong)
    print(f"\nscreening held {caught} of {len(wrong)} wrong labels "
          f"and {len(held - wrong)} of {len(plan) - len(wrong)} honest ones")
    assert caught >= len(wrong) / 2, f"screening held only {caught} of {len(wrong)} wrong labels"

    # Every version that went live is within the canary limits of its parent, re-checked from
    # the registry (rebuilt from its recorded inputs, not the objects the run kept).
    limits = CanaryLimits(agent.config.adaptation.max_known_drop,
                          agent.config.adaptation.max_benign_increase)
    registry = {v.version: v for v in agent.store.list_model_versions()}
    for version in registry.values():
        if version.status not in ("active", "retired") or version.parent is None:
            continue
        parent = registry[version.parent]
        earlier = set(parent.label_ids)
        child_report = agent.runtime.evaluate(agent.runtime.load_version(version),
                                              earlier=earlier)
        parent_report = agent.runtime.evaluate(agent.runtime.load_version(parent),
                                               earlier=earlier)
        assert failed_limits(child_report, parent_report, limits) == [], version.version

    # And on real traffic it never saw: benign traffic is judged as before, the type is named.
    predicted, _ = served_answers(agent, held_out_new)
    _, alarm_after = served_answers(agent, held_out_benign)
    assert alarm_after.mean() - alarm_before.mean() <= 0.01
    assert (predicted == NEW_TYPE).mean() >= 0.8


def test_the_canary_rejects_a_harmful_candidate_and_the_serving_version_stays(
        write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(live_model=True,
                                      **{"adaptation.screening.enabled": False}),
                         need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        assert agent.runtime is not None and agent.adapter is not None
        serving = agent.runtime.version
        benign = of_class(sample_lines(), "normal")[:300]
        ids = incident_with_examples(agent, benign, "flood", source="campaign")
        for i in range(300):  # typical benign traffic, all labelled as an attack class
            _label(agent, ids, f"flood:{i}", "neptune", "mallory")
        outcome = agent.adapter.run("labels: flood")
        assert outcome.status == "rejected", outcome
        assert any("benign false-alarm rate" in reason or "accuracy" in reason
                   for reason in outcome.reasons)
        assert agent.runtime.version == serving
        assert agent.store.active_model_version() == serving
        rejected = agent.store.get_model_version(outcome.version or "")
        assert rejected.status == "rejected" and rejected.reasons
        incidents = agent.store.list_incidents(kind="model_rejected")
        assert len(incidents) == 1 and incidents[0].model_version == outcome.version
        rejected_labels = agent.store.list_labels(status="rejected")
        assert len(rejected_labels) == 300
        assert {label.model_version for label in rejected_labels} == {outcome.version}
    finally:
        agent.close()
