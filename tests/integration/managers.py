"""A started PeerManager on loopback, for tests of the peer layer without a whole node."""
from __future__ import annotations

import weakref
from typing import Callable

from config import load_settings
from node.configs import peer_config
from node.identity import NodeIdentity
from p2p.connection import PeerLink
from p2p.peer_hooks import PeerHooks
from p2p.peers import PeerManager


async def make_manager(tmp_path, name: str, port: int = 0, **settings) -> PeerManager:
    cli = {"data_dir": str(tmp_path / name), "p2p_host": "127.0.0.1", "p2p_port": port} | settings
    manager = PeerManager(peer_config(load_settings(env={}, cli=cli)), NodeIdentity.generate(),
                          verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for)
    await manager.start()
    return manager


class LinkWatch:
    """Link listeners a test adds and removes as it goes: PeerManager.attach wires a component once, so
    one watching component is attached and calls whatever the lists hold at the time."""

    def __init__(self, peers: PeerManager) -> None:
        self.on_open: list[Callable[[PeerLink], object]] = []
        self.on_close: list[Callable[[PeerLink], object]] = []
        peers.attach(PeerHooks("test-watch", on_open=(self._opened,), on_close=(self._closed,)))

    def _opened(self, link: PeerLink) -> None:
        for listener in list(self.on_open):
            listener(link)

    def _closed(self, link: PeerLink) -> None:
        for listener in list(self.on_close):
            listener(link)


_watches: "weakref.WeakKeyDictionary[PeerManager, LinkWatch]" = weakref.WeakKeyDictionary()


def watch(peers: PeerManager) -> LinkWatch:
    """The LinkWatch of `peers` (attached on first use)."""
    if peers not in _watches:
        _watches[peers] = LinkWatch(peers)
    return _watches[peers]
