"""A raw protocol client for adversarial tests: speaks (or mis-speaks) the wire protocol by hand."""
from __future__ import annotations

import asyncio
import time

from node.identity import NodeIdentity
from p2p import messages as m
from p2p.framing import FrameDecoder, encode_frame


class RawPeer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.inbox: list[dict] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> "RawPeer":
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, message: dict) -> None:
        self.writer.write(encode_frame(message))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def next_message(self, timeout: float = 5.0) -> dict | None:
        """Next frame from the node, or None at EOF."""
        async with asyncio.timeout(timeout):
            while not self.inbox:
                data = await self.reader.read(65536)
                if not data:
                    return None
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

    async def handshake(self, identity: NodeIdentity, *, network: str = "exchange-mainnet",
                        claim_id: str | None = None, public_key: bytes | None = None,
                        protocol: int = m.PROTOCOL_VERSION, listen_port: int = 0) -> dict:
        """Send our hello, answer the node's hello with a proof; returns the node's hello."""
        nonce = m.new_nonce()
        my_id = claim_id or identity.node_id
        self.send({"type": "handshake", "node_id": my_id, "public_key": public_key or identity.public_key_bytes,
                   "protocol": protocol, "network": network, "listen_port": listen_port, "nonce": nonce,
                   "capabilities": [], "services": [], "software": "raw-test"})
        hello = await self.next_message()
        assert hello is not None and hello["type"] == "handshake", hello
        proof = m.handshake_proof(hello["nonce"], my_id, hello["node_id"], network)
        self.send({"type": "handshake_ack", "node_id": my_id, "signature": identity.sign(proof)})
        self.node_hello = hello
        self.local_nonce = nonce
        return hello

    def close(self) -> None:
        self.writer.close()
