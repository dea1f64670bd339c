"""The control API: the aiohttp application (server.py), its typed view of the node (base.py: ApiNode),
the connection guard, auth and rate limits, and one module of routes per concern."""
