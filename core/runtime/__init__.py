"""squall.core.runtime: the pure state machines in real processes, over ZeroMQ.

- ``transport``: framing, sockets, CURVE keys, serialisation of functions and results;
- ``scheduler_server`` and ``worker_server``: a state machine behind its sockets;
- ``launcher``: the process that forks the scheduler and the workers;
- ``cluster`` (``LocalCluster``) and ``client`` (``Client``): what a user holds.
"""
