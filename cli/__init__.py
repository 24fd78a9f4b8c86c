"""squall.cli: every ``squall`` command, and the one error type they share (``SquallError``)."""
