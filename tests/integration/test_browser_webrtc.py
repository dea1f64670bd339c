"""The browser peer page reaches nodes behind NAT routers over WebRTC, on the WAN test network (tests/integration/
wan.py), with a real headless Chromium running inside a site of its own (behind a cone NAT, as a home browser):

    public host 0: v (the lone validator), the node the page is given, over WebTransport
    site 0 (cone NAT): a              site 1 (symmetric NAT): c              site 2 (cone NAT): the browser

The page learns `a` and `c` from `v`, each saying nobody can dial it, and sends each an offer through `v`. ICE
gathers only the test's own addresses (v's browser port answers STUN; no outside server): `a` is reached
directly through both NATs, and an order sent through it is final everywhere; `c`'s NAT gives each destination
its own port, so no direct path exists, and the page says so and trades through `v`. No HTTP request leaves the
page.
"""
from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_until
from tests.integration.chain_nodes import node_ids
from tests.integration.wan import wan_or_skip

CHROMIUM = "/usr/bin/chromium"
PAGE = Path(__file__).resolve().parents[2] / "node" / "console" / "static" / "p2p.html"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]
# the rules map address literals too: the public node's address is let through (it exists only in the test's net)
P2P_PORT = 7946
SETTINGS = {"heartbeat_interval": 0.5, "peer_reconnect_interval": 2.0, "p2p_port": P2P_PORT,
            "network_id": "wan-browser-rtc", "browser_webtransport": "true"}

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test-deps)")
pytest.importorskip("aiortc", reason="aiortc is not installed (pip install 'exchange-node[webrtc]')")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.netns, pytest.mark.integration]


def chromium_in(ns: str, tmp_path: Path) -> str:
    """A launcher that runs Chromium inside namespace `ns` (Playwright drives it over inherited pipes)."""
    launcher = tmp_path / "chromium-in-ns"
    launcher.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return str(launcher)


def row(page: Any, node_id: str, what: str) -> str:
    return page.eval_on_selector(f'#links tr[data-node-id="{node_id}"] {what}', "e => e.textContent")


def place(page: Any, side: str, price: str, qty: str) -> str:
    page.evaluate("document.getElementById('order-result').textContent = ''")
    page.select_option("#order-side", side)
    page.fill("#order-price", price)
    page.fill("#order-qty", qty)
    page.click("#order-form button")
    page.wait_for_selector("#order-result:has-text('signed'), #order-result:has-text('final')", timeout=10_000)
    return page.inner_text("#order-result").split()[0]


def wait_final(page: Any, order_id: str) -> None:
    page.wait_for_function(f"""() => document.querySelector('#orders tr[data-order-id="{order_id}"] .order-status')
        ?.textContent.startsWith('final')""", timeout=15_000)


def test_page_reaches_nodes_behind_nat_over_webrtc_or_says_it_trades_through_the_relay(tmp_path) -> None:
    with wan_or_skip(1, ["cone", "symmetric", "cone"]) as net:
        ids = node_ids(tmp_path, ["v"])
        common = SETTINGS | {"validators": ids[0], "bootstrap_peers": f"{net.public[0].address}:{P2P_PORT}"}
        v = net.node(tmp_path, net.public[0], "v", advertise_host=net.public[0].address, **common)
        a = net.node(tmp_path, net.sites[0].hosts[0], "a", **common)
        c = net.node(tmp_path, net.sites[1].hosts[0], "c", **common)
        for node in (v, a, c):
            node.start(wait=False)
        for node in (v, a, c):
            node.wait_ready(30.0)
        wait_until(lambda: [n.status().get("reachability") for n in (a, c)] == ["private", "private"], 30,
                   interval=0.3, message="both NATed nodes know nobody can dial them")
        wait_until(lambda: {e["node_id"]: e["direct"] for e in _nodes_seen_by(v)} == {a.node_id: False,
                                                                                   c.node_id: False}, 15,
                   interval=0.3, message="v tells pages that a and c are reached over WebRTC")
        status = v.get("/status")["browser"]
        assert status["webrtc"]["available"] is True
        fragment = (f"node={status['webtransport']}&hash={','.join(status['cert_sha256'])}"
                    f"&expires={','.join(str(ms) for ms in status['cert_expires_ms'])}&id={v.node_id}&links=3")
        requests: list[str] = []
        problems: list[str] = []
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=chromium_in(net.sites[2].hosts[0].ns, tmp_path),
                args=[*ARGS[:-1], f"{ARGS[-1]} , EXCLUDE {net.public[0].address}"])
            try:
                page = browser.new_page()
                page.on("request", lambda r: requests.append(r.url))
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(PAGE.as_uri() + "#" + fragment)
                try:
                    page.wait_for_selector(f'#links tr[data-node-id="{a.node_id}"][data-state="up"]', timeout=20_000)
                except playwright_api.TimeoutError:
                    raise AssertionError(f"links: {page.inner_text('#links')}\na: {a.get('/status')['browser']}"
                                         f"\nv: {v.get('/status')['browser']}\n{problems}") from None
                assert row(page, a.node_id, "td:nth-child(2)").startswith("webrtc:")
                page.wait_for_selector(f'#links tr[data-node-id="{c.node_id}"][data-state="relayed"]', timeout=20_000)
                said = row(page, c.node_id, ".link-why")
                assert "no direct path" in said and f"trading through {v.node_id[:12]}" in said, said
                rtc_a = a.get("/status")["browser"]["webrtc"]
                assert rtc_a["connected"] == 1 and rtc_a["peers"] == 1, rtc_a
                assert a.get("/status")["browser"]["sessions"] == 1, "the page's session on a runs over the channel"

                page.click(f'#links tr[data-node-id="{a.node_id}"]')          # orders through a, over WebRTC
                assert page.inner_text("#active-node") == a.node_id
                through_a = place(page, "buy", "97.25", "0.7")
                wait_final(page, through_a)
                assert row(page, a.node_id, ".link-state") == "up"
                assert a.get("/status")["browser"]["submitted"] == 1, "the order went to a"

                page.click(f'#links tr[data-node-id="{v.node_id}"]')          # c: only through the relay
                through_v = place(page, "sell", "103.25", "0.2")
                wait_final(page, through_v)
                account = page.inner_text("#account")
                for node in (v, a, c):
                    for order_id in (through_a, through_v):
                        view = wait_until(lambda: node.get(f"/orders/{order_id}")["order"], 15,
                                          message="the page's orders everywhere")
                        assert view["account"] == account and view["status"] == "open"
                page.wait_for_function("""() => [...document.querySelectorAll('#book tbody tr')]
                    .some(r => r.cells[1].textContent === '103.25' && r.cells[2].textContent === 'ask')""",
                                       timeout=10_000)
            finally:
                browser.close()
        assert [u for u in requests if not u.startswith("file://")] == [], "no HTTP request left the page"
        assert problems == []


def _nodes_seen_by(node: Any) -> list[dict[str, Any]]:
    """The linked peers `node` carries WebRTC offers to, and whether pages may dial them directly."""
    return list(node.get("/status")["browser"]["webrtc"]["linked"])
