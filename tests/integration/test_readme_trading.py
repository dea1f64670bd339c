"""Real processes: the README's "Placing an order" lines, run as printed against a node of its own
(DATA_DIR naming it; ORDER_ID replaced by the id the first order printed): two accounts are made, the market
sell of one fills the other's bid (one account's orders would cancel each other), and `orders --open`, `fills`,
`order ID`, `cancel` and `account show` say what the README's comments say."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.harness import Cluster, wait_until
from tests.unit.test_readme import shell_lines

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_readmes_trading_lines_trade_between_two_accounts(cluster: Cluster):
    node = cluster.node("alone", found_after=0)
    wait_until(lambda: node.status()["chain_id"] and node.status()["quorum"], 15, message="the node founds a chain")
    section = README[README.index("## Placing an order"):README.index("<!-- quick-api")]
    lines = shell_lines(section)
    assert lines[0] == "N=.venv/bin/exchange-node"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_NODE")}
    env |= {"DATA_DIR": str(node.data_dir), "N": ".venv/bin/exchange-node"}
    said: dict[str, str] = {}
    order_id = None
    for line in lines[1:]:
        if order_id is not None:
            line = line.replace("ORDER_ID", order_id)
        done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        said[line] = done.stdout
        if order_id is None and re.match(r"\$N order buy ", line):
            order_id = done.stdout.split()[0]
    out = list(said.values())
    assert order_id is not None
    bid = next(text for line, text in said.items() if line.startswith("$N order buy"))
    assert "open  buy limit 0.5000 BTC-USD @ 100.25" in bid and "[final]" in bid
    sell = next(text for line, text in said.items() if line.startswith("$N order sell"))
    assert "filled  sell market 0.2000" in sell and order_id in sell          # the trade with alice's bid
    listed = next(text for line, text in said.items() if line.startswith("$N orders --open"))
    assert re.search(rf"{order_id} .* 0\.5000 +0\.3000 +partially_filled", listed), listed
    fills = next(text for line, text in said.items() if line.startswith("$N fills"))
    assert re.search(r"Z  BTC-USD  sell  100\.25  0\.2000  taker ", fills), fills
    shown = next(text for line, text in said.items() if re.match(r"\$N order \w+$", line))
    assert shown.startswith(f"order     {order_id}\nstatus    partially_filled  [final]"), shown
    assert "cancel done" in out[-2] and re.search(r"BTC +0\.2000", out[-1]), out[-2:]
