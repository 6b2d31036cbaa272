"""A thread's wait split between the CPU, the run queue and sleep (Linux /proc)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from ostinato.daemon.thread_sched import sched_times, split_wait


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/thread-self is Linux's")
def test_a_wait_on_a_lock_is_told_from_work() -> None:
    lock = threading.Lock()
    lock.acquire()
    threading.Timer(0.05, lock.release).start()
    before, began = sched_times(), time.perf_counter()
    with lock:  # asleep until the timer lets go
        pass
    wall = (time.perf_counter() - began) * 1e3
    asleep = split_wait(wall, before, sched_times())
    assert asleep is not None and asleep["asleep_ms"] > 40 and asleep["on_cpu_ms"] < 20

    before, began = sched_times(), time.perf_counter()
    end = began + 0.05
    while time.perf_counter() < end:  # busy: on a CPU (or waiting for one), never asleep
        pass
    wall = (time.perf_counter() - began) * 1e3
    busy = split_wait(wall, before, sched_times())
    assert busy is not None
    assert busy["on_cpu_ms"] + busy["runnable_ms"] > 40 and busy["asleep_ms"] < 10


def test_without_readings_there_is_no_split() -> None:
    assert split_wait(3.0, None, (1, 2)) is None
