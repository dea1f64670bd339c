"""Settings of reachability checks, relaying and hole punching (built from config/settings.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NatConfig:
    relay_service: bool = True              # serve as a relay while dial-backs say we are public
    relay_client: bool = True               # reserve relay slots while dial-backs say we are private
    hole_punch: bool = True                 # try a direct link to a node we reach through a relay
    hole_punch_cooldown: float = 30.0       # s before a peer may open a new punch with us
    port_mapping: bool = True               # ask the LAN's UPnP gateway to forward our P2P port
    relay_max_reservations: int = 64
    relay_reservations_per_subnet: int = 4
    relay_reservation_ttl: float = 600.0
    relay_max_circuits: int = 64
    relay_circuits_per_peer: int = 8
    relay_circuit_bytes: int = 256 * 1024 * 1024
    relay_circuit_seconds: float = 3600.0
    relay_circuit_rate: float = 1024 * 1024.0     # bytes/s, sustained
    relay_circuit_burst: float = 8 * 1024 * 1024.0
    relays_wanted: int = 2                  # relays a private node holds reservations with
