"""Sending notes on time: a beat-domain queue and one sender thread (run by the sender
process, :mod:`ostinato.daemon.sender`, which owns the output port).

Events are kept in beats and turned into wall time only when they are due, with the clock's
*current* map, so a tempo change re-times everything still queued. The sender sleeps until
about 1 ms before an event (0.3 ms at real-time priority), then spins to it. It tracks every
sounding note: each note-on gets its note-off, a pitch struck again while sounding is released
first, and stop / panic / shutdown release everything and send All Notes Off (CC 123) on
every channel used.

A note-on that would go out later than ``late_tolerance_ms`` (10 ms: audible) is dropped
with its note-off, so a note is never played off the grid. The drop is counted by its cause:
a *deadline miss* when the note was handed over after its time (generation was late), a
*late wake-up* when it was queued in time but the sender itself ran too late (the OS did not
schedule it). Smaller delays (OS jitter) are measured in ``stats``.

The sender thread asks for real-time scheduling (``SCHED_FIFO`` at ``rt_priority``, below
JACK's, whose default is 10) so a busy CPU cannot keep it waiting; where that is not allowed it says
so once and runs at normal priority (Linux: the ``audio`` group's ``rtprio`` limit grants it).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ostinato.daemon.clock import TempoMap

log = logging.getLogger(__name__)

NOTE_ON, NOTE_OFF = 0x90, 0x80
SPIN_S = 0.001  # busy-wait this long before an event instead of trusting sleep()
SPIN_S_REALTIME = 0.0003  # at SCHED_FIFO a timed wait wakes within ~0.1 ms: spin less


def default_program_channels() -> dict[int, int]:
    """Program → output channel (0-based): drums on channel 10, the rest on channel 1."""
    from ostinato.model.tokens import DRUM_PROGRAM  # here: the sender process never needs it

    return {DRUM_PROGRAM: 9}


@dataclass
class SchedulerStats:
    sent_notes: int = 0
    deadline_misses: int = 0  # note-ons dropped: handed over after their time
    late_wakeups: int = 0  # note-ons dropped: queued in time, the sender ran too late
    lateness_ms: list[float] = field(default_factory=list)  # actual send − ideal, note-ons


class Scheduler:
    """``send(bytes)`` writes one MIDI message; ``tempo_map()`` returns the clock's map."""

    def __init__(
        self,
        send: Callable[[list[int]], None],
        tempo_map: Callable[[], TempoMap | None],
        program_channels: dict[int, int] | None = None,
        latency_ms: float = 0.0,
        late_tolerance_ms: float = 10.0,
        keep_lateness: int = 100_000,
        rt_priority: int = 0,
    ) -> None:
        self._send = send
        self._tempo_map = tempo_map
        self.program_channels = {**default_program_channels(), **(program_channels or {})}
        self.latency_s = latency_ms / 1000.0
        self.late_tolerance_s = late_tolerance_ms / 1000.0
        self.keep_lateness = keep_lateness
        self.rt_priority = rt_priority
        self.realtime: bool | None = None  # None until the sender thread has started
        self.stats = SchedulerStats()
        # (beat, order, kind, channel, pitch, velocity, note id, time queued)
        self._queue: list[tuple[float, int, int, int, int, int, int, float]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) → note id
        self._dropped: set[int] = set()
        self._note_ids = itertools.count()
        self._channels_used: set[int] = set()
        self._thread: threading.Thread | None = None
        self._epoch = 0  # bumped by panic: an event popped before it is not sent
        # (due, sent, channel, pitch, velocity, note id) for every note-on sent
        self.on_note_sent: Callable[[float, float, int, int, int, int], None] | None = None
        # (due, now, note id, handed over late) for every note-on dropped
        self.on_note_dropped: Callable[[float, float, int, bool], None] | None = None

    def channel_for(self, program: int) -> int:
        return self.program_channels.get(program, 0)

    # -- producer side (session thread) -----------------------------------------------------
    def schedule_note(
        self, start_beats: float, duration_beats: float, program: int, pitch: int, velocity: int
    ) -> int:
        end = start_beats + max(duration_beats, 1 / 64)
        return self.schedule(start_beats, end, self.channel_for(program), pitch, velocity)

    def schedule(
        self, start_beats: float, end_beats: float, channel: int, pitch: int, velocity: int,
        note_id: int | None = None, handed_over: float | None = None,
    ) -> int:  # fmt: skip
        """Queue a note-on at ``start_beats`` and its note-off at ``end_beats``.
        ``handed_over``: when generation delivered it (default: now)."""
        if note_id is None:
            note_id = next(self._note_ids)
        now = time.perf_counter() if handed_over is None else handed_over
        with self._cond:
            heapq.heappush(self._queue, (start_beats, next(self._order), NOTE_ON, channel, pitch,
                                         velocity, note_id, now))  # fmt: skip
            heapq.heappush(self._queue, (end_beats, next(self._order), NOTE_OFF, channel, pitch, 0,
                                         note_id, now))  # fmt: skip
            self._cond.notify()
        return note_id

    def retime(self) -> None:
        """Wake the sender: the tempo map changed."""
        with self._cond:
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- sender thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ostinato-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sender thread and release every sounding note."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.panic()

    def _go_realtime(self) -> None:
        """Ask for SCHED_FIFO for this (the sender) thread; say once if it is refused."""
        self.realtime = False
        if self.rt_priority <= 0:
            return
        if not hasattr(os, "sched_setscheduler"):
            log.info("real-time priority is not available on this platform")
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
        except OSError as exc:
            log.info(
                "sender runs without real-time priority (%s): timing may loosen when the CPU "
                "is busy; allow it with an rtprio limit (e.g. the audio group)",
                exc.strerror,
            )
            return
        self.realtime = True
        log.info("sender thread has real-time priority (SCHED_FIFO %d)", self.rt_priority)

    def _run(self) -> None:
        """Sender thread: the only one that sends notes. Never blocks on anything but its
        own condition; sending is a non-blocking port write."""
        self._go_realtime()
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.05)
                    continue
                beat = self._queue[0][0]
                tempo = self._tempo_map()
                if tempo is None:
                    self._cond.wait(0.01)
                    continue
                due = tempo.time_at(beat) - self.latency_s
                wait = due - time.perf_counter()
                spin = SPIN_S_REALTIME if self.realtime else SPIN_S
                if wait > spin:
                    self._cond.wait(wait - spin)  # woken early by new events or retime()
                    continue
                event = heapq.heappop(self._queue)
                epoch = self._epoch
            while time.perf_counter() < due:  # spin the last millisecond
                pass
            with self._cond:
                if epoch == self._epoch:  # a panic in between wins: nothing after it
                    self._dispatch(event, due)

    def _dispatch(self, event, due: float) -> None:
        _, _, kind, channel, pitch, velocity, note_id, queued = event
        now = time.perf_counter()
        if kind == NOTE_ON:
            if now - due > self.late_tolerance_s:
                handed_over_late = queued >= due  # generation delivered it after its time
                if handed_over_late:
                    self.stats.deadline_misses += 1
                else:
                    self.stats.late_wakeups += 1
                self._dropped.add(note_id)
                if self.on_note_dropped is not None:
                    self.on_note_dropped(due, now, note_id, handed_over_late)
                return
            key = (channel, pitch)
            if key in self._sounding:  # same pitch struck again: release it first
                self._write([NOTE_OFF | channel, pitch, 0])
            self._write([NOTE_ON | channel, pitch, velocity])
            self._sounding[key] = note_id
            self._channels_used.add(channel)
            self.stats.sent_notes += 1
            if len(self.stats.lateness_ms) < self.keep_lateness:
                self.stats.lateness_ms.append((now - due) * 1000.0)
            if self.on_note_sent is not None:
                self.on_note_sent(due, now, channel, pitch, velocity, note_id)
        else:
            if note_id in self._dropped:
                self._dropped.discard(note_id)
                return
            key = (channel, pitch)
            if self._sounding.get(key) == note_id:  # a retrigger may have taken it over
                del self._sounding[key]
                self._write([NOTE_OFF | channel, pitch, 0])

    def _write(self, message: list[int]) -> None:
        try:
            self._send(message)
        except Exception:  # a port error must not kill the sender thread
            log.exception("cannot send MIDI message %s", message)

    # -- stop / panic -----------------------------------------------------------------------
    def panic(self) -> None:
        """Drop the queue, release every sounding note, All Notes Off on every used channel."""
        with self._cond:
            self._epoch += 1
            self._queue.clear()
            self._dropped.clear()
            sounding, self._sounding = self._sounding, {}
            for channel, pitch in sounding:
                self._write([NOTE_OFF | channel, pitch, 0])
            for channel in sorted(self._channels_used | {c for c, _ in sounding}):
                self._write([0xB0 | channel, 123, 0])

    @property
    def sounding(self) -> int:
        return len(self._sounding)
