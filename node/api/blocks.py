"""Certified blocks for whoever replays them (the history indexer, `node/indexer_replica.py`): public, checked by
the reader, never believed.

GET /chain/blocks?from=H&limit=N    up to N (at most MAX_BLOCKS, and about MAX_BYTES of them) decided blocks from
                                     height H on, each with the commit that certified it: `{"blocks": [{"height",
                                     "block", "commit"}], "first_height", "last_height"}`

Each value is the chain's canonical msgpack, base64, as `/chain/headers/{height}` serves a header. A height the
block log no longer holds (compacted behind a snapshot) is 404 `height_not_stored` with the first height held.
"""
from __future__ import annotations

import base64

from aiohttp import web

from exchange.chain.types.codec import pack
from node.api.base import ApiError, json_response, reads_of

MAX_BLOCKS = 200
MAX_BYTES = 4 * 1024 * 1024


def _height(request: web.Request, name: str, default: int, highest: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= highest:
        raise ApiError(400, f"bad_{name}", f"{name} must be an integer from 1 to {highest}, got {text[:24]!r}", name)
    return int(text)


async def get_blocks(request: web.Request) -> web.Response:
    reads = reads_of(request)
    start = _height(request, "from", 1, (1 << 62))
    limit = _height(request, "limit", MAX_BLOCKS, MAX_BLOCKS)
    first, last = reads.block_log()
    if start < first:
        raise ApiError(404, "height_not_stored", f"height {start} is not in this node's block log (it holds "
                                                 f"{first} to {last})", "from")
    blocks: list[dict[str, object]] = []
    size = 0
    for height in range(start, min(last, start + limit - 1) + 1):
        stored = reads.stored_block(height)
        if stored is None:
            break
        block, commit = stored
        block_text = base64.b64encode(pack(block.wire())).decode()
        commit_text = base64.b64encode(pack(commit.wire())).decode()
        size += len(block_text) + len(commit_text)
        blocks.append({"height": height, "block": block_text, "commit": commit_text})
        if size >= MAX_BYTES:
            break
    return json_response({"blocks": blocks, "first_height": first, "last_height": last})


def install_blocks_api(app: web.Application) -> None:
    app.router.add_get("/chain/blocks", get_blocks)
