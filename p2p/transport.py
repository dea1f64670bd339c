"""TCP listener and dialer producing PeerLinks (the seed's DirectConnectionService)."""
from __future__ import annotations

import asyncio
import os

from p2p.close_reason import CloseReason
from p2p.connection import Direction, LinkClosed, LinkHost, PeerLink, ProbeLink


class DialError(Exception):
    def __init__(self, address: tuple[str, int], reason: str, detail: str = "", remote_id: str | None = None) -> None:
        super().__init__(f"dial {address[0]}:{address[1]} failed: {reason}" + (f" ({detail})" if detail else ""))
        self.address = address
        self.reason = reason
        self.detail = detail
        self.remote_id = remote_id      # the node reached, when its key was proven before the link was refused


def os_reason(exc: OSError) -> str:
    """A close reason from a socket error: "connection_refused", "no_route_to_host", ..."""
    text = os.strerror(exc.errno) if isinstance(exc.errno, int) and exc.errno > 0 else exc.strerror
    return (text or type(exc).__name__).lower().replace(" ", "_")[:48]


class Transport:
    def __init__(self, host: LinkHost) -> None:
        self.host = host
        self._server: asyncio.base_events.Server | None = None
        self.listen_address: tuple[str, int] | None = None

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PeerLink(self.host, Direction.INBOUND), host, port, reuse_address=True, backlog=512)
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        self.listen_address = (bound[0], bound[1])
        return self.listen_address

    async def dial(self, host: str, port: int, *, source: str = "unknown", timeout: float | None = None) -> PeerLink:
        """Connect and complete the handshake; raises DialError with the close reason otherwise."""
        loop = asyncio.get_running_loop()
        timeout = self.host.handshake_timeout if timeout is None else timeout
        address = (host, port)
        link: PeerLink | None = None
        try:
            async with asyncio.timeout(timeout):
                _, link = await loop.create_connection(
                    lambda: PeerLink(self.host, Direction.OUTBOUND, source, address), host, port)
                return await link.ready
        except LinkClosed as exc:
            raise DialError(address, exc.reason, exc.detail, link.remote_id if link is not None else None) from None
        except TimeoutError:
            raise DialError(address, CloseReason.DIAL_TIMEOUT, f"no link within {timeout:g}s") from None
        except OSError as exc:  # socket.gaierror included
            raise DialError(address, os_reason(exc), str(exc)) from None

    async def probe(self, host: str, port: int, timeout: float) -> str:
        """Dial, prove who answers with the Noise handshake, hang up: the node id reached. Raises DialError."""
        loop = asyncio.get_running_loop()
        address = (host, port)
        try:
            async with asyncio.timeout(timeout):
                _, link = await loop.create_connection(
                    lambda: ProbeLink(self.host, Direction.OUTBOUND, "dial-back", address), host, port)
                await link.ready
        except LinkClosed as exc:
            raise DialError(address, exc.reason, exc.detail) from None
        except TimeoutError:
            raise DialError(address, CloseReason.DIAL_TIMEOUT, f"no answer within {timeout:g}s") from None
        except OSError as exc:
            raise DialError(address, os_reason(exc), str(exc)) from None
        assert link.remote_id is not None
        return link.remote_id

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
