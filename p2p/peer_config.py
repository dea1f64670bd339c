"""PeerConfig: the PeerManager's tunables, built from Settings by the composition root (node/configs.py)."""
from __future__ import annotations

from dataclasses import dataclass

from p2p.admission import InboundLimits


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """What the PeerManager needs to know; every value comes from Settings, none has a default here."""

    network_id: str
    listen_host: str
    listen_port: int
    advertise_host: str | None
    max_frame_bytes: int
    send_buffer_bytes: int
    read_rate: int                  # bytes a second read from one link (LinkReading.charge)
    handshake_timeout: float
    heartbeat_interval: float
    dead_after: int                 # heartbeat intervals of silence before a link is dropped
    reconnect_cap: float            # seconds: the reconnect backoff never waits longer
    dial_rate: float
    dial_burst: int
    max_peers: int
    target_outbound: int            # already capped at max_peers
    limits: InboundLimits
    handshake_rate: float           # new inbound connections a second from one address (4x per netgroup)
    handshake_rate_total: float     # ... and from everyone
    protection_mode: str
    protection_canary: float
    software: str = "exchange-node"  # said in our hello: name/version
