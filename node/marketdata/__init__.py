"""The market data stream served at `/ws`: book, trades and ticker per market, the node's own orders,
and the node status, each a snapshot followed by sequenced updates (Bitfinex's public WebSocket
API is the model; README.md, "Market data stream", documents every message).

- `feed.MarketFeed`: the interface the exchange layer publishes final state changes to, and the
  market channels built from them (`MarketSource` is where it reads snapshots).
- `server.StreamServer`: the aiohttp endpoint, requests, limits; `server.StatusChannel`.
- `session.StreamSession`: one client, its subscriptions and its bounded send buffer.
- `book`, `ticker`, `wsframe`: the book views with their checksum, the 24 h ticker, WebSocket frames.
"""
from node.marketdata.feed import MarketFeed, MarketSource, TradePrint
from node.marketdata.server import StatusChannel, StreamServer

__all__ = ["MarketFeed", "MarketSource", "StatusChannel", "StreamServer", "TradePrint"]
