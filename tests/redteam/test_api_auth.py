"""Promise 4 (the control API belongs to its operator), attacked on a real node with raw HTTP (http.client
sends a path exactly as written): every private route and every spelling of one (`//peers`, dot segments,
percent-encoding, case, trailing slash), other methods on public routes, method-override headers, a token
in the wrong place or scheme, and the private `orders` channel of the WebSocket. Everything not in the
docs/api.md's public set must be 401 and must do nothing; the public set answers without a token and does not
leak the cookie; the cookie and API_TOKEN are accepted (the positive control)."""
from __future__ import annotations

import asyncio
import http.client
import json
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.harness import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "redteam-token-0123456789abcdef"
ORDER = {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "1.00", "qty": "1"}
PRIVATE = [
    ("GET", "/peers"), ("GET", "/routing"), ("GET", "/orders"), ("GET", "/orders/x"), ("GET", "/accounts/default"),
    ("DELETE", "/orders/x"), ("POST", "/orders"), ("POST", "/orders/batch"), ("POST", "/rpc/ping"),
    ("POST", "/debug/broadcast"), ("GET", "/debug/received"), ("GET", "/debug/chain/commits"),
    ("POST", "/debug/rpc-fault"), ("HEAD", "/peers"), ("OPTIONS", "/peers"),
    # path spellings of private routes
    ("GET", "//peers"), ("GET", "/peers/"), ("GET", "/./peers"), ("GET", "/book/../peers"),
    ("GET", "/book/BTC-USD/../../peers"), ("GET", "/static/../peers"), ("GET", "/%70eers"),
    ("GET", "/book/%2e%2e/peers"), ("GET", "/PEERS"), ("GET", "/peers;x"),
    ("GET", "/trades/../accounts/default"), ("POST", "/book/../orders"), ("POST", "//orders"),
    ("GET", "/nonexistent"),
    # other methods on public routes
    ("POST", "/status"), ("POST", "/book/BTC-USD"), ("DELETE", "/book/BTC-USD"), ("PUT", "/trades/BTC-USD"),
    ("POST", "/metrics"), ("POST", "/"), ("PATCH", "/health"),
]
PUBLIC = ["/status", "/health", "/ready", "/metrics", "/book/BTC-USD", "/trades/BTC-USD", "/"]


def raw(url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
        ) -> tuple[int, bytes, dict[str, str]]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def api_node(tmp_path_factory):
    from tests.harness import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("redteam-api"))
    try:
        node = cluster.node("api", found_after=0, debug_api="true", api_token=TOKEN)
        wait_until(lambda: node.status()["chain_id"], 15, message="the node founds its chain")
        yield node
    finally:
        cluster.close()


def my_orders(node) -> int:
    status, body = node.api("GET", "/orders?limit=1000")
    assert status == 200, body
    return len(body["orders"])


def test_every_private_route_and_spelling_is_401_without_a_valid_bearer_token(api_node):
    node = api_node
    cookie = (node.data_dir / ".cookie").read_text().strip()
    before = my_orders(node)
    body = json.dumps(ORDER).encode()
    wrong_credentials = [
        {}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Cookie": f"token={TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": f"Bearer {cookie.upper()}"},
        {"X-Api-Token": TOKEN}, {"X-HTTP-Method-Override": "GET"},
    ]
    for method, path in PRIVATE:
        for headers in wrong_credentials:
            status, answer, response_headers = raw(node.api_url, method, path, headers, body)
            assert status == 401, (method, path, headers, status, answer[:200])
            if method != "HEAD":
                assert json.loads(answer)["error"]["code"] == "unauthorized", (method, path, answer[:200])
            assert response_headers.get("WWW-Authenticate", "").startswith("Bearer"), (method, path)
    for path in (f"/orders?token={TOKEN}", f"/orders?access_token={cookie}"):
        assert raw(node.api_url, "POST", path, {}, body)[0] == 401, path
    assert my_orders(node) == before, "a refused request placed an order"
    # an encoded slash stays inside the public route's parameter: the book handler answers, not /peers
    status, answer, _ = raw(node.api_url, "GET", "/book/..%2fpeers")
    assert status == 404 and json.loads(answer)["error"]["code"] == "unknown_market", answer[:200]

    # the public set answers anyone and says nothing secret
    for path in PUBLIC:
        status, answer, _ = raw(node.api_url, "GET", path)
        assert status == 200, (path, status, answer[:200])
        assert TOKEN.encode() not in answer and cookie.encode() not in answer, path

    # positive control: both tokens work, with either spelling of the scheme
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"bearer {cookie}"}):
        assert raw(node.api_url, "GET", "/peers", headers)[0] == 200, headers
    status, answer, _ = raw(node.api_url, "POST", "/orders?wait=5", {"Authorization": f"Bearer {cookie}"}, body)
    assert status == 201, answer
    assert my_orders(node) == before + 1


def test_the_private_orders_stream_needs_the_token(api_node):
    node = api_node

    async def session() -> list[dict]:
        seen = []
        async with aiohttp.ClientSession() as http_session:
            async with http_session.ws_connect(node.api_url + "/ws") as ws:
                for request in ({"event": "subscribe", "channel": "orders", "req": 1},
                                {"event": "auth", "token": "wrong", "req": 2},
                                {"event": "subscribe", "channel": "orders", "req": 3},
                                {"event": "auth", "token": TOKEN, "req": 4},
                                {"event": "subscribe", "channel": "orders", "req": 5}):
                    await ws.send_str(json.dumps(request))
                    while True:
                        message = json.loads((await ws.receive(timeout=10)).data)
                        if message.get("req") == request["req"]:
                            seen.append(message)
                            break
        return seen

    answers = asyncio.run(session())
    assert answers[0]["event"] == "error" and answers[0]["code"] == "auth_required", answers[0]
    assert answers[1]["event"] == "error" and answers[1]["code"] == "auth_failed", answers[1]
    assert answers[2]["event"] == "error" and answers[2]["code"] == "auth_required", answers[2]
    assert answers[3]["event"] == "auth" and answers[3]["status"] == "ok", answers[3]
    assert answers[4]["event"] == "subscribed" and answers[4]["channel"] == "orders", answers[4]
