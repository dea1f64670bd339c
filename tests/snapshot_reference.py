"""The state snapshot built the plain way (one list per row, packed at once): what `exchange/app/packed_rows.py`
must give byte for byte, whichever rows it kept packed."""
from __future__ import annotations

from typing import cast

import msgpack

from exchange.app.machine import ExchangeState
from exchange.app.closed_rows import closed_row
from exchange.app.snapshot import (AGENTS_FORMAT, CLIENT_IDS_FORMAT, SNAPSHOT_FORMAT, TIMERS_FORMAT, TRIGGERS_FORMAT,
                                   _wide, trigger_rows)


def plain_snapshot(state: ExchangeState) -> bytes:
    venues = state.venues.values()
    body = [
        SNAPSHOT_FORMAT, state.params.digest(), state.chain_id, state.height, state.time_ms, state.results_chain,
        [venue.engine.snapshot() for venue in venues],
        [closed_row(order) for order in state.closed],
        [list(venue.trades) for venue in venues],
        [[account, [[asset, _wide(amount)] for asset, amount in held]] for account, held in state.positions.rows()],
        None if state.credit is None else state.credit.grant_rows(),
        state.replay.rows(),
    ]
    if state.timers or state.client_ids or state.agents or state.triggers:
        body[0] = TIMERS_FORMAT
        body.append(state.timers.rows())
    if state.client_ids or state.agents or state.triggers:
        body[0] = CLIENT_IDS_FORMAT
        body.append(state.client_ids.rows())
    if state.agents or state.triggers:
        body[0] = AGENTS_FORMAT
        body.append(state.agents.rows())
    if state.triggers:
        body[0] = TRIGGERS_FORMAT
        body.append(trigger_rows(state))
    return cast("bytes", msgpack.packb(body, use_bin_type=True))
