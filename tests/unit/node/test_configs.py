"""Component configs are built from Settings in one place (node/configs.py): derived values are derived
there, no component reads Settings, and the few component defaults kept for tests agree with Settings."""
from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from config import Settings
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.pool import Mempool
from exchange.chain.service import ChainService
from exchange.chain.store.block_store import KEEP_BLOCKS_BEHIND_SNAPSHOT
from node.configs import (BLOCK_SHARE_OF_FRAME, MAX_BLOCK_BYTES, MAX_GRENACHE_ANNOUNCE_INTERVAL, NodeConfigs, core_config,
                          peer_config, rpc_config)
from p2p.routing.broadcast import MessageCache
from p2p.rpc.service import RpcConfig
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify

ROOT = Path(__file__).resolve().parents[3]
DEFAULTS = Settings()


def test_the_inbound_share_and_outbound_target_are_derived_from_max_peers() -> None:
    config = peer_config(dataclasses.replace(DEFAULTS, max_peers=10, target_outbound=8))
    assert (config.max_peers, config.target_outbound, config.limits.max_inbound) == (10, 8, 2)
    capped = peer_config(dataclasses.replace(DEFAULTS, max_peers=4, target_outbound=8))
    assert capped.target_outbound == 4 and capped.limits.max_inbound == 1, "inbound always keeps one slot"
    assert config.limits.per_ip == DEFAULTS.max_inbound_per_ip
    assert config.limits.per_subnet == DEFAULTS.max_inbound_per_subnet


def test_the_grenache_message_path_needs_both_switches_and_announces_at_least_every_minute() -> None:
    assert NodeConfigs.from_settings(DEFAULTS).router.grenache is None
    on = dataclasses.replace(DEFAULTS, discovery_grenache=True, grape_announce_interval=300.0)
    grenache = NodeConfigs.from_settings(on).router.grenache
    assert grenache is not None and grenache.announce_interval == MAX_GRENACHE_ANNOUNCE_INTERVAL
    assert grenache.host == DEFAULTS.p2p_host
    assert NodeConfigs.from_settings(dataclasses.replace(on, grenache_messages=False)).router.grenache is None


def test_the_operating_mode_sets_when_a_node_may_found_a_network() -> None:
    pure = NodeConfigs.from_settings(DEFAULTS)
    assert (pure.legacy, pure.standalone, pure.chain.found_after) == (False, False, DEFAULTS.found_after)
    standalone = NodeConfigs.from_settings(dataclasses.replace(DEFAULTS, p2p_enabled=False))
    assert standalone.standalone and standalone.chain.found_after == 0.0
    legacy = NodeConfigs.from_settings(dataclasses.replace(DEFAULTS, p2p_enabled=False, discovery_grenache=True))
    assert legacy.legacy and legacy.chain.found_after == float("inf") and legacy.chain.core.role == "follower"


def test_component_defaults_kept_for_tests_agree_with_settings() -> None:
    """RpcConfig, ChainService and CoreConfig keep defaults (unit tests build them bare): pinned here."""
    assert rpc_config(DEFAULTS) == RpcConfig()
    chain = NodeConfigs.from_settings(DEFAULTS).chain
    params = inspect.signature(ChainService).parameters
    assert params["order_ttl_ms"].default == chain.order_ttl_ms
    assert params["max_validators"].default == chain.max_validators
    assert params["pinned_validators"].default == chain.pinned_validators
    assert params["found_after"].default == chain.found_after
    assert params["snapshot_interval"].default == chain.snapshot_interval
    assert params["recovery_timeout"].default == chain.recovery_timeout
    assert params["fresh_order_ttl_ms"].default == chain.fresh_order_ttl_ms
    assert NodeConfigs.from_settings(dataclasses.replace(DEFAULTS, fresh_order_ttl=0.0)).chain.fresh_order_ttl_ms is None
    assert KEEP_BLOCKS_BEHIND_SNAPSHOT == chain.keep_blocks
    core, bare = core_config(DEFAULTS), CoreConfig()
    assert (core.empty_block_interval, core.role) == (bare.empty_block_interval, bare.role)
    assert bare.max_block_bytes == MAX_BLOCK_BYTES
    assert core.max_block_bytes == min(MAX_BLOCK_BYTES, int(DEFAULTS.max_frame_bytes * BLOCK_SHARE_OF_FRAME))
    assert core.consensus.timeout_propose == bare.consensus.timeout_propose


def test_no_component_reads_settings() -> None:
    """Only the composition root (node/app.py, node/configs.py) and the CLI (with node/locate.py, which finds
    a running node for it) see Settings; node/demo drives child processes through dicts of their flags."""
    readers = []
    for path in sorted(ROOT.glob("[pens]*/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(("p2p/", "exchange/", "node/", "storage/")) or rel.startswith(("node/cli", "node/demo/")) \
                or rel in ("node/app.py", "node/configs.py", "node/locate.py"):
            continue
        text = path.read_text()
        if re.search(r"\bsettings\s*:|getattr\(\s*settings|(?<!config)\.settings\b|from config import Settings", text):
            readers.append(rel)
    assert readers == []


def test_the_mempool_broadcast_cache_and_stall_limits_are_settings_that_reach_their_components() -> None:
    """The lane shares, the mempool's size, the broadcast cache's bytes and the finality stall were constants;
    each is a setting now, its default the old constant, and a changed value reaches the part that uses it."""
    bare, pool = CoreConfig(), Mempool()
    default_core = core_config(DEFAULTS)
    assert (default_core.mempool_max_txs, default_core.mempool_max_bytes, default_core.mempool_lane_share,
            default_core.block_lane_share) == (bare.mempool_max_txs, bare.mempool_max_bytes,
                                               bare.mempool_lane_share, bare.block_lane_share)
    assert (pool.max_txs, pool.max_bytes, pool.lane_block_share) == (50_000, 64 * 1024 * 1024, 1 / 16)
    assert (bare.mempool_max_txs, bare.mempool_max_bytes, bare.block_lane_share) == \
        (pool.max_txs, pool.max_bytes, pool.lane_block_share)
    assert pool.lane_max_txs == int(bare.mempool_max_txs * bare.mempool_lane_share)
    assert MessageCache().max_bytes == DEFAULTS.broadcast_cache_bytes
    assert DEFAULTS.finality_stall_after == 15.0

    changed = dataclasses.replace(DEFAULTS, mempool_max_txs=2_000, mempool_max_bytes=3 * 1024 * 1024,
                                  mempool_lane_share=0.5, block_lane_share=0.25,
                                  broadcast_cache_bytes=5 * 1024 * 1024, finality_stall_after=40.0)
    configs = NodeConfigs.from_settings(changed)
    keys = FakeKeys("v")
    genesis = Genesis("t", int(BASE_TIME * 1000), keys.public_key, (keys.public_key,))
    core = ChainCore(genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=configs.chain.core, now=BASE_TIME)
    mempool = core.mempool
    assert (mempool.max_txs, mempool.max_bytes, mempool.lane_max_txs, mempool.lane_max_bytes,
            mempool.lane_block_share) == (2_000, 3 * 1024 * 1024, 1_000, 3 * 512 * 1024, 0.25)
    assert configs.router.broadcast_cache_bytes == 5 * 1024 * 1024
    assert configs.operator.finality_stall_after == 40.0
