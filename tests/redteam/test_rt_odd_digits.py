"""Red team: numbers written in other digits. `str.isdigit()` is true for '²' and the digits of other scripts, and
`int()` refuses '²' (and any text of more than 4,300 digits): checked with `isdigit()` alone, such a number raised
ValueError out of the handler instead of a clear 400, on public routes added today (`/chain/headers/{h}`,
`/chain/blocks?from=`, `?proof=1&depth=`), and out of reading a DHT record's browser endpoint, which any node
signs for itself: one record naming port '²' made every page's `nodes` request fail on each node holding it.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from node.api import blocks, light, proofs
from node.api.base import ApiError
from node.browser.endpoints import ENDPOINT_PREFIX, endpoint_of_record

ODD = ["²", "٣", "9" * 5000]


@pytest.mark.parametrize("text", ODD, ids=["superscript", "arabic-indic", "5000-digits"])
def test_odd_numbers_on_the_public_routes_are_400(text: str) -> None:
    with pytest.raises(ApiError) as header:
        asyncio.run(light.get_header(make_mocked_request("GET", "/chain/headers/x", match_info={"height": text})))
    assert header.value.status == 400
    with pytest.raises(ApiError) as start:
        blocks._height(make_mocked_request("GET", f"/chain/blocks?from={text}"), "from", 1, 1 << 62)
    assert start.value.status == 400
    with pytest.raises(ApiError) as depth:
        proofs._count(make_mocked_request("GET", f"/book/BTC-USD?proof=1&depth={text}"), "depth", None, 100_000)
    assert depth.value.status == 400


@pytest.mark.parametrize("text", ODD[:2], ids=["superscript", "arabic-indic"])
def test_a_record_naming_an_odd_port_names_no_endpoint(text: str) -> None:
    record: Any = SimpleNamespace(services=(f"{ENDPOINT_PREFIX}{text}/wt#{'A' * 43}",),
                                  addresses=(("203.0.113.9", 7946, "direct"),))
    assert endpoint_of_record(record) is None
