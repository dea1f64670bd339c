"""What one client may take of a Grenache HTTP server (the message path's, the RPC endpoint's): anyone who can
reach the port is a client, so each gets a share and a cap on all stands behind the shares.

- Connections: at most `max_connections_per_address` from one address, `max_connections_per_subnet` from one
  /24 or /48 and `max_connections` in all, refused at accept; each request's headers within `header_timeout`
  and its body within `body_timeout`, else 408 "ERR_REQUEST_TIMEOUT" and the connection is cut (the guard of
  p2p/public/guard.py); an idle keep-alive connection is closed after KEEPALIVE_TIMEOUT.
- Rate: `rate_per_address` units a second from one address (bursts of two seconds' worth), four times that from one
  network, `rate_total` from everyone, shared max-min fairly by network (p2p/public/rate.py). A request is
  refused before its body is read while its client is short; one that is read pays the most it may be worth up
  front (the message path's MAX_FRAMES) and gets back what it did not cost once decoded, so a client that starts
  many requests at once owes at most one request's worth; one whose cost the total cannot cover once decoded
  (its network's part and the credit behind the parts) is answered busy unhandled.
- Who is not counted: clients on `exempt` networks (GRENACHE_RATE_EXEMPT; by default 127.0.0.1 and ::1, the
  addresses a service on the node's own host connects from): a Grenache mesh's services on one host all come
  from that one address and would share one address's rate. The connection caps and deadlines still apply.
- Bytes: a request is worth at least one unit per BODY_UNIT_BYTES of its body, whichever is more (a message
  request's frames, an RPC request's one): reading and decoding cost by the byte, and a client sending few large
  bodies would otherwise take a node's CPU at a unit each. Each rate is then also a byte budget: 500 frames a
  second from one address are at most 2 MB of bodies.

Who was refused, and by which limit, is kept per server (p2p/public/refusals.py) for /status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypedDict

from p2p.public.guard import ConnectionGuard, GuardView
from p2p.public.rate import ClientRate
from p2p.public.refusals import RefusalLog, RefusalsView
from p2p.public.sources import in_networks, parse_networks

BODY_UNIT_BYTES = 4096      # a request is worth at least a unit per this many bytes of its body (decompressed)
KEEPALIVE_TIMEOUT = 15.0    # s idle between requests (our client drops a pooled connection after 4 s, Node's after 5)
REFUSALS_KEPT = 256         # addresses and networks each server remembers refusing
REFUSALS_SHOWN = 10


@dataclass(frozen=True, slots=True)
class GrenacheLimits:
    """One Grenache HTTP server's limits; every value comes from Settings (node/configs.py)."""

    rate_per_address: float        # units/s: frames on the message path, requests on the RPC endpoint
    rate_total: float
    max_connections_per_address: int
    max_connections_per_subnet: int
    max_connections: int
    header_timeout: float
    body_timeout: float
    exempt: tuple[str, ...] = ()   # networks whose clients the rate does not count (GRENACHE_RATE_EXEMPT)


class LimitsView(TypedDict):
    """A Grenache server's limits as /status shows them."""

    unit: str                          # "frames" or "requests", each at least BODY_UNIT_BYTES of body
    rate_per_address: float
    rate_total: float
    exempt: list[str]                  # networks the rate does not count
    refused: dict[str, int]            # requests refused, by the rate limit that refused them
    connections: GuardView
    refused_by: RefusalsView           # the most refused addresses and networks lately, and why


def timeout_text(_part: str, _timeout: float) -> tuple[bytes, bytes]:
    """A cut request's 408 body: the plain Grenache error a Node client fails on at once."""
    return b"text/plain", b"ERR_REQUEST_TIMEOUT"


class ServerLimits:
    """`GrenacheLimits` applied to one server named `surface` (grenache_msg, grenache_rpc), counting `unit`s."""

    def __init__(self, limits: GrenacheLimits, surface: str, unit: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unit = unit
        self.exempt = parse_networks(limits.exempt)
        self.refusals = RefusalLog(capacity=REFUSALS_KEPT, clock=clock)
        self.rate = ClientRate(limits.rate_per_address, limits.rate_total, surface=surface, clock=clock,
                               refusals=self.refusals)
        self.guard = ConnectionGuard(limits.max_connections_per_address, limits.max_connections_per_subnet,
                                     limits.max_connections, limits.header_timeout, limits.body_timeout,
                                     refusals=self.refusals, surface=surface, timeout_answer=timeout_text)

    def is_exempt(self, address: str) -> bool:
        """Whether the rate does not count `address` (a service on the node's own machine, by default)."""
        return in_networks(address, self.exempt)

    def admit(self, address: str, reserve: int = 1) -> float | None:
        """None when a request from `address` may be read now (`reserve` units, the most it may be worth, taken);
        else the seconds to wait."""
        refused = self.rate.check(address, reserve)
        return None if refused is None else refused[1]

    def settle(self, address: str, units: int, reserved: int) -> bool:
        """The request from `address` admitted on `reserved` units is worth `units`: the difference given back.
        False when the total cannot cover it: it is to be answered busy, unhandled (charged one unit)."""
        return self.rate.settle(address, units, reserved)

    def refused_counts(self) -> dict[str, int]:
        """Requests refused and connections refused or closed, by reason, for /metrics: rate_per_address ...,
        connections_per_address ..., header_timeouts, body_timeouts, idle_timeouts."""
        guard = {name.replace("refused_", "connections_"): count for name, count in self.guard.counters.items()}
        return {**{f"rate_{name}": count for name, count in self.rate.refused.items()}, **guard}

    def view(self) -> LimitsView:
        rate = self.rate
        return {"unit": self.unit, "rate_per_address": rate.by_address.rate, "rate_total": rate.total_rate,
                "exempt": [str(network) for network in self.exempt],
                "refused": dict(rate.refused), "connections": self.guard.view(),
                "refused_by": self.refusals.view(REFUSALS_SHOWN)}
