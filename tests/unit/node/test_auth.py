"""Control API authentication: every route of the real app is public or private exactly as documented,
no spelling of a path reaches a private handler without a token, and the cookie lives as long as the API."""
from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import load_settings
from node.api.server import build_app
from node.api.auth import AUTH_KEY, PUBLIC_ROUTES, check_token, install_auth, is_public
from node.cookie import cookie_path, read_cookie, remove_cookie, write_cookie

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"
API_TOKEN = "operator-token-0123456789abcdef"

# The public read-only set as the brief and docs/api.md state it, written out independently of node/api/auth.py.
DOCUMENTED_PUBLIC = [r"/status", r"/health", r"/ready", r"/metrics", r"/book/.+", r"/trades/.+", r"/candles/.+", r"/",
                     r"/static(/.*)?", r"/ws", r"/chain/.+"]


def documented_public(method: str, canonical: str) -> bool:
    return method in ("GET", "HEAD") and any(re.fullmatch(p, canonical) for p in DOCUMENTED_PUBLIC)


def real_node(tmp_path: Path):
    """The node the daemon builds (not started), with the debug routes too: its app has every route."""
    from node.app import ExchangeNode

    settings = load_settings(env={}, cli={"data_dir": str(tmp_path), "debug_api": "true", "p2p_port": 0,
                                          "api_port": 0, "discovery_mdns": "false", "api_token": API_TOKEN})
    return ExchangeNode(settings)


def concrete(canonical: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", canonical)


async def test_every_route_is_public_or_private_exactly_as_documented(tmp_path):
    app = build_app(real_node(tmp_path))
    routes = [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]
    assert ("GET", "/peers") in routes and ("POST", "/orders") in routes and ("GET", "/book/{market}") in routes
    for method, canonical in routes:
        assert is_public(method, canonical) == documented_public(method, canonical), (method, canonical)
    async with TestClient(TestServer(app)) as client:
        for method, canonical in routes:
            async with client.request(method, concrete(canonical)) as response:
                if documented_public(method, canonical):
                    assert response.status != 401, (method, canonical)
                    continue
                assert response.status == 401, (method, canonical, response.status)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="exchange-node"'
                if method != "HEAD":
                    body = await response.json()
                    assert body["error"]["code"] == "unauthorized" and "Bearer" in body["error"]["message"]
        assert app[AUTH_KEY].refused == sum(1 for m, c in routes if not documented_public(m, c))


def test_prefix_resources_and_new_routes():
    assert is_public("GET", "/static") and is_public("GET", "/static/{filename}")  # aiohttp's static resource
    assert is_public("HEAD", "/book/{market}") and is_public("GET", "/trades/{market}/recent")
    assert not is_public("POST", "/book/{market}") and not is_public("DELETE", "/status")
    assert not is_public("GET", "/accounts/{id}") and not is_public("GET", "/orders") and not is_public("GET", None)
    assert not is_public("GET", "/statusx") and not is_public("GET", "/bookx/{m}") and not is_public("GET", "/ws/x")


@pytest.fixture
async def guarded(tmp_path):
    """A small app with one public and one private route, guarded like the node's."""
    app = web.Application()
    install_auth(app, tmp_path, API_TOKEN)

    async def ok(request: web.Request) -> web.Response:
        resource = request.match_info.route.resource
        assert resource is not None
        return web.json_response({"route": resource.canonical, **request.match_info})

    app.router.add_get("/status", ok)
    app.router.add_get("/book/{market}", ok)
    app.router.add_get("/peers", ok)
    app.router.add_post("/orders", ok)
    async with TestClient(TestServer(app)) as client:
        yield client, app, tmp_path


async def test_cookie_and_api_token_are_accepted_and_nothing_else(guarded):
    client, app, data_dir = guarded
    cookie = read_cookie(data_dir)
    assert cookie and re.fullmatch(r"[0-9a-f]{64}", cookie)
    for header, expected in [
        (f"Bearer {cookie}", 200), (f"bearer {cookie}", 200), (f"Bearer   {cookie}  ", 200), (f"Bearer {API_TOKEN}", 200),
        ("", 401), ("Bearer", 401), ("Bearer ", 401), (f"Basic {cookie}", 401), (cookie, 401),
        (f"Bearer {cookie}x", 401), (f"Bearer {cookie[:-1]}", 401), (f"Bearer {cookie.upper()}", 401),
        (f"Bearer {API_TOKEN} {cookie}", 401), ("Bearer \u00e9\u00e9", 401),
    ]:
        headers = {"Authorization": header} if header else {}
        async with client.get("/peers", headers=headers) as response:
            assert response.status == expected, (header, response.status)
            if expected == 401 and header.lower().startswith("bearer") and header.strip().lower() != "bearer":
                assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], header
    assert check_token(app, cookie) and check_token(app, API_TOKEN)
    assert not check_token(app, None) and not check_token(app, "") and not check_token(app, b"bytes")


async def test_no_path_spelling_reaches_a_private_route_without_a_token(guarded):
    client, _app, _ = guarded
    port = client.server.port
    for line in ["GET //peers", "GET /book/../peers", "GET /book/%2e%2e/peers",
                 "GET /status/../peers", "GET /peers/", "GET /PEERS", "GET /status%2f..%2fpeers",
                 "GET /./peers", "OPTIONS /peers", "HEAD /peers", "POST /status", "PUT /orders", "POST /orders",
                 "GET /nowhere", "GET http://127.0.0.1/peers"]:
        status = await raw_status(port, line)
        assert status == 401, (line, status)
    assert await raw_status(port, "GET /status") == 200
    assert await raw_status(port, "GET /book/BTC-USD") == 200
    async with client.get("/book/..%2fpeers") as response:   # an odd market name for the public book route
        assert response.status == 200 and await response.json() == {"route": "/book/{market}", "market": "../peers"}


async def raw_status(port: int, request_line: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def test_cookie_is_private_and_removed_when_the_api_stops(tmp_path):
    app = web.Application()
    install_auth(app, tmp_path / "new", None)
    client = TestClient(TestServer(app))
    await client.start_server()
    path = cookie_path(tmp_path / "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    old = read_cookie(tmp_path / "new")
    await client.close()
    assert not path.exists()
    assert write_cookie(tmp_path / "new") != old    # a new run gets a new cookie


def test_a_cookie_replaced_by_another_run_is_left_alone(tmp_path):
    mine = write_cookie(tmp_path)
    theirs = write_cookie(tmp_path)
    remove_cookie(tmp_path, mine)
    assert read_cookie(tmp_path) == theirs
    remove_cookie(tmp_path, theirs)
    assert read_cookie(tmp_path) is None
    assert not list(tmp_path.iterdir())               # no temp files either


def test_the_api_reference_lists_exactly_the_public_routes():
    text = API_DOC.read_text()
    section = text[text.index("## Accounts and API access"):]
    listed = set(re.findall(r"`((?:GET|HEAD) /[^`]*)`", section[:section.index("\n## ", 5)]))
    assert set(PUBLIC_ROUTES) <= listed, set(PUBLIC_ROUTES) - listed
    assert all(documented_public(r.split()[0], r.split()[1].replace("*", "x")) for r in PUBLIC_ROUTES)
