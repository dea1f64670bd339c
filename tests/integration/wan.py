"""A small internet of network namespaces: a public segment and private sites behind NAT routers (needs root).

    public segment 11.18.0.0/16 (a bridge in the hub namespace; the hub itself is 11.18.0.254)
      public host i ............ 11.18.<i+1>.1      (each in a /24 of its own, as hosts on the internet are)
      site s's router (WAN) .... 11.18.<101+s>.1    nftables NAT: `cone` (masquerade, ports kept when free:
                                                    endpoint-independent mapping) or `symmetric` (masquerade
                                                    random: a new port for every connection) or `upnp`
                                                    (cone, and Debian's miniupnpd as its UPnP-IGD / NAT-PMP
                                                    gateway on the LAN side) or `natpmp` (the same
                                                    miniupnpd with UPnP off: NAT-PMP/PCP only)
        site s's LAN 10.<10+s>.0.0/24 (a bridge in the router namespace, router 10.<10+s>.0.1)
          site s's host j ...... 10.<10+s>.0.<j+2>

The public segment needs addresses that are not reserved: a UPnP gateway (miniupnpd, as real ones)
refuses to map ports onto a private or reserved external address, so the test internet uses part of
11.0.0.0/8. It exists only inside the test's namespaces, which have no route to anything else: no
packet to these addresses can leave the test network. The routers behave as a home router does: they forward what their LAN
starts and the replies to it, and drop (silently) anything from the WAN that no connection of theirs
expects, including packets for their own address. Public hosts have no route into a site. Nothing is
created in the root namespace: every veth is made inside a namespace and moved straight into another.

With `edge_delay_ms`, every site's edge (a public host's eth0, a router's WAN side) holds each packet
that far, each way, in userspace (tests/integration/delay_queue.py behind iptables' NFQUEUE target):
two sites are then 2 x edge_delay_ms apart one way.

Each node's control API binds its host address; the test reaches it through a small HTTP proxy in
the hub (public hosts) or in the site's router (its LAN hosts). `close()` ends what the net started
and deletes every namespace, on failure too.
"""
from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import pytest

from tests.harness import ROOT, NodeProcess, wait_until
from tests.integration.netns import NsProxy, netns_unavailable, nft_unavailable, tear_down

PUBLIC = "11.18"
HUB_ADDRESS = f"{PUBLIC}.0.254"
NatKind = Literal["cone", "symmetric", "upnp", "natpmp"]
GATEWAY_KINDS = ("upnp", "natpmp")          # sites whose router runs miniupnpd
_counter = itertools.count()


