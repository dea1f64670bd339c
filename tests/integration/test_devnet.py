"""Real processes (issue 29): `exchange-node devnet 4` as the README says (its lines as written, the directory
moved into the test's own): four nodes, four validators, an order placed with the README's line and with the printed one
final on every node, Ctrl-C stops them all and leaves no process behind; the same command resumes the network."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness import ROOT, wait_until

_SETTING_PREFIXES = ("EXCHANGE_NODE",)


def readme_lines(directory: Path) -> list[str]:
    """The README's devnet lines, its /tmp/devnet moved into the test's directory."""
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- devnet:")
    start = text.index("```sh", marker) + 5
    block = text[start:text.index("```", start)]
    return [line.split("  #")[0].strip().replace("/tmp/devnet", str(directory)) for line in block.strip().splitlines()]


class Devnet:
    def __init__(self, command: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)} | {"PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)               # Ctrl-C
        return self.proc.wait(60)


def _cli(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)} | {"DATA_DIR": data_dir}
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)


def _node_pids(directory: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in directory.glob("node*/node.json")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "exchange-node").exists(), reason="the README's lines use "
                    ".venv/bin/exchange-node, which `make run` / `make test` installs")
def test_devnet_4_as_the_readme_says_forms_trades_and_leaves_nothing_behind(tmp_path):
    directory = tmp_path / "devnet"
    start, order_line = readme_lines(directory)
    assert start.endswith(f"devnet 4 --dir {directory}"), start
    devnet = Devnet(start)
    try:
        wait_until(lambda: "devnet ready" in devnet.text(), 90, message="devnet ready")
        text = devnet.text()
        assert re.search(r"devnet ready: 4 nodes, 4 validators", text), text[-2000:]
        assert re.search(r"^\[node[0-3]\] ", text, re.M), "node logs are streamed with a prefix"
        urls = re.findall(r"node(\d)  console (http://127\.0\.0\.1:\d+)/", text)
        assert sorted(i for i, _ in urls) == ["0", "1", "2", "3"]
        line = re.search(r"e\.g\. DATA_DIR=(\S+) exchange-node order buy BTC-USD 1 --price 100", text)
        assert line is not None, text[-2000:]
        placed = _cli(line.group(1), "order", "buy", "BTC-USD", "1", "--price", "100", "--json")
        assert placed.returncode == 0, placed.stderr
        order_id = json.loads(placed.stdout)["order"]["id"]
        for index in range(4):
            shown = _cli(str(directory / f"node{index}"), "orders", "--json")
            wait_until(lambda: order_id in _cli(str(directory / f"node{index}"), "orders", "--json").stdout,
                       10)
            assert shown.returncode == 0
        pids = _node_pids(directory)
        assert len(pids) == 4 and all(_alive(pid) for pid in pids)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
        as_written = subprocess.run(["bash", "-c", order_line], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=30)
        assert as_written.returncode == 0 and "[final]" in as_written.stdout, as_written.stdout + as_written.stderr
    finally:
        code = devnet.interrupt()
    assert code == 0, devnet.text()[-3000:]
    assert "all nodes stopped" in devnet.text()
    assert not [pid for pid in pids if _alive(pid)], "a node outlived its devnet"

    again = Devnet(start)                                # the same directory resumes the same network
    try:
        wait_until(lambda: "devnet ready" in again.text(), 90, message="devnet ready again")
        assert "4 validators" in again.text()
        shown = _cli(str(directory / "node2"), "orders", "--json")
        assert order_id in shown.stdout, shown.stdout[-500:]
    finally:
        assert again.interrupt() == 0
