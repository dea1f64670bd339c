"""The MessageRouter's parts, one job each (p2p/router.py is the facade that wires them):

- envelope.py: the routed message's envelope, schemas, outcomes and counters every path shares;
- broadcast.py: Plumtree broadcast over links, each copy verified before it is forwarded;
- message_cache.py: recent broadcasts as ready-to-send frames, bounded, for answering grafts;
- budgets.py: what a broadcast may cost, charged before it is checked (open types, re-requests);
- paced.py: open-type copies checked at their type's total pace, with spare copies in case one fails;
- unicast.py: one message to one node: direct link, signed relay, or the hold queue;
- context.py: what they share (peers, counters, dedup cache, origin signatures, subscribers);
- subscribers.py: local delivery to the handlers of a type, and whom a refusal blames;
- inbound_limit.py: the per-peer inbound rate limit and flood bans;
- grenache_path.py: routed messages over Grenache HTTP RPC, for nodes that share a Grape but no link.
"""
