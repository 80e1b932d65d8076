"""Real datasets for the few-shot benchmark: NSL-KDD novel attacks and Omniglot.

The benchmark only means something if every learner and baseline sees the same classes,
the same encoding and the same held-out split, so all of that is decided here, once:

- NSL-KDD: numeric fields ``log1p`` then z-scored, the three symbolic fields one-hot with the
  training vocabulary, both fitted on KDDTrain+_20Percent only. Training classes are the labels
  of that file with enough records; novel classes are attack types that occur only in
  KDDTest+ and have enough records for a K-shot episode with 15 queries.
- Omniglot: the two "small" background zips (Greek and Latin are in both and are counted once),
  resized to 28x28 with ink = 1, split by character into train / validation / test; plus the
  20 official 20-way 1-shot runs of ``all_runs.zip``, whose alphabets are in neither zip.

Data root: ``$METASENTRY_DATA``, else ``/work/shared/data``, else ``../shared/data`` beside
the repository.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DATA_ENV = "METASENTRY_DATA"
_DEFAULT_ROOTS = (
    Path("/work/shared/data"),
    Path(__file__).resolve().parents[2] / "shared" / "data",
)

NSL_TRAIN_FILE = "KDDTrain+_20Percent.txt"
NSL_TEST_FILE = "KDDTest+.txt"
NSL_FIELDS_FILE = "Field Names.csv"
BENIGN_LABEL = "normal"

OMNIGLOT_BACKGROUND_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
OMNIGLOT_RUNS_ZIP = "all_runs.zip"


def data_root() -> Path:
    """Where the shared datasets live; the env variable wins so CI can point elsewhere."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured)
    for candidate in _DEFAULT_ROOTS:
        if candidate.is_dir():
            return candidate
    return _DEFAULT_ROOTS[0]


@dataclass(frozen=True)
class LabelledSet:
    """Feature rows with integer labels indexing ``class_names``."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError("x and y must have the same number of rows.")

    def subset(self, class_names: Sequence[str]) -> LabelledSet:
        """Rows of the named classes, relabelled 0..len(class_names)-1 in the order given."""
        old_index = {name: i for i, name in enumerate(self.class_names)}
        missing = [name for name in class_names if name not in old_index]
        if missing:
            raise ValueError(f"Unknown classes {missing}; use some of {list(self.class_names)}.")
        mapping = np.full(len(self.class_names), -1, dtype=np.int64)
        mapping[[old_index[name] for name in class_names]] = np.arange(len(class_names))
        new_y = mapping[self.y]
        keep = new_y >= 0
        return LabelledSet(self.x[keep], new_y[keep], tuple(class_names))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}


# --------------------------------------------------------------------------- NSL-KDD


@dataclass(frozen=True)
class NslKddRecords:
    """Raw columns of one NSL-KDD file before encoding."""

    numeric: np.ndarray  # float64 (n, n_numeric)
    symbolic: np.ndarray  # str (n, 3)
    labels: np.ndarray  # str (n,)


def read_field_names(root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Numeric and symbolic field names, in file order, from ``Field Names.csv``."""
    numeric: list[str] = []
    symbolic: list[str] = []
    text = (root / "nsl-kdd" / NSL_FIELDS_FILE).read_text()
    for line in text.splitlines():
        if not line.strip():
            continue
        name, kind = (part.strip() for part in line.split(","))
        (symbolic if kind == "symbolic" else numeric).append(name)
    return tuple(numeric), tuple(symbolic)


def read_nsl_kdd(path: Path, root: Path) -> NslKddRecords:
    """Parse a headerless NSL-KDD CSV (41 features, label, difficulty)."""
    numeric_names, symbolic_names = read_field_names(root)
    all_names = [
        line.split(",")[0].strip()
        for line in (root / "nsl-kdd" / NSL_FIELDS_FILE).read_text().splitlines()
        if line.strip()
    ]
    table = np.loadtxt(path, delimiter=",", dtype=str)
    if table.ndim != 2 or table.shape[1] != len(all_names) + 2:
        raise ValueError(f"{path}: expected {len(all_names) + 2} columns, got {table.shape}.")
    numeric_cols = [all_names.index(name) for name in numeric_names]
    symbolic_cols = [all_names.index(name) for name in symbolic_names]
    return NslKddRecords(
        numeric=table[:, numeric_cols].astype(np.float64),
        symbolic=table[:, symbolic_cols],
        labels=table[:, len(all_names)],
    )


