"""The Dask side of the jobs: which cluster to run on, and how a stage's progress is shown.

The embedded default is a local cluster of worker processes, one per core (or
``dask.workers``), one thread each: the kernels are NumPy and Pillow code that
holds the GIL part of the time, so processes scale where threads would not.
A source of at most one partition per worker runs on threads of the client's
process instead (``dask.local_workers``): no worker process to start, no
kernels to import and compile again in each.
``--scheduler ADDRESS`` (or ``dask.scheduler``) runs the same job on an existing
cluster instead.
"""
from __future__ import annotations

import logging
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from distributed import Client, Future, LocalCluster, as_completed
from distributed.diagnostics.progressbar import progress

from imgdedup.pipeline.cores import usable_cores

log = logging.getLogger(__name__)


@contextmanager
def dask_client(scheduler: str = "", workers: int = 0, *, processes: bool = True) -> Iterator[Client]:
    """A Dask client on ``scheduler``, or on a local cluster started (and closed) here.

    Parameters
    ----------
    scheduler : str
        Address of an existing scheduler (``tcp://host:8786``); empty for a local cluster.
    workers : int
        Workers of the local cluster; 0 means one per core.
    processes : bool
        Local workers are processes (the default) or threads of this process;
        threads are needed when the store or source is ``memory://``, which
        exists only inside one process.
    """
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n_workers = workers or usable_cores()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                      dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
            Client(cluster) as client:
        yield client


def workers_share_host(client: Client) -> bool:
    """True when every worker of ``client`` runs on this host.

    Their writes to a local store are then made durable by this host's commit
    (one filesystem flush); workers elsewhere must fsync each write themselves.
    """
    here = socket.gethostname()
    return all(host == here for host in client.run(socket.gethostname).values())


def wants_bar(progress_mode: str) -> bool:
    """True for ``"bar"``, and for ``"auto"`` when stderr is a terminal."""
    return progress_mode == "bar" or (progress_mode == "auto" and sys.stderr.isatty())


def wait_for(futures: Sequence[Future], stage: str, progress_mode: str) -> None:
    """Block until every future of a stage has finished (or failed), showing progress.

    A bar on a terminal (``bulk.progress``); otherwise a log line each time
    another tenth of the tasks has finished. Failures are not raised here:
    gathering the results raises them.
    """
    if not futures:
        return
    if wants_bar(progress_mode):
        print(f"{stage}:", file=sys.stderr)
        progress(futures, notebook=False)
        return
    started, done, step = time.perf_counter(), 0, max(1, len(futures) // 10)
    for _ in as_completed(futures):
        done += 1
        if done % step == 0 or done == len(futures):
            log.info("%s: %d/%d tasks done (%.1f s)", stage, done, len(futures), time.perf_counter() - started)
