"""Pages reach this node over a WebRTC data channel when they cannot dial it (it is behind a NAT).

The page's offer reaches us through a node it is linked to (service.py relays it over our peer link);
we answer with aiortc, gathering our candidates with the relaying node as STUN server (its browser port
answers binding requests: stun.py), so ICE uses only the network's own addresses. The data channel then
carries the same JSON lines as a WebTransport session (protocol.py), and the session proof binds the
node key to our DTLS certificate's fingerprint in the answer, as it binds it to the served certificate's
hash over WebTransport: a relay that rewrote the answer cannot make the proof name its own fingerprint.

aiortc is an optional extra (it imports PyAV): without it `available` is False, `why` says so, offers are
refused with that reason and the page keeps to WebTransport. It is imported on the first offer only.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import re
import time
from typing import Any, Callable, Protocol

log = logging.getLogger("node.browser")

MAX_PEERS = 32                # peer connections at once (open sessions and offers not yet connected)
MAX_PER_RELAY = 8             # of those, offers brought by one relaying node
CONNECT_WITHIN = 15.0         # s an answered offer has to open its data channel before it is dropped
MESSAGE_CHARS = 16384         # characters per data channel message (SCTP messages stay far below aiortc's 64 KiB)
ANSWER_WITHIN = 8.0           # s to gather our candidates and answer
MISSING = "aiortc is not installed (pip install 'exchange-node[webrtc]'): pages reach this node over WebTransport only"
_FINGERPRINT = re.compile(r"^a=fingerprint:sha-256 ([0-9A-Fa-f:]{95})\s*$", re.MULTILINE)


class RtcRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ChannelHandler(Protocol):
    def data_received(self, data: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class DataChannel(Protocol):
    """What a session's pipe uses of an aiortc `RTCDataChannel` (aiortc is an optional extra, not imported here)."""

    readyState: str
    bufferedAmount: int

    def send(self, data: str) -> None: ...


class ChannelPipe:
    """A session's way back to the page over the data channel (the same seam as a WebTransport stream)."""

    def __init__(self, channel: DataChannel, close: Callable[[], None]) -> None:
        self.channel = channel
        self._close = close

    def write(self, data: bytes) -> None:
        """Lines as text messages, a long write in several (the page joins what it receives before splitting lines)."""
        if self.channel.readyState == "open":
            text = data.decode()
            for start in range(0, len(text), MESSAGE_CHARS):
                self.channel.send(text[start:start + MESSAGE_CHARS])

    def buffered(self) -> int:
        return int(self.channel.bufferedAmount)

    def abort(self) -> None:
        self._close()


NewChannelSession = Callable[[ChannelPipe, bytes, str], ChannelHandler]     # (pipe, our DTLS fingerprint, page)


def fingerprint_of(sdp: str) -> bytes | None:
    """Our DTLS certificate's SHA-256 as the SDP names it."""
    found = _FINGERPRINT.search(sdp)
    return None if found is None else bytes.fromhex(found.group(1).replace(":", ""))


class RtcEndpoint:
    def __init__(self, new_session: NewChannelSession, *, enabled: bool = True) -> None:
        self.new_session = new_session
        self.why: str | None = None
        if not enabled:
            self.why = "WebRTC for browsers is off on this node"
        elif importlib.util.find_spec("aiortc") is None:
            self.why = MISSING
        self._aiortc: Any = None
        self.peers: dict[Any, str] = {}         # peer connection -> the relaying node that brought its offer
        self.counters = {"offers": 0, "answered": 0, "connected": 0, "refused": 0, "failed": 0}

    @property
    def available(self) -> bool:
        return self.why is None

    async def answer(self, offer_sdp: str, *, stun: str | None, relay: str, page: str) -> str:
        """Our answer to a page's offer (raises RtcRefused): a peer connection that waits for its channel."""
        self.counters["offers"] += 1
        if self.why is not None:
            self.counters["refused"] += 1
            raise RtcRefused("no_webrtc", self.why)
        if len(self.peers) >= MAX_PEERS or sum(1 for r in self.peers.values() if r == relay) >= MAX_PER_RELAY:
            self.counters["refused"] += 1
            raise RtcRefused("busy", f"this node holds {len(self.peers)} WebRTC peers (at most {MAX_PEERS}, "
                             f"{MAX_PER_RELAY} per relaying node)")
        rtc = await self._load()
        servers = [rtc.RTCIceServer(urls=stun)] if stun else []
        pc = rtc.RTCPeerConnection(rtc.RTCConfiguration(iceServers=servers))
        self.peers[pc] = relay
        opened = asyncio.get_running_loop().create_future()

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            if opened.done():
                channel.close()         # one channel per page
                return
            opened.set_result(None)
            self._serve(pc, channel, page)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                if pc.connectionState == "failed":
                    self.counters["failed"] += 1
                await self._drop(pc)

        try:
            await pc.setRemoteDescription(rtc.RTCSessionDescription(sdp=offer_sdp, type="offer"))
            await asyncio.wait_for(pc.setLocalDescription(await pc.createAnswer()), ANSWER_WITHIN)
        except Exception as exc:  # noqa: BLE001 - a page's SDP is untrusted input: refuse it, keep serving
            await self._drop(pc)
            self.counters["refused"] += 1
            raise RtcRefused("bad_offer", f"cannot answer this offer: {type(exc).__name__}: {exc}") from None
        self.counters["answered"] += 1
        asyncio.get_running_loop().call_later(CONNECT_WITHIN, self._expire, pc, opened)
        return str(pc.localDescription.sdp)

    def _serve(self, pc: Any, channel: Any, page: str) -> None:
        fingerprint = fingerprint_of(pc.localDescription.sdp) or b""
        self.counters["connected"] += 1
        handler = self.new_session(ChannelPipe(channel, lambda: self._drop_soon(pc)), fingerprint, page)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            handler.data_received(message.encode() if isinstance(message, str) else message)

        @channel.on("close")
        def on_close() -> None:
            handler.close(1001, "the data channel closed")
            self._drop_soon(pc)

    def _expire(self, pc: Any, opened: asyncio.Future[None]) -> None:
        if not opened.done():
            self.counters["failed"] += 1
            self._drop_soon(pc)

    def _drop_soon(self, pc: Any) -> None:
        if pc in self.peers:
            asyncio.get_running_loop().create_task(self._drop(pc))

    async def _drop(self, pc: Any) -> None:
        if self.peers.pop(pc, None) is not None:
            await pc.close()

    async def _load(self) -> Any:
        """aiortc, imported once; an install that cannot import it turns WebRTC off here, said loudly."""
        if self._aiortc is None:
            started = time.monotonic()
            try:
                self._aiortc = await asyncio.to_thread(importlib.import_module, "aiortc")
            except ImportError as exc:
                self.why = f"aiortc is installed but cannot be imported ({exc}): pages reach this node over " \
                           f"WebTransport only"
                log.warning("WebRTC for browsers is unavailable: %s", self.why)
                raise RtcRefused("no_webrtc", self.why) from None
            log.info("WebRTC for browsers: aiortc loaded in %.2f s", time.monotonic() - started)
        return self._aiortc

    async def stop(self) -> None:
        for pc in list(self.peers):
            await self._drop(pc)

    def status(self) -> dict[str, Any]:     # Any: a JSON object for /status (counters and the reason as text)
        return {"available": self.available, "why": self.why, "peers": len(self.peers), **self.counters}
