"""Real NSL-KDD records as FeatureBatches, for calibration tests on real security data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from detectors import FeatureBatch

_REPO = Path(__file__).resolve().parents[3]
_DATA = Path(os.environ.get("METASENTRY_DATA", _REPO.parent / "shared" / "data"))
_NSL_KDD = _DATA / "nsl-kdd"
# ReadMe.txt of NSL-KDD: these were symbolic and became 0/1 integers; the encoder sees booleans.
_BOOLEAN_FIELDS = ("land", "logged_in", "is_host_login", "is_guest_login")


@dataclass(frozen=True)
class NslKdd:
    """One NSL-KDD file as string columns, with the schema taken from ``Field Names.csv``."""

    fields: np.ndarray  # str [n, 41]
    labels: np.ndarray  # str [n]
    numeric_names: tuple[str, ...]
    symbolic_names: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.fields.shape[0])

    def vocabularies(self, rows: np.ndarray) -> tuple[tuple[str, ...], ...]:
        """Per categorical feature, the sorted values found in ``rows``, as an encoder fits them."""
        vocab = []
        for name in self.symbolic_names + _BOOLEAN_FIELDS:
            if name in _BOOLEAN_FIELDS:
                vocab.append(("false", "true"))
            else:
                column = self.fields[rows, self.names.index(name)]
                vocab.append(tuple(sorted(set(column.tolist()))))
        return tuple(vocab)

    def batch(self, rows: np.ndarray, vocab: tuple[tuple[str, ...], ...]) -> FeatureBatch:
        """The records at ``rows``, categorical values coded against ``vocab`` (unknown last)."""
        numeric = np.column_stack(
            [
                self.fields[rows, self.names.index(name)].astype(np.float64)
                for name in self.numeric_names
            ]
        )
        codes = []
        for name, values in zip(self.symbolic_names + _BOOLEAN_FIELDS, vocab, strict=True):
            column = self.fields[rows, self.names.index(name)]
            if name in _BOOLEAN_FIELDS:
                codes.append((column.astype(np.float64) != 0).astype(np.int32))
                continue
            known = np.array(values)
            position = np.minimum(np.searchsorted(known, column), len(known) - 1)
            codes.append(np.where(known[position] == column, position, len(known)).astype(np.int32))
        return FeatureBatch(
            numeric=numeric,
            numeric_names=self.numeric_names,
            categorical=np.column_stack(codes),
            categorical_names=self.symbolic_names + _BOOLEAN_FIELDS,
            categorical_vocab=vocab,
            encoded=np.zeros((len(rows), 0), dtype=np.float32),
        )


def _load(file_name: str) -> NslKdd:
    path = _NSL_KDD / file_name
    field_list = _NSL_KDD / "Field Names.csv"
    if not path.is_file() or not field_list.is_file():
        pytest.skip(f"NSL-KDD data not found: {path} (set METASENTRY_DATA to the data folder)")
    kinds = [line.split(",") for line in field_list.read_text().splitlines() if line.strip()]
    names = tuple(name.strip() for name, _ in kinds)
    symbolic = tuple(name.strip() for name, kind in kinds if kind.strip() == "symbolic")
    numeric = tuple(n for n in names if n not in symbolic and n not in _BOOLEAN_FIELDS)
    table = np.loadtxt(path, delimiter=",", dtype=str)
    return NslKdd(
        fields=table[:, : len(names)],
        labels=table[:, len(names)],
        numeric_names=numeric,
        symbolic_names=symbolic,
        names=names,
    )


@pytest.fixture(scope="session")
def nsl_kdd_train() -> NslKdd:
    return _load("KDDTrain+_20Percent.txt")


@pytest.fixture(scope="session")
def nsl_kdd_test() -> NslKdd:
    return _load("KDDTest+.txt")
