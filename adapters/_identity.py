"""Telling one file generation from another: inode, content fingerprint and epoch.

An inode number does not identify a file. A deleted file's inode is handed to the next file
created on the same filesystem (on ext4 this happened five times out of five in our fault
injection), and ``copytruncate`` keeps the inode while replacing the content. A generation is
therefore named by three things:

* the inode, which tells a renamed file apart from a copy of it;
* a *fingerprint*, the sha256 of the file's first `FINGERPRINT_BYTES` bytes of content (of
  fewer when it was shorter the first time a line of it was handed out; the length is stored
  with the position), which tells a reused inode or a rewritten file apart from the old
  content. The idea is Vector's ``checksum`` fingerprinter and Filebeat's ``fingerprint`` file
  identity; unlike them we do not wait for a file to reach the full length before reading it,
  so two files whose first lines are equal and were read while short share a fingerprint;
* an *epoch*, counting the generations one source has moved through since its position was
  first stored. Two generations with the same inode and the same first bytes (a CSV file
  truncated and rewritten with the same header and first rows) differ only in it.

``"<inode>-<fingerprint prefix>-<epoch>"`` is the generation id that prefixes every offset key,
so a line at offset 40 of one generation never shares a key, and thus a quarantine row or an
incident, with the line at offset 40 of any later generation the source reads. The id depends
only on the file's content and on the stored position, so the same line gets the same key
after a restart (and, at epoch 0, when a file is read again from scratch).

Rotated generations are looked for among the followed file's *siblings*: files in the same
directory whose name starts with its name (``live.csv.1``, ``live.csv-20261130``,
``live.csv.2.gz``), as Filebeat and Vector do with a glob.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1024
"""How much of a file's start identifies it: Filebeat's default, enough for a CSV header and
several records, little enough to hash on every read in follow mode."""

_DIGEST_IN_KEY = 16
"""Hex digits of the fingerprint kept in offset keys: 64 bits, ample to tell generations apart."""


_COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip"})


def is_compressed(path: Path) -> bool:
    """Whether ``path`` is read through gzip (decided by its name, as ``zcat`` users expect)."""
    return path.suffix == ".gz"


def looks_compressed(path: Path) -> bool:
    """Whether ``path`` is named like a compressed file, in a format read or not."""
    return path.suffix in _COMPRESSED_SUFFIXES


@dataclass(frozen=True, slots=True)
class Generation:
    """One file generation, as far as offset keys and positions need to know it.

    Attributes
    ----------
    inode:
        Inode of the file the lines are read from.
    fingerprint:
        sha256 (hex) of the first ``fingerprint_bytes`` bytes of its content (decompressed for
        ``.gz`` files).
    fingerprint_bytes:
        How many bytes the fingerprint covers: `FINGERPRINT_BYTES`, or the file's size when it
        was smaller the first time a line of it was handed out.
    epoch:
        How many generations the source moved through before this one.
    """

    inode: int
    fingerprint: str
    fingerprint_bytes: int
    epoch: int

    @property
    def id(self) -> str:
        """``"<inode>-<fingerprint prefix>-<epoch>"``: the prefix of this generation's keys."""
        return f"{self.inode}-{self.fingerprint[:_DIGEST_IN_KEY]}-{self.epoch}"


