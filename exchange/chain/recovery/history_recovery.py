"""Getting damaged history back from peers: boot found blocks or the signing record damaged or lost
(`boot.check_history`, `Recovering`), and the node serves no orders until its peers supplied certified
copies. After each pump `progress` checks how far the core has come: once it holds every height it lacked
(and, when the newest blocks were damaged, has caught up with its peers) the signing floor is stored and
the core signs again. Past the recovery timeout the node gives up: `fatal` says why and what the operator
can do, and the fatal listeners stop the node.
"""
from __future__ import annotations

import logging
from typing import Callable, TypedDict

from exchange.chain.core import ChainCore
from exchange.chain.ports import ChainStore
from storage import StorageError

log = logging.getLogger("exchange.chain")


class Recovering(TypedDict):
    """History that must come back from peers before the node serves orders (shown in /status)."""

    since: float            # when it was found (the service's clock)
    need_height: int        # the height to reach again
    missing: str            # what is missing, for people: heights "a-b, c-d" or "the signing record"
    tail_damaged: bool      # the newest blocks are damaged: how far we signed is unknown
    damage: str             # what the store found, for people


def store_dir(store: ChainStore, part: str = "") -> str:
    root = store.root
    return f"{root}/{part}" if part else str(root)


class HistoryRecovery:
    """The recovery of damaged history and its deadline (the service's `history`)."""

    def __init__(self, store: ChainStore, clock: Callable[[], float], timeout: float) -> None:
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.recovering: Recovering | None = None       # set at boot; None once recovered (or nothing to)
        self.fatal: str | None = None
        self.fatal_listeners: list[Callable[[str], None]] = []

    def progress(self, core: ChainCore, wal_top: int) -> None:
        """After a pump: done when the core holds what was lost (`wal_top`: the WAL's highest signed height)."""
        recovering = self.recovering
        if recovering is None:
            return
        if core.height < recovering["need_height"] or self.store.missing_heights:
            return self._deadline(recovering)
        if recovering["tail_damaged"]:
            if not self._caught_up(core, self.clock()):
                return self._deadline(recovering)
            # caught up: every height we could have signed at is decided, but for the one in progress, which
            # an intact WAL covers (the core re-sent what it holds) and a damaged one makes us skip
            wal_ok = self.store.wal_trustworthy
            sign_from = max(core.height + (1 if wal_ok else 2), wal_top)
            try:
                self.store.save_sign_from(sign_from)
                wal = self.store.wal_records() if wal_ok else None
            except StorageError as exc:
                log.warning("cannot record the signing height yet: %s", exc)
                return
            core.resume_signing(sign_from, self.clock(), wal)
        log.warning("recovered the damaged history from peers: height %d, serving orders again", core.height)
        self.recovering = None

    @staticmethod
    def _caught_up(core: ChainCore, now: float) -> bool:
        """A validator: at the highest claim of a current validator (an upper bound: stopping short of what
        we may have signed would sign it again), once f + 1 of them are heard; a stranger's claim never
        counts, and a validator that cannot back its claim is struck and discounted (blocksync.py). The only
        validator: at the highest claim of anyone not discounted (its followers hold the blocks it lost; a
        stranger's claim holds it up until tested). A node without a seat signs nothing: at what counts
        (`network_height`) is enough."""
        if core.is_validator and len(core.state.validators) == 1:
            # the only validator has no other to believe: every claim counts until it is put to the test
            # (sync asks each claimant in turn; two unanswered requests discount it), as the old rule did
            highest = core.sync.highest_claim(now)
            return highest is not None and core.height >= highest
        counted = core.sync.network_height(now)
        if counted is None or core.height < counted:
            return False
        highest = core.sync.validators_highest(now) if core.is_validator else None
        return highest is None or core.height >= highest

    def _deadline(self, recovering: Recovering) -> None:
        if self.fatal is not None or self.clock() - recovering["since"] <= self.timeout:
            return
        store = self.store
        self.fatal = (f"cannot recover blocks {recovering['missing']} of {store_dir(store, 'blocks')} (damage: "
                      f"{recovering['damage']}): no peer supplied certified copies within {self.timeout:g}s. "
                      f"Start the node where its peers are reachable, restore the file from a backup, or move "
                      f"{store_dir(store)} aside to resynchronise from scratch")
        log.critical("%s", self.fatal)
        for stop in self.fatal_listeners:
            stop(self.fatal)
