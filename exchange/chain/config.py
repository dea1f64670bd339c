"""The chain core's settings (`CoreConfig`) and Tendermint's timeouts (`ConsensusConfig`): frozen values every
part reads and none changes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    timeout_propose: float = 0.4
    timeout_propose_delta: float = 0.2
    timeout_prevote: float = 0.15
    timeout_prevote_delta: float = 0.1
    timeout_precommit: float = 0.15
    timeout_precommit_delta: float = 0.1
    rebroadcast_interval: float = 0.5
    round_window: int = 4


@dataclass(frozen=True)
class CoreConfig:
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    max_block_txs: int = 4000
    max_block_bytes: int = 700_000
    empty_block_interval: float = 1.0     # an idle network still makes a block this often
    max_clock_drift_ms: int = 500         # a proposal's time may be at most this far ahead of our clock
    role: str = "auto"                    # auto: take a seat when granted (join token or approvals); follower: never
    join_retry: float = 3.0
    alive_interval: float = 5.0           # s between a standby's `alive`s (the record keeps it live for 30 s)
    max_block_membership: int = 32        # membership transactions one block may carry
    resubmit_interval: float = 1.0        # our own pending transactions are handed on again this often
    sync_batch: int = 100                 # blocks per catch-up answer
    sync_retry: float = 1.0
    sync_peer_rate: float = 100.0         # sync requests one peer may make a second (sync_budget.py) ...
    sync_peer_bytes: float = 8 * 1024 * 1024     # ... and bytes of answers it may take a second ...
    sync_total_bytes: float = 32 * 1024 * 1024   # ... and all but the validators together
    catchup_delay: float = 0.25           # a validator heard at a decided height is sent the block if it is
                                          # still not past it this long after (late votes are the norm)
    max_buffered_blocks: int = 512        # certified blocks held while the ones before them are fetched ...
    max_buffered_bytes: int = 32 * 1024 * 1024   # ... within this many bytes (a quarter per sender)
    live_after: float = 3.0               # a node heard from within this is live (join eligibility, quorum view)
    expired_grace_ms: int = 600_000       # an accepted transaction that expired unordered is still put in a
                                          # block this long after, so it resolves everywhere as `expired`
    peer_tx_rate: float = 200.0           # transactions a non-validator neighbour may hand us per second ...
    peer_tx_burst: float = 200.0          # ... and at once (tx_budget.py: past it, its link waits unread) ...
    peer_tx_total_rate: float = 200.0     # ... and all of them together (each an equal share when they exceed it)
    mempool_max_txs: int = 50_000         # transactions the mempool holds ...
    mempool_max_bytes: int = 64 * 1024 * 1024     # ... and bytes (mempool.py: the heaviest lane is evicted first)
    mempool_lane_share: float = 0.25      # of the pool one lane (a neighbour, or our API) may hold
    block_lane_share: float = 1 / 16     # of a block's transactions one lane may fill
    block_seconds_target: float = 0.2     # a proposer's blocks hold what the network decides within this (block_pace.py;
                                          # 0: up to max_block_txs)
    at_budget_wait: float = 0.1           # a height whose only waiting transactions are from neighbours at their
                                          # budget starts this long after they came, with what came meanwhile (0: at once)
    mempool_account_txs: int = 1_000      # transactions one account may have waiting in the mempool
    account_ops_per_block: int = 2_000    # operations of one account admitted for one block ... (0: no limit)
    account_ops_per_100_blocks: int = 50_000   # ... and for the last hundred (account_rate.py)
    account_ops_rate: int = 100           # ... and a second of block time, with bursts of (0: no limit)
    account_ops_burst: int = 1_000
    group_ops_rate: int = 200             # our API's accounts together, a second of block time
    group_ops_burst: int = 1_000
    account_rate_exempt: frozenset[bytes] = frozenset()    # accounts an operator exempts from all of these
    snapshot_cache_bytes: int = 64 * 1024 * 1024   # the snapshot we serve is kept in memory up to this size

