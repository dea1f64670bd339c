"""The web console in a real headless Chromium against real nodes: the page loads without console
errors, the graph shows the peers, and an order placed (then cancelled) through the ticket on node
A's page shows up in (then leaves) the book on node B's page. Screenshots go to
test-artifacts/screenshots/."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FAST: dict[str, Any] = {"heartbeat_interval": 0.2}
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test-deps)")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

pytestmark = pytest.mark.browser     # (tests/conftest.py also derives it from the fixture that starts chromium)


@pytest.fixture
def browser(tmp_path):
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
                                                       args=ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def open_console(context, url: str, problems: list[str], name: str):
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"{name} console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{name} page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"{name} request failed: {r.url} {r.failure}"))
    page.goto(url)
    return page


def shoot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def book_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("#book tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_console_graph_ticket_and_book_across_nodes(cluster, browser):
    a, b, c = cluster.chain(3, seat_rule="any", api_token="operator-token-0123", **FAST)
    a.new_accounts('web')
    problems: list[str] = []
    page_a = open_console(browser, a.api_url + "/#token=operator-token-0123", problems, "A")
    page_b = open_console(browser, b.api_url + "/", problems, "B")

    for peer in (b, c):     # the graph shows every peer, with its whole id in the table
        page_a.wait_for_selector(f'#graph circle[data-node-id="{peer.node_id}"]', timeout=20_000)
        page_a.wait_for_selector(f'#peers td:text-is("{peer.node_id}")', timeout=20_000)
        assert page_a.locator("#held-back tbody tr").count() == 0, "nobody is held back on an honest network"
    assert page_a.inner_text("#node-id") == a.node_id
    assert page_a.evaluate("location.hash") == "", "the token is taken out of the address bar"
    assert page_a.evaluate("sessionStorage.getItem('exchange-node-token')") == "operator-token-0123"

    page_a.select_option("#order-side", "buy")
    page_a.fill("#order-price", "97.25")
    page_a.fill("#order-qty", "0.7")
    page_a.fill("#order-account", "web")
    page_a.click("#order-form button")
    page_a.wait_for_selector("#order-result:has-text('open')", timeout=20_000)
    order_id = page_a.inner_text("#order-result").split()[1]
    assert a.get(f"/orders/{order_id}")["order"]["status"] == "open"
    page_b.wait_for_function("""() => [...document.querySelectorAll('#book tbody tr')]
        .some(r => r.cells[1].textContent === '97.25' && r.cells[0].textContent === '0.7000')""", timeout=20_000)
    page_a.wait_for_selector(f'#orders td:text-is("{order_id}")', timeout=20_000)   # the node's own orders
    shoot(page_a, "node-a")
    shoot(page_b, "node-b-with-order")

    page_a.click(f'#orders tr:has(td:text-is("{order_id}")) button')                # cancel from the table
    page_a.wait_for_selector("#order-result:has-text('done')", timeout=20_000)
    page_b.wait_for_function("""() => ![...document.querySelectorAll('#book tbody tr')]
        .some(r => r.cells[1].textContent === '97.25')""", timeout=20_000)
    assert b.get("/book/BTC-USD")["bids"] == []
    shoot(page_b, "node-b-after-cancel")
    for page in (page_a, page_b):
        assert page.get_attribute("#book", "data-resyncs") == "0", "no sequence gap or checksum mismatch"
        assert page.inner_text("#stream-state") == "open"
    assert problems == []

    for price in ("96", "95"):                       # pulling quotes: cancel-all and the dead-man's switch
        page_a.evaluate("document.getElementById('order-result').textContent = ''")
        page_a.fill("#order-price", price)
        page_a.click("#order-form button")
        page_a.wait_for_selector("#order-result:has-text('open')", timeout=20_000)
    page_a.click("#cancel-all")
    page_a.wait_for_selector("#order-result:has-text('2 cancelled')", timeout=20_000)
    account = a.get("/accounts/web")["account"]
    assert a.get(f"/orders?account={account}&status=open")["orders"] == []
    page_a.fill("#switch-seconds", "600")
    page_a.click("#switch-form button[type=submit]")
    page_a.wait_for_selector("#order-result:has-text('armed')", timeout=20_000)
    assert a.get("/accounts/web")["cancel_all_at"] is not None
    page_a.click("#switch-clear")
    page_a.wait_for_selector("#order-result:has-text('cleared')", timeout=20_000)
    assert a.get("/accounts/web")["cancel_all_at"] is None
    assert problems == []

    page_a.fill("#order-price", "not-a-price")       # the API's 422 is shown, and is the only complaint
    page_a.click("#order-form button")
    page_a.wait_for_selector("#order-result.error", timeout=20_000)
    assert "price" in page_a.inner_text("#order-result") and "refused" in page_a.inner_text("#order-result")
    assert problems == ["A console.error: Failed to load resource: the server responded with a status of 422 "
                        "(Unprocessable Entity)"]


def test_console_shows_the_chain_and_a_red_banner_while_halted(cluster, browser):
    from tests.integration.chain_nodes import pinned_loopback

    validators, _ = pinned_loopback(cluster, 4, **FAST)
    v0, _, v2, v3 = validators
    problems: list[str] = []
    page = open_console(browser, v0.api_url + "/", problems, "v0")
    page.wait_for_selector('#chain-quorum[data-ok="true"]', timeout=20_000)
    assert page.is_hidden("#halt-banner")
    assert page.inner_text("#chain-faults") == "1"
    for node in validators:
        page.wait_for_selector(f'#validators td:text-is("{node.node_id}")', timeout=20_000)

    v2.kill()
    v3.kill()
    page.wait_for_selector("#halt-banner:not([hidden])", timeout=20_000)
    page.wait_for_function(f"""() => ['{v2.node_id}', '{v3.node_id}'].every(
        id => document.getElementById('halt-banner').textContent.includes(id))""", timeout=20_000)
    assert "HALTED" in page.inner_text("#halt-banner")
    assert page.evaluate("getComputedStyle(document.getElementById('halt-banner')).backgroundColor") == "rgb(139, 26, 26)"
    assert page.get_attribute("#chain-quorum", "data-ok") == "false"
    silent_rows = page.eval_on_selector_all(".validator-silent", "cells => cells.length")
    assert silent_rows == 2
    shoot(page, "halted")

    v2.start()
    page.wait_for_selector("#halt-banner[hidden]", state="attached", timeout=60_000)
    page.wait_for_selector('#chain-quorum[data-ok="true"]', timeout=20_000)
    shoot(page, "halt-over")
    assert problems == []
