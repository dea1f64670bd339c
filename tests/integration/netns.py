"""A throw-away LAN of network namespaces for discovery, partition and attack tests (needs root).

`NetnsLan(n)` builds n host namespaces, each with `lo` and one veth `eth0` (10.77.0.<i+1>/24)
whose other end (`p<i>`) sits on a bridge in a separate hub namespace (bridge address 10.77.0.254).
The root namespace is never touched: veths are created inside the namespaces, so nothing here can
put traffic on the machine's real interface. Namespace names carry the PID and a per-process
counter, so several LANs (of this process or of other test runs) can exist at once. `close()`
kills the processes started in the LAN and deletes every namespace (which deletes the veths and
the bridge with them); it runs on failure too.

Nodes inside run `ip netns exec <ns> exchange-node ...` with their control API on their LAN
address; the test reaches it through one HTTP proxy process living in the hub namespace, which
serves any number of concurrent requests (GET, POST, DELETE).

Partitions and loss are nftables rules in the hub namespace's bridge forward hook (`partition`,
`isolate`, `lossy`, `heal`): frames between the bridge ports of hosts in different groups are
dropped, unicast and multicast alike, so a cut link is silent as on a real network (only heartbeats
notice it); `lossy(p)` drops p% of the rest at random. The proxy talks to the hosts from the
bridge's own address, which the forward hook never sees, so the control APIs stay reachable on
every side of a split.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from tests.harness import NodeProcess, end_processes

SUBNET = "10.77.0"
HUB_ADDRESS = f"{SUBNET}.254"

_PROXY = r"""
import json, sys, threading, urllib.request, urllib.error
out_lock = threading.Lock()

def answer(job):
    headers = {"Content-Type": "application/json"}
    if job.get("token"):
        headers["Authorization"] = "Bearer " + job["token"]
    data = None if job.get("body") is None else json.dumps(job["body"]).encode()
    try:
        request = urllib.request.Request(job["url"], data=data, method=job.get("method", "GET"), headers=headers)
        with urllib.request.urlopen(request, timeout=job.get("timeout", 5)) as r:
            out = {"status": r.status, "body": json.loads(r.read() or b"null")}
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        out = {"status": e.code, "body": body}
    except Exception as e:
        out = {"status": 0, "error": f"{type(e).__name__}: {e}"}
    out["id"] = job["id"]
    with out_lock:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()

for line in sys.stdin:
    threading.Thread(target=answer, args=(json.loads(line),), daemon=True).start()
"""
_counter = itertools.count()


class NsProxy:
    """One HTTP proxy process inside a namespace, answering many concurrent requests from test threads."""

    def __init__(self, ns: str, processes: list[subprocess.Popen]) -> None:
        self.ns = ns
        self._processes = processes
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._replies: dict[int, list] = {}
        self._ids = itertools.count()

    def request(self, method: str, url: str, token: str | None, body: Any, timeout: float) -> tuple[int, Any]:
        with self._lock:
            self._ensure()
            request_id = next(self._ids)
            slot: list = [threading.Event(), None]
            self._replies[request_id] = slot
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"id": request_id, "method": method, "url": url, "token": token,
                                               "body": body, "timeout": timeout}) + "\n")
            self._proc.stdin.flush()
        if not slot[0].wait(timeout + 5.0):
            self._replies.pop(request_id, None)
            raise OSError(f"no answer from the proxy in {self.ns} within {timeout + 5.0:g}s: {method} {url}")
        reply = slot[1]
        if reply["status"] == 0:
            raise OSError(reply.get("error"))
        return reply["status"], reply.get("body")

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-u", "-c", _PROXY],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._processes.append(self._proc)
        threading.Thread(target=self._read, args=(self._proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            reply = json.loads(line)
            slot = self._replies.pop(reply["id"], None)
            if slot is not None:
                slot[1] = reply
                slot[0].set()
        for slot in list(self._replies.values()):
            slot[1] = {"status": 0, "error": "proxy gone"}
            slot[0].set()


def tear_down(processes: list[subprocess.Popen], nodes: Iterable[object], namespaces: list[str]) -> None:
    """Stop the processes a test network started (terminate, then kill what is left after 1 s: harness.end_processes),
    close its nodes' logs and delete its namespaces, newest first; the lists are emptied."""
    end_processes(processes)
    processes.clear()
    for node in nodes:
        log = getattr(node, "_log", None)
        if log:
            log.close()
    for ns in reversed(namespaces):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    namespaces.clear()


def nft_unavailable() -> str | None:
    """Why partitions cannot be made here (None if they can): nftables is in Debian's `nftables`."""
    if shutil.which("nft") is None:
        return "nftables `nft` not installed (apt-get install nftables)"
    return None


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


