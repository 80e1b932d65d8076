"""Migrations ship inside the package and run without an alembic.ini, from any directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

import storage
from storage import Store
from storage.migrations import MIGRATIONS_DIR, alembic_config, head_revision


def test_script_location_is_the_package_directory() -> None:
    config = alembic_config()
    assert Path(config.get_main_option("script_location") or "") == MIGRATIONS_DIR
    assert MIGRATIONS_DIR.parent == Path(storage.__file__).resolve().parent
    assert config.config_file_name is None


def test_there_is_exactly_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [head_revision()]


def test_upgrade_works_from_an_unrelated_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with Store(f"sqlite:///{tmp_path / 'm.db'}") as store:
        store.upgrade()
        assert store.at_head()
    assert list(elsewhere.iterdir()) == []


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with Store(url) as store:
        store.upgrade()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        with engine.connect() as connection:
            assert sa.inspect(connection).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()
    with Store(url) as store:
        assert store.current_revision() is None
        store.upgrade()
        assert store.at_head()


def test_offline_mode_emits_sql_for_review(capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config(url="postgresql+psycopg://u@h/db"), "head", sql=True)
    emitted = capsys.readouterr().out
    assert "CREATE TABLE incidents" in emitted
    assert "CREATE UNIQUE INDEX uq_model_versions_one_active" in emitted
