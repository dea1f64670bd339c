"""The browser peer page (node/console/static/p2p.html) opened from a file in a real headless Chromium, kept off
the real interface: it links over WebTransport to the node it is given and to one it learns from it, trades with
its own key, carries on through the other link when its node is killed, keeps its key across a reload and shares
it with a second tab, and refuses a certificate that does not match, an expired one and a man in the middle.
No HTTP request leaves the page."""
from __future__ import annotations

import asyncio
import shutil
import threading
import time
from typing import Any, Coroutine, TypeVar

import pytest

from tests.harness import ROOT, wait_until
from tests.integration.chain_nodes import pinned_loopback

CHROMIUM = "/usr/bin/chromium"
PAGE = ROOT / "node" / "console" / "static" / "p2p.html"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]
T = TypeVar("T")

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test-deps)")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(tmp_path):
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                       args=ARGS)
        try:
            yield context
        finally:
            context.close()


class Watch:
    """Every request the pages made and every error they logged."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.problems: list[str] = []

    def page(self, context: Any, fragment: str) -> Any:
        page = context.new_page()
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.goto(PAGE.as_uri() + "#" + fragment)
        return page

    def http(self) -> list[str]:
        return [url for url in self.requests if not url.startswith("file://")]


def fragment(node: Any, pin: bool = True, hashes: list[str] | None = None) -> str:
    browser = node.get("/status")["browser"]
    given = f"node={browser['webtransport']}&hash={','.join(hashes or browser['cert_sha256'])}"
    if hashes is None:
        given += f"&expires={','.join(str(ms) for ms in browser['cert_expires_ms'])}"
    return given + (f"&id={node.node_id}" if pin else "")


def link_state(page: Any, node_id: str) -> str:
    return page.eval_on_selector(f'#links tr[data-node-id="{node_id}"] .link-state', "e => e.textContent")


def order_status(page: Any, order_id: str) -> str:
    return page.inner_text(f'#orders tr[data-order-id="{order_id}"] .order-status')


def place(page: Any, side: str, price: str, qty: str) -> str:
    page.evaluate("document.getElementById('order-result').textContent = ''")
    page.select_option("#order-side", side)
    page.fill("#order-price", price)
    page.fill("#order-qty", qty)
    page.click("#order-form button")
    page.wait_for_selector("#order-result:has-text('signed'), #order-result:has-text('final')", timeout=10_000)
    return page.inner_text("#order-result").split()[0]


def test_page_from_a_file_trades_over_two_links_and_fails_over(cluster, browser):
    validators, followers = pinned_loopback(cluster, 3, 1, browser_webtransport="true")
    first = followers[0]                      # the node the page is given; killed later (the chain goes on)
    links_before = first.status()["peers_connected"]
    watch = Watch()
    page = watch.page(browser, fragment(first, pin=False))
    page.wait_for_selector(f'#links tr[data-node-id="{first.node_id}"][data-state="up"]', timeout=20_000)
    page.wait_for_function("document.querySelectorAll('#links tr[data-state=\"up\"]').length === 2", timeout=20_000)
    other = page.eval_on_selector_all('#links tr[data-state="up"]', "rows => rows.map(r => r.dataset.nodeId)")
    other.remove(first.node_id)
    assert other and other[0] in {v.node_id for v in validators}, "the second link is a node learnt from the first"
    assert page.inner_text("#active-node") == first.node_id
    endpoint = first.get("/status")["browser"]
    assert endpoint["sessions"] == 1 and first.status()["peers_connected"] == links_before, \
        "a page holds a session, never a peer link"
    account = page.inner_text("#account")
    assert len(account) == 64 and "non-extractable" in page.inner_text("#key-state")
    page.wait_for_function("document.getElementById('verified').textContent.startsWith('verified at height')",
                           timeout=10_000)
    verified = page.inner_text("#verified")          # each header's commit checked against the genesis set
    assert verified.endswith(" of 3 validators") and int(verified.split(" by ")[1].split()[0]) >= 3, verified

    order_id = place(page, "buy", "97.25", "0.7")
    page.wait_for_function(f"""() => document.querySelector('#orders tr[data-order-id="{order_id}"] .order-status')
        ?.textContent.startsWith('final')""", timeout=20_000)
    page.wait_for_function("""() => [...document.querySelectorAll('#book tbody tr')]
        .some(r => r.cells[1].textContent === '97.25' && r.cells[2].textContent === 'bid')""", timeout=20_000)
    for node in [*validators, first]:         # final on every node, owned by the page's key
        view = wait_until(lambda: node.get(f"/orders/{order_id}")["order"], 20,
                          message="the order everywhere")
        assert view["status"] == "open" and view["account"] == account

    in_flight = place(page, "buy", "97", "0.3")   # sent, and its node killed before (or as) it answers
    first.kill()                              # the page carries on through the other link within 5 s
    killed = time.monotonic()
    page.wait_for_function(f"document.getElementById('active-node').textContent === '{other[0]}'", timeout=5_000)
    took = time.monotonic() - killed
    assert took < 5.0
    second = place(page, "sell", "103.25", "0.2")
    for placed in (in_flight, second):
        page.wait_for_function(f"""() => document.querySelector('#orders tr[data-order-id="{placed}"] .order-status')
            ?.textContent.startsWith('final')""", timeout=20_000)
    for node in validators:
        for placed in (second, in_flight, order_id):                 # no order lost
            assert wait_until(lambda: node.get(f"/orders/{placed}")["order"]["status"] == "open", 20)
    assert len(validators[0].get(f"/orders?account={account}&status=open")["orders"]) == 3, "none twice"
    page.wait_for_function("""() => [...document.querySelectorAll('#book tbody tr')]
        .some(r => r.cells[1].textContent === '103.25' && r.cells[2].textContent === 'ask')""", timeout=20_000)
    # ... and links to a third node it learns from the one left, back to two links
    page.wait_for_function("document.querySelectorAll('#links tr[data-state=\"up\"]').length === 2", timeout=15_000)
    up = page.eval_on_selector_all('#links tr[data-state="up"]', "rows => rows.map(r => r.dataset.nodeId)")
    assert other[0] in up and first.node_id not in up

    page.reload()                             # the key and the account survive a reload; a second tab shares them
    page.wait_for_function(f"document.getElementById('account').textContent === '{account}'", timeout=10_000)
    assert page.inner_text("#key-state").startswith("kept")
    tab = watch.page(browser, fragment(validators[0]))
    tab.wait_for_function(f"document.getElementById('account').textContent === '{account}'", timeout=10_000)
    tab.wait_for_selector('#links tr[data-state="up"]', timeout=20_000)
    third = place(tab, "buy", "96", "0.1")
    tab.wait_for_function(f"""() => document.querySelector('#orders tr[data-order-id="{third}"] .order-status')
        ?.textContent.startsWith('final')""", timeout=20_000)
    assert validators[1].get(f"/orders/{third}")["order"]["account"] == account
    assert watch.http() == [], "the page reached the nodes over WebTransport only"
    assert watch.problems == []


class Loop:
    """An asyncio loop in a thread, for the WebTransport endpoints the test itself plays."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def loop():
    running = Loop()
    try:
        yield running
    finally:
        running.close()


