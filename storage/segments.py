"""One segment file of a record log, as the log keeps it in memory, and how it is read back at open.

In memory a segment is its first index, its salt, its size and an `array('I')` of record offsets (0 for an
index with no intact record), so the log's index costs four bytes per live record and nothing per compacted one.
"""
from __future__ import annotations

import os
import re
from array import array
from dataclasses import dataclass, field

from storage.frames import DATA_START, FRAME_OVERHEAD, BadSpan, decode_segment_header, scan, tail_is_torn
from storage.recovery import Damage

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


class Segment:
    """A segment file: records `first`.. at `offsets`; `size` is where the next append goes."""

    __slots__ = ("first", "path", "salt", "offsets", "size")

    def __init__(self, first: int, path: str, salt: bytes | None, offsets: array[int], size: int) -> None:
        self.first = first
        self.path = path
        self.salt = salt  # None when the header is unreadable: no record of it can be trusted
        self.offsets = offsets
        self.size = size

    @property
    def last(self) -> int:
        """The highest index this segment has a slot for (first - 1 when it holds none)."""
        return self.first + len(self.offsets) - 1

    def offset_of(self, index: int) -> int:
        """The record's offset, 0 when it has no intact record here."""
        slot = index - self.first
        return self.offsets[slot] if 0 <= slot < len(self.offsets) else 0

    def present(self) -> list[int]:
        return [self.first + slot for slot, offset in enumerate(self.offsets) if offset]


@dataclass
class LoadedSegment:
    """A segment read at open, with what was wrong with it."""

    segment: Segment
    damage: list[Damage] = field(default_factory=list)
    torn_bytes: int = 0
    torn_indexes: list[int] = field(default_factory=list)
    tail_damaged: bool = False
    empty_leftover: bool = False  # a newest segment whose creation a crash interrupted: holds nothing
    notes: list[str] = field(default_factory=list)


def load_segment(path: str, first: int, data: bytes, upper: int | None, newest: bool) -> LoadedSegment:
    """Read a segment's bytes: intact records, bad spans as damage, and (newest only) a torn tail to cut.

    `upper` is the next segment's first index: a record at or past it cannot belong here. In the newest segment,
    records after the last batch end whose bad bytes all look torn are a crash mid-append and are cut (the caller
    truncates the file to `segment.size`); anything else is damage and stays."""
    header = decode_segment_header(data)
    if header is None or header[0] != first:
        if newest and len(data) <= DATA_START:
            return LoadedSegment(Segment(first, path, None, array("I"), 0), empty_leftover=True)
        reason = "segment header unreadable" if header is None else f"segment header says first index {header[0]}"
        return LoadedSegment(Segment(first, path, None, array("I"), len(data)),
                             [Damage(path, 0, len(data), reason)], tail_damaged=newest)
    salt = header[1]
    found = scan(data, salt, first)
    notes = [] if header[2] == 2 else [f"{path}: one of the two header copies is damaged (the other is intact)"]
    limit = first + len(data) // FRAME_OVERHEAD  # a segment cannot hold more records than that
    if upper is not None:
        limit = min(limit, upper)
    bad = list(found.bad)
    keep: list[int] = []
    for n in range(len(found)):
        if found.indexes[n] < limit:
            keep.append(n)
        else:
            bad.append(BadSpan(found.offsets[n], found.ends[n],
                               f"record {found.indexes[n]} lies outside this segment's index range"))
    bad.sort(key=lambda span: span.start)
    loaded = LoadedSegment(Segment(first, path, salt, array("I"), len(data)), notes=notes)
    if newest:
        batch_ends = [n for n in keep if found.batch_ends[n]]
        cut = found.ends[batch_ends[-1]] if batch_ends else DATA_START
        tail_frames = [n for n in keep if found.offsets[n] >= cut]
        tail_bad = [span for span in bad if span.start >= cut]
        if tail_bad and not tail_is_torn(data, tail_bad):
            loaded.tail_damaged = True
        else:
            loaded.torn_bytes = len(data) - cut
            loaded.torn_indexes = sorted({found.indexes[n] for n in tail_frames}
                                         | {span.index for span in tail_bad if span.index is not None})
            keep = keep[:len(keep) - len(tail_frames)]
            bad = [span for span in bad if span.start < cut]
            loaded.segment.size = cut
    loaded.damage = [Damage(path, span.start, span.end, span.reason) for span in bad]
    if keep:
        offsets = loaded.segment.offsets = array("I", bytes(4 * (found.indexes[keep[-1]] - first + 1)))
        for n in keep:
            offsets[found.indexes[n] - first] = found.offsets[n]
    return loaded


def unreadable_segment(path: str, first: int, reason: str, newest: bool) -> LoadedSegment:
    """A segment the disk will not read back (EIO): all of it counts as damaged; repair rewrites it."""
    return LoadedSegment(Segment(first, path, None, array("I"), 0), [Damage(path, 0, 0, reason)],
                         tail_damaged=newest)


def segment_path(directory: str, first_index: int) -> str:
    return os.path.join(directory, segment_name(first_index))
