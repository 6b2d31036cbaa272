"""Python's garbage collector, kept out of playing time.

A collection holds the interpreter lock for its whole walk: every thread waits, the clock's
input thread included. The young generations hold what was made in the last moments (a few
thousand objects: ~1 ms at most, measured in the soak); the oldest holds everything that has
lived a while, and its walk grows with the session. Left to itself, CPython walks it whenever
it has grown by a quarter — once in a while during an hour of playing, for several ms at once
(the soak's clock listener: 7.5 ms once in an hour, while 4-minute runs stay at 1.5 ms).

So while the daemon runs:

- what start-up loaded (onnxruntime, numpy, the tokenizer: ~200k objects) is frozen
  (``gc.freeze``): no collection ever walks it again;
- the young generations are collected as usual (cycles made while planning a bar die young);
- the oldest generation is never collected on its own (its threshold is out of reach), only
  here, when the transport has been stopped for :data:`IDLE_S`: nothing is playing then, and a
  DAW's loop (a Stop and a Start at each pass) never stops it that long.

What can wait in the oldest generation meanwhile is only a cycle of objects that lived through
two young collections and died later: the soak's memory figure shows what an hour of playing
leaves there (a session that never stops keeps it until it does). The thresholds before the
first :meth:`Collector.start` come back at the last :meth:`Collector.close`.

CPython 3.10–3.13 with the interpreter lock (three generations, thresholds as counters). 3.14's
incremental collector walks the old objects a slice at a time with the young ones, and a build
without the lock has one generation: there only the freeze applies.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

#: The transport stopped this long (s) before the oldest generation is collected.
IDLE_S = 2.0
#: The oldest generation's threshold while playing: more young collections than a night has.
NEVER = 1 << 30
#: Where the oldest generation's threshold is a counter of middle collections (see above).
GENERATIONAL = sys.version_info < (3, 14) and getattr(sys, "_is_gil_enabled", lambda: True)()


class GcPauses:
    """The garbage collector's pauses while playing (a callback of :data:`gc.callbacks`): a
    collection holds the interpreter lock for its whole walk, so it is a wait for every
    thread, the clock's included. Counted from :meth:`watch` on (after the start-up heap is
    frozen), the longest per generation; the collections the daemon makes on purpose (its
    thread named in :attr:`skip_thread`) are not."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]
        self._began: float | None = None
        self._watching = False
        self.skip_thread: int | None = None

    def watch(self) -> None:
        if not self._watching:
            self._watching = True
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":  # the thread that collects runs this callback
            skip = self.skip_thread is not None and threading.get_ident() == self.skip_thread
            self._began = None if skip else time.perf_counter()
            return
        if self._began is None:
            return
        generation = min(int(info.get("generation", 0)), 2)
        ms = (time.perf_counter() - self._began) * 1e3
        self._began = None
        self.collections[generation] += 1
        if ms > self.longest_ms[generation]:
            self.longest_ms[generation] = ms

    def collect(self, generation: int) -> float:
        """Collect ``generation`` on purpose, not counted as a pause of playing; its ms."""
        self.skip_thread = threading.get_ident()
        began = time.perf_counter()
        try:
            gc.collect(generation)
        finally:
            self.skip_thread = None
        return (time.perf_counter() - began) * 1e3

    def stats(self) -> dict:
        return {"collections": list(self.collections),
                "longest_ms": [round(ms, 3) for ms in self.longest_ms]}  # fmt: skip


GC_PAUSES = GcPauses()  # one collector per process

# the thresholds before the first start, and how many collectors have started since
_saved: tuple[int, int, int] | None = None
_started = 0


def _full_collections() -> int:
    return int(gc.get_stats()[-1]["collections"])


def _middle_collections() -> int:
    stats = gc.get_stats()
    return int(stats[min(1, len(stats) - 1)]["collections"])


class Collector:
    def __init__(self) -> None:
        self._started = False
        self._stopped_at: float | None = None
        self._middle_seen = 0
        self.full_collections = 0  # the idle ones
        self.full_ms_max = 0.0

    def start(self) -> None:
        """Freeze what start-up made, take the oldest generation's own collections away and
        start timing the collector's pauses."""
        global _saved, _started
        GC_PAUSES.watch()
        GC_PAUSES.collect(2)  # start-up's garbage, then the rest for good:
        gc.freeze()
        if self._started:
            return
        self._started = True
        _started += 1
        if _started == 1 and GENERATIONAL:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], NEVER)
        self._middle_seen = _middle_collections()

    def poll(self, playing: bool, now: float) -> bool:
        """Called every ~100 ms (the daemon's main thread). Collects the oldest generation when
        the transport has been stopped :data:`IDLE_S` and objects reached it since the last
        time; True when it did."""
        if playing:
            self._stopped_at = None
            return False
        if self._stopped_at is None:
            self._stopped_at = now
        if not self._started or now - self._stopped_at < IDLE_S:
            return False
        if _middle_collections() == self._middle_seen:
            return False  # nothing new reached the oldest generation
        full = _full_collections()
        ms = GC_PAUSES.collect(2)
        if _full_collections() == full:
            return False  # another thread was collecting: the next poll tries again
        self._middle_seen = _middle_collections()
        self.full_collections += 1
        self.full_ms_max = max(self.full_ms_max, ms)
        log.debug("stopped: the oldest generation collected in %.1f ms", ms)
        return True

    def close(self) -> None:
        """The thresholds as they were once the last collector started is closed."""
        global _saved, _started
        if not self._started:
            return
        self._started = False
        _started -= 1
        if _started == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None

    def stats(self) -> dict:
        return {"idle_full_collections": self.full_collections,
                "idle_full_ms_max": round(self.full_ms_max, 3)}  # fmt: skip
