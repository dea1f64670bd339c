"""A deliberately bad WebSocket client for tests: a raw socket with a small receive buffer that
subscribes and then stops reading (a consumer that falls behind)."""
from __future__ import annotations

import base64
import os
import socket
import struct
from urllib.parse import urlsplit

import orjson


def masked_text_frame(payload: bytes) -> bytes:
    """A client frame (RFC 6455: clients must mask)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    header = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return header + mask + body


class StalledClient:
    def __init__(self, api_url: str, receive_buffer: int = 4096) -> None:
        parts = urlsplit(api_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)   # before connect: small window
        self.sock.settimeout(10)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, request: dict) -> None:
        self.sock.sendall(masked_text_frame(orjson.dumps(request)))

    def drain_until_close(self, timeout: float = 30.0) -> tuple[int | None, str, int]:
        """Read everything now (frames, then the close frame): (close code, reason, data frames read)."""
        self.sock.settimeout(timeout)
        buffer = b""
        frames = 0
        while True:
            while len(buffer) >= 2:
                opcode, n = buffer[0] & 0x0F, buffer[1] & 0x7F
                offset = {126: 4, 127: 10}.get(n, 2)
                if len(buffer) < offset:
                    break
                if n == 126:
                    n = struct.unpack("!H", buffer[2:4])[0]
                elif n == 127:
                    n = struct.unpack("!Q", buffer[2:10])[0]
                if len(buffer) < offset + n:
                    break
                payload, buffer = buffer[offset:offset + n], buffer[offset + n:]
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return code, payload[2:].decode(errors="replace"), frames
                frames += 1
            chunk = self.sock.recv(65536)
            if not chunk:
                return None, "connection closed without a close frame", frames
            buffer += chunk

    def close(self) -> None:
        self.sock.close()
