"""squall.mutants: deliberate, documented scheduler bugs, and the measurement of what
exploration catches of them (``squall mutants``)."""
