"""Fixtures shared by the whole suite: paths, real-data location, and agent configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "nsl-kdd"
DATA = Path(os.environ.get("METASENTRY_DATA", REPO.parent / "shared" / "data"))
PG_URL = os.environ.get("METASENTRY_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_config_data() -> dict[str, Any]:
    """agent.yaml as shipped, as a dict."""
    return yaml.safe_load((REPO / "agent.yaml").read_text())


@pytest.fixture
def write_config(tmp_path: Path, default_config_data: dict[str, Any]
                 ) -> Callable[..., Path]:
    """Write a variant of agent.yaml into tmp_path (absolute sample paths, a private SQLite).

    Keyword arguments are dotted YAML paths to override, e.g.
    ``write_config(**{"detectors.feature_drift.window": 500})``.
    """

    def write(name: str = "agent.yaml", **overrides: Any) -> Path:
        data = yaml.safe_load(yaml.safe_dump(default_config_data))
        data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
        data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
        data["storage"]["url"] = f"sqlite:///{tmp_path / 'metasentry.db'}"
        data["metrics"]["enabled"] = False
        data["api"]["enabled"] = False
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[leaf] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
