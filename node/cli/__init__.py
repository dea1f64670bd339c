"""`exchange-node`, the command line: main.py holds the group and `start`; each other module adds the
commands of one concern, and client.py is how they reach a running node's control API."""
