"""LeanHttp: the load generator's HTTP/1.1 client, one keep-alive connection, one request at a time.

On this 2-core machine the client shares the CPU with the nodes it measures. aiohttp's client spent about
350 us per request (44 % of a core at 1,250 single POSTs/s), CPU the nodes under test then lacked; this one
writes the request at once and reads the status line, the headers and a Content-Length body (16 % of a
core at 1,865 requests/s, about 85 us each).
It speaks only what our API answers (Content-Length bodies, keep-alive): a load tool, not a general client.
"""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import orjson


class LeanHttp:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = "".join(f"{k}: {v}\r\n" for k, v in
                             {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json", **headers}.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """(status, decoded JSON body)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        data = orjson.dumps(body)
        self._writer.write(f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        status_line = await self._reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError(f"{self.host}:{self.port} closed the connection instead of answering {path}")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self._reader.readexactly(length)
        return status, orjson.loads(payload) if payload else None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
