"""WebSocket frames a server writes (RFC 6455 section 5.2: FIN set, no mask, no extensions).

The stream writes its frames straight into the connection's transport, all the frames of one
event-loop pass in one write, so a thousand subscribers cost a thousand writes per batch of
updates rather than one awaited send per message each. aiohttp still reads the socket and
answers pings and closes; its frames and ours are whole frames, so they never interleave mid-frame.
"""
from __future__ import annotations

import struct

_TEXT = 0x81          # FIN + opcode 1 (text)
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One unmasked text frame carrying `payload` (UTF-8 JSON)."""
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_TEXT, n) + payload
    if n < 65536:
        return _MEDIUM.pack(_TEXT, 126, n) + payload
    return _LONG.pack(_TEXT, 127, n) + payload
