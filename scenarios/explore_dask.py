"""Exploration on a dask.distributed cluster (``squall explore --dask ADDRESS``).

The cluster runs batches (``squall.scenarios.explore``): one task is one batch ``b`` of one
stream ``g`` (or ``per_task`` consecutive ones), ``explore_batch(seed, g, b, space)`` -- a
pure function of its arguments, so a batch gives the same scenarios on a dask worker as in
a job or a shard. The streams are
those of ``--jobs``/``--shard`` (``shard_streams``); batches are handed out in order, batch
0 of every stream, then batch 1, ..., and as many are kept in flight as the cluster has
threads, twice over, so that every worker always has its next batch queued. The batches
of a stream are independent: one stream alone keeps a whole cluster busy.

- A time budget stops handing out batches; those in flight finish, so each stream's
  batches are again a prefix ``0 .. k-1``. ``max_batches`` bounds each stream exactly.
- A failure: the worker's Hypothesis shrinks it inside its batch (the same shrunk scenario
  as a job would find); the batches still queued or running are cancelled; the shrunk
  scenario is minimized further by trace length, with up to ``minimize_candidates``
  candidate runs (``squall.scenarios.minimize``), its candidates judged in parallel on the
  cluster (the same result, counted the same, as one by one), a
  window of as many as it has threads at a time (when a run of it takes ``REMOTE_FROM``
  or more; a quicker one is judged here, one by one, a round trip costing more than the
  run); a batch still running sees that it was cancelled and gives up at its next
  scenario. Then the scenario runs once more *here*,
  inside ``job_context()``, and its trace is written to ``out_dir`` on this machine.
- A worker lost (its process killed, its machine gone): dask runs its batches again on
  another worker; they are counted (``ExploreStats.rescheduled``, from the scheduler's
  "remove-worker" events). A batch dask gave up on (``KilledWorker``) is submitted again,
  a few times, and counted too.
- ``local:N``: a ``LocalCluster`` of N worker processes (one thread each) on loopback,
  on mutual TLS with a certificate made for it (as the clusters squall validates), started
  here and closed at the end; its workers die with this process however it ends (dask's
  own watch of their parent, and the kernel's parent-death signal).
  ``tcp://HOST:PORT`` or ``tls://HOST:PORT``: a running cluster's scheduler, reached with
  the credentials of dask's own configuration (``distributed.comm.tls.*``, e.g. the
  ``DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT`` variables). Its workers need squall and
  Hypothesis of the same versions as here (checked at the start on the workers present).
  Never the cluster under validation: exploration runs the simulator, on any plain cluster.

dask.distributed is an extra (``pip install 'squall[dask]'``): without it, ``DaskUnavailable``
says so in one line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from squall.scenarios.explore import (
    REPORT_EVERY,
    ExploreResult,
    ExploreStats,
    JobContext,
    ProgressFn,
    SameFailure,
    _context,
    explore_batch,
    finish_failure,
    shard_streams,
)
from squall.scenarios.minimize import MAX_CANDIDATES
from squall.scenarios.model import Scenario, scenario_from_json, scenario_to_json
from squall.scenarios.strategies import SWARM, check_space

LOCAL = "local:"
RESUBMITS = 3  # times a batch dask gave up on (KilledWorker) is submitted again
CONNECT_TIMEOUT = 30.0  # seconds to reach a scheduler, or for a LocalCluster to start


class DaskAddressError(ValueError):
    """A ``--dask`` address that is neither ``local:N`` nor ``SCHEME://HOST:PORT``."""


def parse_address(text: str, max_workers: int | None = None) -> tuple[str, int]:
    """``("local", N)`` for ``local:N``, else ``(address, 0)`` for a scheduler's address
    (``tcp://HOST:PORT``, ``tls://...``); DaskAddressError (one line) otherwise."""
    if text.startswith(LOCAL):
        raw = text[len(LOCAL):]
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise DaskAddressError(f"local:N needs N >= 1 worker processes, got {raw[:40]!r}")
        if max_workers is not None and n > max_workers:
            raise DaskAddressError(f"local:{n}: over {max_workers} worker processes")
        return "local", n
    scheme, sep, rest = text.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme not in ("tcp", "tls", "ucx", "ws", "wss") or not colon or not host \
            or not port.isdigit() or not 0 < int(port) < 65536:
        raise DaskAddressError(f"{text[:60]!r} is not a dask address: local:N, or a "
                               f"scheduler's tcp://HOST:PORT")
    return text, 0


