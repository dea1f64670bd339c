"""A throw-away LAN of network namespaces for discovery tests and benchmarks (needs root).

`NetnsLan(n)` builds n host namespaces, each with `lo` and one veth `eth0` (10.77.0.<i+1>/24)
whose other end sits on a bridge in a separate hub namespace (bridge address 10.77.0.254). The
root namespace is never touched: veths are created inside the namespaces, so nothing here can
put traffic on the machine's real interface. `close()` kills the processes started in the LAN
and deletes every namespace (which deletes the veths and the bridge with them); it runs on
failure too.

Nodes inside run `ip netns exec <ns> exchange-node ...` with their control API on their LAN
address; the test reaches it through a tiny HTTP proxy process living in the hub namespace.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.harness import NodeProcess

SUBNET = "10.77.0"
HUB_ADDRESS = f"{SUBNET}.254"

_PROXY = r"""
import json, sys, urllib.request, urllib.error
for line in sys.stdin:
    url, token = json.loads(line)
    try:
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
        with urllib.request.urlopen(request, timeout=5) as r:
            out = {"status": r.status, "body": json.loads(r.read() or b"null")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "body": None}
    except Exception as e:
        out = {"status": 0, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
"""


def netns_unavailable() -> str | None:
    """Why namespace tests cannot run here (None if they can)."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not installed"
    probe = f"enprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"ip netns add failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class NetnsLan:
    def __init__(self, n: int, tag: str | None = None) -> None:
        assert 1 <= n <= 200
        self.n = n
        self.tag = tag or f"{os.getpid() % 100000:05d}"
        self.hub = f"enh{self.tag}"
        self.hosts = [f"en{self.tag}h{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self.created: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.nodes: list[NetnsNode] = []
        self._proxy: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.api_token = secrets.token_hex(16)

    def __enter__(self) -> "NetnsLan":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def build(self) -> None:
        _ip("netns", "add", self.hub)
        self.created.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.hosts, self.addresses)):
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # created inside the host namespace, peer end straight into the hub: root ns untouched
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.hub)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.hub, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", self.hub, "link", "set", f"p{i}", "up")

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    # --- reaching the nodes' control APIs --------------------------------------------------
    def http_get(self, url: str, token: str | None = None) -> tuple[int, Any]:
        with self._lock:  # one proxy, one request at a time
            return self._http_get(url, token)

    def _http_get(self, url: str, token: str | None) -> tuple[int, Any]:
        if self._proxy is None or self._proxy.poll() is not None:
            self._proxy = subprocess.Popen([*self.exec_prefix(self.hub), sys.executable, "-u", "-c", _PROXY],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.processes.append(self._proxy)
        assert self._proxy.stdin and self._proxy.stdout
        self._proxy.stdin.write(json.dumps([url, token]) + "\n")
        self._proxy.stdin.flush()
        reply = json.loads(self._proxy.stdout.readline() or '{"status": 0, "error": "proxy gone"}')
        if reply["status"] == 0:
            raise OSError(reply.get("error"))
        return reply["status"], reply.get("body")

    def node(self, base: Path, i: int, name: str | None = None, **settings: Any) -> "NetnsNode":
        node = NetnsNode(self, i, base, name or f"ns{i}", **settings)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()
        self._proxy = None
        for node in self.nodes:
            if getattr(node, "_log", None):
                node._log.close()
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.created.clear()


class NetnsNode(NodeProcess):
    """An exchange-node inside host namespace i: P2P on all its addresses, control API on its LAN
    address (reached through the LAN's proxy), mDNS on its default (all real interfaces = eth0)."""

    def __init__(self, lan: NetnsLan, i: int, base: Path, name: str, **settings: Any) -> None:
        defaults = {"p2p_host": "0.0.0.0", "api_host": lan.addresses[i], "discovery_mdns": "true",
                    "api_token": lan.api_token}  # an API bound beyond loopback needs one
        super().__init__(base, name, **(defaults | settings))
        self.lan = lan
        self.ns = lan.hosts[i]
        self.address = lan.addresses[i]

    def command(self) -> list[str]:
        return [*self.lan.exec_prefix(self.ns), *super().command()]

    def start(self, wait: bool = True, **overrides: Any) -> "NetnsNode":
        super().start(wait=False, **overrides)
        assert self.proc is not None
        self.lan.processes.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        assert method == "GET" and body is None, "only GET through the namespace proxy"
        return self.lan.http_get(self.api_url + path, self.api_token)
