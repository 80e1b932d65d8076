"""Every shipped config validates, so the examples never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = [REPO / "agent.yaml", *sorted((REPO / "examples").glob("*.yaml"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASENTRY_API_TOKEN", "t")
    monkeypatch.setenv("PGPASSWORD", "p")
    monkeypatch.setenv("REDIS_PASSWORD", "p")
    monkeypatch.setenv("POD_NAME", "replica-0")
    config = load_config(path)
    assert config.sha256
    assert "p@" not in str(config.redacted_summary())
