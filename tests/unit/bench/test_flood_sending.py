"""The flood helpers say when the node closed an attacker's link: a row whose links were cut must not read as an
offer the node took at full speed (tests/flood.py)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import pytest

from tests.flood import send_paced
from tests.wire import RawPeer


@pytest.mark.asyncio
async def test_messages_a_closed_link_could_not_take_are_counted() -> None:
    accepted = asyncio.Event()

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a reset, not a FIN: the peer's transport learns of it from its next read, without writing first
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        accepted.set()

    async def keep_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()         # until the peer hangs up
        writer.close()

    closing = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    staying = await asyncio.start_server(keep_open, "127.0.0.1", 0)
    async with closing, staying:
        cut = await RawPeer.connect("127.0.0.1", closing.sockets[0].getsockname()[1])
        kept = await RawPeer.connect("127.0.0.1", staying.sockets[0].getsockname()[1])
        await accepted.wait()
        with contextlib.suppress(ConnectionResetError):
            await cut.writer.wait_closed()          # the reset has reached the peer's transport
        assert cut.writer.is_closing()
        unsent: list[int] = []
        messages = [{"type": "note", "n": n} for n in range(120)]
        await send_paced([cut, kept], [messages, messages], rate=1e9, unsent=unsent)
        kept.close()
        assert unsent == [120, 0]
