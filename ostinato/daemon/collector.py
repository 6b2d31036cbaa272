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
leaves there. The thresholds before :meth:`start` come back at :meth:`close`.

CPython 3.11–3.13 (three generations, thresholds as counters); later versions change the
collector and keep the same calls.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

#: The transport stopped this long (s) before the oldest generation is collected.
IDLE_S = 2.0
#: The oldest generation's threshold while playing: more young collections than a night has.
NEVER = 1 << 30


class GcPauses:
    """The garbage collector's pauses while playing (a callback of :data:`gc.callbacks`): a
    collection holds the interpreter lock for its whole walk, so it is a wait for every
    thread, the clock's included. Counted from :meth:`watch` on (after the start-up heap is
    frozen), the longest per generation."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]
        self._began = 0.0
        self._watching = False
        self.counting = True  # off while the daemon collects on purpose (stopped)

    def watch(self) -> None:
        if not self._watching:
            self._watching = True
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if not self.counting:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info.get("generation", 0)
        ms = (time.perf_counter() - self._began) * 1e3
        self.collections[generation] += 1
        if ms > self.longest_ms[generation]:
            self.longest_ms[generation] = ms

    def stats(self) -> dict:
        return {"collections": list(self.collections),
                "longest_ms": [round(ms, 3) for ms in self.longest_ms]}  # fmt: skip


GC_PAUSES = GcPauses()  # one collector per process


class Collector:
    def __init__(self) -> None:
        self._thresholds: tuple[int, int, int] | None = None
        self._stopped_at: float | None = None
        self._due = False  # the young generations were collected since the last full one
        self._young_seen = 0
        self.full_collections = 0  # the idle ones
        self.full_ms_max = 0.0

    def start(self) -> None:
        """Freeze what start-up made, take the oldest generation's own collections away and
        start timing the collector's pauses."""
        gc.collect()
        gc.freeze()
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle = self._thresholds[:2]
            gc.set_threshold(young, middle, NEVER)
        GC_PAUSES.watch()
        self._young_seen = GC_PAUSES.collections[1]

    def poll(self, playing: bool, now: float) -> bool:
        """Called every ~100 ms (the daemon's main thread). Collects the oldest generation when
        the transport has been stopped :data:`IDLE_S` and something reached it since the last
        time; True when it did."""
        if GC_PAUSES.collections[1] != self._young_seen:
            self._young_seen = GC_PAUSES.collections[1]
            self._due = True  # survivors of the middle generation moved to the oldest
        if playing:
            self._stopped_at = None
            return False
        if self._stopped_at is None:
            self._stopped_at = now
        if not self._due or now - self._stopped_at < IDLE_S:
            return False
        GC_PAUSES.counting = False  # the pauses figure is of playing time
        began = time.perf_counter()
        try:
            found = gc.collect(2)
        finally:
            GC_PAUSES.counting = True
        ms = (time.perf_counter() - began) * 1e3
        self._due = False
        self._young_seen = GC_PAUSES.collections[1]
        self.full_collections += 1
        self.full_ms_max = max(self.full_ms_max, ms)
        log.debug("stopped: the oldest generation collected, %d objects freed in %.1f ms",
                  found, ms)  # fmt: skip
        return True

    def close(self) -> None:
        """The thresholds as they were (another daemon in the same process starts afresh)."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def stats(self) -> dict:
        return {"idle_full_collections": self.full_collections,
                "idle_full_ms_max": round(self.full_ms_max, 3)}  # fmt: skip
