"""AtomicDocument: a small value (genesis, the consensus write-ahead record, a log manifest) replaced whole.

Each version is its own file `<name>.<generation, 20 digits>`, written by `replace_file` (temporary file,
fsync, rename, directory fsync), so a crash leaves the old version or the whole new one and never a torn
file. The previous version is kept beside the newest. A newest version that fails its checksum is damage,
not a crash, and `load` says so instead of quietly returning the older value: for a validator's vote record,
an older value would let it sign twice. `load(allow_previous=True)` is the explicit way to take the older one.

File layout: magic "XNDOC001" | generation u64 | length u32 | value | crc32 of everything before it.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass

from storage.errors import DAMAGED, StorageError
from storage.fs import TMP_SUFFIX, FileSystem, OsFileSystem, replace_file

log = logging.getLogger("storage.atomic")

DOC_MAGIC = b"XNDOC001"
DOC_HEAD = struct.Struct(">8sQI")
DOC_CRC = struct.Struct(">I")
_GEN_DIGITS = 20


@dataclass(frozen=True)
class Document:
    """A loaded version. `skipped` names newer versions passed over as damaged (only with allow_previous)."""

    value: bytes
    generation: int
    path: str
    skipped: tuple[str, ...] = ()


def encode_document(generation: int, value: bytes) -> bytes:
    head = DOC_HEAD.pack(DOC_MAGIC, generation, len(value)) + value
    return head + DOC_CRC.pack(zlib.crc32(head))


def decode_document(data: bytes, generation: int) -> bytes:
    """The value, or ValueError saying what is wrong."""
    if len(data) < DOC_HEAD.size + DOC_CRC.size:
        raise ValueError(f"{len(data)} bytes, shorter than a header")
    magic, stored_generation, length = DOC_HEAD.unpack_from(data)
    if magic != DOC_MAGIC:
        raise ValueError("not a document (bad magic)")
    if len(data) != DOC_HEAD.size + length + DOC_CRC.size:
        raise ValueError(f"length {len(data)} does not match the {length}-byte value it declares")
    (crc,) = DOC_CRC.unpack_from(data, len(data) - DOC_CRC.size)
    if zlib.crc32(data[:-DOC_CRC.size]) != crc:
        raise ValueError("checksum mismatch")
    if stored_generation != generation:
        raise ValueError(f"holds generation {stored_generation}, its name says {generation}")
    return data[DOC_HEAD.size:DOC_HEAD.size + length]


class AtomicDocument:
    """One named document in `directory`. Not for concurrent writers (DATA_DIR's lock keeps others out)."""

    def __init__(self, directory: str | os.PathLike[str], name: str, fs: FileSystem | None = None) -> None:
        if not name or "/" in name or "." in name:
            raise ValueError(f"document name {name!r} must be a plain word")
        self.directory = os.fspath(directory)
        self.name = name
        self.fs = fs or OsFileSystem()
        self._generation: int | None = None  # the highest generation on disk, once listed
        self._directory_made = False

    def path_for(self, generation: int) -> str:
        return os.path.join(self.directory, f"{self.name}.{generation:0{_GEN_DIGITS}d}")

    def generations(self) -> list[int]:
        """Generations on disk, newest first (temporary files excluded)."""
        return self._listing()[0]

    def _listing(self) -> tuple[list[int], list[str]]:
        """(generations newest first, leftover temporary files of this document)."""
        if not self.fs.exists(self.directory):
            self._generation = 0
            return [], []
        prefix = self.name + "."
        found, leftovers = [], []
        for entry in self.fs.listdir(self.directory):
            if not entry.startswith(prefix):
                continue
            digits = entry[len(prefix):]
            if len(digits) == _GEN_DIGITS and digits.isdigit():
                found.append(int(digits))
            elif entry.endswith(TMP_SUFFIX):
                leftovers.append(os.path.join(self.directory, entry))
        found.sort(reverse=True)
        self._generation = found[0] if found else 0
        return found, leftovers

    def load(self, *, allow_previous: bool = False) -> Document | None:
        """The newest version, None if none was ever stored. A damaged newest version raises kind `damaged`
        naming the file, unless `allow_previous`: then the newest intact one is returned with `skipped` set."""
        skipped: list[str] = []
        for generation in self.generations():
            path = self.path_for(generation)
            try:
                value = decode_document(self.fs.read_file(path), generation)
            except ValueError as exc:
                problem = f"{path}: {exc}"
                if not allow_previous:
                    raise StorageError(DAMAGED, f"document {problem}; refusing to guess its value (an older "
                                       f"version may exist; load it explicitly to accept it)", path=path) from None
                log.warning("document %s is damaged; trying the version before it", problem)
                skipped.append(path)
                continue
            self.fs.fsync_dir(self.directory)  # after a restart the rename may be in the page cache only
            return Document(value, generation, path, tuple(skipped))
        if skipped:
            raise StorageError(DAMAGED, f"every version of document {self.name} in {self.directory} is damaged: "
                               f"{', '.join(skipped)}", path=skipped[0])
        return None

    def store(self, value: bytes) -> Document:
        """Durably replace the document; on return the new value survives a crash. Keeps one older version."""
        if not self._directory_made:
            self.fs.makedirs(self.directory)
            self._directory_made = True
        if self._generation is None:
            self.generations()
        assert self._generation is not None
        generation = self._generation + 1
        path = self.path_for(generation)
        replace_file(self.fs, path, [encode_document(generation, value)])
        self._generation = generation
        generations, leftovers = self._listing()
        for old in [self.path_for(g) for g in generations[2:]] + leftovers:
            self.fs.remove_quietly(old)
        return Document(value, generation, path)
