"""A client for exchange-node: signed orders, typed answers, and a market data stream that reconnects."""
from exchange_node_client.client import Answer, AsyncClient
from exchange_node_client.errors import ApiError, Rejected
from exchange_node_client.signing import NonceSource, Signer, order_id, signed_text, tx_id
from exchange_node_client.stream import LocalBook, MarketStream, StreamEvent
from exchange_node_client.sync import Client

__version__ = "0.1.0"
__all__ = ["Answer", "ApiError", "AsyncClient", "Client", "LocalBook", "MarketStream", "NonceSource", "Rejected",
           "Signer", "StreamEvent", "order_id", "signed_text", "tx_id", "__version__"]
