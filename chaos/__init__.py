"""squall.chaos: faults as data, and what applies them in both runtimes.

- ``injectors``: ``KillWorker``, ``PauseWorker``, ``SlowNetwork``, ``Partition`` (and
  ``Heal``), ``SkewEstimates``, ``JoinWorker`` -- small serialisable structs acting only
  through the fault surface -- and ``ChaosDriver``, which applies them and counts them.
- ``clients``: client actions as kinds of the same schedule -- ``ReleaseKeys``,
  ``WantKeys``, ``SubmitKeys``: futures released, asked for again (by a second client,
  too) and graphs submitted mid-run -- acting through the client surface.
- ``kinds``: the registry every fault kind registers in (``@fault_kind``), with its label
  and colour in reports and how it is drawn; strategies, rate schedules, scenario
  decoding, the minimizer and the report find the kinds there.
- ``schedule``: ``ChaosSchedule``, timed faults given, or drawn at rates from a seed
  (``from_rates``), or with the rates themselves drawn from the seed (``swarm``).
- ``network``: real-mode links through one Toxiproxy proxy per connection
  (``LocalCluster(proxy=True).set_link``).
- ``toxiproxy``: the built-in Toxiproxy-compatible server (``squall toxiproxy``).
"""
