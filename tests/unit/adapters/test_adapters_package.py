"""The `adapters` package imported by the tests is this repository's, not a PyPI namesake."""

from __future__ import annotations

from pathlib import Path

import adapters

REPOSITORY = Path(__file__).resolve().parents[3]


def test_adapters_is_imported_from_this_repository() -> None:
    assert Path(adapters.__file__).resolve().is_relative_to(REPOSITORY)


def test_public_names_are_exported() -> None:
    for name in adapters.__all__:
        assert getattr(adapters, name) is not None
