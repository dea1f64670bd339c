"""Reaching nodes behind NAT: knowing our own addresses (observed, confirmed by dial-back), relays, hole punching."""
