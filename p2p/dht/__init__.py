"""An embedded Kademlia DHT of signed node records: its sans-I/O parts.

`ids` (160-bit ids, XOR distance), `records` (signed node and provider records), `table` (k-buckets with
per-subnet limits and test-before-evict) and `lookup` (the iterative lookup over disjoint paths, as
S/Kademlia asks). None of them does I/O: a driver sends the queries a lookup asks for and feeds the answers
back, so the simulator (tests/sim/dht_sim.py) runs thousands of nodes deterministically.
"""
