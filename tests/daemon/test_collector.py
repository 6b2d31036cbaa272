"""The garbage collector kept out of playing time: the oldest generation is never walked while
the transport runs, only once it has been stopped a while."""

from __future__ import annotations

import gc
import weakref

import pytest

from ostinato.daemon.collector import GC_PAUSES, GENERATIONAL, IDLE_S, NEVER, Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.mark.skipif(not GENERATIONAL, reason="CPython 3.10-3.13 with the GIL: see collector.py")
def test_the_oldest_generation_waits_for_the_transport_to_stop() -> None:
    before = gc.get_threshold()
    collector = Collector()
    collector.start()
    try:
        assert gc.get_threshold() == (before[0], before[1], NEVER)
        node = Node()
        gone = weakref.ref(node)
        gc.collect(1)  # it lives through the young collections: now in the oldest generation
        del node  # and dies there, a cycle
        young = GC_PAUSES.collections[0]
        junk = [[i] for i in range(50 * before[0] * before[1])]  # many young collections
        del junk
        assert GC_PAUSES.collections[0] > young + 10
        assert gone() is not None  # playing: nothing walked the oldest generation

        assert not collector.poll(True, 100.0)
        assert not collector.poll(False, 101.0)  # just stopped (a DAW's loop passes by)
        assert not collector.poll(True, 101.1)
        assert not collector.poll(False, 102.0)
        assert not collector.poll(False, 102.0 + IDLE_S / 2)
        longest = list(GC_PAUSES.longest_ms)
        assert collector.poll(False, 102.0 + IDLE_S)  # stopped long enough: collected
        assert gone() is None
        assert GC_PAUSES.longest_ms == longest  # not a pause of playing time
        assert collector.stats()["idle_full_collections"] == 1
        assert collector.stats()["idle_full_ms_max"] > 0
        assert not collector.poll(False, 110.0)  # nothing reached it since
        other = Collector()  # a second daemon in the process: the thresholds stay until
        other.start()  # the last one closes
        collector.close()
        assert gc.get_threshold()[2] == NEVER
        other.close()
    finally:
        collector.close()
        # the test process's heap stays frozen: unfrozen, its next full walk (torch, the
        # models) would stall the in-process JACK probes of the tests after this one
    assert gc.get_threshold() == before