def test_page_refuses_a_wrong_certificate_an_expired_one_and_a_man_in_the_middle(cluster, browser, loop, tmp_path):
    from node.browser.certs import make_certificate
    from node.browser.server import WebTransportServer
    from tests.wt_client import drop_signatures, forge_signature, lying_session, relay_session, signing_session

    node = cluster.node("solo", found_after=0, browser_webtransport="true")
    wait_until(lambda: node.status()["chain_id"], 10, message="the node founds its chain")
    status = node.get("/status")["browser"]
    url, real_hash = status["webtransport"], status["cert_sha256"][0]
    watch = Watch()

    wrong = watch.page(browser, f"node={url}&hash={'00' * 32}&id={node.node_id}")
    wrong.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
    assert "does not match" in wrong.inner_text("#links .link-why")

    now = time.time()
    expired = make_certificate(now, validity=3600.0, not_before=now - 7200.0)
    expired_server = WebTransportServer("127.0.0.1", 0, "/exchange-node", expired, lambda *a: None,  # type: ignore
                                        max_per_address=8, max_per_subnet=8, max_total=8)
    loop.run(expired_server.start())
    page = watch.page(browser, f"node=https://127.0.0.1:{expired_server.port}/exchange-node"
                               f"&hash={expired.sha256.hex()}&id={node.node_id}")
    page.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
    assert "(or it has expired)" in page.inner_text("#links .link-why"), "the browser refuses; the page cannot tell why"
    told = watch.page(browser, f"node=https://127.0.0.1:{expired_server.port}/exchange-node"
                               f"&hash={expired.sha256.hex()}&expires={int(expired.not_after * 1000)}&id={node.node_id}")
    told.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
    assert told.inner_text("#links .link-why").startswith("certificate expired ("), "told when it ends: says so"

    # a man in the middle with a valid certificate of its own, which the page was given: relaying the node's
    # proof names the node's certificate, not the one the page met
    mitm_cert = make_certificate(now)
    relay = WebTransportServer("127.0.0.1", 0, "/exchange-node", mitm_cert, relay_session(url),
                               max_per_address=8, max_per_subnet=8, max_total=8)
    loop.run(relay.start())
    page = watch.page(browser, f"node=https://127.0.0.1:{relay.port}/exchange-node&hash={mitm_cert.sha256.hex()}"
                               f"&id={node.node_id}")
    page.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
    assert "man in the middle" in page.inner_text("#links .link-why")
    assert "another certificate" in page.inner_text("#links .link-why")

    # ... and signing the proof itself, with a key that is not the node's
    impostor = WebTransportServer("127.0.0.1", 0, "/exchange-node", mitm_cert, signing_session(),
                                  max_per_address=8, max_per_subnet=8, max_total=8)
    loop.run(impostor.start())
    page = watch.page(browser, f"node=https://127.0.0.1:{impostor.port}/exchange-node&hash={mitm_cert.sha256.hex()}"
                               f"&id={node.node_id}")
    page.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
    assert "not the node's key" in page.inner_text("#links .link-why")

    # a node (its own key, a valid proof) serving the real chain with headers it altered: refused and named
    liars = []
    for lie, said in ((forge_signature, "forged signature (validator 0)"), (drop_signatures, "too few signatures")):
        liar = WebTransportServer("127.0.0.1", 0, "/exchange-node", mitm_cert, lying_session(url, lie),
                                  max_per_address=8, max_per_subnet=8, max_total=8)
        loop.run(liar.start())
        liars.append(liar)
        page = watch.page(browser, f"node=https://127.0.0.1:{liar.port}/exchange-node&hash={mitm_cert.sha256.hex()}")
        page.wait_for_selector('#links tr[data-state="refused"]', timeout=15_000)
        why = page.inner_text("#links .link-why")
        refused_id = page.eval_on_selector("#links tbody tr", "r => r.dataset.nodeId")
        assert said in why and why.startswith(f"node {refused_id[:12]}") and refused_id != node.node_id, why
        assert page.inner_text("#verified") == "not verified yet"

    good = watch.page(browser, f"node={url}&hash={real_hash}&id={node.node_id}")
    good.wait_for_selector(f'#links tr[data-node-id="{node.node_id}"][data-state="up"]', timeout=15_000)
    good.wait_for_function("document.getElementById('verified').textContent.startsWith('verified at height')",
                           timeout=10_000)
    assert good.inner_text("#verified").endswith(" by 1 of 1 validators"), good.inner_text("#verified")

    async def submit_badly() -> list[dict[str, Any]]:     # what a page's odd submissions get: an answer, no harm
        from tests.wt_client import BrowserClient

        client = BrowserClient()
        await client.open(url)
        welcome, _ = await client.hello()
        forged = {"chain_id": welcome["chain_id"], "account": "11" * 32, "nonce": "n1",
                  "expires": int(time.time() * 1000) + 60_000, "sig": "22" * 64,
                  "ops": [{"op": "new", "market": "BTC-USD", "side": "buy", "type": "limit", "price": "1",
                           "qty": "1", "stp": None}]}
        answers = [await client.request({"event": "submit", "signed": body}) for body in ({"x": 1}, "text", forged)]
        await client.close()
        return answers
    answers = loop.run(submit_badly())

    # an account key file imported into the page replaces the key it made, and signs from then on
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "account.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    good.set_input_files("#key-file", str(pem))
    good.wait_for_function(f"document.getElementById('account').textContent === '{public}'", timeout=10_000)
    good.wait_for_selector(f'#links tr[data-node-id="{node.node_id}"][data-state="up"]', timeout=15_000)
    imported = place(good, "buy", "95", "0.1")
    assert wait_until(lambda: node.get(f"/orders/{imported}")["order"]["account"] == public, 20)
    assert [a["error"]["code"] for a in answers][2] == "bad_signature" and all("error" in a for a in answers)
    assert node.get("/status")["browser"]["sessions"] >= 1, "the node still serves"
    for server in (expired_server, relay, impostor, *liars):
        loop.run(server.stop())
    assert watch.http() == []
    assert watch.problems == []
