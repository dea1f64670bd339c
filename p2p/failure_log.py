"""Connection failures said out loud, and our own bugs reported once.

`FailureLog`: every failed dial, refused connection and failed handshake is logged once at INFO
(WARNING for a configuration problem such as a network mismatch) with its cause and the address,
then at most once per `interval` per address with a count of the repeats; the latest failure per
address and the most recent ones overall are kept for `/status` and `/peers`.

`InternalErrors`: an exception of ours on a receive path is logged with its traceback the first
time it happens at a given place, then counted (and summed up at most once per `interval`).
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from typing import NotRequired, TypedDict

# Failures that point at a configuration problem on one side or the other: WARNING, not INFO.
CONFIG_PROBLEMS = frozenset({
    "network_mismatch", "remote_network_mismatch", "incompatible_version", "remote_incompatible_version",
    "identity_mismatch", "bad_identity", "self_connection", "remote_self_connection",
})


class Failure(TypedDict):
    """A failure as `last_error` shows it: why, its detail and when; and for a connection, the address and
    what failed ("dial (source)", "inbound connection from", ...)."""
    reason: str
    detail: str
    address: NotRequired[str]
    what: NotRequired[str]
    at: float


class _AddressState(TypedDict):
    logged_at: float
    suppressed: int
    last: Failure


class FailureLog:
    def __init__(self, logger: logging.Logger, *, interval: float = 60.0, max_addresses: int = 1024,
                 recent: int = 32) -> None:
        self.log = logger
        self.interval = interval
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, _AddressState] = OrderedDict()
        self._recent: deque[Failure] = deque(maxlen=recent)
        self.total = 0

    def record(self, address: str, reason: str, detail: str = "", *, what: str = "connection") -> Failure:
        """Note one failure (`what`: "dial", "inbound", "link") and log it unless this address was
        logged less than `interval` ago; returns the entry shown as `last_error`."""
        now = time.time()
        self.total += 1
        entry: Failure = {"reason": reason, "detail": detail, "address": address, "what": what, "at": now}
        state = self._by_address.get(address)
        if state is None:
            state = self._by_address[address] = {"logged_at": 0.0, "suppressed": 0, "last": entry}
            if len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)
        else:
            self._by_address.move_to_end(address)
        state["last"] = entry
        self._recent.append(entry)
        if now - state["logged_at"] >= self.interval:
            level = logging.WARNING if reason in CONFIG_PROBLEMS else logging.INFO
            repeats = f" ({state['suppressed']} more since the last report)" if state["suppressed"] else ""
            self.log.log(level, "%s %s failed: %s%s%s", what, address, reason, f" ({detail})" if detail else "",
                         repeats)
            state["logged_at"] = now
            state["suppressed"] = 0
        else:
            state["suppressed"] += 1
        return entry

    def last_for(self, address: str) -> Failure | None:
        state = self._by_address.get(address)
        return None if state is None else state["last"]

    @property
    def last(self) -> Failure | None:
        return self._recent[-1] if self._recent else None

    def recent(self) -> list[Failure]:
        return list(self._recent)


class InternalErrors:
    def __init__(self, logger: logging.Logger, *, interval: float = 60.0) -> None:
        self.log = logger
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._summarised_at: dict[str, float] = {}

    def report(self, where: str, exc: BaseException, context: str = "") -> None:
        key = f"{where}:{type(exc).__name__}"
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count == 1:
            self.log.error("internal error in %s%s (a bug of ours; logged once, then counted)", where,
                           f" ({context})" if context else "", exc_info=exc)
            self._summarised_at[key] = time.monotonic()
        elif time.monotonic() - self._summarised_at.get(key, 0.0) >= self.interval:
            self._summarised_at[key] = time.monotonic()
            self.log.error("internal error in %s happened %d times so far: %r", where, count, exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