class NslKddEncoder:
    """log1p + z-score for numeric fields, one-hot for symbolic ones, fitted on one file.

    Values of a symbolic field never seen in the fitting file encode as all zeros, so test
    records with a new service stay usable without leaking test information into the fit.
    """

    def __init__(self, numeric_names: Sequence[str], symbolic_names: Sequence[str]) -> None:
        if not numeric_names and not symbolic_names:
            raise ValueError("NslKddEncoder needs at least one field.")
        self.numeric_names = tuple(numeric_names)
        self.symbolic_names = tuple(symbolic_names)
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._vocabularies: tuple[tuple[str, ...], ...] = ()

    def fit(self, records: NslKddRecords) -> NslKddEncoder:
        logged = np.log1p(np.maximum(records.numeric, 0.0))
        self._mean = logged.mean(axis=0)
        std = logged.std(axis=0)
        self._std = np.where(std > 0, std, 1.0)
        self._vocabularies = tuple(
            tuple(sorted(set(records.symbolic[:, j].tolist())))
            for j in range(records.symbolic.shape[1])
        )
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = list(self.numeric_names)
        for field, vocabulary in zip(self.symbolic_names, self._vocabularies, strict=True):
            names.extend(f"{field}={value}" for value in vocabulary)
        return tuple(names)

    def transform(self, records: NslKddRecords) -> np.ndarray:
        if self._mean is None or self._std is None:
            raise ValueError("NslKddEncoder.transform called before fit.")
        numeric = (np.log1p(np.maximum(records.numeric, 0.0)) - self._mean) / self._std
        blocks = [numeric.astype(np.float32)]
        for j, vocabulary in enumerate(self._vocabularies):
            column = records.symbolic[:, j]
            onehot = (column[:, None] == np.asarray(vocabulary)[None, :]).astype(np.float32)
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class NslKddNovelSplit:
    """Training classes from KDDTrain+_20Percent, novel attack classes from KDDTest+.

    ``benign_test`` holds the encoded ``normal`` records of KDDTest+, for base-rate episodes
    where benign traffic dominates.
    """

    train: LabelledSet
    novel: LabelledSet
    benign_test: np.ndarray
    feature_names: tuple[str, ...]


