"""The operator's join tokens, as the API serves them: issued and revoked through the seat commands
(`seat_admin.py`, which decide), answered once a certified block holds the change, or after FINAL_WAIT
without it (it may still be ordered: the answer says so).
"""
from __future__ import annotations

import asyncio
import os
from typing import Callable

from exchange.chain.seats.seat_admin import SeatAdmin, TokenIssued, TokenView
from exchange.crypto import SEED_BYTES

FINAL_WAIT = 10.0       # s an issue or a revocation waits for the block that orders it


class TokenDesk:
    """Join tokens for the control API: the seat commands plus the wait for their block."""

    def __init__(self, seats: SeatAdmin) -> None:
        self.seats = seats
        self._applied = asyncio.Event()

    def block_applied(self) -> None:
        """A block was applied here: waits look again."""
        self._applied.set()

    async def issue_token(self, uses: int = 1, ttl_s: float = 86_400.0) -> TokenIssued:
        issued, key = self.seats.issue_token(uses, ttl_s, os.urandom(SEED_BYTES))
        issued["final"] = await self._until(lambda: self.seats.seats_hold(lambda s: key in s.tokens))
        return issued

    def tokens(self) -> list[TokenView]:
        return self.seats.tokens()

    async def revoke_token(self, token_id: str) -> TokenView:
        key = self.seats.revoke_token(token_id)
        await self._until(lambda: self.seats.seats_hold(lambda s: key not in s.tokens or s.tokens[key].revoked))
        return self.seats.token_view(key)

    async def _until(self, done: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINAL_WAIT
        while not done():
            if loop.time() >= deadline:
                return False
            self._applied.clear()
            try:
                await asyncio.wait_for(self._applied.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                pass
        return True
