"""The ``model.*`` settings that shape a version's answers are part of the version.

A version is registered with the settings its canary check saw and is always rebuilt with
them; changing them in agent.yaml makes a new version at the next start, checked like an
adaptation (activated, or rejected while the old version keeps serving; replicas starting
together on PostgreSQL register it once), and a row whose recorded settings were edited is
refused like one whose labels were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.config import load_config
from agent.model_runtime import ModelLoadError
from agent.service import Agent

NAMING = "model.min_reference_records_to_name"


@contextmanager
def started(config_path: Path) -> Iterator[Agent]:
    agent = Agent(load_config(config_path, need_token=False))
    try:
        agent.prepare()
        assert agent.runtime is not None and agent.runtime.version is not None
        yield agent
    finally:
        agent.close()


def serving(agent: Agent) -> tuple[str, dict[str, Any] | None, frozenset[str]]:
    """(version, recorded settings, classes the served model leaves unnamed)."""
    runtime = agent.runtime
    assert runtime is not None and runtime.version is not None
    model = runtime.current()
    assert model is not None
    return runtime.version.version, runtime.version.settings, model.unnamed_classes


def edit_version(config_path: Path, version: str, **columns: Any) -> None:
    """Change a registered version's row behind the agent's back (SQL access)."""
    engine = sa.create_engine(load_config(config_path, need_token=False).storage_url())
    try:
        with engine.begin() as connection:
            table = sa.Table("model_versions", sa.MetaData(), autoload_with=connection)
            connection.execute(table.update().where(table.c.version == version)
                               .values(**columns))
    finally:
        engine.dispose()


def test_a_changed_setting_serves_through_a_new_checked_version(
        write_config: Callable[..., Path]) -> None:
    original = write_config(live_model=True)
    with started(original) as agent:
        first, settings, unnamed = serving(agent)
    assert settings == {"min_class_calibration": 100, "min_reference_records_to_name": 3}

    stricter = write_config("stricter.yaml", live_model=True, **{NAMING: 40})
    with started(stricter) as agent:
        second, settings, stricter_unnamed = serving(agent)
        assert agent.store is not None
        registered = agent.store.get_model_version(second)
    assert second != first and registered.parent == first
    assert registered.trigger == "settings: model.min_reference_records_to_name 3 -> 40"
    assert settings == {"min_class_calibration": 100, "min_reference_records_to_name": 40}
    assert stricter_unnamed > unnamed, "the new setting is what serves"

    with started(original) as agent:  # back to the original: the version it made returns
        assert serving(agent)[0] == first
        assert len(agent.store.list_model_versions()) == 2


def test_a_setting_the_canary_check_refuses_leaves_the_old_version_serving(
        write_config: Callable[..., Path]) -> None:
    with started(write_config(live_model=True)) as agent:
        first, _, _ = serving(agent)
    # Pooling every class's calibration scores lets more benign canary records look novel
    # (1.50% -> 1.75% on the bundled reference), which this configuration does not allow.
    refused = write_config("refused.yaml", live_model=True, **{
        "model.min_class_calibration": 100_000, "adaptation.max_benign_increase": 0.0})
    with started(refused) as agent:
        version, settings, _ = serving(agent)
        versions = agent.store.list_model_versions()
        model = agent.runtime.current()  # type: ignore[union-attr]
        assert model is not None and model.calibration.min_class_records == 100
    assert version == first
    assert settings is not None and settings["min_class_calibration"] == 100
    rejected = [v for v in versions if v.status == "rejected"]
    assert len(rejected) == 1 and "benign false-alarm rate" in " ".join(rejected[0].reasons or [])
    assert rejected[0].settings is not None
    assert rejected[0].settings["min_class_calibration"] == 100_000
    with started(refused) as agent:  # the same refusal is not registered again
        assert serving(agent)[0] == first
        assert len(agent.store.list_model_versions()) == len(versions)


def test_a_version_whose_recorded_settings_were_edited_is_refused(
        write_config: Callable[..., Path]) -> None:
    config = write_config(live_model=True)
    with started(config) as agent:
        first, settings, _ = serving(agent)
    assert settings is not None
    edit_version(config, first, settings={**settings, "min_reference_records_to_name": 40})
    with pytest.raises(ModelLoadError, match="does not match its recorded sha256"):
        with started(config):
            pass
    edit_version(config, first, settings={"min_class_calibration": 100})
    with pytest.raises(ModelLoadError, match="no value for model.min_reference_records_to_name"):
        with started(config):
            pass


def test_a_version_registered_before_settings_were_recorded_is_served_as_configured(
        write_config: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(live_model=True)
    with started(config) as agent:
        runtime = agent.runtime
        assert runtime is not None and runtime.version is not None
        first = runtime.version
        older = runtime.digest(first.algorithm, first.base_sha256 or "", [], None)
    edit_version(config, first.version, settings=None, sha256=older)
    with caplog.at_level("WARNING", logger="agent.model_runtime"), started(config) as agent:
        assert serving(agent)[:2] == (first.version, None)
        assert len(agent.store.list_model_versions()) == 1
    assert "registered before versions recorded their settings" in caplog.text
    assert "model.min_reference_records_to_name=3" in caplog.text


@pytest.mark.postgres
def test_replicas_starting_with_a_changed_setting_register_one_version(
        write_config: Callable[..., Path], fresh_database: Callable[..., str]) -> None:
    from pg_faults import PG_URL

    url = PG_URL.rsplit("/", 1)[0] + "/" + fresh_database("metasentry_model_settings")
    with started(write_config(live_model=True, **{"storage.url": url})) as agent:
        first = serving(agent)[0]
    changed = write_config("changed.yaml", live_model=True, **{"storage.url": url, NAMING: 40})
    agents = [Agent(load_config(changed, need_token=False)) for _ in range(2)]
    errors: list[BaseException] = []

    def start(agent: Agent) -> None:
        try:
            agent.prepare()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=start, args=(agent,)) for agent in agents]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not errors, errors
        served = {serving(agent)[0] for agent in agents}
        versions = agents[0].store.list_model_versions()
    finally:
        for agent in agents:
            agent.close()
    assert len(versions) == 2, [(v.version, v.trigger) for v in versions]
    second = next(v for v in versions if v.version != first)
    assert served == {second.version} and second.parent == first
