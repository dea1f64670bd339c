"""OriginChain: one origin's events as received, and the part of them verified against its signed checkpoints.

Events arrive in any order, duplicated, from any peer, possibly altered. They wait as candidates
(several per sequence number if copies disagree) until a signed checkpoint covers them and every
sequence number from the verified tip up to the checkpoint has a candidate. Then one walk from the
checkpoint's head hash down the `prev` links picks, per sequence number, the one candidate on the
origin's signed chain; the rest are forgeries and their senders are reported. Only verified events
leave this class.
"""
from __future__ import annotations

from typing import Any

from exchange.replication.records import GENESIS, Checkpoint, ReplEvent

MAX_CANDIDATES = 4          # disagreeing copies kept per sequence number
MAX_CHECKPOINTS = 64        # signed checkpoints above the verified tip kept per origin


class OriginChain:
    __slots__ = ("origin", "events", "base", "base_hash", "candidates", "contig", "checkpoints", "latest",
                 "usable_lamport", "public_key", "max_seen")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.events: list[ReplEvent] = []   # verified events base+1 .. base+len
        self.base = 0                        # sequence numbers <= base came inside a snapshot
        self.base_hash = GENESIS
        self.candidates: dict[int, list[tuple[ReplEvent, Any]]] = {}
        self.contig = 0                      # every seq in (verified, contig] has a candidate
        self.checkpoints: dict[int, Checkpoint] = {}
        self.latest: Checkpoint | None = None  # the newest checkpoint that matched the verified chain
        self.usable_lamport = 0              # lamport promise of `latest` (the watermark uses it)
        self.public_key: bytes | None = None
        self.max_seen = 0                    # highest seq anyone told us about (event or checkpoint)

    @property
    def verified(self) -> int:
        return self.base + len(self.events)

    @property
    def head(self) -> bytes:
        return self.events[-1].hash if self.events else self.base_hash

    def hash_at(self, seq: int) -> bytes | None:
        if seq == self.base:
            return self.base_hash
        if self.base < seq <= self.verified:
            return self.events[seq - self.base - 1].hash
        return None

    def event(self, seq: int) -> ReplEvent | None:
        if self.base < seq <= self.verified:
            return self.events[seq - self.base - 1]
        return None

    def reset_to(self, base: int, base_hash: bytes) -> None:
        """Start the chain after a snapshot that covered sequence numbers 1..base."""
        self.events = []
        self.base, self.base_hash = base, base_hash
        self.candidates = {s: c for s, c in self.candidates.items() if s > base}
        self.checkpoints = {s: c for s, c in self.checkpoints.items() if s > base}
        self.contig = base
        self._extend_contig()

    # --- input ---------------------------------------------------------------------------------
    def append_own(self, event: ReplEvent) -> None:
        """An event this node just created (or reloaded from its own log): verified by construction."""
        self.events.append(event)
        if self.contig < self.verified:
            self.contig = self.verified

    def add(self, event: ReplEvent, sender: Any) -> str:
        """'new', 'duplicate', or 'forged' (contradicts the verified chain: the sender lied)."""
        seq = event.seq
        if seq <= self.verified:
            known = self.hash_at(seq)
            if known is None or known == event.hash:   # below a snapshot base: nothing to compare
                return "duplicate"
            return "forged"
        if seq > self.max_seen:
            self.max_seen = seq
        held = self.candidates.get(seq)
        if held is None:
            self.candidates[seq] = [(event, sender)]
            if seq == self.contig + 1:
                self._extend_contig()
            return "new"
        for other, _ in held:
            if other.hash == event.hash:
                return "duplicate"
        if len(held) >= MAX_CANDIDATES:
            return "duplicate"
        held.append((event, sender))
        return "new"

    def _extend_contig(self) -> None:
        candidates = self.candidates
        contig = max(self.contig, self.verified)
        while contig + 1 in candidates:
            contig += 1
        self.contig = contig

    def add_checkpoint(self, checkpoint: Checkpoint) -> str:
        """Record a checkpoint whose signature was already verified: 'usable', 'held', 'stale' or 'equivocation'."""
        seq = checkpoint.seq
        if seq > self.max_seen:
            self.max_seen = seq
        if seq <= self.verified:
            known = self.hash_at(seq)
            if known is not None and known != checkpoint.head:
                return "equivocation"
            if checkpoint.lamport > self.usable_lamport:
                self.usable_lamport = checkpoint.lamport
                if known is not None and (self.latest is None or seq >= self.latest.seq):
                    self.latest = checkpoint
                return "usable"
            return "stale"
        if seq not in self.checkpoints:
            if len(self.checkpoints) >= MAX_CHECKPOINTS:
                del self.checkpoints[min(self.checkpoints)]
            self.checkpoints[seq] = checkpoint
        elif checkpoint.lamport > self.checkpoints[seq].lamport:
            self.checkpoints[seq] = checkpoint
        return "held"

    # --- verification --------------------------------------------------------------------------
    def verify(self) -> tuple[list[ReplEvent], list[Any], list[str]]:
        """Promote candidates covered by a checkpoint: (newly verified in seq order, forgers, problems)."""
        verified: list[ReplEvent] = []
        forgers: list[Any] = []
        problems: list[str] = []
        while self.checkpoints:
            usable = [s for s in self.checkpoints if s <= self.contig]
            if not usable:
                break
            top = max(usable)
            checkpoint = self.checkpoints[top]
            chosen: list[tuple[ReplEvent, Any]] = []
            expected = checkpoint.head
            broken = None
            for seq in range(top, self.verified, -1):
                match = None
                for event, sender in self.candidates[seq]:
                    if event.hash == expected and match is None:
                        match = (event, sender)
                    else:
                        forgers.append(sender)
                if match is None:
                    broken = seq
                    break
                self.candidates[seq] = [match]
                chosen.append(match)
                expected = match[0].prev
            if broken is not None:              # no copy at `broken` is on the signed chain: re-pull it
                del self.candidates[broken]
                self.contig = broken - 1
                problems.append(f"no valid copy of seq {broken}")
                continue
            if expected != self.head:           # the origin signed a chain that contradicts one it signed before
                del self.checkpoints[top]
                problems.append(f"checkpoint {top} contradicts the verified chain (origin equivocation)")
                continue
            for event, _ in reversed(chosen):
                del self.candidates[event.seq]
                self.events.append(event)
                verified.append(event)
            for seq in [s for s in self.checkpoints if s <= top]:
                del self.checkpoints[seq]
            if checkpoint.lamport > self.usable_lamport:
                self.usable_lamport = checkpoint.lamport
            self.latest = checkpoint
            self._extend_contig()
        return verified, forgers, problems

    @property
    def has_gap(self) -> bool:
        """Someone knows of events we cannot verify yet because sequence numbers are missing."""
        return self.max_seen > self.contig

    def unverified(self) -> int:
        return sum(len(c) for c in self.candidates.values())