def _run(args: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One machine of the net: its namespace, its address, and the proxy that reaches its API."""

    ns: str
    address: str
    proxy: NsProxy
    site: int | None = None          # None: on the public segment


@dataclass
class Site:
    router_ns: str
    wan_address: str
    lan_prefix: str
    nat: NatKind
    hosts: list[Host] = field(default_factory=list)
    gateway_log: Path | None = None          # miniupnpd's output, for a `upnp` site


class WanNet:
    def __init__(self, public_hosts: int, sites: list[NatKind], hosts_per_site: int = 1,
                 edge_delay_ms: float = 0.0) -> None:
        assert 0 <= public_hosts <= 90 and len(sites) <= 20 and 1 <= hosts_per_site <= 50
        self.tag = f"{os.getpid() % 100000:05d}{next(_counter) % 100:02d}"
        self.edge_delay_ms = edge_delay_ms
        self.hub = f"ew{self.tag}hub"
        self.created: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.nodes: list[WanNode] = []
        self.api_token = secrets.token_hex(16)
        self.hub_proxy = NsProxy(self.hub, self.processes)
        self.public = [Host(f"ew{self.tag}p{i}", f"{PUBLIC}.{i + 1}.1", self.hub_proxy) for i in range(public_hosts)]
        self.sites: list[Site] = []
        for s, nat in enumerate(sites):
            router = f"ew{self.tag}r{s}"
            site = Site(router, f"{PUBLIC}.{101 + s}.1", f"10.{10 + s}.0", nat)
            proxy = NsProxy(router, self.processes)
            site.hosts = [Host(f"ew{self.tag}s{s}h{j}", f"{site.lan_prefix}.{j + 2}", proxy, s)
                          for j in range(hosts_per_site)]
            self.sites.append(site)
        self._ports = itertools.count(2)
        self._temp_dirs: list[Path] = []

    def __enter__(self) -> "WanNet":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- building ---------------------------------------------------------------------------
    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.created.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _plug(self, ns: str, dev: str, bridge_ns: str, bridge: str, address: str) -> None:
        """A veth from `ns` (named `dev`, holding `address`) to a port of `bridge` in `bridge_ns`."""
        port = f"v{next(self._ports)}"
        _run(["ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", bridge_ns])
        _run(["ip", "-n", ns, "addr", "add", address, "dev", dev])
        _run(["ip", "-n", ns, "link", "set", dev, "up"])
        _run(["ip", "-n", bridge_ns, "link", "set", port, "master", bridge])
        _run(["ip", "-n", bridge_ns, "link", "set", port, "up"])

    def build(self) -> None:
        self._netns(self.hub)
        _run(["ip", "-n", self.hub, "link", "add", "wan0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "addr", "add", f"{HUB_ADDRESS}/16", "dev", "wan0"])
        _run(["ip", "-n", self.hub, "link", "set", "wan0", "up"])
        for host in self.public:
            self._netns(host.ns)
            self._plug(host.ns, "eth0", self.hub, "wan0", f"{host.address}/16")
        for site in self.sites:
            self._build_site(site)
        if self.edge_delay_ms:
            for host in self.public:          # the hub's proxy reaches the APIs undelayed
                self._delay(host.ns, [["OUTPUT", "-o", "eth0", "!", "-d", HUB_ADDRESS],
                                      ["INPUT", "-i", "eth0", "!", "-s", HUB_ADDRESS]])
            for site in self.sites:
                self._delay(site.router_ns, [["FORWARD", "-i", "wan"], ["FORWARD", "-o", "wan"]])

    def _delay(self, ns: str, matches: list[list[str]]) -> None:
        """Hold packets crossing this namespace's WAN edge for `edge_delay_ms`, each way (delay_queue.py):
        between two sites a packet crosses two edges, so their one-way delay is twice the edge's. The rules
        are iptables' NFQUEUE target: this kernel lacks nftables' own `queue` expression, but iptables-nft
        reaches the same queue through its xtables compatibility."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.integration.delay_queue",
                                 str(self.edge_delay_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.processes.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the delay queue in {ns} did not start")
        for match in matches:
            _run(["ip", "netns", "exec", ns, "iptables", "-A", *match, "-j", "NFQUEUE", "--queue-num", "0"])

    def _build_site(self, site: Site) -> None:
        router = site.router_ns
        self._netns(router)
        self._plug(router, "wan", self.hub, "wan0", f"{site.wan_address}/16")
        _run(["ip", "-n", router, "link", "add", "lan0", "type", "bridge"])
        _run(["ip", "-n", router, "addr", "add", f"{site.lan_prefix}.1/24", "dev", "lan0"])
        _run(["ip", "-n", router, "link", "set", "lan0", "up"])
        _run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        masquerade = "masquerade random" if site.nat == "symmetric" else "masquerade"
        # one inet table, laid out as miniupnpd's nftables backend expects (its chains jumped to, empty at first)
        _run(["ip", "netns", "exec", router, "nft", "-f", "-"], stdin="\n".join([
            "table inet filter {",
            "  chain input { type filter hook input priority 0; policy drop;",
            "    ct state established,related accept; iifname { \"lo\", \"lan0\" } accept; }",
            "  chain forward { type filter hook forward priority 0; policy drop;",
            "    ct state established,related accept; iifname \"lan0\" oifname \"wan\" accept; jump miniupnpd; }",
            "  chain miniupnpd { }",
            "  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }",
            "  chain postrouting { type nat hook postrouting priority 100; policy accept;",
            f"    jump postrouting_miniupnpd; oifname \"wan\" {masquerade}; }}",
            "  chain prerouting_miniupnpd { }",
            "  chain postrouting_miniupnpd { }",
            "}",
        ]) + "\n")
        for host in site.hosts:
            self._netns(host.ns)
            self._plug(host.ns, "eth0", router, "lan0", f"{host.address}/24")
            _run(["ip", "-n", host.ns, "route", "add", "default", "via", f"{site.lan_prefix}.1"])
        if site.nat in GATEWAY_KINDS:
            self._start_gateway(site)

    def _start_gateway(self, site: Site) -> None:
        """miniupnpd on the router: UPnP-IGD on the LAN side (SSDP, HTTP on port 5000; off at a `natpmp` site)
        and NAT-PMP/PCP, mapping ports of the LAN's hosts (1024-65535) to its WAN address."""
        if shutil.which("miniupnpd") is None:
            raise RuntimeError("miniupnpd not installed (apt-get install miniupnpd miniupnpd-nftables)")
        conf = Path(tempfile.mkdtemp(prefix=f"ew{self.tag}")) / "miniupnpd.conf"
        conf.write_text("\n".join([
            "ext_ifname=wan", "listening_ip=lan0", "http_port=5000", "enable_natpmp=yes",
            f"enable_upnp={'yes' if site.nat == 'upnp' else 'no'}",
            "secure_mode=yes", "system_uptime=yes", f"uuid=00000000-0000-4000-8000-{self.tag:0>12}",
            "upnp_table_name=filter", "upnp_nat_table_name=filter", "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd",
            f"allow 1024-65535 {site.lan_prefix}.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""]))
        self._temp_dirs.append(conf.parent)
        log = open(conf.parent / "miniupnpd.log", "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", site.router_ns, "miniupnpd", "-f", str(conf), "-d",
                                 "-P", str(conf.parent / "miniupnpd.pid")],
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes.append(proc)
        site.gateway_log = conf.parent / "miniupnpd.log"
        # a home gateway is up long before the node: wait for it to listen (its log says so), as a node could
        # otherwise ask during miniupnpd's first moments and wait out the mapper's retry interval
        ready = "Listening for NAT-PMP/PCP traffic"
        deadline = time.monotonic() + 10
        while ready not in site.gateway_log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"miniupnpd did not start: {site.gateway_log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)

    # --- nodes --------------------------------------------------------------------------------
    def node(self, base: Path, host: Host, name: str, **settings: Any) -> "WanNode":
        node = WanNode(self, host, base, name, **settings)
        self.nodes.append(node)
        return node

    def exec_in(self, host: Host, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", host.ns, *args], capture_output=True, text=True,
                              timeout=timeout)

    def close(self) -> None:
        tear_down(self.processes, self.nodes, self.created)
        for path in self._temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


class WanNode(NodeProcess):
    """An exchange-node on one host of the net: P2P on all its addresses, control API on its address."""

    def __init__(self, net: WanNet, host: Host, base: Path, name: str, **settings: Any) -> None:
        defaults = {"p2p_host": "0.0.0.0", "api_host": host.address, "api_token": net.api_token}
        super().__init__(base, name, **(defaults | settings))
        self.net = net
        self.host = host
        self.namespace = host.ns

    def start(self, wait: bool = True, **overrides: Any) -> "WanNode":
        super().start(wait=False, **overrides)
        assert self.proc is not None
        self.net.processes.append(self.proc)
        if wait:
            self.wait_ready()
        return self

    def cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
        """The CLI as the operator runs it on this host (inside its namespace, where the API is reachable)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_NODE")}
        env |= {"DATA_DIR": str(self.data_dir), "EXCHANGE_NODE_API": self.api_url,
                "EXCHANGE_NODE_TOKEN": str(self.settings["api_token"])}
        return subprocess.run(["ip", "netns", "exec", self.host.ns, sys.executable, "-m", "node.cli", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        return self.host.proxy.request(method, self.api_url + path, self.api_token, body, timeout)


@contextmanager
def wan_or_skip(public_hosts: int, sites: list[NatKind], hosts_per_site: int = 1,
                edge_delay_ms: float = 0.0) -> Iterator[WanNet]:
    """A WAN for one test, or a skip saying why this machine cannot build one."""
    reason = netns_unavailable() or nft_unavailable()
    if edge_delay_ms and shutil.which("iptables") is None:
        reason = reason or "iptables not installed (apt-get install iptables): delay uses its NFQUEUE target"
    if set(GATEWAY_KINDS) & set(sites) and shutil.which("miniupnpd") is None:
        reason = reason or "miniupnpd not installed (apt-get install miniupnpd miniupnpd-nftables)"
    if reason:
        pytest.skip(reason)
    with WanNet(public_hosts, sites, hosts_per_site, edge_delay_ms) as net:
        yield net


def punch_pair(base: Path, kinds: list[NatKind], tag: str, edge_delay_ms: float = 0.0,
               **settings: Any) -> tuple[WanNet, "WanNode", "WanNode", "WanNode"]:
    """One public relay (also the lone validator) and a node behind each of two NATs, started, both private
    with a relay slot and linked to each other: what the punching benchmark and soak try over and over.
    The caller closes the network."""
    from tests.integration.chain_nodes import node_ids

    net = WanNet(1, kinds, edge_delay_ms=edge_delay_ms)
    net.build()
    try:
        ids = node_ids(base, [f"{tag}v"])
        common = settings | {"validators": ids[0], "bootstrap_peers": f"{net.public[0].address}:{settings['p2p_port']}",
                             "network_id": f"wan-{tag}"}
        relay = net.node(base, net.public[0], f"{tag}v", **common)
        a = net.node(base, net.sites[0].hosts[0], f"{tag}a", **common)
        b = net.node(base, net.sites[1].hosts[0], f"{tag}b", **common)
        for node in (relay, a, b):
            node.start(wait=False)
        for node in (relay, a, b):
            node.wait_ready(30.0)
        wait_until(lambda: all(n.status()["reachability"] == "private" and n.status()["nat"]["relay_client"]["relays"]
                               for n in (a, b)), 60, interval=0.5, message="both NATed nodes private, with a relay")
        wait_until(lambda: b.node_id in a.connected_ids(), 60, interval=0.5, message="the pair linked")
    except BaseException:
        net.close()
        raise
    return net, relay, a, b


def punch_trials(relay: "WanNode", a: "WanNode", b: "WanNode", tries: int) -> list[dict[str, Any]]:
    """`tries` hole punches from `a` to `b` (POST /debug/nat/punch: drop the link, link through `relay`,
    wait up to 8 s for the direct link); each answer says whether it went direct and how long it took."""
    results = []
    for _ in range(tries):
        status, body = a.api("POST", "/debug/nat/punch", {"node_id": b.node_id, "relay": relay.node_id,
                                                         "timeout": 8.0}, timeout=30)
        assert status == 200, body
        results.append(body)
    return results
