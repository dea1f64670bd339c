"""The console's desk parts in a real headless Chromium against a real node: a stop order with a client id from
the ticket waits untriggered and is cancelled by its client id; an agent key is approved for the ticket's
account, listed with its scope, and revoked. No console errors."""
from __future__ import annotations

import os
from typing import Any

from exchange.crypto import SigningKey
from tests.integration.test_console_browser import browser, open_console, shoot  # noqa: F401 - browser: a fixture

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def test_console_places_a_stop_by_client_id_and_approves_and_revokes_an_agent(cluster, browser):
    (node,) = cluster.chain(1, api_token="operator-token-0123", **FAST)
    node.new_accounts("web")
    problems: list[str] = []
    page = open_console(browser, node.api_url + "/#token=operator-token-0123", problems, "desk")
    page.wait_for_selector("#market-select option", state="attached", timeout=20_000)
    page.select_option("#order-side", "sell")
    page.select_option("#order-type", "stop_market")
    page.fill("#order-qty", "0.5")
    page.fill("#order-trigger", "90")
    page.fill("#order-client-id", "web-stop-1")
    page.fill("#order-account", "web")
    page.click("#order-form button[type=submit]")
    page.wait_for_selector("#order-result:has-text('untriggered')", timeout=20_000)
    account = node.get("/accounts/web")["account"]
    (waiting,) = node.get(f"/orders?client_id=web-stop-1&account={account}")["orders"]
    assert (waiting["status"], waiting["trigger_price"], waiting["type"]) == ("untriggered", "90.00", "stop_market")
    page.fill("#cancel-id", "web-stop-1")
    page.click("#cancel-client-id")
    page.wait_for_selector("#order-result:has-text('done')", timeout=20_000)
    assert node.get(f"/orders/{waiting['id']}")["order"]["status"] == "cancelled"

    agent = SigningKey(os.urandom(32)).public_key.hex()
    page.fill("#agent-key", agent)
    page.fill("#agent-markets", "BTC-USD")
    page.fill("#agent-operations", "place,cancel")
    page.fill("#agent-cap", "1000")
    page.click("#agent-form button[type=submit]")
    page.wait_for_selector("#order-result:has-text('approved')", timeout=20_000)
    page.wait_for_selector(f'#agents td:text-is("{agent}")', timeout=20_000)
    assert page.inner_text(f'#agents tr:has(td:text-is("{agent}"))').split("\t")[1:4] == ["BTC-USD", "place,cancel",
                                                                                            "1000"]
    assert [a["agent"] for a in node.get(f"/agents?account={account}")["agents"]] == [agent]
    shoot(page, "desk-agents")
    page.click(f'#agents tr:has(td:text-is("{agent}")) button')
    page.wait_for_selector("#order-result:has-text('revoked')", timeout=20_000)
    assert node.get(f"/agents?account={account}")["agents"] == []
    assert problems == []
