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


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory,
                  default_config_data: dict[str, Any]) -> dict[str, str]:
    """A memory model bootstrapped once on the bundled reference: {"path", "sha256"}.

    Tests that run the live model serve it with ``model.path`` instead of meta-training their
    own (which costs seconds per test); it is the model the bootstrap would train.
    """
    from agent.config import parse_config
    from agent.service import Agent

    root = tmp_path_factory.mktemp("trained-model")
    data = yaml.safe_load(yaml.safe_dump(default_config_data))
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
    data["storage"]["url"] = f"sqlite:///{root / 'bootstrap.db'}"
    data["model"]["cache_dir"] = str(root / "models")
    data["model"]["device"] = "cpu"
    agent = Agent(parse_config(yaml.safe_dump(data), base_dir=root))
    try:
        agent.prepare()
        assert agent.runtime is not None and agent.runtime.version is not None
        sha = agent.runtime.version.base_sha256
    finally:
        agent.close()
    assert sha is not None
    return {"path": str(root / "models" / sha), "sha256": sha}


@pytest.fixture
def write_config(tmp_path: Path, default_config_data: dict[str, Any],
                 request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Write a variant of agent.yaml into tmp_path (absolute sample paths, a private SQLite).

    Keyword arguments are dotted YAML paths to override, e.g.
    ``write_config(**{"detectors.feature_drift.window": 500})`` (a detector is found by its
    name). The live model is off unless ``live_model=True``, which serves the session's
    :func:`trained_model` (so most tests neither import TensorFlow nor meta-train).
    """

    def write(name: str = "agent.yaml", *, live_model: bool = False, **overrides: Any) -> Path:
        data = yaml.safe_load(yaml.safe_dump(default_config_data))
        data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
        data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
        data["storage"]["url"] = f"sqlite:///{tmp_path / 'metasentry.db'}"
        data["metrics"]["enabled"] = False
        data["api"]["enabled"] = False
        data["model"]["cache_dir"] = str(tmp_path / "models")
        data["model"]["device"] = "cpu"
        if live_model:
            model = request.getfixturevalue("trained_model")
            data["model"].update(path=model["path"], sha256=model["sha256"], bootstrap=False)
        else:
            data["model"]["enabled"] = False
            data["detectors"] = [d for d in data["detectors"] if d["type"] != "classifier"]
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = _child(node, part)
            if isinstance(node, list):
                node[int(leaf)] = value
            else:
                node[leaf] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def _child(node: Any, part: str) -> Any:
    """A step of a dotted path: a list index, a list entry by its name, or a mapping key."""
    if isinstance(node, list):
        if part.isdigit():
            return node[int(part)]
        return next(entry for entry in node if entry.get("name") == part)
    return node[part]
