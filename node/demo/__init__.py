"""`exchange-node demo storm|failures`: the design's stories, run on real local processes.

- storm.py: a node restarting with thousands of pending requests against a service of limited
  capacity, once with storm protection off and once on, side by side;
- failures.py: crash, slow, flaky, false gossip and Grape crash against live workers, with the
  time to detect, to route away, for hints to spread and to recover, measured;
- backlog.py: the restarting node's side of the storm (a DEBUG_API endpoint);
- process.py: the real `exchange-node` processes they start, always ended by PID.
"""
