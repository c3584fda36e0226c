"""The one executor of lbsim: runs many independent simulations in this process, a process pool, or on dask.

Sweeps, comparisons, job-size scaling and the analysis scripts all hand
their runs here. A task is ``(key, payload)``; the executor calls
``function(payload)`` somewhere and hands ``(key, result)`` back to the
caller as each run lands (:func:`execute`), or all of them in the order they
were given (:func:`map_ordered`). Runs are pure functions of their payload,
so the results do not depend on where or in which order they were computed.

``executor``:

- ``"local"``: ``workers = 1`` runs in this process; more starts a process
  pool (``forkserver``: workers fork from a clean server that imported
  lbsim once, so they start fast and never inherit the caller's threads,
  tqdm's or dask's, in the middle of a lock). Each worker watches its
  parent and exits when it is gone, so ``kill -9`` of the caller leaves no
  process behind.
- ``"dask"``: a new ``LocalCluster`` of ``workers`` processes, or the
  cluster at ``scheduler`` (an address, or a ``distributed.Client`` the
  caller owns). Results come back to the caller, so remote workers need no
  shared disk.

**Ctrl-C.** Pool workers ignore SIGINT (the terminal sends it to the whole
process group): the caller alone gets the ``KeyboardInterrupt``, cancels
the queued runs and terminates the running ones, so the interrupt reaches
the user as one exception of the caller and no worker prints a traceback.

As with any process pool, a script that starts one with ``workers > 1``
must do so under ``if __name__ == "__main__":`` (workers re-import it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from typing import Any

from ..errors import ScenarioError, unknown
from ..files import process_alive

__all__ = ["EXECUTORS", "check_executor", "config_costs", "execute", "map_ordered", "process_alive", "run_cost"]

EXECUTORS = ("local", "dask")


def check_executor(workers: int, executor: str, scheduler: Any) -> None:
    """Reject a bad ``workers``/``executor``/``scheduler`` combination before anything runs."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ScenarioError("workers", f"must be an integer >= 1, got {workers!r}")
    if executor not in EXECUTORS:
        raise ScenarioError("executor", unknown("executor", str(executor), EXECUTORS))
    if scheduler is not None and executor != "dask":
        raise ScenarioError("scheduler", "only used with executor 'dask'")
    if scheduler is not None and workers != 1:
        raise ScenarioError(
            "workers", "the cluster at --scheduler brings its own workers: drop --workers (it sizes a LocalCluster)"
        )


def execute(
    function: Callable[[Any], Any],
    tasks: Sequence[tuple[str, Any]],
    on_result: Callable[[str, Any], None],
    *,
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    progress: bool = False,
    total: int | None = None,
    desc: str = "runs",
    weights: Mapping[str, float] | None = None,
) -> None:
    """Run ``function(payload)`` for every ``(key, payload)`` and hand each result to ``on_result`` as it lands.

    ``progress`` shows a bar (on stderr, and only on a terminal: piped to a
    log it stays silent) of ``total`` runs, of which ``total - len(tasks)``
    are already done (a resumed sweep). ``weights`` (every run's expected
    cost by key, done ones included: :func:`run_cost`) make the bar's
    percentage and ETA count work rather than runs, so a run at job scale
    0.001 weighs a thousand runs at 1. ``function`` must be importable by
    name (a module-level function) for the pool and dask.
    """
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    check_executor(workers, executor, scheduler)
    total = len(tasks) if total is None else total
    done = total - len(tasks)
    pending = {key for key, _ in tasks}
    weight = dict(weights) if weights is not None and pending <= set(weights) else None
    bar = tqdm(
        total=sum(weight.values()) if weight is not None else total,
        initial=sum(w for k, w in weight.items() if k not in pending) if weight is not None else done,
        desc=desc,
        unit="run",
        disable=None if progress else True,  # None: off when stderr is not a terminal
        dynamic_ncols=True,
        bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]" if weight is not None else None
        ),
    )
    if weight is not None:
        bar.set_postfix_str(f"{done}/{total} runs", refresh=False)
    try:
        if not tasks:
            return
        results: Generator[tuple[str, Any], None, None]
        if executor == "dask":
            results = _dask_results(function, tasks, workers, scheduler)
        elif workers == 1:
            results = ((key, function(payload)) for key, payload in tasks)
        else:
            results = _pool_results(function, tasks, workers)
        with closing(results):
            for key, result in results:
                on_result(key, result)
                done += 1
                if weight is not None:
                    bar.set_postfix_str(f"{done}/{total} runs", refresh=False)
                bar.update(weight[key] if weight is not None else 1)
    finally:
        bar.close()


def run_cost(scenario: Any) -> float:
    """A run's expected cost: its expected number of jobs, ``horizon * offered load / sbar``.

    The offered load is averaged over the whole run ``[0, horizon]`` (rate
    schedules included, :func:`lbsim.engine.result.offered_load`); the
    simulator's cost is close to linear in the jobs it moves.
    """
    from ..engine.result import offered_load

    sim = scenario.simulation
    return max(offered_load(scenario, 0.0, sim.horizon) * sim.horizon / scenario.mean_size, 1.0)


