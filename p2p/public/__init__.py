"""What the node's public surfaces (the control API, the /ws stream, the Grenache HTTP servers) share to give
each client its share and a cap on all behind: who a client is (sources), caps on open connections with request
deadlines (guard), request rates (rate), and who was refused lately (refusals). Here, under p2p, because node/
imports p2p and never the other way."""