def _labelled(x: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> LabelledSet:
    index = {name: i for i, name in enumerate(class_names)}
    keep = np.isin(labels, list(class_names))
    y = np.array([index[name] for name in labels[keep]], dtype=np.int64)
    return LabelledSet(x[keep], y, tuple(class_names))


def load_nsl_kdd_novel_split(
    root: Path | None = None,
    *,
    min_train_records: int = 20,
    min_novel_records: int = 20,
) -> NslKddNovelSplit:
    """Encode both files and pick the training and novel classes by record count.

    ``min_novel_records`` is K+15 for a K-shot episode with 15 queries per class: 20 at K=5
    (8 novel types), 16 at K=1 (9 types, adding ``named``).
    """
    if min_train_records < 1 or min_novel_records < 1:
        raise ValueError("Minimum record counts must be positive.")
    encoded = _encoded_nsl_kdd(data_root() if root is None else root)
    train_records, test_records = encoded.train_records, encoded.test_records
    train_x, test_x = encoded.train_x, encoded.test_x

    train_names, train_counts = np.unique(train_records.labels, return_counts=True)
    train_classes = sorted(
        (str(n) for n, c in zip(train_names, train_counts, strict=True) if c >= min_train_records),
        key=lambda name: (name != BENIGN_LABEL, name),
    )
    seen = set(train_names.tolist())
    test_names, test_counts = np.unique(test_records.labels, return_counts=True)
    novel_classes = sorted(
        str(n)
        for n, c in zip(test_names, test_counts, strict=True)
        if n not in seen and c >= min_novel_records
    )
    split = NslKddNovelSplit(
        train=_labelled(train_x, train_records.labels, train_classes),
        novel=_labelled(test_x, test_records.labels, novel_classes),
        benign_test=test_x[test_records.labels == BENIGN_LABEL],
        feature_names=encoded.feature_names,
    )
    logger.info(
        "NSL-KDD split: %d features, %d training classes, %d novel classes %s",
        train_x.shape[1],
        len(train_classes),
        len(novel_classes),
        novel_classes,
    )
    return split


def rare_known_attack_types(root: Path | None = None, *, min_train_records: int = 20,
                             min_records: int = 20) -> LabelledSet:
    """Attack types of KDDTrain+_20Percent too rare there to be training classes (fewer than
    ``min_train_records``) that reach ``min_records`` with their KDDTest+ records added: their
    records from both files. None of them is a novel class (those never occur in the training
    file), so they widen the training classes without touching the test episodes; but they do
    come from the test file, and a row that uses them says so.
    """
    encoded = _encoded_nsl_kdd(data_root() if root is None else root)
    train_labels, test_labels = encoded.train_records.labels, encoded.test_records.labels
    names, counts = np.unique(train_labels, return_counts=True)
    rare = [
        str(name) for name, count in zip(names, counts, strict=True)
        if name != BENIGN_LABEL and count < min_train_records
        and count + int(np.sum(test_labels == name)) >= min_records
    ]
    both = _labelled(np.concatenate([encoded.train_x, encoded.test_x]),
                     np.concatenate([train_labels, test_labels]), rare)
    logger.info("Rare known attack types widened by KDDTest+: %s", both.class_counts())
    return both


def unlabelled_stream(which: Literal["train", "test"], root: Path | None = None) -> np.ndarray:
    """Every record of KDDTrain+_20Percent or KDDTest+, encoded as the split encodes them
    (fitted on KDDTrain+_20Percent), labels dropped: what an agent watching that traffic sees.
    """
    encoded = _encoded_nsl_kdd(data_root() if root is None else root)
    return encoded.train_x if which == "train" else encoded.test_x


@dataclass(frozen=True)
class _EncodedNslKdd:
    train_records: NslKddRecords
    test_records: NslKddRecords
    train_x: np.ndarray
    test_x: np.ndarray
    feature_names: tuple[str, ...]


@functools.cache
def _encoded_nsl_kdd(root: Path) -> _EncodedNslKdd:
    """Both files read and encoded once per process, the encoder fitted on
    KDDTrain+_20Percent (the split and the unlabelled streams share them)."""
    numeric_names, symbolic_names = read_field_names(root)
    train_records = read_nsl_kdd(root / "nsl-kdd" / NSL_TRAIN_FILE, root)
    test_records = read_nsl_kdd(root / "nsl-kdd" / NSL_TEST_FILE, root)
    encoder = NslKddEncoder(numeric_names, symbolic_names).fit(train_records)
    return _EncodedNslKdd(train_records, test_records, encoder.transform(train_records),
                          encoder.transform(test_records), encoder.feature_names)


# --------------------------------------------------------------------------- Omniglot


def _decode_glyph(png: bytes, image_size: int) -> np.ndarray:
    """105x105 1-bit PNG -> (size, size) float32, ink = 1; box filter so thin strokes survive."""
    with Image.open(io.BytesIO(png)) as image:
        grey = image.convert("L").resize((image_size, image_size), Image.Resampling.BOX)
    return 1.0 - np.asarray(grey, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class OmniglotCharacters:
    """Images (n, size, size, 1) of background characters, one class per character."""

    images: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]  # "Alphabet/characterNN"

    def as_labelled(self) -> LabelledSet:
        return LabelledSet(self.images, self.y, self.class_names)


def load_omniglot_background(
    root: Path | None = None, *, image_size: int = 28
) -> OmniglotCharacters:
    """Every distinct character of the two small background zips (242 classes, 4840 images)."""
    if image_size < 8:
        raise ValueError("image_size must be at least 8 pixels.")
    root = data_root() if root is None else root
    by_class: dict[str, list[np.ndarray]] = {}
    for zip_name in OMNIGLOT_BACKGROUND_ZIPS:
        seen_here: set[str] = set()
        with zipfile.ZipFile(root / "omniglot" / zip_name) as archive:
            for member in sorted(archive.namelist()):
                parts = member.split("/")
                if len(parts) != 4 or not parts[3].endswith(".png"):
                    continue
                class_name = f"{parts[1]}/{parts[2]}"
                if class_name in by_class and class_name not in seen_here:
                    continue  # Greek and Latin are duplicated byte for byte across the zips.
                seen_here.add(class_name)
                glyph = _decode_glyph(archive.read(member), image_size)
                by_class.setdefault(class_name, []).append(glyph)
    class_names = tuple(sorted(by_class))
    images = np.concatenate([np.stack(by_class[name]) for name in class_names])[..., None]
    y = np.repeat(np.arange(len(class_names)), [len(by_class[name]) for name in class_names])
    logger.info("Omniglot background: %d classes, %d images", len(class_names), len(images))
    return OmniglotCharacters(images.astype(np.float32), y.astype(np.int64), class_names)


@dataclass(frozen=True)
class CharacterSplit:
    train: LabelledSet
    validation: LabelledSet
    test: LabelledSet


def split_characters(
    characters: OmniglotCharacters, *, n_validation: int, n_test: int, seed: int
) -> CharacterSplit:
    """Class-disjoint split of the characters with a seeded shuffle."""
    n_classes = len(characters.class_names)
    if n_validation < 1 or n_test < 1 or n_validation + n_test >= n_classes:
        raise ValueError(f"Need 1 <= n_validation, n_test and their sum < {n_classes} classes.")
    order = np.random.default_rng(seed).permutation(n_classes)
    names = np.asarray(characters.class_names)
    test_names = tuple(sorted(names[order[:n_test]].tolist()))
    val_names = tuple(sorted(names[order[n_test : n_test + n_validation]].tolist()))
    train_names = tuple(sorted(names[order[n_test + n_validation :]].tolist()))
    full = characters.as_labelled()
    return CharacterSplit(full.subset(train_names), full.subset(val_names), full.subset(test_names))


def with_rotations(characters: LabelledSet) -> LabelledSet:
    """Each 90-degree rotation of a character becomes a new class, as in MAML and ProtoNets."""
    images, labels, names = [], [], []
    n = len(characters.class_names)
    for quarter in range(4):
        images.append(np.rot90(characters.x, k=quarter, axes=(1, 2)))
        labels.append(characters.y + quarter * n)
        names.extend(f"{name}@{90 * quarter}" for name in characters.class_names)
    return LabelledSet(
        np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), tuple(names)
    )


