"""What opening a record log found: a torn tail it cut, damage it kept, and the indexes that are not there."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Damage:
    """Bytes [start, end) of one segment file that hold no intact record (end == start for a missing file)."""

    path: str
    start: int
    end: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} bytes {self.start}-{self.end}: {self.reason}"


@dataclass(frozen=True)
class RecoveryReport:
    """The result of `RecordLog.open`.

    - `torn_bytes` were cut from the end of `torn_path`: a crash in the middle of an append batch. Those records
      were never acknowledged (an append returns only after its whole batch is durable); `torn_indexes` are the
      ones whose headers were still readable.
    - `damaged` are bad bytes that a crash cannot explain (a flipped byte, a lost sector). They stay on disk, as
      evidence, until `repair` or `truncate_after` replaces them.
    - `missing` are the indexes between `first_index` and `last_index` without an intact record: the ones to
      fetch from peers and hand to `repair`.
    - `tail_damaged`: the newest records end in damage rather than a torn write, so records after `last_index`
      may have been acknowledged and lost too (how many is unknown). The log refuses appends until the caller
      decides (`truncate_after(last_index)`, then append what peers supply).
    """

    directory: str
    first_index: int
    last_index: int
    torn_bytes: int = 0
    torn_path: str | None = None
    torn_indexes: tuple[int, ...] = ()
    damaged: tuple[Damage, ...] = ()
    missing: tuple[range, ...] = ()
    tail_damaged: bool = False
    removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """Nothing acknowledged can have been lost (a cut torn tail is fine)."""
        return not self.damaged and not self.missing and not self.tail_damaged

    @property
    def missing_count(self) -> int:
        return sum(len(r) for r in self.missing)

    def summary(self) -> str:
        """One line for the log: what was found and what it means."""
        parts = [f"record log {self.directory}: indexes {self.first_index}..{self.last_index}"]
        if self.torn_bytes:
            parts.append(f"torn tail of {self.torn_bytes} bytes cut from {self.torn_path} (a crash mid-write; "
                         f"{len(self.torn_indexes)} unacknowledged records)")
        if self.damaged:
            parts.append(f"DAMAGE in the middle: {'; '.join(str(d) for d in self.damaged)}")
        if self.missing:
            ranges = ", ".join(_range_text(r) for r in self.missing)
            parts.append(f"{self.missing_count} records missing: {ranges} (recover them from peers)")
        if self.tail_damaged:
            parts.append(f"the newest records are damaged: records after {self.last_index} may be lost")
        parts += list(self.notes)
        return "; ".join(parts)


def _range_text(r: range) -> str:
    return str(r.start) if len(r) == 1 else f"{r.start}..{r.stop - 1}"
