"""MNIST t10k for the adversarial and poisoning benchmarks: one split, one stream format.

Both sides of the comparison with IBM ART (``bench/art_side.py`` in its own venv, MetaSentry in the
project's) must see the same images in the same roles, so the split is decided here, once: the
10,000 t10k images are divided, stratified by digit, into

- **train** (5,000): the CNN is trained on these (and a poisoning attack poisons these);
- **detector** (2,000): clean images a detector may fit or calibrate on (ART's
  ``BinaryInputDetector`` also trains on adversarial versions of them);
- **test** (3,000): clean images and their adversarial versions, scored by every detector.

These are the sizes of an earlier measurement of ART on this kind of machine, so the figures
compare. Each digit is divided in the same proportions (largest-remainder
rounding, so the parts hold exactly 5,000 / 2,000 / 3,000), which images land where depends only
on ``seed``, and each part is shuffled so that a stream made from it is not sorted by digit.

Pixels are float32 in ``[0, 1]`` (``uint8 / 255``), shape ``[n, 28, 28]``. The files are the IDX
gzip pair of ``mnist/`` under the data root: ``$METASENTRY_DATA``, else ``/work/shared/data``, else
``../shared/data`` beside the repository (as for :mod:`bench.fewshot_data`).

Stream records (:func:`write_stream`), one JSON object per line::

    {"id": "test-00017", "image": [[0.0, ..., 0.3294], ... 28 rows], "label": "7",
     "truth": "clean"}

``image`` is 28 lists of 28 pixel values rounded to 4 decimals (``pixels="float"``, the default;
the rounding moves a pixel by at most 5e-5, far below any attack budget) or the 0..255 integers of
the original file (``pixels="uint8"``; adversarial images are then rounded to the nearest level,
which may undo an attack of budget below 1/255). ``truth`` is the ground truth for scoring and is
not meant to be read by the agent's detectors.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bench.fewshot_data import DATA_ENV, data_root

MNIST_DIR = "mnist"
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"
CLASSES: tuple[str, ...] = tuple(str(digit) for digit in range(10))

SPLIT_SIZES: dict[str, int] = {"train": 5000, "detector": 2000, "test": 3000}
DEFAULT_SEED = 0
PIXEL_DECIMALS = 4

PixelFormat = Literal["float", "uint8"]
Truth = Literal["clean", "adversarial"]

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def mnist_dir(root: Path | None = None) -> Path:
    """The folder holding the t10k IDX files."""
    return (data_root() if root is None else Path(root)) / MNIST_DIR


@dataclass(frozen=True)
class MnistPart:
    """Images ``x`` (float32 ``[n, 28, 28]`` in [0, 1]), digits ``y`` (int64) and ``index``, the
    position of each image in the t10k files (int64), so any record can be traced back."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.x) == len(self.y) == len(self.index):
            raise ValueError("x, y and index must have the same number of rows.")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class MnistSplit:
    """The three disjoint parts of t10k, and the seed that drew them."""

    train: MnistPart
    detector: MnistPart
    test: MnistPart
    seed: int

    def parts(self) -> dict[str, MnistPart]:
        return {"train": self.train, "detector": self.detector, "test": self.test}


def _read_idx(path: Path, magic: int, header_ints: int) -> tuple[tuple[int, ...], bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"MNIST file {path} is missing; set {DATA_ENV} to the data root "
                                f"that holds {MNIST_DIR}/{path.name}.")
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    header = struct.unpack(f">{header_ints}I", raw[: 4 * header_ints])
    if header[0] != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind: magic "
                         f"{header[0]:#010x}, expected {magic:#010x}.")
    return header[1:], raw[4 * header_ints:]


