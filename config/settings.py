"""Settings: every knob of a node, with its environment name, default and one-line help in one place.

Over 500 lines on purpose: one table of every setting, which `start --help` and docs/configuration.md are made
from; split, a setting's neighbours (the limits it pairs with) would be in another file."""
from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from config import parsers as p

_NETWORK_ID = r"[A-Za-z0-9._-]{1,64}"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/exchange-node`` when XDG_DATA_HOME is an absolute path, else ``~/.local/share/exchange-node``."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "exchange-node"


def _setting(default: Any, env: str, help: str, parse: p.Parser, *,
             factory: Callable[[], Any] | None = None, secret: bool = False) -> Any:
    metadata = {"env": env, "help": help, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata, repr=not secret)


_PORT = p.integer(0, 65535)
_FLOAT_POS = p.number(above=0.0)


class SettingInfo(NamedTuple):
    """One row of the settings table (for `--help`, the README and `GET /status`)."""

    name: str
    env: str
    default: object
    help: str


@dataclass(frozen=True, slots=True)
class Settings:
    """A node's validated configuration. Build it with `config.load_settings`; `dataclasses.replace` for tests."""

    network_id: str = _setting(
        "exchange-mainnet", "NETWORK_ID", "Network name; nodes only link with nodes of the same network",
        p.text(max_len=64, pattern=_NETWORK_ID, what="1-64 characters of A-Z a-z 0-9 . _ -"))
    data_dir: Path = _setting(
        None, "DATA_DIR", "Directory for the node key and remembered peers "
        "(default $XDG_DATA_HOME/exchange-node or ~/.local/share/exchange-node)", p.path, factory=default_data_dir)

    p2p_enabled: bool = _setting(True, "P2P_ENABLED", "Join the peer-to-peer network (off = standalone node)",
                                 p.boolean)
    p2p_host: str = _setting("0.0.0.0", "P2P_HOST", "Address the peer listener binds", p.host)
    p2p_port: int = _setting(7946, "P2P_PORT", "TCP port the peer listener binds (0 = ephemeral)", _PORT)
    advertise_host: str | None = _setting(
        None, "ADVERTISE_HOST", "Address other peers should dial us at (default: guessed)", p.optional(p.host))

    api_host: str = _setting("127.0.0.1", "API_HOST", "Address the control API binds", p.host)
    api_port: int = _setting(7947, "API_PORT", "TCP port of the control API (0 = ephemeral)", _PORT)
    api_token: str | None = _setting(
        None, "API_TOKEN", "Bearer token the control API accepts besides DATA_DIR/.cookie; required when API_HOST "
        "is not loopback", p.optional(p.secret(min_len=16)), secret=True)
    api_max_connections: int = _setting(
        2048, "API_MAX_CONNECTIONS", "Most open connections to the control API at once", p.integer(1, 1_000_000))
    api_max_connections_per_address: int = _setting(
        512, "API_MAX_CONNECTIONS_PER_ADDRESS", "Most open control API connections from one IP address",
        p.integer(1, 1_000_000))
    api_max_connections_per_subnet: int = _setting(
        1024, "API_MAX_CONNECTIONS_PER_SUBNET", "Most open control API connections from one /24 (IPv4) or /48 (IPv6)",
        p.integer(1, 1_000_000))
    api_header_timeout: float = _setting(
        10.0, "API_HEADER_TIMEOUT", "Seconds a request has to send its headers (the first from the connection's "
        "start, each later one from its first byte) before it gets 408 and its connection is closed (slowloris)",
        _FLOAT_POS)
    api_body_timeout: float = _setting(
        10.0, "API_BODY_TIMEOUT", "Seconds a request's body (at most 64 KiB) has to arrive after its headers before "
        "it gets 408 and its connection is closed", _FLOAT_POS)
    api_write_timeout: float = _setting(
        10.0, "API_WRITE_TIMEOUT", "Seconds an answer may wait for a client that reads none of it, or less than "
        "API_WRITE_MIN_RATE (the node's send buffer full), before the connection is closed and the answer dropped",
        _FLOAT_POS)
    api_write_min_rate: int = _setting(
        16384, "API_WRITE_MIN_RATE", "Bytes a second a client must drain of an answer that fills the node's send "
        "buffer to be given another API_WRITE_TIMEOUT (a slow link keeps reading); 0: none is", p.integer(0, 1 << 30))
    api_slow_answer_bytes: int = _setting(
        8 * 1024 * 1024, "API_SLOW_ANSWER_BYTES", "Unsent answer bytes the slow readers of one IP address may keep "
        "in the node's memory past API_WRITE_TIMEOUT (a /24 or /48 four times that, all sixteen times)",
        p.integer(0, 1 << 32))
    api_keepalive_timeout: float = _setting(
        60.0, "API_KEEPALIVE_TIMEOUT", "Seconds an API connection may sit idle between requests before it is closed",
        _FLOAT_POS)
    api_public_rate: float = _setting(
        20.0, "API_PUBLIC_RATE", "Requests a second one IP address may make to the public read-only routes without "
        "a token (bursts of twice that; a /24 or /48 four times that); the rest get 429 with Retry-After",
        _FLOAT_POS)
    api_public_rate_total: float = _setting(
        1000.0, "API_PUBLIC_RATE_TOTAL", "Requests a second to the public routes without a token from all "
        "addresses together", _FLOAT_POS)
    api_connection_rate: float = _setting(
        100.0, "API_CONNECTION_RATE", "Requests a second one control API connection may make, whoever holds it, "
        "from an address not in API_RATE_EXEMPT (bursts of twice that); past it the request gets 429 and the "
        "connection is closed, before the request is routed or its body read (0: no limit)", p.number(above=-1e-9))
    api_rate_exempt: tuple[str, ...] = _setting(
        ("127.0.0.0/8", "::1/128"), "API_RATE_EXEMPT", "Networks whose clients the public rate limits do not "
        "count (this machine by default; a reverse proxy in front must limit for its clients)",
        p.listed(p.ip_network))
    api_trusted_proxies: tuple[str, ...] = _setting(
        (), "API_TRUSTED_PROXIES", "Networks of reverse proxies in front of the API whose X-Forwarded-For is "
        "believed: a request through one is limited and exempted as its client's (the right-most address the "
        "header names that is no trusted proxy), and the proxy's connections count against the total only, not "
        "its address's or network's share; none by default", p.listed(p.ip_network))
    history_db: str | None = _setting(
        None, "HISTORY_DB", "The history indexer's database (exchange-node indexer --db: sqlite:///PATH or "
        "postgresql://...): the trade-range, fills and candles routes and the stream's candles read the trades it "
        "holds, then this node's kept ones after them; unset: the kept trades alone (trade_history per market)",
        p.optional(p.text(max_len=1024, pattern=r"(sqlite:///|postgres(ql)?://).+",
                          what="sqlite:///PATH or postgresql://...")), secret=True)
    browser_webtransport: bool = _setting(
        True, "BROWSER_WEBTRANSPORT", "Accept browsers over WebTransport (HTTP/3, UDP) with a self-signed "
        "certificate pages dial by its hash (GET /status `browser`)", p.boolean)
    browser_port: int | None = _setting(
        None, "BROWSER_PORT", "UDP port of the WebTransport endpoint (default: the peer port's number; 0 = "
        "ephemeral)", p.optional(_PORT))
    browser_max_sessions: int = _setting(
        256, "BROWSER_MAX_SESSIONS", "Most browser connections at once (8 per IP address, 32 per /24 within it)",
        p.integer(1, 100_000))
    ws_max_clients: int = _setting(1000, "WS_MAX_CLIENTS", "Most market data stream (/ws) clients at once",
                                   p.integer(1, 100_000))
    ws_max_clients_per_address: int = _setting(
        50, "WS_MAX_CLIENTS_PER_ADDRESS", "Most /ws clients from one IP address at once (the rest get 429)",
        p.integer(1, 100_000))
    ws_max_clients_per_subnet: int = _setting(
        200, "WS_MAX_CLIENTS_PER_SUBNET", "Most /ws clients from one /24 (IPv4) or /48 (IPv6) at once",
        p.integer(1, 100_000))
    ws_send_buffer_bytes: int = _setting(
        262144, "WS_SEND_BUFFER_BYTES", "Unread bytes a /ws client may have queued before it is cut off as too slow",
        p.integer(65536, 64 * 1024 * 1024))
    ws_send_buffer_per_address: int = _setting(
        4 * 1024 * 1024, "WS_SEND_BUFFER_PER_ADDRESS", "Unread bytes all /ws clients of one IP address may have "
        "queued together; past it, each of them that is behind is cut off as too slow", p.integer(65536))
    ws_send_buffer_per_subnet: int = _setting(
        16 * 1024 * 1024, "WS_SEND_BUFFER_PER_SUBNET", "Unread bytes all /ws clients of one /24 (IPv4) or /48 (IPv6) "
        "may have queued together", p.integer(65536))
    ws_send_buffer_total: int = _setting(
        64 * 1024 * 1024, "WS_SEND_BUFFER_TOTAL", "Unread bytes all /ws clients may have queued together",
        p.integer(65536))
    ws_max_subscriptions_per_address: int = _setting(
        256, "WS_MAX_SUBSCRIPTIONS_PER_ADDRESS", "Most /ws subscriptions all clients of one IP address may hold "
        "(each connection holds at most 32)", p.integer(1, 10_000_000))
    ws_max_subscriptions_per_subnet: int = _setting(
        1024, "WS_MAX_SUBSCRIPTIONS_PER_SUBNET", "Most /ws subscriptions all clients of one /24 (IPv4) or /48 (IPv6) "
        "may hold", p.integer(1, 10_000_000))
    ws_max_subscriptions: int = _setting(
        16384, "WS_MAX_SUBSCRIPTIONS", "Most /ws subscriptions on this node at once", p.integer(1, 10_000_000))

    bootstrap_peers: tuple[tuple[str, int], ...] = _setting(
        (), "BOOTSTRAP_PEERS", "Peers to dial at start: comma-separated host:port, IPv6 as [::1]:7946",
        p.listed(p.host_port))
    peer_storage_path: Path | None = _setting(
        None, "PEER_STORAGE_PATH", "File remembering known peers (default DATA_DIR/.peers.json)",
        p.optional(p.path))

    max_peers: int = _setting(50, "MAX_PEERS", "Most peer links at once, inbound and outbound: the high mark", p.integer(1))
    target_outbound: int = _setting(
        8, "TARGET_OUTBOUND", "Outbound links the node keeps dialling towards: the low mark (capped at MAX_PEERS)",
        p.integer(0))
    max_inbound_per_ip: int = _setting(4, "MAX_INBOUND_PER_IP", "Inbound links and handshakes from one IP address",
                                       p.integer(1))
    max_inbound_per_subnet: int = _setting(8, "MAX_INBOUND_PER_SUBNET",
                                           "Inbound links and handshakes from one IPv4 /24 or IPv6 /48", p.integer(1))
    inbound_handshake_rate: float = _setting(
        5.0, "INBOUND_HANDSHAKE_RATE", "New inbound connections a second from one IP address, four times that from "
        "one /24 or /48 (bursts of two seconds' worth); faster ones are refused before any handshake work",
        _FLOAT_POS)
    inbound_handshake_rate_total: float = _setting(
        100.0, "INBOUND_HANDSHAKE_RATE_TOTAL", "New inbound connections a second from everyone (bursts of two "
        "seconds' worth)", _FLOAT_POS)
    inbound_limit_loopback: bool = _setting(
        False, "INBOUND_LIMIT_LOOPBACK", "Apply the per-IP and per-subnet caps (inbound links, DHT "
        "routing table) to loopback too (off: nodes on this machine are the operator's own)", p.boolean)
    peer_reconnect_interval: float = _setting(
        30.0, "PEER_RECONNECT_INTERVAL", "Cap in seconds of the reconnect backoff", _FLOAT_POS)

    discovery_mdns: bool = _setting(True, "DISCOVERY_MDNS", "Find peers on the LAN with mDNS", p.boolean)
    mdns_interfaces: tuple[str, ...] = _setting(
        (), "MDNS_INTERFACES", "Comma-separated interface IPs for mDNS (empty = all real interfaces)",
        p.listed(p.ip_address))
    discovery_grenache: bool = _setting(False, "DISCOVERY_GRENACHE", "Announce and look up peers on a Grape DHT",
                                        p.boolean)
    grape_urls: tuple[str, ...] = _setting(
        ("http://127.0.0.1:30001",), "GRAPE_URL", "Comma-separated Grape HTTP API URLs", p.listed(p.http_url))
    grape_service: str = _setting("exchange-node", "GRAPE_SERVICE", "Service name announced on the Grape", p.text())
    grape_announce_interval: float = _setting(
        30.0, "GRAPE_ANNOUNCE_INTERVAL", "Seconds between Grape re-announcements", _FLOAT_POS)
    grenache_messages: bool = _setting(
        True, "GRENACHE_MESSAGES", "With DISCOVERY_GRENACHE: also route messages over Grenache HTTP RPC to nodes no "
        "link reaches (serves <GRAPE_SERVICE>:msg and <GRAPE_SERVICE>:msg:<node id>)", p.boolean)
    grenache_messages_host: str | None = _setting(
        None, "GRENACHE_MESSAGES_HOST", "Address the Grenache message endpoint binds (default P2P_HOST)",
        p.optional(p.host))
    grenache_messages_port: int = _setting(
        0, "GRENACHE_MESSAGES_PORT", "TCP port of the Grenache message endpoint (0 = ephemeral; the Grape "
        "announcement carries it)", _PORT)
    grenache_messages_rate: float = _setting(
        500.0, "GRENACHE_MESSAGES_RATE", "Frames a second one IP address may send to the Grenache message endpoint, "
        "each 4 KiB of request body counting as a frame at least (bursts of twice that; a /24 or /48 four times that); "
        "a request past it gets 429 ERR_BUSY unread",
        _FLOAT_POS)
    grenache_messages_rate_total: float = _setting(
        8000.0, "GRENACHE_MESSAGES_RATE_TOTAL", "Frames a second the Grenache message endpoint takes from all "
        "addresses together (bursts of twice that)", _FLOAT_POS)
    grenache_rpc_rate: float = _setting(
        100.0, "GRENACHE_RPC_RATE", "Requests a second one IP address may make to the Grenache RPC endpoint "
        "(GRENACHE_RPC_PORT), each 4 KiB of request body counting as a request at least (bursts of twice that; a /24 or "
        "/48 four times that); the rest get 429 ERR_BUSY unread",
        _FLOAT_POS)
    grenache_rpc_rate_total: float = _setting(
        2000.0, "GRENACHE_RPC_RATE_TOTAL", "Requests a second the Grenache RPC endpoint takes from all addresses "
        "together (bursts of twice that)", _FLOAT_POS)
    grenache_max_connections: int = _setting(
        1024, "GRENACHE_MAX_CONNECTIONS", "Most open connections to each Grenache HTTP server (the message and the "
        "RPC endpoint) at once", p.integer(1, 1_000_000))
    grenache_max_connections_per_address: int = _setting(
        64, "GRENACHE_MAX_CONNECTIONS_PER_ADDRESS", "Most open connections to each Grenache HTTP server from one IP "
        "address", p.integer(1, 1_000_000))
    grenache_max_connections_per_subnet: int = _setting(
        256, "GRENACHE_MAX_CONNECTIONS_PER_SUBNET", "Most open connections to each Grenache HTTP server from one /24 "
        "(IPv4) or /48 (IPv6)", p.integer(1, 1_000_000))
    grenache_rate_exempt: tuple[str, ...] = _setting(
        ("127.0.0.1/32", "::1/128"), "GRENACHE_RATE_EXEMPT", "Networks whose clients the Grenache endpoints' rate "
        "limits do not count (by default the loopback addresses this machine's own services connect from); the "
        "connection caps and deadlines still apply", p.listed(p.ip_network))
    grenache_header_timeout: float = _setting(
        10.0, "GRENACHE_HEADER_TIMEOUT", "Seconds a request to a Grenache HTTP server has to send its headers (the "
        "first from the connection's start, each later one from its first byte) before it gets 408 and its "
        "connection is closed (slowloris)", _FLOAT_POS)
    grenache_body_timeout: float = _setting(
        10.0, "GRENACHE_BODY_TIMEOUT", "Seconds a request's body has to arrive at a Grenache HTTP server after its "
        "headers before it gets 408 and its connection is closed", _FLOAT_POS)
    discovery_pex: bool = _setting(True, "DISCOVERY_PEX", "Learn peers from connected peers (peer exchange)",
                                   p.boolean)
    discovery_dht: bool = _setting(True, "DISCOVERY_DHT", "Take part in the DHT of signed node records: find nodes "
                                   "by id and services by name with no Grape", p.boolean)

    relay_service: bool = _setting(True, "RELAY_SERVICE", "Relay links for nodes behind NAT while dial-backs say this "
                                   "node is public (they see only ciphertext)", p.boolean)
    relay_client: bool = _setting(True, "RELAY_CLIENT", "Behind a NAT nobody can dial: hold slots on two relays and be "
                                  "reached through them", p.boolean)
    hole_punch: bool = _setting(True, "HOLE_PUNCH", "Try a direct link (TCP simultaneous open) to a node reached "
                                "through a relay", p.boolean)
    hole_punch_cooldown: float = _setting(30.0, "HOLE_PUNCH_COOLDOWN", "Seconds before one peer may start a new hole "
                                          "punch with this node (each punch aims SYNs at addresses the peer names)",
                                          _FLOAT_POS)
    port_mapping: bool = _setting(True, "PORT_MAPPING", "Ask the LAN's gateway (UPnP-IGD or NAT-PMP) to forward "
                                  "P2P_PORT (a lease, renewed, removed at stop); only from a private LAN address",
                                  p.boolean)
    relay_max_reservations: int = _setting(64, "RELAY_MAX_RESERVATIONS", "Nodes one relay holds slots for (at most "
                                           "4 per /24)", p.integer(0, 100000))
    relay_max_circuits: int = _setting(64, "RELAY_MAX_CIRCUITS", "Relayed links through this node at once",
                                       p.integer(0, 100000))
    relay_circuits_per_peer: int = _setting(8, "RELAY_CIRCUITS_PER_PEER", "Relayed links one node may hold through "
                                            "this relay", p.integer(0, 10000))
    relay_circuit_bytes: int = _setting(256 * 1024 * 1024, "RELAY_CIRCUIT_BYTES", "Bytes one relayed link may carry "
                                        "before the relay closes it", p.integer(1024, 1 << 40))
    relay_circuit_seconds: float = _setting(3600.0, "RELAY_CIRCUIT_SECONDS", "Seconds one relayed link may last",
                                            _FLOAT_POS)
    relay_circuit_rate: int = _setting(1024 * 1024, "RELAY_CIRCUIT_RATE", "Bytes/s one relayed link may carry, "
                                       "sustained (bursts of 8x)", p.integer(1024, 1 << 34))

    markets: str = _setting("BTC-USD", "MARKETS", "Markets this node trades, e.g. BTC-USD,ETH-USD", p.text())

    log_level: str = _setting("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR",
                              p.choice("DEBUG", "INFO", "WARNING", "ERROR"))
    log_format: str = _setting("text", "LOG_FORMAT", "text or json (one object per line)", p.choice("text", "json"))

    heartbeat_interval: float = _setting(1.0, "HEARTBEAT_INTERVAL", "Seconds between link heartbeats", _FLOAT_POS)
    dead_after: int = _setting(3, "DEAD_AFTER", "Heartbeat intervals of silence before a link is dropped",
                               p.integer(2))
    handshake_timeout: float = _setting(5.0, "HANDSHAKE_TIMEOUT", "Seconds a new link has to finish its handshake",
                                        _FLOAT_POS)
    max_frame_bytes: int = _setting(1048576, "MAX_FRAME_BYTES", "Largest frame accepted or sent (1 KiB..64 MiB)",
                                    p.integer(1024, 64 * 1024 * 1024))
    peer_read_rate: int = _setting(
        33554432, "PEER_READ_RATE", "Bytes a second read from one peer's link (bursts of a second's worth, at least "
        "two frames); past it the link is not read until the budget refills, and the peer's sending waits on TCP",
        p.integer(65536))
    send_buffer_bytes: int = _setting(
        4194304, "SEND_BUFFER_BYTES", "Bytes queued per link before it counts as slow (at least MAX_FRAME_BYTES)",
        p.integer(1024))
    dial_rate: float = _setting(10.0, "DIAL_RATE", "Outbound dials per second (token refill rate)", _FLOAT_POS)
    dial_burst: int = _setting(20, "DIAL_BURST", "Dials allowed at once before DIAL_RATE applies", p.integer(1))
    queue_max_messages: int = _setting(1000, "QUEUE_MAX_MESSAGES", "Messages held per offline peer",
                                       p.integer(1))
    queue_target_bytes: int = _setting(
        4194304, "QUEUE_TARGET_BYTES", "Bytes of messages held for one offline peer (its oldest make room)",
        p.integer(65536))
    queue_max_bytes: int = _setting(
        33554432, "QUEUE_MAX_BYTES", "Bytes of messages held for all offline peers together (past it the peer "
        "holding the most gives up its oldest)", p.integer(65536))
    queue_ttl: float = _setting(60.0, "QUEUE_TTL", "Seconds a held message waits for its peer", _FLOAT_POS)
    broadcast_mode: str = _setting("plumtree", "BROADCAST_MODE", "plumtree (eager tree + lazy ids) or flood",
                                   p.choice("plumtree", "flood"))
    broadcast_max_hops: int = _setting(32, "BROADCAST_MAX_HOPS", "Hops after which a broadcast is not forwarded",
                                       p.integer(1, 255))
    seen_cache_size: int = _setting(100000, "SEEN_CACHE_SIZE", "Message ids remembered for deduplication",
                                    p.integer(1000))
    seen_cache_ttl: float = _setting(
        120.0, "SEEN_CACHE_TTL", "Seconds a message id is remembered (signed messages older than half of it are "
        "refused as replays)", _FLOAT_POS)
    router_rate_limit: float = _setting(2000.0, "ROUTER_RATE_LIMIT",
                                        "Messages/s accepted from one peer before it is throttled", _FLOAT_POS)
    router_rate_burst: int = _setting(4000, "ROUTER_RATE_BURST", "Messages one peer may send at once above the rate",
                                      p.integer(1))
    router_flood_ban: float = _setting(120.0, "ROUTER_FLOOD_BAN",
                                       "Seconds a peer that keeps flooding past its rate is banned", _FLOAT_POS)
    router_graft_peer_bytes: int = _setting(
        1048576, "ROUTER_GRAFT_PEER_BYTES", "Bytes/s of cached broadcasts re-sent to one neighbour that asks for them "
        "(graft); each message is re-sent to a neighbour once", p.integer(1024))
    router_graft_total_bytes: int = _setting(
        16777216, "ROUTER_GRAFT_TOTAL_BYTES", "Bytes/s of cached broadcasts re-sent to all neighbours together",
        p.integer(1024))
    broadcast_cache_bytes: int = _setting(
        64 * 1024 * 1024, "BROADCAST_CACHE_BYTES", "Bytes of recent broadcasts kept to answer re-requests (graft); "
        "past it the oldest are forgotten", p.integer(1024 * 1024))
    router_open_type_rate: float = _setting(
        50.0, "ROUTER_OPEN_TYPE_RATE", "Broadcasts/s of a type any key may author (RPC health hints) one neighbour "
        "may hand over; the excess is dropped unchecked and unforwarded, nobody penalised", _FLOAT_POS)
    router_open_type_total_rate: float = _setting(
        200.0, "ROUTER_OPEN_TYPE_TOTAL_RATE", "... and all neighbours together, per type: the networks (/24 or /48) "
        "handing copies over share it equally, so a crowd of links checks no more signatures here than this",
        _FLOAT_POS)
    debug_api: bool = _setting(False, "DEBUG_API", "Expose /debug/* test endpoints on the control API, offer the "
                                  "diagnostic test.echo RPC service and carry diagnostic note broadcasts", p.boolean)
    max_validators: int = _setting(
        7, "MAX_VALIDATORS", "Validator seats a network founded here offers (7 tolerates 2 faulty validators)",
        p.integer(1, 100))
    validators: tuple[str, ...] = _setting(
        (), "VALIDATORS", "Node ids of a pinned validator set (empty: the founder, then nodes granted a seat by "
        "join token or by the validators' approvals)",
        p.listed(p.text(max_len=40, pattern=r"[0-9a-f]{40}", what="a 40-hex node id")))
    role: str = _setting("auto", "ROLE", "auto: take a validator seat once granted one; follower: never",
                         p.choice("auto", "follower"))
    join_token: str | None = _setting(
        None, "JOIN_TOKEN", "A join token a validator issued (`exchange-node validators token new`): follow only "
        "that network's chain and take a seat without waiting for approvals. A secret: give it in this variable, "
        "in JOIN_TOKEN_FILE or on standard input (`--join-token -`), never as a command-line value (`ps` shows "
        "those to every user)",
        p.join_token, secret=True)
    join_token_file: Path | None = _setting(
        None, "JOIN_TOKEN_FILE", "File holding the join token: start waits until it exists and holds one (a file "
        "still being written is read again), so a node can be started before its token is issued",
        p.optional(p.path))
    chain_id: str | None = _setting(
        None, "CHAIN_ID", "Follow only this chain (64 hex); without it a new node follows the only network in sight",
        p.optional(p.text(max_len=64, pattern=r"[0-9a-f]{64}", what="a 64-hex chain id")))
    absent_blocks: int = _setting(
        100, "ABSENT_BLOCKS", "A validator neither signing nor proposing for this many blocks (and ABSENT_SECONDS) "
        "is jailed: a standby takes its seat until it returns (set at founding)", p.integer(3, 10**6))
    absent_seconds: float = _setting(
        60.0, "ABSENT_SECONDS", "... and for at least this many seconds of block time (set at founding)",
        p.number(above=0.5))
    keep_seat: bool = _setting(
        False, "KEEP_SEAT", "On a graceful stop keep the validator seat (a restart) instead of handing it back",
        p.boolean)
    seat_rule: str = _setting(
        "bft", "SEAT_RULE", "How a network founded here grows: bft (only to 1, 4, 7 ... seats, each tolerating one "
        "more fault) or any (one seat at a time)", p.choice("bft", "any"))
    found_after: float = _setting(
        3.0, "FOUND_AFTER", "Seconds a node with no chain listens for an existing network before founding one",
        p.number(above=-1e-9))
    order_ttl: float = _setting(
        120.0, "ORDER_TTL", "Seconds an order stays valid before it must be in a block (set at founding)",
        p.number(above=1.0))
    max_open_orders: int = _setting(
        1000, "MAX_OPEN_ORDERS", "Orders one account may have resting at once, 0 for no cap (set at founding)",
        p.integer(0, 1_000_000))
    fresh_order_ttl: float = _setting(
        60.0, "FRESH_ORDER_TTL", "Seconds of block time an order from an account holding nothing (it never traded) "
        "may rest before it expires, so free keys cannot keep orders on every node's book; 0 for no expiry (set at "
        "founding)", p.number(above=-1e-9, at_most=86_400.0))
    snapshot_interval: int = _setting(
        500, "SNAPSHOT_INTERVAL", "Blocks between certified state snapshots (set at founding)", p.integer(10, 10**7))
    snapshot_lag: int = _setting(
        100, "SNAPSHOT_LAG", "Blocks after a snapshot whose state hash certifies it, so each node encodes it in a "
        "child process while the chain goes on; at most half of SNAPSHOT_INTERVAL, 0 to encode and certify it "
        "at its own height in the event loop (set at founding)", p.integer(0, 10**6))
    snapshot_min_seconds: float = _setting(
        60.0, "SNAPSHOT_MIN_SECONDS", "Least block time between two snapshots, whatever SNAPSHOT_INTERVAL says: a "
        "flood that makes blocks many times faster does not make snapshots (each a fork and an encoding of the "
        "whole state on every node) as much more frequent; one is taken after ten intervals whatever the time. "
        "0 for every SNAPSHOT_INTERVAL blocks (set at founding)", p.number(above=-1e-9, at_most=86_400.0))
    snapshot_cache_bytes: int = _setting(
        67108864, "SNAPSHOT_CACHE_BYTES", "Bytes of the newest snapshot kept in memory to serve joining peers (one "
        "read per snapshot, not per request); a bigger one is read from disk a chunk at a time", p.integer(0))
    keep_blocks: int = _setting(
        1000, "KEEP_BLOCKS", "Blocks kept behind the newest snapshot (for peers catching up); older ones are "
        "compacted away", p.integer(10, 10**8))
    consensus_timeout: float = _setting(
        0.4, "CONSENSUS_TIMEOUT", "Seconds a validator waits for a round's proposal (grows each round)", _FLOAT_POS)
    empty_block_interval: float = _setting(
        1.0, "EMPTY_BLOCK_INTERVAL", "Seconds between blocks when there are no orders (finality heartbeat)",
        _FLOAT_POS)
    finality_stall_after: float = _setting(
        15.0, "FINALITY_STALL_AFTER", "Seconds without a final block here, with a quorum of validators heard, before "
        "/ready says finality stalled (at least 5 x EMPTY_BLOCK_INTERVAL)", _FLOAT_POS)
    peer_tx_rate: float = _setting(
        200.0, "PEER_TX_RATE", "Transactions a neighbour that is not a validator may hand this validator per second, "
        "counted before any signature is checked: past it, its link is not read until a tenth of a second's worth "
        "has refilled (what it sends waits in TCP)", _FLOAT_POS)
    peer_tx_burst: float = _setting(
        200.0, "PEER_TX_BURST", "Transactions such a neighbour may hand over at once (its budget when full; a "
        "neighbour not heard from yet starts with a tenth of a second's worth and earns the rest by waiting)",
        _FLOAT_POS)
    peer_tx_total_rate: float = _setting(
        200.0, "PEER_TX_TOTAL_RATE", "Transactions all neighbours that are not validators together may hand this "
        "validator per second: while more of them send than it covers at PEER_TX_RATE each, every network sending (the "
        "/24 or /48 of a link; a relayed link's, its relay's) gets an equal share of it, and every neighbour sending from "
        "it an equal share of that (and a burst of at most a second's share). Keep it within what the validators apply "
        "without slowing honest orders: a crowd on many networks fills it", _FLOAT_POS)
    sync_peer_rate: float = _setting(
        100.0, "SYNC_PEER_RATE", "Block sync requests one peer may make a second (bursts of twice that); more are "
        "ignored and counted, never penalised: a node catching up has one request in flight and asks again",
        _FLOAT_POS)
    sync_peer_bytes: int = _setting(
        8 * 1024 * 1024, "SYNC_PEER_BYTES", "Bytes of blocks one peer catching up may be sent a second",
        p.integer(1024))
    sync_total_bytes: int = _setting(
        32 * 1024 * 1024, "SYNC_TOTAL_BYTES", "Bytes of blocks sent a second to all peers catching up together, but "
        "the current validators (each within SYNC_PEER_BYTES)", p.integer(1024))
    mempool_max_txs: int = _setting(
        50000, "MEMPOOL_MAX_TXS", "Transactions this validator's mempool holds; when full the heaviest sender's newest "
        "are evicted for a lighter newcomer", p.integer(100, 10**7))
    mempool_max_bytes: int = _setting(
        64 * 1024 * 1024, "MEMPOOL_MAX_BYTES", "Bytes of transactions this validator's mempool holds",
        p.integer(1024 * 1024, 2**40))
    mempool_lane_share: float = _setting(
        0.25, "MEMPOOL_LANE_SHARE", "Share of the mempool (transactions and bytes) one lane may hold: one neighbour, "
        "or this node's own API (more are refused: sender_quota, 429)", p.number(above=0.0, at_most=1.0))
    block_lane_share: float = _setting(
        0.0625, "BLOCK_LANE_SHARE", "Share of a block's transactions one lane may fill when others wait (the proposer "
        "takes from each lane in turn)", p.number(above=0.0, at_most=1.0))
    block_seconds_target: float = _setting(
        0.2, "BLOCK_SECONDS_TARGET", "Seconds a block this validator proposes should take the network to decide: it "
        "holds as many transactions as recent heights show fit (0: as many as a block's limits allow)",
        p.number(above=-1e-9, at_most=60.0))
    at_budget_wait: float = _setting(
        0.1, "AT_BUDGET_WAIT", "Seconds a height waits when the only transactions waiting are from neighbours at "
        "their budget (held within the last second): it starts then with what came meanwhile, or at once when "
        "anyone else's transaction comes (0: every transaction starts a height at once)",
        p.number(above=-1e-9, at_most=1.0))
    mempool_account_txs: int = _setting(
        1000, "MEMPOOL_ACCOUNT_TXS", "Transactions one account may have waiting in this validator's mempool "
        "(more are refused: account_quota, 429)", p.integer(1, 10**6))
    account_ops_per_block: int = _setting(
        2000, "ACCOUNT_OPS_PER_BLOCK", "Operations of one account this validator admits for one block (more are "
        "refused: account_rate, 429; 0: no limit)", p.integer(0, 10**7))
    account_ops_per_100_blocks: int = _setting(
        50000, "ACCOUNT_OPS_PER_100_BLOCKS", "... and for the last 100 blocks (every window must pass; 0: no limit)",
        p.integer(0, 10**9))
    account_ops_rate: int = _setting(
        100, "ACCOUNT_OPS_RATE", "... and a second of block time, whatever the block speed (a token bucket on "
        "block time, so every validator refuses alike; a transaction weighs 4 more than its operations; "
        "0: no limit)", p.integer(0, 10**7))
    account_ops_burst: int = _setting(
        1000, "ACCOUNT_OPS_BURST", "Operations one account may send at once within ACCOUNT_OPS_RATE",
        p.integer(0, 10**8))
    group_ops_rate: int = _setting(
        200, "GROUP_OPS_RATE", "Operations a second of block time this validator admits from its own API's "
        "accounts together, whoever holds the token (past half of its bucket, the heaviest accounts are refused "
        "first; 0: no limit)", p.integer(0, 10**7))
    group_ops_burst: int = _setting(
        1000, "GROUP_OPS_BURST", "Operations one group may send at once within GROUP_OPS_RATE", p.integer(0, 10**8))
    account_rate_exempt: tuple[str, ...] = _setting(
        (), "ACCOUNT_RATE_EXEMPT", "Account ids (64 hex) this validator never counts against the account and group "
        "rates (an operator's own market maker); /status lists them", p.listed(p.text(pattern="^[0-9a-f]{64}$",
                                                                                     what="a 64-hex account id")))
    recovery_timeout: float = _setting(
        120.0, "RECOVERY_TIMEOUT", "Seconds a node with damaged stored blocks waits for peers' certified copies "
        "before it stops, naming the directory", _FLOAT_POS)
    hint_ttl: float = _setting(60.0, "HINT_TTL", "Seconds a routing hint stays valid", _FLOAT_POS)
    grenache_rpc_port: int | None = _setting(
        None, "GRENACHE_RPC_PORT", "Serve a Grenache-compatible HTTP RPC endpoint on this port (unset = off)",
        p.optional(_PORT))
    grenache_services: tuple[str, ...] = _setting(
        ("ping",), "GRENACHE_SERVICES", "Comma-separated services served on the Grenache endpoint and announced on Grape",
        p.listed(p.text(max_len=128)))
    rpc_timeout: float = _setting(5.0, "RPC_TIMEOUT", "Default seconds an RPC may take, retries included", _FLOAT_POS)
    rpc_max_in_flight: int = _setting(256, "RPC_MAX_IN_FLIGHT", "RPC requests in flight per peer, each direction",
                                      p.integer(1, 65536))
    rpc_max_attempts: int = _setting(
        3, "RPC_MAX_ATTEMPTS", "Attempts per RPC (a retry goes to another peer, within the retry budget)",
        p.integer(1, 10))
    rpc_warmup: float = _setting(
        5.0, "RPC_WARMUP", "Seconds after start in which outgoing RPCs ramp from 10% of RPC_WARMUP_RATE (0 = off)",
        p.number(above=-1e-9))
    rpc_warmup_rate: float = _setting(2000.0, "RPC_WARMUP_RATE", "Outgoing RPCs/s reached at the end of the warm-up",
                                      _FLOAT_POS)
    rpc_warmup_start: float | None = _setting(
        None, "RPC_WARMUP_START", "Outgoing RPCs/s at the start of the warm-up (default 10% of RPC_WARMUP_RATE)",
        p.optional(_FLOAT_POS))
    rpc_serve_rate: float = _setting(
        1000.0, "RPC_SERVE_RATE", "RPC requests/s this node serves one requester, and one neighbour relaying others' "
        "requests (bursts of 2 s' worth); past it the answer is rate_limited with the wait, the handler never runs",
        _FLOAT_POS)
    rpc_serve_bytes: int = _setting(
        2097152, "RPC_SERVE_BYTES", "Bytes/s of RPC answers to one requester, and through one relaying neighbour "
        "(bursts of 2 s' worth; charged once each answer is known, a scope in debt waits)", p.integer(65536))
    rpc_serve_total_rate: float = _setting(
        10000.0, "RPC_SERVE_TOTAL_RATE", "RPC requests/s this node serves everyone together", _FLOAT_POS)
    rpc_serve_total_bytes: int = _setting(
        16777216, "RPC_SERVE_TOTAL_BYTES", "Bytes/s of RPC answers to everyone together", p.integer(65536))
    hint_rate: float = _setting(2.0, "HINT_RATE", "Most routing hints this node broadcasts per second", _FLOAT_POS)
    test_service_fault: str | None = _setting(
        None, "TEST_SERVICE_FAULT", "Make the diagnostic test.echo service misbehave (tests): delay=S,fail=FRACTION,"
        "fail_delay=S,capacity=PER_S,queue=N", p.optional(p.text(
            max_len=200, pattern=r"\s*(delay|fail|fail_delay|capacity|queue)\s*=\s*[0-9.]+\s*"
                                 r"(,\s*(delay|fail|fail_delay|capacity|queue)\s*=\s*[0-9.]+\s*)*",
            what="delay=SECONDS,fail=FRACTION,fail_delay=SECONDS,capacity=PER_S,queue=N")))
    protection_mode: str = _setting(
        "on", "PROTECTION_MODE", "Storm protection on dials, RPC and queue drains: off, shadow (only count and log what "
        "it would limit) or on", p.choice("off", "shadow", "on"))
    protection_canary: float = _setting(
        1.0, "PROTECTION_CANARY", "Fraction of traffic (dials, RPCs, held messages) the protection mode applies to, "
        "0..1; the rest goes unprotected", p.number(above=-1e-9, at_most=1.0))
    event_loop: str = _setting("auto", "EVENT_LOOP", "auto, asyncio or uvloop", p.choice("auto", "asyncio", "uvloop"))

    @property
    def peers_file(self) -> Path:
        """Where known peers are remembered."""
        return self.peer_storage_path if self.peer_storage_path is not None else self.data_dir / ".peers.json"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable name, in declaration order."""
        return {f.name: f.metadata["env"] for f in fields(cls)}

    @classmethod
    def describe(cls) -> list[SettingInfo]:
        """Every setting with its env name, default and help, in declaration order."""
        return [SettingInfo(f.name, f.metadata["env"], _default_of(f), f.metadata["help"]) for f in fields(cls)]

    @classmethod
    def parser_for(cls, name: str) -> p.Parser:
        """The parser that validates raw values of field `name` (KeyError if no such setting)."""
        return _PARSERS[name]


def _default_of(f: Field[Any]) -> Any:
    if f.default is MISSING:
        assert f.default_factory is not MISSING, f.name
        return f.default_factory()
    return f.default


_PARSERS: dict[str, p.Parser] = {f.name: f.metadata["parse"] for f in fields(Settings)}