@dataclass(frozen=True, slots=True)
class StoredPosition:
    """A file position as stored in the database, validated.

    ``fingerprint`` and ``fingerprint_bytes`` are ``None`` in positions written before
    fingerprints existed (``{"path", "inode", "offset"}``); such a position is trusted by inode
    and size only. ``size`` and ``mtime_ns`` describe the file when the batch was read, so a
    restart can say how much of a file that has since vanished was never read, and which
    rotated files came after it.
    """

    inode: int
    offset: int
    fingerprint: str | None = None
    fingerprint_bytes: int | None = None
    epoch: int = 0
    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def parse(cls, position: Mapping[str, Any]) -> StoredPosition:
        """Validate a stored position.

        Raises
        ------
        ValueError
            When a field is missing or has the wrong type; the message names it.
        """
        inode = position.get("inode")
        offset = position.get("offset")
        for name, value in (("inode", inode), ("offset", offset)):
            if not _natural(value):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
        optional: dict[str, int | None] = {}
        for name in ("fingerprint_bytes", "epoch", "size", "mtime_ns"):
            value = position.get(name)
            if value is not None and not _natural(value):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
            optional[name] = value
        fingerprint = position.get("fingerprint")
        if fingerprint is not None and not _is_sha256(fingerprint):
            raise ValueError(f"fingerprint must be a sha256 hex digest, got {fingerprint!r}.")
        if (fingerprint is None) != (optional["fingerprint_bytes"] is None):
            raise ValueError("fingerprint and fingerprint_bytes must be given together.")
        return cls(
            inode=int(inode),  # type: ignore[arg-type]
            offset=int(offset),  # type: ignore[arg-type]
            fingerprint=fingerprint,
            fingerprint_bytes=optional["fingerprint_bytes"],
            epoch=optional["epoch"] or 0,
            size=optional["size"],
            mtime_ns=optional["mtime_ns"],
        )

    def unread_bytes(self) -> int:
        """Bytes the file held beyond ``offset`` when the position was stored (0 if unknown)."""
        return 0 if self.size is None else max(self.size - self.offset, 0)


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_sha256(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


def head_of(path: Path, length: int) -> bytes | None:
    """The first ``length`` bytes of ``path``'s content, ``None`` if it cannot be read."""
    try:
        if is_compressed(path):
            with gzip.open(path, "rb") as stream:
                return stream.read(length)
        with path.open("rb") as handle:
            return handle.read(length)
    except (OSError, EOFError, zlib.error):
        return None


def digest(data: bytes) -> str:
    """The fingerprint of a file that starts with ``data``."""
    return hashlib.sha256(data).hexdigest()


def fingerprint_fd(fd: int, size: int) -> tuple[str, int]:
    """Fingerprint and its length for the open, uncompressed file ``fd`` of ``size`` bytes."""
    length = min(FINGERPRINT_BYTES, size)
    head = os.pread(fd, length, 0)
    return digest(head), len(head)


def matches(path: Path, fingerprint: str, length: int) -> bool:
    """Whether the first ``length`` bytes of ``path`` hash to ``fingerprint``."""
    head = head_of(path, length)
    return head is not None and len(head) == length and digest(head) == fingerprint


@dataclass(frozen=True, slots=True)
class Sibling:
    """A file beside the followed one that may be one of its rotated generations."""

    path: Path
    inode: int
    size: int  # on disk; compressed files are larger when decompressed
    mtime_ns: int

    @property
    def compressed(self) -> bool:
        """Whether it is read through gzip."""
        return is_compressed(self.path)


def siblings(path: Path) -> Iterator[Sibling]:
    """Regular files next to ``path`` whose name starts with its name (``path`` excluded)."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError as exc:
        logger.warning("cannot list %s to look for rotated files: %s", path.parent, exc)
        return
    for entry in entries:
        if entry.name == path.name or not entry.name.startswith(path.name):
            continue
        try:
            status = entry.stat(follow_symlinks=False)
        except OSError:  # rotated away again while we looked
            continue
        if stat.S_ISREG(status.st_mode):
            yield Sibling(Path(entry.path), status.st_ino, status.st_size, status.st_mtime_ns)


def find_generation(path: Path, stored: StoredPosition) -> Sibling | None:
    """The sibling of ``path`` holding the generation ``stored`` names, if one still does.

    Preference: the same inode with a matching fingerprint (the file was renamed), then any
    uncompressed file with the same fingerprint that is long enough (a ``copytruncate`` copy),
    then a ``.gz`` file with the same fingerprint (rotated, then compressed). A position
    without fingerprint matches the same inode only, and only if the file is long enough.
    """
    candidates: list[tuple[int, int, Sibling]] = []
    for sibling in siblings(path):
        if stored.fingerprint is None or stored.fingerprint_bytes is None:
            if sibling.inode == stored.inode and not sibling.compressed:
                if sibling.size >= stored.offset:
                    candidates.append((0, -sibling.size, sibling))
            continue
        if not sibling.compressed and sibling.size < stored.offset:
            continue
        if not matches(sibling.path, stored.fingerprint, stored.fingerprint_bytes):
            continue
        rank = 2 if sibling.compressed else 0 if sibling.inode == stored.inode else 1
        candidates.append((rank, -sibling.size, sibling))
    if not candidates:
        return None
    return min(candidates, key=lambda item: item[:2])[2]


def successors(path: Path, after_ns: int, exclude: set[int]) -> list[Sibling]:
    """Siblings last written after ``after_ns``, oldest first: generations rotated later.

    ``exclude`` holds inodes already accounted for (the generation just finished and the file
    at ``path`` itself). A rotated file is not written to once its writer has reopened the
    path, so modification times order the generations, whatever the naming scheme. Compressed
    files are listed too; whether to trust their times is the caller's decision (logrotate
    and gzip keep the original's, a ``gzip -c > file.gz`` pipeline does not).
    """
    later = [
        s for s in siblings(path) if s.mtime_ns > after_ns and s.inode not in exclude
    ]
    return sorted(later, key=lambda s: (s.mtime_ns, str(s.path)))


def decompressed_size(path: Path) -> int | None:
    """Size of a ``.gz`` file's content from its trailer (modulo 4 GiB, as gzip stores it)."""
    try:
        with path.open("rb") as handle:
            handle.seek(-4, os.SEEK_END)
            return int.from_bytes(handle.read(4), "little")
    except OSError:
        return None
