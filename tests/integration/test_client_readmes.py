"""Real processes: the client libraries' READMEs run as printed. Against a node started as the
tests start one, the README's `exchange-node account new trader` line runs verbatim (DATA_DIR naming the node),
then the first example of clients/python/README.md and of clients/typescript/README.md, each written to a file
unchanged and run with only DATA_DIR and EXCHANGE_NODE_API set; each prints what its README says it prints, and
the node holds the trader's orders as the example left them."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.accounts import AccountStore
from tests.harness import Cluster, NodeProcess, wait_until
from tests.typescript_client import NODE, PACKAGE, needs_build

ROOT = Path(__file__).resolve().parents[2]
PYTHON_README = ROOT / "clients" / "python" / "README.md"
TS_README = ROOT / "clients" / "typescript" / "README.md"


def first_block(readme: Path, language: str) -> str:
    return re.findall(rf"```{language}\n(.*?)```", readme.read_text(), re.S)[0]


def client_env(node: NodeProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_NODE") and k != "DATA_DIR"}
    return env | {"DATA_DIR": str(node.data_dir), "EXCHANGE_NODE_API": node.api_url}


def alone(cluster: Cluster) -> NodeProcess:
    """A node that founds its own network at once, as `make run` does (its own validator)."""
    node = cluster.node("alone", found_after=0)
    wait_until(lambda: node.status()["chain_id"] and node.status()["quorum"], 15, message="the node founds a chain")
    return node


def make_trader(node: NodeProcess, readme: Path) -> str:
    """Run the README's `account new` line as printed (from the checkout, as it says); the trader's id."""
    (line,) = [line.split("  #")[0].strip() for block in re.findall(r"```sh\n(.*?)```", readme.read_text(), re.S)
               for line in block.splitlines() if "exchange-node account new" in line]
    done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=client_env(node), capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0 and "exists" not in done.stderr:
        raise AssertionError(f"{line}: {done.stderr}")
    return AccountStore(node.data_dir).get("trader").id


def left_as_the_example_leaves_them(node: NodeProcess, trader: str, runs: int) -> None:
    """Each run placed a buy, replaced it (the first cancelled by the replace), cancelled the new one and armed
    the switch: nothing of the trader's is open, 2 orders per run are cancelled, and the switch is armed."""
    orders = node.get(f"/orders?account={trader}")["orders"]
    assert [o["status"] for o in orders] == ["cancelled"] * 2 * runs, orders
    assert {o["price"] for o in orders} == {"100.25", "100.50"}
    assert node.get(f"/accounts/{trader}")["cancel_all_at"] is not None


def test_the_python_clients_first_example_runs_as_printed(cluster: Cluster, tmp_path: Path):
    node = alone(cluster)
    trader = make_trader(node, PYTHON_README)
    script = tmp_path / "first.py"
    script.write_text(first_block(PYTHON_README, "python"))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=client_env(node), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "True open []\n"                   # what the README says it prints
    left_as_the_example_leaves_them(node, trader, 1)


@needs_build
def test_the_typescript_clients_first_example_runs_as_printed(cluster: Cluster, tmp_path: Path):
    node = alone(cluster)
    trader = make_trader(node, TS_README)
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "exchange-node-client").symlink_to(PACKAGE)   # what `npm install <path>` does
    script = tmp_path / "first.mjs"
    script.write_text(first_block(TS_README, "js"))
    done = subprocess.run([NODE or "node", str(script)], cwd=tmp_path, env=client_env(node), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "true open\n"
    left_as_the_example_leaves_them(node, trader, 1)


def test_the_readmes_first_examples_are_the_ones_run():
    """The blocks run above are the READMEs' first code blocks and read no placeholder."""
    for readme, language in ((PYTHON_README, "python"), (TS_README, "js")):
        block = first_block(readme, language)
        assert "trader.pem" in block and "EXCHANGE_NODE_API" in block and "<" not in block.replace("<=", "")
    if NODE is None:
        pytest.skip("Node.js is not installed: the TypeScript example is not run")
