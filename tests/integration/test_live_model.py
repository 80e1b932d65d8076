"""The live model end to end, on real NSL-KDD records through the real pipeline and store.

A KDDTest+-only attack type (apache2, never in the reference) mixed into benign traffic is
flagged ``novel``; an analyst labels five of the incident's records; the agent adapts, checks
the candidate and serves it; later records of that type are named — and benign traffic is
judged as before. A burst is one incident; a restart keeps the version; the version's
inputs are checked before it serves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from agent.config import AgentConfig, load_config
from agent.service import Agent
from tests.integration.live_stream import (
    interleave,
    of_class,
    replay,
    sample_lines,
    served_answers,
    write_stream,
)

NEW_TYPE = "apache2"


@pytest.fixture(scope="module")
def streams() -> dict[str, list[str]]:
    lines = sample_lines()
    benign = of_class(lines, "normal")
    new = of_class(lines, NEW_TYPE)
    assert len(benign) >= 4000 and len(new) >= 200, "the bundled sample changed"
    return {
        "part1": interleave(benign[:2000], new[:60], seed=1),
        "part2_benign": benign[2000:4000],
        "part2_new": new[60:],
        "part2": interleave(benign[2000:4000], new[60:], seed=2),
    }


def _label_five_of_the_novel_incident(agent: Agent) -> tuple[int, list[str]]:
    """What the README asks of a new user: five records of the novel incident, by truth."""
    novel = agent.store.list_incidents(kind="novel", limit=100)
    assert novel, "the new attack type raised no novel incident"
    incident = max(novel, key=lambda i: i.record_count)
    examples = agent.store.incident_records(incident.id)
    chosen = [r.offset_key for r in examples if r.fields["label"] == NEW_TYPE][:5]
    assert len(chosen) == 5, Counter(r.fields["label"] for r in examples)
    agent.store.apply_label(incident.id, NEW_TYPE, actor="ana", records=chosen)
    return incident.id, chosen


@contextmanager
def _restarted(config: AgentConfig, version: str | None) -> Iterator[Agent]:
    """A fresh agent on the same config and database, checked to serve ``version``."""
    restarted = Agent(config)
    try:
        restarted.prepare()
        assert restarted.runtime is not None and restarted.runtime.version is not None
        assert restarted.runtime.version.version == version
        yield restarted
    finally:
        restarted.close()


def test_a_new_type_is_flagged_then_named_after_five_labels(
        write_config: Callable[..., Path], tmp_path: Path,
        streams: dict[str, list[str]]) -> None:
    config = load_config(write_config(live_model=True,
                                      **{"incidents.examples_per_incident": 20}),
                         need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        assert agent.runtime is not None and agent.adapter is not None
        first_version = agent.runtime.version
        replay(agent, config, write_stream(tmp_path / "part1.csv", streams["part1"]), "part1")
        _, new_alarm = served_answers(agent, streams["part2_new"])
        assert new_alarm.mean() >= 0.9, "the unseen type is not flagged"
        _, benign_before = served_answers(agent, streams["part2_benign"])

        _label_five_of_the_novel_incident(agent)
        outcome = agent.adapter.run("labels: test")
        assert outcome.status == "activated", outcome
        assert len(outcome.labels_used) == 5 and not outcome.labels_held
        assert agent.runtime.version is not None and first_version is not None
        assert agent.runtime.version.version != first_version.version
        assert agent.runtime.version.parent == first_version.version
        assert NEW_TYPE in (agent.runtime.version.classes or [])

        predicted, _ = served_answers(agent, streams["part2_new"])
        recall = (predicted == NEW_TYPE).mean()
        _, benign_after = served_answers(agent, streams["part2_benign"])
        assert recall >= 0.8, f"recall of {NEW_TYPE} after five labels: {recall:.2f}"
        assert benign_after.mean() - benign_before.mean() <= 0.01

        replay(agent, config, write_stream(tmp_path / "part2.csv", streams["part2"]), "part2")
        named = agent.store.list_incidents(kind="attack", source="part2", limit=100)
        named_new = [i for i in named if i.predicted_class == NEW_TYPE]
        assert len(named_new) == 1, "a burst of one type must be one incident"
        assert named_new[0].record_count >= 0.8 * len(streams["part2_new"])
        assert named_new[0].model_version == agent.runtime.version.version
        assert named_new[0].explanation["first_record"]["nearest"]
    finally:
        agent.close()

    with _restarted(config, outcome.version) as restarted:
        predicted, _ = served_answers(restarted, streams["part2_new"])
        assert (predicted == NEW_TYPE).mean() >= 0.8


def test_an_ensemble_model_is_bootstrapped_served_adapted_and_reloaded(
        write_config: Callable[..., Path], tmp_path: Path,
        streams: dict[str, list[str]]) -> None:
    """``model.members: 3``: three memory members trained at the first start, served as one
    memory, adapted from five labels, and loaded again (by its recorded sha256) after a
    restart."""
    config = load_config(write_config(live_model=True, **{
        "model.path": None, "model.sha256": None, "model.bootstrap": True,
        "model.members": 3, "model.training_episodes": 96,
        "incidents.examples_per_incident": 20}), need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        assert agent.runtime is not None and agent.adapter is not None
        served = agent.runtime.current()
        assert served is not None and served.learner.members == 3
        width = served.learner.encoder_spec.input_shape[0]
        assert served.embed(np.zeros((1, width), np.float32)).shape == (1, 3 * 64)
        replay(agent, config, write_stream(tmp_path / "part1.csv", streams["part1"]), "part1")
        _label_five_of_the_novel_incident(agent)
        outcome = agent.adapter.run("labels: test")
        assert outcome.status in ("activated", "rejected"), outcome
        serving = agent.runtime.version
        assert serving is not None
    finally:
        agent.close()
    with _restarted(config, serving.version) as restarted:
        assert restarted.runtime is not None
        reloaded = restarted.runtime.current()
        assert reloaded is not None and reloaded.learner.members == 3


def test_a_burst_of_one_attack_is_one_incident_with_a_count(
        write_config: Callable[..., Path], tmp_path: Path) -> None:
    burst = of_class(sample_lines(), "neptune")[:2000]
    config = load_config(write_config(live_model=True), need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        replay(agent, config, write_stream(tmp_path / "burst.csv", burst), "burst")
        attacks = agent.store.list_incidents(kind="attack", source="burst", limit=100)
        by_class = Counter(i.predicted_class for i in attacks)
        assert by_class["neptune"] == 1
        neptune = next(i for i in attacks if i.predicted_class == "neptune")
        assert neptune.record_count >= 0.8 * len(burst)
        assert len(agent.store.incident_records(neptune.id)) == \
            config.incidents.examples_per_incident
        flagged = sum(i.record_count for i in agent.store.list_incidents(source="burst",
                                                                         limit=1000)
                      if i.kind in ("attack", "novel"))
        assert flagged <= len(burst)
    finally:
        agent.close()


def test_a_model_trained_on_other_features_or_other_weights_is_refused(
        write_config: Callable[..., Path], default_config_data: dict[str, object]) -> None:
    from agent.model_runtime import ModelLoadError

    features = list(default_config_data["schema"]["features"])  # type: ignore[index]
    fewer = write_config("fewer.yaml", live_model=True, **{"schema.features": features[:-1]})
    agent = Agent(load_config(fewer, need_token=False))
    try:
        with pytest.raises(ModelLoadError, match="different encoder"):
            agent.prepare()
    finally:
        agent.close()
    other = write_config("pinned.yaml", live_model=True, **{"model.sha256": "0" * 64})
    agent = Agent(load_config(other, need_token=False))
    try:
        with pytest.raises(ModelLoadError, match="expected|pinned"):
            agent.prepare()
    finally:
        agent.close()


def test_the_served_model_leaves_rare_reference_classes_unnamed_as_configured(
        write_config: Callable[..., Path]) -> None:
    config = load_config(write_config(live_model=True, **{
        "model.learner": "knn", "model.min_reference_records_to_name": 5}), need_token=False)
    agent = Agent(config)
    try:
        agent.prepare()
        assert agent.runtime is not None
        model = agent.runtime.current()
        assert model is not None
        rare = {label for label, n in model.support.counts().items()
                if n < 5 and label != config.model.benign_class}
        assert rare and model.unnamed_classes == frozenset(rare)
    finally:
        agent.close()