@contextmanager
def lan_or_skip(n: int, partitions: bool = False) -> Iterator["NetnsLan"]:
    """A LAN of n hosts for one test, or a skip saying why this machine cannot build one."""
    reason = netns_unavailable() or (nft_unavailable() if partitions else None)
    if reason:
        pytest.skip(reason)
    with NetnsLan(n) as lan:
        yield lan


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class NetnsLan:
    def __init__(self, n: int, tag: str | None = None) -> None:
        assert 1 <= n <= 200
        self.n = n
        self.tag = tag or f"{os.getpid() % 100000:05d}{next(_counter) % 100:02d}"
        self.hub = f"enh{self.tag}"
        self.hosts = [f"en{self.tag}h{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self.created: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.nodes: list[NetnsNode] = []
        self.proxy = NsProxy(self.hub, self.processes)     # reaches every host's control API from the hub
        self.api_token = secrets.token_hex(16)
        self.groups: list[set[int]] | None = None     # the partition in force (None: every host reaches every host)
        self.loss = 0                                 # percent of frames between hosts dropped at random

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
    def http(self, method: str, url: str, token: str | None = None, body: Any = None,
             timeout: float = 10.0) -> tuple[int, Any]:
        """One request through the hub's proxy; many threads may call this at once."""
        return self.proxy.request(method, url, token, body, timeout)

    def http_get(self, url: str, token: str | None = None) -> tuple[int, Any]:
        return self.http("GET", url, token)

    # --- partitions ---------------------------------------------------------------------------
    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split the LAN: hosts in different groups exchange no frames (every host in exactly one group).
        Replaces any partition in force, atomically; a loss rate set by `lossy` stays."""
        sets = [set(g) for g in groups]
        listed = [i for g in sets for i in g]
        assert sorted(listed) == list(range(self.n)), f"every host in exactly one group: {sets}"
        self.groups = sets
        self._apply()

    def isolate(self, *hosts: int) -> None:
        """Cut these hosts off from every other host (and from each other)."""
        rest = set(range(self.n)) - set(hosts)
        self.partition([{h} for h in hosts] + ([rest] if rest else []))

    def lossy(self, percent: int) -> None:
        """Drop this share of the frames between hosts, at random (0: none)."""
        assert 0 <= percent <= 100
        self.loss = percent
        self._apply()

    def heal(self) -> None:
        """Every host reaches every host again, with no loss."""
        self.groups, self.loss = None, 0
        self._apply()

    def _apply(self) -> None:
        sets = self.groups or []
        rules = [f"add rule bridge partition forward iifname p{a} oifname p{b} drop"
                 for ga in sets for gb in sets if ga is not gb for a in ga for b in gb]
        if self.loss:
            rules.append(f"add rule bridge partition forward numgen random mod 100 < {self.loss} drop")
        self._nft(rules)

    def _nft(self, rules: list[str]) -> None:
        script = "\n".join(["add table bridge partition",
                            "add chain bridge partition forward { type filter hook forward priority 0; policy accept; }",
                            "flush chain bridge partition forward", *rules]) + "\n"
        result = subprocess.run([*self.exec_prefix(self.hub), "nft", "-f", "-"], input=script, capture_output=True,
                                text=True, timeout=10)
        if result.returncode != 0:
            raise RuntimeError(f"nft: {result.stderr.strip()}")

    def node(self, base: Path, i: int, name: str | None = None, **settings: Any) -> "NetnsNode":
        node = NetnsNode(self, i, base, name or f"ns{i}", **settings)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        tear_down(self.processes, self.nodes, self.created)


class NetnsNode(NodeProcess):
    """An exchange-node inside host namespace i: P2P on all its addresses, control API on its LAN
    address (reached through the LAN's proxy), mDNS on its default (all real interfaces = eth0)."""

    def __init__(self, lan: NetnsLan, i: int, base: Path, name: str, **settings: Any) -> None:
        defaults = {"p2p_host": "0.0.0.0", "api_host": lan.addresses[i], "discovery_mdns": "true",
                    "api_token": lan.api_token}  # an API bound beyond loopback needs one
        super().__init__(base, name, **(defaults | settings))
        self.lan = lan
        self.ns = self.namespace = lan.hosts[i]
        self.address = lan.addresses[i]

    def start(self, wait: bool = True, **overrides: Any) -> "NetnsNode":
        super().start(wait=False, **overrides)
        assert self.proc is not None
        self.lan.processes.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        return self.lan.http(method, self.api_url + path, self.api_token, body, timeout)