def load_mnist_t10k(root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 t10k images (float32 ``[10000, 28, 28]`` in [0, 1]) and digits (int64)."""
    folder = mnist_dir(root)
    (n, rows, cols), pixels = _read_idx(folder / IMAGES_FILE, _IDX_IMAGES_MAGIC, 4)
    (n_labels,), labels = _read_idx(folder / LABELS_FILE, _IDX_LABELS_MAGIC, 2)
    if n != n_labels or len(pixels) != n * rows * cols or len(labels) != n:
        raise ValueError(f"the MNIST files in {folder} disagree: {n} images of {rows}x{cols} "
                         f"({len(pixels)} bytes), {n_labels} labels ({len(labels)} bytes).")
    x = np.frombuffer(pixels, dtype=np.uint8).reshape(n, rows, cols).astype(np.float32) / 255.0
    y = np.frombuffer(labels, dtype=np.uint8).astype(np.int64)
    return x, y


def _apportion(class_counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class shares of ``total`` proportional to ``class_counts``, summing exactly to it."""
    exact = class_counts * (total / class_counts.sum())
    shares = np.floor(exact).astype(np.int64)
    # Largest remainders first; ties go to the lower class, so the result is deterministic.
    order = np.lexsort((np.arange(len(exact)), -(exact - shares)))
    shares[order[: total - shares.sum()]] += 1
    return shares


def stratified_split(
    y: np.ndarray,
    sizes: Sequence[int],
    seed: int = DEFAULT_SEED,
) -> list[np.ndarray]:
    """Indices into ``y`` for parts of the given sizes, each class divided in proportion.

    Every part holds each class in (nearly) the proportion it has in ``y``, the parts are disjoint,
    and each part's indices are in a seeded random order.

    >>> y = np.repeat(np.arange(3), [40, 30, 30])
    >>> parts = stratified_split(y, [50, 20, 30], seed=1)
    >>> [len(p) for p in parts], [int((y[p] == 0).sum()) for p in parts]
    ([50, 20, 30], [20, 8, 12])
    """
    y = np.asarray(y)
    sizes = [int(size) for size in sizes]
    if any(size < 0 for size in sizes) or sum(sizes) > len(y):
        raise ValueError(f"part sizes {sizes} must be non-negative and sum to at most {len(y)}.")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    pools = [rng.permutation(np.flatnonzero(y == cls)) for cls in classes]
    taken = np.zeros(len(classes), dtype=np.int64)
    remaining = counts.copy()
    parts = []
    for i, size in enumerate(sizes):
        last_and_all = i == len(sizes) - 1 and sum(sizes) == len(y)
        shares = remaining if last_and_all else _apportion(counts, size)
        shares = np.minimum(shares, remaining)
        # Rounding may leave a part short when a class runs out; top it up from the largest pools.
        while shares.sum() < size:
            shares[np.argmax(remaining - shares)] += 1
        part = np.concatenate([pool[start:start + share]
                               for pool, start, share in zip(pools, taken, shares, strict=True)])
        taken += shares
        remaining -= shares
        parts.append(rng.permutation(part))
    return parts


def load_mnist_split(root: Path | None = None, seed: int = DEFAULT_SEED) -> MnistSplit:
    """t10k divided into 5,000 train / 2,000 detector / 3,000 test, stratified by digit."""
    x, y = load_mnist_t10k(root)
    train, detector, test = stratified_split(y, list(SPLIT_SIZES.values()), seed=seed)
    train_part, detector_part, test_part = (MnistPart(x[i], y[i], i.astype(np.int64))
                                            for i in (train, detector, test))
    return MnistSplit(train=train_part, detector=detector_part, test=test_part, seed=seed)


def _image_rows(images: np.ndarray, pixels: PixelFormat) -> list[list[list[float]]]:
    if pixels == "float":
        return np.round(images.astype(np.float64), PIXEL_DECIMALS).tolist()  # type: ignore[no-any-return]
    return np.rint(images * 255.0).astype(np.uint8).tolist()  # type: ignore[no-any-return]


def write_stream(
    path: Path | str,
    part: MnistPart,
    *,
    adversarial: np.ndarray | None = None,
    adversarial_labels: np.ndarray | None = None,
    positions: Sequence[int] | np.ndarray | None = None,
    id_prefix: str = "mnist",
    pixels: PixelFormat = "float",
) -> list[Truth]:
    """Write ``part`` as JSON Lines, with adversarial images mixed in at ``positions``.

    Parameters
    ----------
    path
        The ``.jsonl`` file to write (overwritten).
    part
        The clean records, written in their order.
    adversarial
        Optional float32 ``[m, 28, 28]`` (or ``[m, 784]``) images in [0, 1] to mix in.
    adversarial_labels
        The digit each adversarial image really shows (int ``[m]``); the ``label`` field of an
        adversarial record holds it, as a stream's labels would.
    positions
        Where each adversarial image goes in the written stream: ``m`` distinct line numbers in
        ``[0, len(part) + m)``. Required with ``adversarial``.
    id_prefix
        Records are named ``{id_prefix}-{t10k index:05d}``, and adversarial ones
        ``{id_prefix}-adv-{k:05d}`` (``k``: position in ``adversarial``).
    pixels
        ``"float"`` (4 decimals) or ``"uint8"`` (0..255); see the module docstring.

    Returns
    -------
    list of str
        The ``truth`` of each written line, in order, for scoring without re-reading the file.
    """
    if pixels not in ("float", "uint8"):
        raise ValueError(f"pixels must be one of ['float', 'uint8'], got {pixels!r}.")
    n = len(part)
    if adversarial is None:
        if positions is not None or adversarial_labels is not None:
            raise ValueError("positions and adversarial_labels need adversarial images.")
        adv = np.zeros((0, 28, 28), dtype=np.float32)
        adv_y = np.zeros(0, dtype=np.int64)
        where = np.zeros(0, dtype=np.int64)
    else:
        adv = np.asarray(adversarial, dtype=np.float32).reshape(-1, 28, 28)
        if positions is None or adversarial_labels is None:
            raise ValueError("adversarial images need positions and adversarial_labels.")
        adv_y = np.asarray(adversarial_labels, dtype=np.int64)
        where = np.asarray(positions, dtype=np.int64)
        m = len(adv)
        if adv_y.shape != (m,) or where.shape != (m,):
            raise ValueError(f"adversarial_labels and positions need one entry per adversarial "
                             f"image ({m}), got shapes {adv_y.shape} and {where.shape}.")
        if m and (where.min() < 0 or where.max() >= n + m or len(np.unique(where)) != m):
            raise ValueError(f"positions must be {m} distinct line numbers in [0, {n + m}).")
    total = n + len(adv)
    is_adv = np.zeros(total, dtype=bool)
    is_adv[where] = True
    # Line i takes the next clean record unless it is an adversarial position.
    source = np.empty(total, dtype=np.int64)
    source[~is_adv] = np.arange(n)
    source[where] = np.arange(len(adv))
    clean_rows = _image_rows(part.x, pixels)
    adv_rows = _image_rows(adv, pixels)
    truths: list[Truth] = []
    with open(path, "w", encoding="utf-8") as handle:
        for line in range(total):
            k = int(source[line])
            if is_adv[line]:
                record = {"id": f"{id_prefix}-adv-{k:05d}", "image": adv_rows[k],
                          "label": CLASSES[int(adv_y[k])], "truth": "adversarial"}
                truths.append("adversarial")
            else:
                record = {"id": f"{id_prefix}-{int(part.index[k]):05d}", "image": clean_rows[k],
                          "label": CLASSES[int(part.y[k])], "truth": "clean"}
                truths.append("clean")
            handle.write(json.dumps(record, separators=(",", ":")))
            handle.write("\n")
    return truths


def read_stream(path: Path | str) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Images (float32 ``[n, 28, 28]`` in [0, 1]), ids, labels and truths of a stream file.

    For tests and scoring; ``uint8`` streams are scaled back to [0, 1].
    """
    images, ids, labels, truths = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            images.append(record["image"])
            ids.append(record["id"])
            labels.append(record["label"])
            truths.append(record.get("truth", "clean"))
    raw = np.asarray(images)
    x = raw.astype(np.float32).reshape(-1, 28, 28)
    if np.issubdtype(raw.dtype, np.integer):  # a "uint8" stream: JSON integers
        x /= 255.0
    return x, ids, labels, truths
