"""The top-level package names exist on PyPI too: make sure ours are the ones imported."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["agent", "adapters", "detectors", "meta", "storage"])
def test_top_level_package_imports_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO), (
        f"`import {name}` resolved to {module.__file__}, not to this repository: another "
        f"distribution named {name!r} is installed in this environment")
