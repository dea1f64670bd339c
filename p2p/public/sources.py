"""Who a public client is, for the limits that share a public surface (the control API, the /ws stream, the
Grenache HTTP servers) among clients: its IP address (for IPv6, its /64: one host alone often holds a whole /64)
and its network, the /24 (IPv4) or /48 (IPv6) one operator usually holds. `Shares` counts what each source holds
(connections, subscriptions, unread bytes) against a share per address, a share per network and a cap on
everyone behind them."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Literal

Scope = Literal["total", "address", "subnet"]


def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP an address names (a zone dropped, an IPv4-mapped IPv6 address as its IPv4), or None; the peer
    admission's and address book's network groups read addresses the same way."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(networks: tuple[str, ...]) -> Networks:
    """Settings' networks as the limits compare addresses: an IPv4-mapped IPv6 network as its IPv4 network (a
    client's address is read so, `client_ip`; listed as mapped, it would never match)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
        if mapped is not None and net.prefixlen >= 96:
            net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
        out.append(net)
    return tuple(out)


def in_networks(address: str, networks: Networks) -> bool:
    ip = client_ip(address)
    return ip is not None and any(ip in net for net in networks)


def _hop_ip(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An X-Forwarded-For entry's address: `a.b.c.d`, an IPv6 address, or either with the port some proxies append
    (`a.b.c.d:port`, `[v6]:port`)."""
    if hop.startswith("["):
        inside, bracket, port = hop[1:].partition("]")
        return client_ip(inside) if bracket and (not port or port[:1] == ":" and port[1:].isdigit()) else None
    if hop.count(":") == 1:
        hop, _, port = hop.partition(":")
        if not port.isdigit():
            return None
    return client_ip(hop)


def forwarded_client(remote: str, forwarded_for: list[str], proxies: Networks) -> str:
    """Whom a request stands for: `remote`, the address it came from, unless that is one of our trusted reverse
    proxies (`proxies`); then the right-most address of its X-Forwarded-For (`forwarded_for`: each such header's
    value) that is not a trusted proxy itself. Entries left of that one were written by the client or its side,
    so they are never believed; a header from anyone but a trusted proxy is not read at all. With every entry a
    trusted proxy, the left-most stands. Raises ValueError when an entry it reads is no IP address, or when the
    client it names is a loopback address: a client behind a proxy is not this machine, and a proxy that passes
    on what its client wrote would otherwise let the client claim this machine's exemptions."""
    if not forwarded_for or not in_networks(remote, proxies):
        return remote
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    client: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    for hop in reversed(hops):
        client = _hop_ip(hop)
        if client is None:
            raise ValueError(f"X-Forwarded-For names {hop[:64]!r}, not an IP address")
        if not any(client in net for net in proxies):
            break
    if client is None:
        return remote
    if client.is_loopback:
        raise ValueError(f"X-Forwarded-For names {client}, a loopback address: a client behind a proxy is not "
                         f"this machine")
    return str(client)


@lru_cache(maxsize=4096)
def host_of(address: str) -> str:
    """The one client `address` stands for in the per-address shares: an IPv4 address itself, an IPv6 address's
    /64 (one host is usually given a whole /64, so counting its single addresses would let it take a fresh share
    per address); a string that is no IP address is its own client."""
    ip = client_ip(address)
    if ip is None:
        return address
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


@lru_cache(maxsize=4096)
def subnet_of(address: str) -> str:
    """The network `address` belongs to for the per-subnet shares: its /24 (IPv4) or /48 (IPv6); a string that
    is no IP address is its own network. An IPv4 client of a dual-stack listener (::ffff:a.b.c.d) is counted in
    its IPv4 /24: as an IPv6 /48 every such client would share one network."""
    ip = client_ip(address)
    if ip is None:
        return address
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@lru_cache(maxsize=4096)
def group_of(network: str) -> str:
    """The wider group a network (a `subnet_of` key) belongs to, as address books group addresses: its /16 (IPv4)
    or /32 (IPv6), one provider's block more often than not. A loopback network is a group of its own (the
    machine's own clients, told apart by /24 as peer admission tells them); a key that is no network is its own
    group."""
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return network
    if net.is_loopback:
        return network
    return str(net.supernet(new_prefix=16 if net.version == 4 else 32))


def adjust_count(counts: dict[str, int], key: str, delta: int) -> None:
    """Add `delta` to `key`'s count, dropping the key at zero: count maps hold only keys that hold something."""
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def drop_from(groups: dict[str, dict[str, None]], group: str, member: str) -> None:
    """Remove `member` from `group`'s ordered set, dropping the group once it is empty."""
    members = groups.get(group)
    if members is None:
        return
    members.pop(member, None)
    if not members:
        del groups[group]


class Shares:
    """What each address and each network holds of one thing, against a share each and a cap on all.

    The maps hold only sources holding something now, so they are bounded by what the caps admit."""

    def __init__(self, per_address: int, per_subnet: int, total: int) -> None:
        self.per_address, self.per_subnet, self.total = per_address, per_subnet, total
        self.by_address: dict[str, int] = {}
        self.by_subnet: dict[str, int] = {}
        self.held = 0

    def over(self, address: str, amount: int = 1) -> Scope | None:
        """Which cap `address` holding `amount` more would pass (the cap on all is checked first), or None.
        `amount=0` asks whether it is past one now."""
        if self.held + amount > self.total:
            return "total"
        return self.over_share(address, amount)

    def over_share(self, address: str, amount: int = 1) -> Scope | None:
        """Which of `address`'s own caps (its address's, its network's) holding `amount` more would pass, or None:
        asked before room is made in the total, so nobody gives up room to a source its own caps refuse."""
        if self.by_address.get(host_of(address), 0) + amount > self.per_address:
            return "address"
        if self.by_subnet.get(subnet_of(address), 0) + amount > self.per_subnet:
            return "subnet"
        return None

    def among_heaviest(self, address: str) -> bool:
        """Whether the network of `address` holds at least half what the heaviest network holds: who makes room
        when everyone together is over the cap is the heaviest, never a light bystander."""
        mine = self.by_subnet.get(subnet_of(address), 0)
        return mine > 0 and 2 * mine >= max(self.by_subnet.values())

    def cap(self, scope: Scope) -> int:
        return {"total": self.total, "address": self.per_address, "subnet": self.per_subnet}[scope]

    def add(self, address: str, amount: int = 1) -> None:
        """`address` holds `amount` more (less, when negative)."""
        if amount == 0:
            return
        self.held += amount
        adjust_count(self.by_address, host_of(address), amount)
        adjust_count(self.by_subnet, subnet_of(address), amount)

    def remove(self, address: str, amount: int = 1) -> None:
        self.add(address, -amount)


def cap_name(scope: Scope) -> str:
    """How counters and refusal reasons name a cap: per_address, per_subnet or total."""
    return "total" if scope == "total" else f"per_{scope}"


def scope_words(scope: Scope) -> str:
    """How a refusal names the cap it hit."""
    return {"total": "on this node in all", "address": "from one address",
            "subnet": "from one network (/24 or /48)"}[scope]
