"""The bytes of a record-log segment: a header, then framed records; and the scanner that reads them back.

Segment file `<first index, 20 digits>.seg`:

    header (32 bytes, written twice so one damaged copy does not lose the segment):
        magic "XNLOGSEG" | first index u64 | salt 8 random bytes | crc32 of the preceding 24 bytes | 4 zero bytes
    frames, each:
        magic b"\xabRL1" | flags u8 | body length u32 | index u64 | crc32(body) u32 | header crc u32 | body | 0xA5

All integers are big-endian. The header crc covers the salt and the frame's first 21 bytes, so a frame is
recognised only with its own segment's salt: bytes that merely look like a frame (inside a record's body, say)
cannot be mistaken for one when the scanner resynchronises after damage. Flag bit 0 marks the last record of an
append batch; a batch is durable as a whole or not at all, so records after the last batch end are a torn write.
The end byte 0xA5 means an intact frame never ends in a zero byte, so a run of zeros at the end of a file is
never record data (see `tail_is_torn`).

The scanner never stops at the first bad byte: after an unreadable header it searches for the next frame, so
damage in the middle leaves the records after it readable (LevelDB drops the rest of a 32 KiB block instead;
etcd stops at the first bad record).
"""
from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Sequence

SEGMENT_MAGIC = b"XNLOGSEG"
SEGMENT_HEADER = struct.Struct(">8sQ8sI4x")
DATA_START = 2 * SEGMENT_HEADER.size
FRAME_MAGIC = b"\xabRL1"
FRAME_HEAD = struct.Struct(">4sBIQI")
FRAME_HEAD_CRC = struct.Struct(">I")
FRAME_PREFIX = FRAME_HEAD.size + FRAME_HEAD_CRC.size  # bytes before the body
FRAME_END = 0xA5
FRAME_OVERHEAD = FRAME_PREFIX + 1
FLAG_BATCH_END = 0x01
MAX_RECORD_BYTES = 64 * 1024 * 1024
_END_BYTE = bytes([FRAME_END])
SECTOR = 512


def encode_segment_header(first_index: int, salt: bytes) -> bytes:
    """Both copies of a segment header."""
    body = SEGMENT_HEADER.pack(SEGMENT_MAGIC, first_index, salt, 0)[:24]
    one = SEGMENT_HEADER.pack(SEGMENT_MAGIC, first_index, salt, zlib.crc32(body))
    return one + one


def decode_segment_header(data: bytes) -> tuple[int, bytes, int] | None:
    """(first index, salt, how many copies are intact), or None when neither copy is intact or they disagree."""
    found: list[tuple[int, bytes]] = []
    for start in (0, SEGMENT_HEADER.size):
        chunk = data[start:start + SEGMENT_HEADER.size]
        if len(chunk) < SEGMENT_HEADER.size:
            continue
        magic, first, salt, crc = SEGMENT_HEADER.unpack(chunk)
        if magic == SEGMENT_MAGIC and zlib.crc32(chunk[:24]) == crc and chunk[28:] == bytes(4):
            found.append((first, salt))
    if not found or any(item != found[0] for item in found):
        return None
    return found[0][0], found[0][1], len(found)


def encode_batch(first_index: int, bodies: Sequence[bytes], salt: bytes, *, each_ends_batch: bool = False) -> bytes:
    """Frames for `bodies` at consecutive indexes; the last one (or every one) marks the end of a batch."""
    salt_crc = zlib.crc32(salt)
    parts: list[bytes] = []
    last = len(bodies) - 1
    for offset, body in enumerate(bodies):
        if len(body) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(body)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")
        flags = FLAG_BATCH_END if each_ends_batch or offset == last else 0
        head = FRAME_HEAD.pack(FRAME_MAGIC, flags, len(body), first_index + offset, zlib.crc32(body))
        parts += (head, FRAME_HEAD_CRC.pack(zlib.crc32(head, salt_crc)), body, _END_BYTE)
    return b"".join(parts)


def frame_length(buf: bytes, pos: int) -> int | None:
    """The whole length of the frame that starts at `pos`, as its header declares; None when the header is not
    all there or declares an impossible length."""
    if len(buf) - pos < FRAME_HEAD.size:
        return None
    length = FRAME_HEAD.unpack_from(buf, pos)[2]
    return FRAME_OVERHEAD + length if length <= MAX_RECORD_BYTES else None


