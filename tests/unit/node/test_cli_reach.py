"""`exchange-node status` says reachability as far as it was measured, as the console does: a node dialled
back only over loopback or its LAN does not call itself public."""
from __future__ import annotations

import pytest

from node.cli.main import address_scope, reach_word


def _nat(reachability: str, *confirmed: str) -> dict:
    return {"reachability": reachability,
            "addresses": [{"host": host, "port": 7946, "how": "observed", "confirmed": True} for host in confirmed]}


@pytest.mark.parametrize("host, scope", [("127.0.0.1", "loopback"), ("::1", "loopback"), ("[::ffff:127.0.0.5]", "loopback"),
                                         ("192.168.1.9", "lan"), ("10.0.0.1", "lan"), ("100.64.3.1", "lan"),
                                         ("fd00::1", "lan"), ("198.51.100.20", "global"), ("2001:4860::1", "global")])
def test_address_scopes(host: str, scope: str) -> None:
    assert address_scope(host) == scope


def test_public_only_when_a_dial_back_came_from_outside_the_machine_and_its_lan() -> None:
    assert reach_word(_nat("public", "127.0.0.1")) == "unknown (only dialled back on loopback)"
    assert reach_word(_nat("public", "192.168.1.9", "127.0.0.1")).startswith("public on this LAN only")
    assert reach_word(_nat("public", "203.0.113.7", "127.0.0.1")) == "public"
    assert reach_word(_nat("public")) == "unknown (no address confirmed by a dial-back)"
    assert reach_word(_nat("private", "127.0.0.1")) == "private"
    assert reach_word(_nat("unknown")) == "unknown"