# ------------------------------------------------------------------ on the workers


def run_batches(seed: int, stream: int, first: int, count: int, space: str,
                keep_going: bool, digests: bool, job_context: JobContext | None,
                ) -> dict[str, Any]:
    """Batches ``first .. first+count-1`` of ``stream``, on a worker (inside
    ``job_context()``), up to the first failure: their counts, their digests if asked for,
    and the failure if any (the shrunk scenario as JSON, a crash's text, and the seconds
    from the failing run's end to the batch's, spent shrinking)."""
    kept: list[str] | None = [] if digests else None
    stats = ExploreStats()
    found = None
    stop = _cancelled()
    with _context(job_context):
        for batch in range(first, first + count):
            one, found = explore_batch(seed, stream, batch, space, keep_going=keep_going,
                                       digests=kept, stop=stop)
            stats.add(one)
            if found is not None:
                break
    shrinking = time.monotonic() - stats.failed_at if stats.failed_at else 0.0
    stats.failed_at = 0.0  # this machine's clock: not the client's
    failure = None
    if found is not None:
        failure = [scenario_to_json(found[0], indent=False).decode(), found[1], shrinking]
    return {"stats": msgspec.to_builtins(stats.__dict__), "digests": kept, "failure": failure}


def _cancelled() -> Callable[[], bool] | None:
    """On a dask worker: whether the task running here was cancelled meanwhile (dask cannot
    interrupt a running task; a batch that keeps shrinking a failure nobody waits for
    would delay what comes after it, the minimizing of the first failure among it)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError, AttributeError):
        return None  # not on a worker

    def cancelled() -> bool:
        ts = worker.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    return cancelled


def _versions() -> tuple[str, str]:
    """squall's and Hypothesis' versions where this runs."""
    from importlib.metadata import version

    import hypothesis

    return version("squall"), hypothesis.__version__


def _judged(judge: SameFailure, candidate: Scenario) -> Any:
    """On a worker: ``judge(candidate)``, its outcome cut to what ``minimize`` reads."""
    out = judge(candidate)
    if out is None:
        return None
    return msgspec.structs.replace(out, busy={}, runs={}, faults={}, wrong=out.wrong[:3],
                                   violations=out.violations[:1])


class JudgeOnCluster:
    """``judge_many`` for ``minimize``: a window of candidates judged on the cluster, one
    task each."""

    def __init__(self, client: Any, judge: SameFailure) -> None:
        self.client = client
        self.judge = judge

    def __call__(self, candidates: list[Scenario]) -> list[Any]:
        futures = self.client.map(_judged, [self.judge] * len(candidates), candidates,
                                  pure=False)
        return list(self.client.gather(futures))


# ------------------------------------------------------------------ the client


@contextlib.contextmanager
def dask_client(address: str, workers: int = 0, security: Any = None) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster at ``address`` (``"local"``: a LocalCluster
    of ``workers`` processes, started here and closed after). ``security``: a
    ``distributed.security.Security`` to reach a running cluster with (default: dask's
    configuration's)."""
    from squall.targets.dask import require_dask

    require_dask()
    from distributed import Client, LocalCluster

    if address != "local":
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False,
                            security=security)
        except (OSError, TimeoutError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConnectionError(f"cannot reach the dask scheduler at {address}: "
                                  f"{first}") from None
        except TypeError as e:  # dask's word for "a tls:// address, and no credentials"
            if "TLS" not in str(e):
                raise
            raise ConnectionError(
                f"cannot reach the dask scheduler at {address}: it speaks TLS, and dask's "
                "configuration holds no client certificate (distributed.comm.tls.*)"
            ) from None
        with client:
            yield client
        return
    import dask

    from squall.targets.dask.cluster import cluster_security
    from squall.targets.dask.routing import DieWithParent

    # Mutual TLS with a certificate made for this cluster, as for the clusters squall
    # validates: dask workers unpickle what they are sent, and loopback is no boundary
    # between the users of one machine.
    security, protocol = cluster_security()
    # No queuing on the scheduler: each worker holds its next batch already, and starts it
    # the moment the last one ends (not a scheduler round trip later).
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                               silence_logs=logging.CRITICAL, memory_limit=0,
                               plugins={DieWithParent()}, security=security,
                               protocol=protocol)
    try:
        with Client(cluster, set_as_default=False, security=security) as client:
            client.wait_for_workers(workers, timeout=CONNECT_TIMEOUT)
            yield client
    finally:
        cluster.close()