def decode_frame(buf: bytes, pos: int, salt: bytes, expected_index: int) -> bytes | None:
    """The body of the frame at `pos`, or None when it is incomplete, not intact, or not `expected_index`."""
    if len(buf) - pos < FRAME_OVERHEAD:
        return None
    magic, flags, length, index, body_crc = FRAME_HEAD.unpack_from(buf, pos)
    (head_crc,) = FRAME_HEAD_CRC.unpack_from(buf, pos + FRAME_HEAD.size)
    start = pos + FRAME_PREFIX
    body = buf[start:start + length]
    if (magic != FRAME_MAGIC or index != expected_index or len(buf) < start + length + 1
            or buf[start + length] != FRAME_END or flags & ~FLAG_BATCH_END
            or zlib.crc32(buf[pos:pos + FRAME_HEAD.size], zlib.crc32(salt)) != head_crc
            or zlib.crc32(body) != body_crc):
        return None
    return body


@dataclass(frozen=True)
class BadSpan:
    """Bytes [start, end) of a segment that hold no intact record. `index` is the record's index when its
    header was intact; `incomplete` when the record claims more bytes than the file has."""

    start: int
    end: int
    reason: str
    index: int | None = None
    incomplete: bool = False


@dataclass
class Scan:
    """Intact frames (parallel arrays, in file order) and the bad spans between them."""

    offsets: array[int] = field(default_factory=lambda: array("Q"))
    ends: array[int] = field(default_factory=lambda: array("Q"))
    indexes: array[int] = field(default_factory=lambda: array("Q"))
    batch_ends: bytearray = field(default_factory=bytearray)
    bad: list[BadSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def scan(data: bytes, salt: bytes, min_index: int, start: int = DATA_START) -> Scan:
    """Every intact frame of a segment with strictly increasing indexes of at least `min_index`."""
    result = Scan()
    salt_crc = zlib.crc32(salt)
    size = len(data)
    pos = start
    bad_from: int | None = None
    last_index = min_index - 1
    head_size = FRAME_HEAD.size
    unpack, unpack_crc, crc32 = FRAME_HEAD.unpack_from, FRAME_HEAD_CRC.unpack_from, zlib.crc32

    def close_bad(at: int) -> None:
        nonlocal bad_from
        if bad_from is not None:
            result.bad.append(BadSpan(bad_from, at, "unreadable record header"))
            bad_from = None

    while pos < size:
        if size - pos < FRAME_OVERHEAD:
            close_bad(pos)
            result.bad.append(BadSpan(pos, size, "incomplete record header", incomplete=True))
            break
        magic, flags, length, index, body_crc = unpack(data, pos)
        if (magic != FRAME_MAGIC or flags & ~FLAG_BATCH_END or length > MAX_RECORD_BYTES
                or crc32(data[pos:pos + head_size], salt_crc) != unpack_crc(data, pos + head_size)[0]):
            if bad_from is None:
                bad_from = pos
            found = data.find(FRAME_MAGIC, pos + 1)
            pos = size if found < 0 else found
            continue
        close_bad(pos)
        end = pos + FRAME_OVERHEAD + length
        if end > size:
            result.bad.append(BadSpan(pos, size, f"incomplete record {index}", index, incomplete=True))
            break
        if index <= last_index:
            result.bad.append(BadSpan(pos, end, f"record {index} out of order after {last_index}", index))
        elif data[end - 1] != FRAME_END or crc32(data[pos + FRAME_PREFIX:end - 1]) != body_crc:
            result.bad.append(BadSpan(pos, end, f"checksum mismatch in record {index}", index))
        else:
            result.offsets.append(pos)
            result.ends.append(end)
            result.indexes.append(index)
            result.batch_ends.append(flags & FLAG_BATCH_END)
            last_index = index
        pos = end
    if bad_from is not None:
        result.bad.append(BadSpan(bad_from, size, "unreadable record header"))
    return result


def tail_is_torn(data: bytes, tail_bad: list[BadSpan]) -> bool:
    """Whether bad bytes after the newest segment's last complete batch are what a crash mid-write leaves
    rather than damage. Two shapes: the file ends inside a record and that is the only bad span (the write was
    cut short); or the file ends in zeros from a sector boundary on and no bad span ends before it (the size
    grew but those sectors were never written). Like etcd's torn-entry rule, but a damaged intact-length
    record cannot pass for torn: frames end in a non-zero byte, so a single flipped bit never makes zeros."""
    if len(tail_bad) == 1 and tail_bad[0].incomplete:
        return True
    start = tail_bad[0].start
    tail = data[start:]
    zeros_from = start + len(tail.rstrip(b"\0"))
    sector_start = -(-zeros_from // SECTOR) * SECTOR
    return sector_start < len(data) and all(span.end > sector_start for span in tail_bad)
