"""Ways back: out of a permanent halt when validators are gone for good (`halt.py`), and damaged or lost
history fetched again from peers (`history_recovery.py`)."""
