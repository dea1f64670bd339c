"""Heights peers claim (heartbeats, votes and blocks ahead of ours, sync answers), and what of them to believe.

A claim costs nothing: any key can link and say 2^62. So a claimed height counts (for being "behind" in
/ready, for asking for a seat, for whom sync asks) only when at least f + 1 current validators claim it, or
when we checked a quorum certificate at that height (`BlockSync.network_height`): the (f + 1)-th highest of
the validators' claims is claimed by at least one honest validator, so no f liars and no stranger can raise
it, and a stranger's claim never blocks anything. Where an upper bound is needed (finishing the recovery of
a damaged tail), the highest validator's claim counts once tested, and for the only validator of a network
anyone's. A claim is tested by asking its claimant for the blocks: one that hands over none is struck, two
strikes in STRIKES_FOR seconds discount its claims, and whom sync asks is chosen among the fewest strikes.
Claims that count for nothing still tell sync whom to try when nothing counts (we hear fewer than f + 1
validators: say ours all left the set while we were away).

Every map here is per identity and bounded by count (MAX_HEARD, the oldest first) and by age (`prune`).
"""
from __future__ import annotations

import random
from typing import Iterable

MAX_HEARD = 4096            # identities whose claims are remembered (pruned to half, newest first)
HEARD_FOR = 60.0            # s a claim is remembered
STRIKES_FOR = 30.0          # s a struck peer's claims stay discounted (two strikes), and a strike is remembered


class HeightClaims:
    """Per identity: its last claimed height (with when, and how far it was from ours then), and its strikes."""

    def __init__(self) -> None:
        self._heard: dict[str, tuple[int, float]] = {}         # node id -> (its claimed height, when)
        self._lag: dict[str, int] = {}                         # node id -> our height minus its claim, then
        self._strikes: dict[str, tuple[int, float]] = {}       # node id -> (claims it failed to back, last)

    def __len__(self) -> int:
        return len(self._heard)

    def heard(self, node: str) -> tuple[int, float] | None:
        """`node`'s last claim (height, when), or None."""
        return self._heard.get(node)

    def lag(self, node: str) -> int | None:
        """How far below our height `node`'s last claim was when it made it (None: no claim)."""
        return self._lag.get(node)

    def record(self, node: str, height: int, now: float, ours: int) -> None:
        """`node` says it is at `height` (a heartbeat or a sync answer: its own word on where it is)."""
        self._heard.pop(node, None)
        self._heard[node] = (height, now)
        self._lag[node] = ours - height
        if len(self._heard) > MAX_HEARD:
            self._forget(now)

    def raise_to(self, node: str, height: int, now: float) -> None:
        """`node` showed it is at least at `height` (a vote or a block ahead of ours it handed over)."""
        heard = self._heard.get(node)
        if heard is None or heard[0] < height:
            self._heard.pop(node, None)
            self._heard[node] = (height, now)
            if len(self._heard) > MAX_HEARD:
                self._forget(now)

    def strike(self, node: str, now: float) -> None:
        """`node` was asked for blocks it claims and handed over none."""
        count, last = self._strikes.pop(node, (0, now))
        self._strikes[node] = (count + 1 if now - last < STRIKES_FOR else 1, now)
        if len(self._strikes) > MAX_HEARD:
            del self._strikes[next(iter(self._strikes))]

    def backed(self, node: str) -> None:
        """`node` handed over blocks: its strikes are forgiven."""
        self._strikes.pop(node, None)

    def strikes(self, node: str, now: float) -> int:
        item = self._strikes.get(node)
        return 0 if item is None or now - item[1] >= STRIKES_FOR else item[0]

    def discounted(self, node: str, now: float) -> bool:
        """Two unbacked claims in the last STRIKES_FOR seconds: ignore what it claims for now (a slow honest peer
        recovers)."""
        return self.strikes(node, now) >= 2

    def validators_height(self, validators: Iterable[str], skip: int, now: float, within: float) -> int | None:
        """The `skip`-th highest height (f + 1 with `skip` = f + 1) that the current `validators` claimed within
        `within` seconds and have not been discounted for: at least one honest validator is that far. None
        when fewer than `skip` of them are heard."""
        claims = sorted((heard[0] for node in validators
                         if (heard := self._heard.get(node)) is not None and now - heard[1] < within
                         and not self.discounted(node, now)), reverse=True)
        return claims[skip - 1] if len(claims) >= skip else None

    def highest(self, now: float, within: float) -> int | None:
        """The highest claim of anyone made within `within` seconds and not discounted."""
        return self.validators_height(self._heard, 1, now, within)

    def source(self, at_least: int, validators: Iterable[str], now: float, within: float,
               rng: random.Random) -> str | None:
        """Whom to ask for blocks up to `at_least`: a recent claimant of at least that height. A current validator
        if any claims it, whatever its strikes (a stranger's claim costs nothing, and a validator's ignored
        request, its sync budget spent, is a strike too), then the fewest strikes, chosen at random among equals
        (a liar's claim is not preferred for being higher); a discounted claimant is still asked when nobody
        else claims as much (a validator that was down a while comes back with strikes)."""
        members = set(validators)
        best: tuple[bool, int] | None = None
        chosen: list[str] = []
        for node, (height, when) in self._heard.items():
            if height < at_least or now - when >= within:
                continue
            rank = (node in members, -self.strikes(node, now))
            if best is None or rank > best:
                best, chosen = rank, [node]
            elif rank == best:
                chosen.append(node)
        return rng.choice(chosen) if chosen else None

    def prune(self, now: float) -> None:
        """Forget claims older than HEARD_FOR and strikes older than STRIKES_FOR."""
        for node in [node for node, (_, when) in self._heard.items() if now - when > HEARD_FOR]:
            del self._heard[node]
            self._lag.pop(node, None)
        for node in [node for node, (_, last) in self._strikes.items() if now - last >= STRIKES_FOR]:
            del self._strikes[node]

    def _forget(self, now: float) -> None:
        """Anyone may link with a fresh key and say a height: keep the claims of the last HEARD_FOR seconds,
        and of those at most half of MAX_HEARD, the newest."""
        keep = sorted(((t, node) for node, (_, t) in self._heard.items() if now - t <= HEARD_FOR), reverse=True)
        kept = {node for _, node in keep[:MAX_HEARD // 2]}
        for node in [node for node in self._heard if node not in kept]:
            del self._heard[node]
            self._lag.pop(node, None)
