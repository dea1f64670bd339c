"""The browser endpoint's settings, as node/configs.py derives them (light: no QUIC imported)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class BrowserConfig:
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int | None = None       # None: the peer port's number, on UDP
    path: str = "/exchange-node"
    public_host: str = "127.0.0.1"    # the host our URL names (ADVERTISE_HOST, else P2P_HOST unless a wildcard)
    max_per_address: int = 8
    max_per_subnet: int = 32
    max_sessions: int = 256
    webrtc: bool = True               # answer pages' relayed WebRTC offers (when aiortc is installed)
    data_dir: Path | None = None      # where the certificates are kept across restarts (None: not kept)
