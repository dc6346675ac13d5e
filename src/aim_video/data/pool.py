"""Process pools for the data tools (check-data, prepare, make-synthetic), and how many CPUs
this process may use.

Workers start from a forkserver, never by forking the calling process: forking a process whose
torch or FFmpeg thread pools are running can deadlock the child (seen once as a hung scan in the
test suite). The forkserver pays the imports once and forks clean workers from itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes started from a forkserver (spawn where there is none)."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


def usable_cpus() -> int:
    """The CPUs this process may run on: fewer than `os.cpu_count()` in containers and under
    taskset."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
