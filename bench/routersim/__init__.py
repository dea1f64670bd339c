"""Discrete-event simulation comparing RPC peer-choice strategies under injected faults."""
