"""The replicated exchange: signed, hash-chained order events, a stability watermark, a deterministic fold.

`Replica` is the I/O-free core; `ReplicationService` (in `service`) maps it onto the node's
MessageRouter, timers and event log.
"""
from exchange.replication.chain import OriginChain
from exchange.replication.ledger import FinalLedger
from exchange.replication.records import Checkpoint, MalformedRecord, ReplEvent
from exchange.replication.replica import Replica, ReplicaConfig

__all__ = ["Checkpoint", "FinalLedger", "MalformedRecord", "OriginChain", "ReplEvent", "Replica", "ReplicaConfig"]
