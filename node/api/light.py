"""What a light client needs to check this node instead of believing it (public routes, `node/light/`).

GET /chain/genesis           the genesis document: its hash is the chain id, the client's root of trust
GET /chain/epochs            the certified block of every validator-set change (the epoch proofs), oldest first
GET /chain/headers/latest    the newest decided header and its commit (the validators' precommit signatures)
GET /chain/headers/{height}  a decided height's header and commit, while the block log still holds it

Each value is the chain's own canonical msgpack, base64 in a JSON field, so the client checks the same bytes the
validators signed. Nothing here is trusted by the client: a header counts only with a quorum of signatures of a
set the epoch proofs (checked from the genesis set) prove.
"""
from __future__ import annotations

import base64

from aiohttp import web

from exchange.chain.api_ports import Certified
from exchange.chain.types.codec import pack
from node.api.base import ApiError, json_response, reads_of

MAX_EPOCH_PROOFS = 4096         # one per validator-set change: far more than a network makes


def _b64(value: object) -> str:
    return base64.b64encode(pack(value)).decode()


def _answer(found: Certified) -> web.Response:
    return json_response({"height": found.header.height, "header": _b64(found.header.wire()),
                          "commit": _b64(found.commit.wire())})


async def get_genesis(request: web.Request) -> web.Response:
    genesis = reads_of(request).genesis()
    if genesis is None:
        raise ApiError(503, "no_chain_yet", "this node has not joined or founded a chain yet", retry_after=1.0)
    return json_response({"chain_id": genesis.chain_id, "genesis": _b64(genesis.wire())})


async def get_epochs(request: web.Request) -> web.Response:
    proofs = reads_of(request).epoch_proofs(MAX_EPOCH_PROOFS)
    return json_response({"proofs": [_b64([block.wire(), commit.wire()]) for block, commit in proofs]})


async def get_latest_header(request: web.Request) -> web.Response:
    found = reads_of(request).latest_certified()
    if found is not None:
        return _answer(found)
    raise ApiError(503, "no_block_yet", "no decided block is stored yet", retry_after=1.0)


async def get_header(request: web.Request) -> web.Response:
    text = request.match_info["height"]
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) < 1:
        raise ApiError(400, "bad_height", f"height must be a positive integer, got {text[:24]!r}", field="height")
    found = reads_of(request).certified(int(text))
    if found is None:
        raise ApiError(404, "height_not_stored", f"height {int(text)} is not in this node's block log (not decided "
                                                 f"yet, or compacted into a snapshot)")
    return _answer(found)


def install_light_api(app: web.Application) -> None:
    app.router.add_get("/chain/genesis", get_genesis)
    app.router.add_get("/chain/epochs", get_epochs)
    app.router.add_get("/chain/headers/latest", get_latest_header)
    app.router.add_get("/chain/headers/{height}", get_header)
