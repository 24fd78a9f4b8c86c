"""squall.mutants: deliberate, documented scheduler bugs (``catalog``, with their code in
``scheduler_bugs`` and ``worker_bugs``, kept in step with production by ``copies``), and
the measurement of what exploration catches of them (``measure``; ``squall mutants``)."""
