"""A raw protocol client for adversarial tests: speaks (or mis-speaks) the wire protocol by hand.

It runs the real Noise handshake (p2p/secure/channel.py) with whatever identity it is given, then
sends frames of its own choosing through the encrypted channel, so a test can play a peer that is
authenticated and hostile."""
from __future__ import annotations

import asyncio
import time

from node.identity import NodeIdentity
from p2p import messages as m
from p2p.framing import FrameDecoder, encode_frame
from p2p.secure.channel import ChannelError, SecureHandshake, SecureTransport, StaticIdentity


class HandshakeRefused(Exception):
    """The node closed instead of completing the handshake; `reason` is its goodbye reason (or None)."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason or "closed")
        self.reason = reason


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.inbox: list[dict] = []
        self.channel: SecureTransport | None = None
        self.remote_id: str | None = None
        self.node_hello: dict | None = None

    @classmethod
    async def connect(cls, host: str, port: int, local_host: str | None = None) -> "RawPeer":
        """A TCP connection to (host, port), from `local_host` if given (on loopback, another /24 of 127/8 looks
        like another network to the node)."""
        reader, writer = await asyncio.open_connection(host, port, local_addr=(local_host, 0) if local_host else None)
        return cls(reader, writer)

    # --- the encrypted channel --------------------------------------------------------------
    async def secure(self, identity: NodeIdentity, timeout: float = 5.0) -> str:
        """Run the Noise handshake as the dialler; returns the node id the node proved."""
        static = StaticIdentity(identity.sign, identity.public_key_bytes)
        handshake = SecureHandshake(True, static, NodeIdentity.verify, NodeIdentity.node_id_for)
        self.writer.write(handshake.start())
        async with asyncio.timeout(timeout):
            while not handshake.done:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("node closed the connection during the Noise handshake")
                try:
                    self.writer.write(handshake.feed(data))
                except ChannelError as exc:  # e.g. refused at accept
                    raise HandshakeRefused(exc.reason) from None
        self.channel = handshake.transport()
        self.remote_id = handshake.remote_id
        if handshake.leftover:
            self.inbox.extend(self.decoder.feed(self.channel.open(handshake.leftover)))
        return handshake.remote_id or ""

    def send(self, message: dict) -> None:
        self.send_plain(encode_frame(message))

    def send_plain(self, data: bytes) -> None:
        """Bytes for the frame decoder on the other side: sealed when the channel is up."""
        self.writer.write(self.channel.seal(data) if self.channel is not None else data)

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, never sealed."""
        self.writer.write(data)

    async def next_message(self, timeout: float = 5.0) -> dict | None:
        """Next frame from the node, or None at EOF."""
        async with asyncio.timeout(timeout):
            while not self.inbox:
                data = await self.reader.read(65536)
                if not data:
                    return None
                if self.channel is not None:
                    data = self.channel.open(data)
                self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    async def until_goodbye(self, timeout: float = 5.0) -> tuple[str | None, bool]:
        """Read until the node says goodbye; returns (reason, closed_after)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next_message(max(0.01, deadline - time.monotonic()))
            if message is None:
                return None, True
            if message["type"] == "goodbye":
                rest = await self.reader.read()  # the node closes after its goodbye
                return message["reason"], rest == b""

    def hello(self, identity: NodeIdentity, *, network: str = "exchange-mainnet", claim_id: str | None = None,
              protocol: int = m.PROTOCOL_VERSION, listen_port: int = 0, **extra) -> dict:
        return {"type": "handshake", "node_id": claim_id or identity.node_id, "protocol": protocol, "network": network,
                "listen_port": listen_port, "capabilities": [], "services": [], "software": "raw-test", **extra}

    async def handshake(self, identity: NodeIdentity, *, network: str = "exchange-mainnet",
                        claim_id: str | None = None, protocol: int = m.PROTOCOL_VERSION, listen_port: int = 0,
                        wait_open: bool = True, **extra) -> dict:
        """Noise handshake, hellos, acks: afterwards the node holds an open link to us. Returns its hello.
        `extra` goes into our hello (e.g. the `chain` a higher layer announces)."""
        await self.secure(identity)
        self.send(self.hello(identity, network=network, claim_id=claim_id, protocol=protocol,
                             listen_port=listen_port, **extra))
        hello = await self.next_message()
        self._expect(hello, "handshake")
        assert hello is not None            # _expect refused a missing answer
        self.node_hello = hello
        self.send({"type": "handshake_ack"})
        if wait_open:
            self._expect(await self.next_message(), "handshake_ack")
        return hello

    @staticmethod
    def _expect(message: dict | None, kind: str) -> None:
        if message is None or message["type"] == "goodbye":
            raise HandshakeRefused(None if message is None else message.get("reason"))
        assert message["type"] == kind, message

    def close(self) -> None:
        self.writer.close()


async def read_until_goodbye(peer: RawPeer, received: dict[str, int]) -> dict | None:
    """Read what `peer` is sent, counting it by type in `received`, until the node says goodbye (the goodbye is
    returned) or the link ends (None)."""
    try:
        while True:
            message = await peer.next_message(timeout=3600)
            if message is None:
                return None
            kind = message.get("type", "?")
            received[kind] = received.get(kind, 0) + 1
            if kind == "goodbye":
                return message
    except (OSError, asyncio.TimeoutError, ValueError):
        return None


async def handshake_from_each(host: str, port: int, sources: list[str]) -> list[str]:
    """One connection to host:port from each source address in turn, each a fresh key completing the handshake:
    "open" or "refused" for each. The open ones are held until the last is tried, then closed."""
    held: list[RawPeer] = []
    results = []
    for source in sources:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        peer = RawPeer(reader, writer)
        try:
            await peer.handshake(NodeIdentity.generate())
            results.append("open")
            held.append(peer)
        except (HandshakeRefused, ConnectionError, TimeoutError):
            results.append("refused")
            peer.close()
    for peer in held:
        peer.close()
    return results


if __name__ == "__main__":     # python -m tests.wire HOST PORT SOURCE...: inside a namespace the test cannot enter
    import json
    import sys
    print(json.dumps(asyncio.run(handshake_from_each(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))))
