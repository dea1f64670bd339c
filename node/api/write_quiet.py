"""WriteQuiet: the addresses told to wait (429 to a write: an account's or the node's accounts' rate), and until
when, so the front gate refuses their next writes before the body is read.

A refused batch of 250 orders cost the handler ~2 ms (its JSON parsed, each order's account looked up and metered)
against ~0.2 ms for any answer, and a token holder's client asking again at once from many connections was
answered that way hundreds of times a second; a quiet per connection alone let each new connection pay it again.
The front gate holds such a write unanswered while its address is quiet (no CPU meanwhile, on a connection the
address's connection cap already counts), then refuses it: closed-loop clients ask only as fast as they have
connections, not as fast as refusals come back (a prebuilt refusal answered at once was asked again 400 times a
second and its reconnections cost what the refusals saved). Only addresses outside API_RATE_EXEMPT are kept:
behind an exempt reverse proxy every client shares one address.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

MAX_ADDRESSES = 65_536      # least recently refused forgotten first (it pays one full refusal again)


class WriteQuiet:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_ADDRESSES) -> None:
        self.clock, self.max_addresses = clock, max_addresses
        self._until: OrderedDict[str, tuple[float, float]] = OrderedDict()   # address -> (quiet until, retry at)

    def refused(self, address: str, wait: float) -> None:
        """`address` was answered 429 to a write, Retry-After `wait`: quiet for half of it, as a connection is."""
        now = self.clock()
        self._until.pop(address, None)
        self._until[address] = (now + wait / 2, now + wait)
        if len(self._until) > self.max_addresses:
            self._until.popitem(last=False)

    def wait(self, address: str) -> tuple[float, float] | None:
        """If `address` is quiet now: the seconds it stays quiet, and the seconds it should still wait in all."""
        held = self._until.get(address)
        if held is None:
            return None
        now = self.clock()
        if now >= held[0]:
            del self._until[address]
            return None
        return held[0] - now, held[1] - now

    def __len__(self) -> int:
        return len(self._until)
