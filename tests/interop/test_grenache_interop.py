"""Our Grape and Grenache HTTP code against the real Node.js Grenache (grapes, Link, PeerRPC client/worker)."""
from __future__ import annotations

import pytest

from grenache_harness import arun_node_json
from p2p.grenache.grape import GrapeClient, GrapeError

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


async def test_our_announce_is_visible_to_node_lookup(grapes):
    client = GrapeClient([grapes[0]])
    try:
        await client.announce("interop:announce", 47001)
        await client.announce("interop:announce", 47002)
        assert sorted(await client.lookup("interop:announce")) == [("127.0.0.1", 47001), ("127.0.0.1", 47002)]
    finally:
        await client.close()
    found = await arun_node_json("lookup.js", grape=grapes[1], service="interop:announce")
    assert found["ok"] is True
    assert sorted(found["addresses"]) == ["127.0.0.1:47001", "127.0.0.1:47002"]
    missing = await arun_node_json("lookup.js", grape=grapes[1], service="interop:nobody")
    assert missing == {"ok": False, "error": "ERR_GRAPE_LOOKUP_EMPTY"}


async def test_real_grape_answer_shapes(grapes):
    client = GrapeClient(list(grapes))
    try:
        digest = await client.put("interop value")
        assert await client.get(digest) == "interop value"
        assert await client.get("0" * 40) is None
        with pytest.raises(GrapeError) as info:
            await client.put("x" * 20000)
        assert info.value.code == "ERR_GRAPE_PAYLOAD_SIZE"
    finally:
        await client.close()


def test_grapes_stop_and_start_on_same_ports(grapes):
    urls, pids = list(grapes), grapes.pids
    grapes.stop()
    assert not grapes.running
    grapes.start()
    assert list(grapes) == urls and grapes.pids != pids and grapes.running
