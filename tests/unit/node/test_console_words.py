"""What the console says, run under Node.js from node/console/static/words.js: reachability only as far
as it was measured (a node whose dial-backs all came over loopback is not called public), and the ticker's last
price filled from the trades the page loaded when the node's ticker has none (after a restart)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

WORDS = Path(__file__).resolve().parents[3] / "node" / "console" / "static" / "words.js"
NODE = shutil.which("node")
pytestmark = [pytest.mark.process,
              pytest.mark.skipif(NODE is None, reason="needs Node.js to run the console's words.js")]


def say(function: str, *args: object) -> str:
    script = (f"import {{ {function} }} from {json.dumps(WORDS.as_uri())};\n"
              f"process.stdout.write(JSON.stringify({function}(...{json.dumps(list(args))})));")
    done = subprocess.run([NODE or "node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout))


def reach(reachability: str | None, *hosts: str, confirmed: bool = True, relays: tuple[str, ...] = ()) -> dict:
    return {"reachability": reachability, "relays": list(relays),
            "addresses": [{"host": h, "port": 7946, "how": "observed", "confirmed": confirmed} for h in hosts]}


@pytest.mark.parametrize("view, shown", [
    (reach("public", "127.0.0.1"), "unknown (only dialled back on loopback)"),     # what a loopback node reports
    (reach("public", "::1"), "unknown (only dialled back on loopback)"),
    (reach("public", "192.168.1.20"), "public on this LAN only (no dial-back from outside it)"),
    (reach("public", "10.0.0.2", "203.0.113.7"), "public"),
    (reach("public", "203.0.113.7", confirmed=False), "unknown (no address confirmed by a dial-back)"),
    (reach("private", "198.51.100.4", confirmed=False, relays=("ab" * 16,)), "private (reached through 1 relay)"),
    (reach("private"), "private (no relay yet)"),
    (reach("unknown", "198.51.100.4"), "unknown"),
    (None, "unknown (NAT traversal is off)"),
])
def test_reachability_is_said_as_measured(view, shown):
    assert say("reachText", view) == shown


def test_the_ticker_takes_the_last_price_from_the_loaded_trades_after_a_restart():
    restarted = {"bid": "99.00", "ask": None, "last_price": None, "volume_24h": "0.0000"}
    trades = [{"price": "100.25", "qty": "0.2000"}, {"price": "101.00", "qty": "0.1000"}]   # oldest first
    assert say("tickerText", restarted, trades) == "bid 99.00  ask -  last 101.00  24h vol 0.0000"
    assert say("tickerText", {**restarted, "last_price": "102.00"}, trades).endswith("last 102.00  24h vol 0.0000")
    assert say("tickerText", None, []) == "bid -  ask -  last -  24h vol -"