@dataclass(frozen=True)
class OmniglotRun:
    """One official 20-way 1-shot run: 20 training glyphs and 20 test glyphs, one per class."""

    name: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray


def load_omniglot_runs(
    root: Path | None = None, *, image_size: int = 28
) -> tuple[OmniglotRun, ...]:
    """The 20 runs of ``all_runs.zip``; ``class_labels.txt`` maps each test item to its class."""
    root = data_root() if root is None else root
    runs: list[OmniglotRun] = []
    with zipfile.ZipFile(root / "omniglot" / OMNIGLOT_RUNS_ZIP) as archive:
        run_names = sorted({m.split("/")[0] for m in archive.namelist() if m.startswith("run")})
        for run in run_names:
            pairs = [
                line.split()
                for line in archive.read(f"{run}/class_labels.txt").decode().splitlines()
                if line.strip()
            ]
            training_paths = sorted(
                m
                for m in archive.namelist()
                if m.startswith(f"{run}/training/") and m.endswith(".png")
            )
            class_of = {path: i for i, path in enumerate(training_paths)}
            support_x = np.stack(
                [_decode_glyph(archive.read(p), image_size) for p in training_paths]
            )
            query_x = np.stack([_decode_glyph(archive.read(test), image_size) for test, _ in pairs])
            query_y = np.array([class_of[train] for _, train in pairs], dtype=np.int64)
            runs.append(
                OmniglotRun(
                    name=run,
                    support_x=support_x[..., None],
                    support_y=np.arange(len(training_paths), dtype=np.int64),
                    query_x=query_x[..., None],
                    query_y=query_y,
                )
            )
    return tuple(runs)