class _Lost:
    """Our batches that were on a worker when it was removed (the scheduler's events)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        _, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        keys = [str(k) for k in msg.get("processing-tasks") or ()
                if str(k).startswith(self.prefix)]
        with self.lock:
            self.keys.extend(keys)

    def count(self) -> int:
        with self.lock:
            return len(self.keys)


def explore_on_dask(*, address: str, workers: int = 0, budget: float | None, seed: int = 0,
                    jobs: int = 1, shard: int = 0, shards: int = 1, space: str = SWARM,
                    out_dir: str | Path = "squall-traces", progress: ProgressFn | None = None,
                    max_batches: int | None = None, keep_going: bool = False,
                    job_context: JobContext | None = None, digests: bool = False,
                    minimize_candidates: int = MAX_CANDIDATES, per_task: int = 1,
                    on_client: Callable[[Any], None] | None = None,
                    security: Any = None) -> ExploreResult:
    """Explore the streams ``shard_streams(jobs, shard, shards)`` on the dask cluster at
    ``address`` (see the module doc): for ``budget`` seconds (None: no limit) or
    ``max_batches`` batches per stream, whichever ends first, or to the first failure.
    ``per_task``: consecutive batches of a stream one task runs (fewer, longer tasks for
    a scheduler that many workers would saturate; the same batches, so the same scenarios).
    ``on_client``: called with the client once the cluster is up (tests, benchmarks).
    ``security``: the credentials to reach a running cluster (see ``dask_client``)."""
    check_space(space)
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    if budget is None and max_batches is None:
        raise ValueError("explore_on_dask needs a budget or max_batches")
    streams = shard_streams(jobs, shard, shards)
    t0 = time.monotonic()
    with dask_client(address, workers, security) as client:
        here = _versions()
        there = {v for v in client.run(_versions).values()}
        if there - {here}:
            theirs = ", ".join(f"squall {a}, hypothesis {b}" for a, b in sorted(there - {here}))
            raise RuntimeError(f"the dask workers run {theirs}; here: squall {here[0]}, "
                               f"hypothesis {here[1]} (they would draw other scenarios)")
        if on_client is not None:
            on_client(client)
        startup = time.monotonic() - t0
        return _explore(client, streams, seed, space, budget, max_batches, keep_going,
                        job_context, digests, minimize_candidates, out_dir, progress, startup,
                        per_task)


def _order(streams: list[int], max_batches: int | None,
           per_task: int) -> Iterator[tuple[int, int, int]]:
    """(stream, first batch, batches) of each task, in the order they are handed out: the
    first ``per_task`` batches of every stream, then the next ..."""
    b = 0
    while max_batches is None or b < max_batches:
        count = per_task if max_batches is None else min(per_task, max_batches - b)
        for g in streams:
            yield g, b, count
        b += count


def _explore(client: Any, streams: list[int], seed: int, space: str, budget: float | None,
             max_batches: int | None, keep_going: bool, job_context: JobContext | None,
             digests: bool, minimize_candidates: int, out_dir: str | Path,
             progress: ProgressFn | None, startup: float, per_task: int) -> ExploreResult:
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    prefix = f"squall-explore-{uuid.uuid4().hex}"
    lost = _Lost(prefix)
    client.subscribe_topic("all", lost)  # to count batches on a worker that was lost
    started = time.monotonic()
    deadline = started + budget if budget is not None else float("inf")
    per_stream = {g: ExploreStats() for g in streams}
    kept: dict[tuple[int, int], list[str]] = {}
    order = _order(streams, max_batches, per_task)
    # future -> (stream, first batch, batches, attempt)
    pending: dict[Any, tuple[int, int, int, int]] = {}
    found: tuple[Scenario, str] | None = None
    failed_at = 0.0
    resubmitted = 0
    last_report = 0.0

    def submit(g: int, b: int, count: int, attempt: int = 0) -> None:
        key = f"{prefix}-{g}-{b}" + (f"-{attempt}" if attempt else "")
        fut = client.submit(run_batches, seed, g, b, count, space, keep_going, digests,
                            job_context, key=key, pure=False)
        pending[fut] = (g, b, count, attempt)
        done.add(fut)

    threads = [0, -1.0]  # the cluster's threads, and when they were counted

    def top_up() -> None:
        now = time.monotonic()
        if now - threads[1] > 1.0:  # a scheduler round trip: once a second at most
            threads[:] = [max(1, sum(client.nthreads().values())), now]
        while len(pending) < 2 * threads[0] and time.monotonic() < deadline:
            nxt = next(order, None)
            if nxt is None:
                return
            submit(*nxt)

    def total() -> ExploreStats:
        t = ExploreStats(shrinking=found is not None)
        for s in per_stream.values():
            t.add(s)
        t.rescheduled = lost.count() + resubmitted
        return t

    done = as_completed(loop=client.loop)
    try:
        top_up()
        for fut in done:
            g, b, count, attempt = pending.pop(fut)
            try:
                out = fut.result()
            except FutureCancelledError:
                continue
            except KilledWorker:
                if attempt >= RESUBMITS:
                    raise RuntimeError(f"batch {b} of stream {g} killed every worker that ran "
                                       f"it ({attempt + 1} submissions)") from None
                resubmitted += 1
                submit(g, b, count, attempt + 1)
                continue
            except Exception as e:  # squall's own error on a worker, not a scenario's
                raise RuntimeError(f"an exploration batch crashed (batch {b} of stream "
                                   f"{g}): {type(e).__name__}: {e}") from e
            finally:
                fut.release()
            stats = ExploreStats(**out["stats"])
            per_stream[g].add(stats)
            if out["digests"] is not None:
                kept[(g, b)] = out["digests"]
            if out["failure"] is not None and found is None:
                scenario_json, error, shrinking = out["failure"]
                found = (scenario_from_json(scenario_json), error)
                failed_at = time.monotonic() - shrinking
                client.cancel(list(pending))  # the first failure wins
                pending.clear()
                done.clear()
                break
            if found is None:
                top_up()
            now = time.monotonic()
            if progress is not None and now - last_report > REPORT_EVERY:
                last_report = now
                progress(-1, total())
    finally:
        if pending:
            client.cancel(list(pending))
        with contextlib.suppress(Exception):
            client.unsubscribe_topic("all")
    stats = total()
    if progress is not None:
        progress(-1, stats)
    elapsed = time.monotonic() - started
    failure, tried = None, 0
    if found is not None:
        stats.failed_at = failed_at
        window = max(1, sum(client.nthreads().values()))
        failure, tried = finish_failure(found, out_dir, job_context, minimize_candidates,
                                        judge_many=lambda judge: JudgeOnCluster(client, judge),
                                        window=window)
    per_job = [per_stream[g] for g in streams]
    digest_lists = {}
    if digests:
        for g in streams:
            digest_lists[g] = [d for (gg, _), ds in sorted(kept.items()) if gg == g
                               for d in ds]
    return ExploreResult(stats, elapsed, len(streams), failure, per_job, clusters=1,
                         streams=streams, digests=digest_lists, minimized=tried,
                         startup=startup)


__all__ = ["DaskAddressError", "JudgeOnCluster", "dask_client", "explore_on_dask",
           "parse_address", "run_batches"]
