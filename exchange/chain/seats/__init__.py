"""This node's seat: joining, leaving and approving (`seat_requests.py`), the operator's seat commands and join
tokens (`seat_admin.py`, `join_token.py`, `token_desk.py`), handing a seat back (`seat_handback.py`), what the
validators command shows (`seats_view.py`), and founding or finding a chain to join (`founding.py`,
`founding_loop.py`). The replicated seat registry itself is state (`state/seats.py`)."""