def config_costs(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """:func:`run_cost` of each resolved scenario dict, by key."""
    from ..scenario import Scenario

    return {key: run_cost(Scenario.from_dict(config)) for key, config in configs.items()}


def map_ordered(
    function: Callable[[Any], Any],
    payloads: Sequence[Any],
    *,
    workers: int = 1,
    executor: str = "local",
    scheduler: Any = None,
    progress: bool = False,
    desc: str = "runs",
) -> list[Any]:
    """``[function(p) for p in payloads]`` on the executor: the results in the order of ``payloads``."""
    # A fresh token per call: on a shared dask scheduler, another map's task 0 is not this one's.
    token = uuid.uuid4().hex[:12]
    keys = [f"{token}-{k}" for k in range(len(payloads))]
    results: dict[str, Any] = {}
    execute(
        function,
        list(zip(keys, payloads)),
        results.__setitem__,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        desc=desc,
    )
    return [results[key] for key in keys]


def _pool_results(function, tasks, workers) -> Generator[tuple[str, Any], None, None]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lbsim.experiments"])
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
    )
    try:
        futures = {pool.submit(function, payload): key for key, payload in tasks}
        for future in as_completed(futures):
            yield futures[future], _result(future, futures[future])
    except BaseException:
        # Ctrl-C, an error, or the caller closing the generator: queued runs are
        # cancelled and running ones stopped now rather than finished unseen.
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown(wait=True)


def _start_worker(parent: int) -> None:
    """Pool worker initializer: leave SIGINT to the parent, and exit once the parent is gone.

    A pool's workers block forever on its task queue if the caller is killed
    (``kill -9`` runs no clean-up), and keep the forkserver alive with them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while process_alive(parent):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="lbsim-watch-parent", daemon=True).start()


def _dask_results(function, tasks, workers, scheduler) -> Generator[tuple[str, Any], None, None]:
    cluster = client = None
    futures: list[Any] = []
    # A Ctrl-C while dask is imported and the cluster starts would surface as an ImportError or a half-made
    # cluster (whose exit handler then fails): it is noted, and acted on once the cluster is up, which the
    # ``finally`` below then closes like any other (exit status 130).
    interrupted: list[object] = []
    main = threading.current_thread() is threading.main_thread()  # (only the main thread sets handlers)
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if main else None
    try:
        try:
            try:
                from distributed import Client, LocalCluster
                from distributed import as_completed as dask_completed
            except ImportError:
                raise ScenarioError("executor", "'dask' needs dask.distributed: pip install 'lbsim[dask]'") from None
            if scheduler is None:
                cluster = _local_cluster(LocalCluster, workers)
        finally:
            if main:  # (None: a handler not set from Python, which Python's default stands in for)
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        if interrupted:
            raise KeyboardInterrupt
        if cluster is not None:
            client = Client(cluster)
        elif isinstance(scheduler, str):
            client = _connect(Client, scheduler)
        else:  # an existing Client: the caller owns it
            client = scheduler
        _check_worker_versions(client)
        # The key names the function too: a sweep and a comparison may share a configuration.
        prefix = f"lbsim-{function.__name__.strip('_')}-"
        futures = [client.submit(function, payload, key=prefix + key, pure=False) for key, payload in tasks]
        for future in dask_completed(futures):
            key = future.key.removeprefix(prefix)
            result = _result(future, key)
            future.release()
            yield key, result
    finally:
        if client is not None:
            client.cancel([f for f in futures if not f.done()])
            if client is not scheduler:
                client.close()
        if cluster is not None:
            cluster.close()


def _local_cluster(local_cluster: Any, workers: int) -> Any:
    """A LocalCluster of ``workers`` processes that a Ctrl-C at the terminal does not reach.

    Ctrl-C signals the terminal's whole process group; workers that get it die printing tracebacks
    (this process then closes the cluster anyway). They are forked from a fork server started with
    SIGINT ignored: an ignored signal stays ignored across exec (Python installs no handler of its
    own then), and the fork server hands its children the disposition it started with. SIGINT is
    ignored only while that server is launched (a fork and exec), in the main thread (elsewhere the
    workers are forked as dask does by default).
    """
    import multiprocessing.forkserver

    import dask
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()  # sets the fork server's preloads (dask's own, which make workers start fast)
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                multiprocessing.forkserver.ensure_running()
            finally:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        return local_cluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # a task's error comes back through its future; the rest is noise
        )


#: seconds to wait for a dask scheduler before saying it cannot be reached
CONNECT_TIMEOUT = 5.0


def _connect(client_class: Any, address: str) -> Any:
    """A client of the scheduler at ``address``, or one line saying it cannot be reached (in seconds, not minutes)."""
    try:
        return client_class(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScenarioError(
            "scheduler", f"cannot reach a dask scheduler at {address} within {CONNECT_TIMEOUT:g} s ({reason})"
        ) from None


def worker_version() -> str:
    """The lbsim version a dask worker runs (sent to the workers by :func:`_check_worker_versions`)."""
    import lbsim

    return str(lbsim.__version__)


def _check_worker_versions(client: Any) -> None:
    """Refuse a cluster whose workers run another lbsim: their numbers would not be this version's."""
    from ..outputs import lbsim_version

    ours = lbsim_version()
    for address, theirs in sorted(client.run(worker_version).items()):
        if theirs != ours:
            raise ScenarioError("scheduler", f"the worker at {address} runs lbsim {theirs}, this is lbsim {ours}")


def _result(future, key: str) -> Any:
    try:
        return future.result()
    except Exception as exc:
        exc.add_note(f"in lbsim run {key}")
        raise
