"""Browsers as peers: a WebTransport endpoint (HTTP/3 over QUIC) that a page dials with a self-signed
certificate given by its hash, the proof that binds the session to the node key, and the small protocol
a page speaks over it (headers, market data, signed orders, other nodes' records)."""
