"""`exchange-node devnet N`: a network of N local nodes in one command, for trying things and for development.

Node i keeps everything in DIR/node<i> (key, chain, logs), listens on ports of its own, and belongs to a
network of its own (a NETWORK_ID made for this directory, mDNS off, so it never meets another network on
the machine). node0 founds the chain; the others bootstrap to it with its join token, so every node is
granted a seat and the set grows as the seat rule allows (1 -> 4 -> 7). Each node's log lines are
streamed with its name in front; once the set is formed each node's console URL and a ready-made CLI
line are printed. Ctrl-C stops every node by its PID (SIGTERM, then SIGKILL after a grace period) and
waits for each: nothing is left behind. The nodes keep their seats across a stop (KEEP_SEAT), so running
the same command again resumes the same network from DIR.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, cast

import click

from config import Settings
from node.cli.client import JsonObject, call
from node.cookie import read_cookie

_SETTING_ENVS = frozenset(Settings.env_names().values())
FORM_TIMEOUT = 60.0


class DevnetNode:
    def __init__(self, index: int, data_dir: Path, settings: dict[str, object]) -> None:
        self.name, self.data_dir, self.settings = f"node{index}", data_dir, settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: JsonObject = {}

    def start(self, out: IO[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "node.json").unlink(missing_ok=True)
        args = [sys.executable, "-m", "node.cli", "start", "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS} | {"PYTHONUNBUFFERED": "1"}
        # a session of its own: Ctrl-C reaches the devnet alone, which then stops each node in turn
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._relay, args=(self.proc.stdout, out), daemon=True).start()

    def _relay(self, stream: IO[bytes] | None, out: IO[str]) -> None:
        assert stream is not None
        with (self.data_dir / "node.log").open("ab") as log:
            for line in iter(stream.readline, b""):
                log.write(line)
                log.flush()
                out.write(f"[{self.name}] {line.decode(errors='replace')}")
                out.flush()

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise click.ClickException(f"{self.name} exited with {self.proc.returncode}; see {self.data_dir}/node.log")
        runtime = self.data_dir / "node.json"
        info = json.loads(runtime.read_text()) if runtime.exists() else {}
        if self.proc is not None and info.get("pid") == self.proc.pid:
            self.info = info
            return True
        return False

    def status(self) -> JsonObject:
        return cast(JsonObject, call(self.info["api"], "GET", "/status", timeout=5, token=read_cookie(self.data_dir))[1])

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _network_id(directory: Path) -> str:
    """The devnet's own network name, made once per directory (so a restart rejoins the same network)."""
    path = directory / "network-id"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"devnet-{secrets.token_hex(4)}\n")
    return path.read_text().strip()


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def expected_seats(count: int) -> int:
    """Seats N granted nodes hold under the default seat rule: the largest of 1, 4, 7 ... up to N."""
    return max(n for n in range(1, count + 1) if n % 3 == 1)


def _formed(nodes: list[DevnetNode]) -> bool:
    try:
        views = [node.status() for node in nodes]
    except Exception:  # noqa: BLE001 - a node not answering yet is not formed
        return False
    return len({v["chain_id"] for v in views}) == 1 and views[0]["chain_id"] is not None \
        and all(v["quorum"] and len(v["validators"]) == expected_seats(len(nodes)) for v in views)


def run_devnet(count: int, directory: Path, markets: str | None, out: IO[str] = sys.stdout) -> None:
    directory = directory.resolve()
    network = _network_id(directory)
    base = {"p2p_host": "127.0.0.1", "p2p_port": 0, "api_port": 0, "discovery_mdns": "false",
            "network_id": network, "keep_seat": "true", "max_validators": min(count, 100)}
    if markets:
        base["markets"] = markets
    nodes = [DevnetNode(i, directory / f"node{i}", dict(base)) for i in range(count)]
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    # Ctrl-C stops the devnet even when whoever started us ignores SIGINT (a shell's background job does, and
    # Python then leaves it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        founder = nodes[0]
        founder.settings["found_after"] = 0
        founder.start(out)
        _wait(founder.ready, 30, "node0 to start")
        token_file = founder.data_dir / "join-token"
        _wait(token_file.exists, 30, "node0 to found the network")
        for node in nodes[1:]:
            node.settings |= {"bootstrap_peers": founder.info["listen"], "join_token": token_file.read_text().strip()}
            node.start(out)
        for node in nodes[1:]:
            _wait(node.ready, 30, f"{node.name} to start")
        _wait(lambda: _formed(nodes), FORM_TIMEOUT, "the nodes to form one network")
        validators = len(nodes[0].status()["validators"])
        out.write(f"\ndevnet ready: {count} nodes, {validators} validators, network {network}, in {directory}\n")
        for node in nodes:
            out.write(f"  {node.name}  console {node.info['api']}/   "
                      f"cli: DATA_DIR={node.data_dir} exchange-node status\n")
        out.write(f"  e.g. DATA_DIR={nodes[-1].data_dir} exchange-node order buy BTC-USD 1 --price 100\n"
                  "Ctrl-C stops them all.\n\n")
        out.flush()
        while not stopping.is_set():
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    out.write(f"{node.name} exited with {node.proc.returncode}; stopping the devnet\n")
                    stopping.set()
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        out.write("stopping the devnet...\n")
        for node in reversed(nodes):
            node.stop()
        out.write("all nodes stopped\n")
        out.flush()


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("count", type=click.IntRange(1, 20), metavar="N")
    @click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("devnet"),
                  show_default=True, help="Node i keeps its data in DIR/node<i>; the same DIR resumes the network.")
    @click.option("--markets", default=None, metavar="MARKETS", help="The network's markets [default: BTC-USD].")
    def devnet(count: int, directory: Path, markets: str | None) -> None:
        """Start N local nodes as one network of their own (all granted seats), stream their logs, print each
        console URL and a CLI line; Ctrl-C stops them all."""
        run_devnet(count, directory, markets)
