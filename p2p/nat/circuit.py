"""A relayed byte stream, shaped as an asyncio transport so a PeerLink runs over it unchanged.

The bytes a PeerLink writes are already Noise ciphertext (the handshake runs end to end through the
relay), so the relay carries `relay.data` frames it cannot read or forge: a relay that alters one
breaks the AEAD and the link closes as a path fault; one that answers the handshake itself cannot
prove the target's key. The carrier is our own link to the relay; flow control is the carrier's
(its send buffer bound closes a carrier that cannot keep up, and every circuit on it with it).
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from p2p.connection import PeerLink

DATA, CLOSE = "relay.data", "relay.close"
CHUNK = 32 * 1024          # bytes per relay.data frame


class CircuitTransport(asyncio.Transport):
    def __init__(self, carrier: PeerLink, circuit: int, relay_id: str,
                 on_closed: Callable[["CircuitTransport"], None]) -> None:
        super().__init__()
        self.carrier = carrier
        self.circuit = circuit
        self.relay_id = relay_id
        self._on_closed = on_closed
        self._protocol: asyncio.Protocol | None = None
        self._closing = False
        self._lost = False
        self._reading_paused = False
        self.bytes_in = self.bytes_out = 0

    def attach(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)

    # --- what the relay sends us --------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._protocol is not None and not self._lost:
            self.bytes_in += len(data)
            self._protocol.data_received(data)

    def remote_closed(self) -> None:
        """The relay or the far end closed the circuit, or the carrier link is gone."""
        self._closing = True
        self._lose(None)

    # --- asyncio.Transport -------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        view = memoryview(bytes(data))
        for start in range(0, len(view), CHUNK):
            chunk = bytes(view[start:start + CHUNK])
            self.bytes_out += len(chunk)
            if not self.carrier.send({"type": DATA, "circuit": self.circuit, "data": chunk}):
                self.abort()
                return

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.carrier.send({"type": CLOSE, "circuit": self.circuit, "reason": "closed"})
        asyncio.get_running_loop().call_soon(self._lose, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        """The link over this circuit is behind: its carrier stops reading until it catches up (every other
        circuit on that carrier waits too: they share its flow control), so what the relay sends waits in TCP
        rather than in the link's backlog."""
        if not self._reading_paused:
            self._reading_paused = True
            self.carrier.reading.block(self)

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self.carrier.reading.unblock(self)

    def is_reading(self) -> bool:
        return not self._reading_paused

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:   # Any: asyncio.BaseTransport's signature
        if name == "peername":      # no IP of the far end: the relay stands for it (caps count per relay)
            return (f"relay:{self.relay_id[:16]}", 0)
        return default

    def can_write_eof(self) -> bool:
        return False

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.resume_reading()
        self._on_closed(self)
        if self._protocol is not None:
            self._protocol.connection_lost(exc)
