"""Rebuild the bundled NSL-KDD sample from the full files in ../shared/data/nsl-kdd.

The sample exists so that `make run` and the core tests work on a machine without the
full datasets. It is drawn once, with a fixed seed, and committed; this script documents
exactly how, so anyone can check it against the originals.

- reference.csv.gz: 8,000 records of KDDTrain+_20Percent.txt. Every record of the rare
  attack types (fewer than 200 in the file) is kept so few-shot training has them; the rest
  is a uniform draw. Rows keep the file's order.
- stream.csv.gz: 10,000 records of KDDTest+.txt, a uniform draw kept in file order. KDDTest+
  holds attack types never seen in training, and its traffic mix differs from the training
  file: the real shift the agent should flag.

Usage: python examples/make_sample.py [SOURCE_DIR]
"""

from __future__ import annotations

import gzip
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

SEED = 20261129
REFERENCE_SIZE = 8_000
STREAM_SIZE = 10_000
RARE_BELOW = 200


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _write_gz(path: Path, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode()
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)


def main() -> None:
    default = Path(os.environ.get("METASENTRY_DATA", Path(__file__).parents[2] / "shared" / "data"))
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else default / "nsl-kdd"
    rng = np.random.default_rng(SEED)
    out = Path(__file__).parent / "nsl-kdd"

    train = _read_lines(source / "KDDTrain+_20Percent.txt")
    labels = [line.split(",")[41] for line in train]
    counts = Counter(labels)
    rare = [i for i, lab in enumerate(labels) if counts[lab] < RARE_BELOW]
    common = [i for i, lab in enumerate(labels) if counts[lab] >= RARE_BELOW]
    drawn = rng.choice(common, size=REFERENCE_SIZE - len(rare), replace=False)
    keep = sorted(set(rare) | set(drawn.tolist()))
    _write_gz(out / "reference.csv.gz", [train[i] for i in keep])

    test = _read_lines(source / "KDDTest+.txt")
    keep = sorted(rng.choice(len(test), size=STREAM_SIZE, replace=False).tolist())
    _write_gz(out / "stream.csv.gz", [test[i] for i in keep])
    print(f"wrote {out}/reference.csv.gz and {out}/stream.csv.gz")


if __name__ == "__main__":
    main()
