"""Where a thread's time went (Linux): on a CPU, or runnable and waiting for one.

``/proc/thread-self/schedstat`` holds the calling thread's time on a CPU and its time waiting
on a run queue (ns). What a stretch of wall time holds beyond the two, the thread slept: on a
lock, the interpreter's included. That tells a wait the daemon causes (a lock held by one of
its threads) from one the machine causes (no CPU for the thread). Elsewhere, or where /proc
cannot be read, :func:`sched_times` returns None and callers measure wall time alone.
"""

from __future__ import annotations

import os
import threading

_local = threading.local()


def sched_times() -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting on a run queue) of the calling thread so far, or None."""
    fd = getattr(_local, "fd", None)
    if fd is None:  # each thread opens its own file once (thread-self is the opener's)
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            fd = -1
        _local.fd = fd
    if fd < 0:
        return None
    try:
        on_cpu, waiting, _ = os.pread(fd, 128, 0).split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return None


def split_wait(wall_ms: float, before: tuple[int, int] | None,
               after: tuple[int, int] | None) -> dict | None:  # fmt: skip
    """A wait of ``wall_ms`` between two :func:`sched_times` readings: ms on a CPU, ms runnable
    without one (the machine's), ms asleep (a lock: the daemon's)."""
    if before is None or after is None:
        return None
    on_cpu = (after[0] - before[0]) / 1e6
    runnable = (after[1] - before[1]) / 1e6
    return {"on_cpu_ms": round(on_cpu, 3), "runnable_ms": round(runnable, 3),
            "asleep_ms": round(max(0.0, wall_ms - on_cpu - runnable), 3)}  # fmt: skip
