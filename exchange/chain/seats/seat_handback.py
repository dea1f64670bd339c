"""A validator stopped on purpose hands its seat back through the log (to a standby the chain's record shows
live, when one waits), so the rest keep their quorum, and leaves the standby list until it runs again and asks
back; unless its operator asked to keep it (KEEP_SEAT, a pinned set), and then the log says what the absence
costs. The stop waits a few seconds for a block to order the leave.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from exchange.chain.core import ChainCore
from exchange.crypto import node_id_for

log = logging.getLogger("exchange.chain")

PROBATION_WAIT = 45.0   # s a stop waits for members seated lately to sign (seats.py removes one in 15-20 s)


class SeatHandback:
    """Our seat handed back at stop (the service's `handback`)."""

    def __init__(self, clock: Callable[[], float], keep_seat: bool, timeout: float) -> None:
        self.clock = clock
        self.keep_seat = keep_seat
        self.timeout = timeout          # s to wait for the block that orders our leave
        self._changed = asyncio.Event()
        self._block = asyncio.Event()

    def seats_changed(self) -> None:
        """A final block changed the validator set: the wait for our leave looks again."""
        self._changed.set()
        self._block.set()

    def block_applied(self) -> None:
        """A final block was applied: a wait for members on probation looks again."""
        self._block.set()

    def stop_seconds(self, core: ChainCore, usual: float) -> float:
        """How long a stop of `core`'s node may take: `usual`, or, when the hand-back must first wait for a member
        seated lately to sign (`_until_proven`), that wait on top."""
        if core.halted or not core.is_validator or self.keep_seat or core.genesis.pinned \
                or core.state.seats.leave_safe(core.state.validators, core.public_key):
            return usual
        return PROBATION_WAIT + usual

    async def _until_proven(self, core: ChainCore) -> None:
        """Wait (at most PROBATION_WAIT) while leaving would leave a set whose quorum counts on a member seated lately
        that has signed nothing yet: a seat left to one that never votes halts the rest, and with no blocks nobody
        removes it. Meanwhile we still vote, so blocks go on and one that never signs is removed (`seats.py`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBATION_WAIT
        said = False
        while loop.time() < deadline and core.is_validator:
            seats = core.state.seats
            if seats.leave_safe(core.state.validators, core.public_key):
                return
            if not said:
                unproven = [k for k in seats.probation if k in core.state.validators]
                log.warning("waiting up to %.0fs for %s, seated lately, to sign before handing our seat back: the "
                            "others' quorum would count on it", PROBATION_WAIT,
                            ", ".join(node_id_for(k)[:12] for k in unproven))
                said = True
            self._block.clear()
            try:
                await asyncio.wait_for(self._block.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break

    async def give_back(self, core: ChainCore, pump: Callable[[], None]) -> None:
        """Hand the seat `core` holds back (the core runs, unhalted), and wait for a block to order it."""
        validators = core.state.validators
        cost = (f"the network tolerates {max(0, validators.faults - 1)} more faulty validator(s) until this node "
                f"returns" if len(validators) > 1 else "the exchange halts until this node returns: it is the "
                "only validator")
        if self.keep_seat or core.genesis.pinned:
            log.warning("stopping with our validator seat kept (%s): %s", "pinned set" if core.genesis.pinned
                        else "KEEP_SEAT", cost)
            return
        await self._until_proven(core)
        tx = core.seat_requests.request_leave(self.clock())
        if tx is None:
            log.warning("stopping as the only validator with no standby to hand the seat to: %s", cost)
            return
        successor = f" to {node_id_for(tx.successor)[:12]}" if tx.successor else ""
        log.warning("handing our validator seat back%s before stopping", successor)
        pump()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while core.is_validator and loop.time() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if core.is_validator and tx.epoch != core.state.validators.epoch:
                # the set changed first (another leave, a promotion): our leave named the old set, so it can
                # never apply; sign it again for the set we are in now
                again = core.seat_requests.request_leave(self.clock())
                if again is None:
                    break
                tx = again
                pump()
        if core.is_validator:
            log.warning("the seat was not handed back within %.0fs (no quorum to order it?): %s", self.timeout, cost)
        else:
            log.warning("validator seat handed back at height %d%s", core.height, successor)
