"""Sending notes on time through python-rtmidi: the sender thread of the ALSA, CoreMIDI and
WinMM backends, run by the sender process (:mod:`ostinato.daemon.sender`, which owns the output
port). It plays a :class:`~ostinato.daemon.note_queue.NoteQueue` (the JACK backend plays the
same queue from JACK's process callback, :mod:`ostinato.daemon.jack_io`) and offers the
:class:`~ostinato.daemon.scheduling.NoteScheduler` interface, as the daemon's front end of the
sender process does.

The sender sleeps until about 1 ms before an event (0.3 ms at real-time priority), then spins
to it, and converts beats to ``time.perf_counter()`` with the clock's current map when the
event is due. A note-on that would go out later than ``late_tolerance_ms`` (10 ms: audible) is
dropped with its note-off, so a note is never played off the grid. The drop is counted by its
cause: a *deadline miss* when the note was handed over after its time (generation was late), a
*late wake-up* when it was queued in time but the sender itself ran too late (the OS did not
schedule it). Smaller delays (OS jitter) are measured in ``stats``.

The sender thread asks for real-time scheduling (``SCHED_FIFO`` at ``rt_priority``, below
JACK's, whose default is 10) so a busy CPU cannot keep it waiting; where that is not allowed it
says so once and runs at normal priority (Linux: the ``audio`` group's ``rtprio`` limit grants
it).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.note_queue import NOTE_ON, PROGRAM_CHANGE, Event, NoteQueue
from ostinato.daemon.scheduling import NoteScheduler

log = logging.getLogger(__name__)

SPIN_S = 0.001  # busy-wait this long before an event instead of trusting sleep()
SPIN_S_REALTIME = 0.0003  # at SCHED_FIFO a timed wait wakes within ~0.1 ms: spin less


def input_priority(rt_priority: int) -> int:
    """The SCHED_FIFO priority of the daemon's input thread (the clock's ticks and the notes
    heard), one below the sender's ``rt_priority`` (0: off). A tick is read and its map
    handed to the sender within a few microseconds of work, but at normal priority a busy
    CPU (the planner, a synth, the DAW) kept that thread waiting up to 7.5 ms in an hour's
    jam; at SCHED_FIFO it runs as soon as its input arrives."""
    return max(1, rt_priority - 1) if rt_priority > 0 else 0


def realtime_thread(priority: int, who: str = "the sender") -> bool:
    """SCHED_FIFO at ``priority`` for the calling thread (Linux schedules threads one by one);
    False, said in the log (naming ``who``), where it is refused or not available (0: not
    asked)."""
    if priority <= 0:
        return False
    if not hasattr(os, "sched_setscheduler"):
        log.info("real-time priority is not available on this platform")
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        log.info(
            "%s runs without real-time priority (%s): timing may loosen when the CPU is busy; "
            "allow it with an rtprio limit (e.g. the audio group)",
            who,
            exc.strerror,
        )
        return False
    return True


class Scheduler(NoteScheduler):
    """The rtmidi sender: ``send(bytes)`` writes one MIDI message; ``tempo_map()`` returns the
    clock's map (times on ``time.perf_counter()``'s clock)."""

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
        super().__init__(program_channels, keep_lateness)
        self._send = send
        self._tempo_map = tempo_map
        self.latency_s = latency_ms / 1000.0
        self.late_tolerance_s = late_tolerance_ms / 1000.0
        self.rt_priority = rt_priority
        self._queue = NoteQueue()  # guarded by _cond, as is _epoch
        self._write_message = self._write  # bound once: not a new method object per message
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._note_ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._epoch = 0  # bumped by panic, hold and jump: an event due before it is not sent

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- producer side (session thread) --------------------------------------------------------
    def schedule(
        self, start_beats: float, end_beats: float, channel: int, pitch: int, velocity: int,
        note_id: int | None = None, handed_over: float | None = None,
    ) -> int:  # fmt: skip
        """Queue a note-on at ``start_beats`` and its note-off at ``end_beats``.
        ``handed_over``: when generation delivered it (default: now)."""
        if note_id is None:
            note_id = next(self._note_ids)
        now = self.now() if handed_over is None else handed_over
        with self._cond:
            self._queue.schedule(start_beats, end_beats, channel, pitch, velocity, note_id, now)
            self._cond.notify()
        return note_id

    def cancel(self, note_ids: Iterable[int]) -> None:
        """Take back the notes not yet started (a note sounding ends at its time). The
        sender thread, spinning to an event taken back, sees it gone and sends nothing."""
        ids = frozenset(note_ids)
        if not ids:
            return
        with self._cond:
            self._queue.cancel(ids)
            self._cond.notify()

    def push_tempo(self, tempo: TempoMap | None) -> None:
        """The tempo map changed: wake the sender (it reads the map through ``tempo_map()``)."""
        with self._cond:
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return self._queue.pending

    # -- sender thread -------------------------------------------------------------------------
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
        self.realtime = realtime_thread(self.rt_priority)
        if self.realtime:
            log.info("sender thread has real-time priority (SCHED_FIFO %d)", self.rt_priority)

    def _run(self) -> None:
        """Sender thread: the only one that sends notes. Never blocks on anything but its
        own condition; sending is a non-blocking port write."""
        self._go_realtime()
        queue = self._queue
        while not self._stop.is_set():
            with self._cond:
                event = queue.peek()
                if event is None:
                    self._cond.wait(0.05)
                    continue
                tempo = self._tempo_map()
                if tempo is None:
                    self._cond.wait(0.01)
                    continue
                due = tempo.time_at(event[0]) - self.latency_s
                wait = due - time.perf_counter()
                spin = SPIN_S_REALTIME if self.realtime else SPIN_S
                if wait > spin:
                    self._cond.wait(wait - spin)  # woken early by new events or push_tempo()
                    continue
                epoch = self._epoch
            while time.perf_counter() < due:  # spin the last millisecond
                pass
            with self._cond:
                # A panic, hold or jump in between wins; so does an earlier note that came
                # in meanwhile (it is due now too: the next round sends it first).
                if epoch == self._epoch and queue.peek() is event:
                    self._dispatch(event, due)

    def _dispatch(self, event: Event, due: float) -> None:
        now = time.perf_counter()
        if event[2] == NOTE_ON and now - due > self.late_tolerance_s:
            self._queue.drop_next()
            # handed over late: generation delivered it after its time
            self._count_dropped(due, now, event[6], event[7] >= due)
            return
        self._queue.play_next(self._write_message)
        if event[2] == NOTE_ON:
            self._count_sent(due, now, event[3], event[4], event[5], event[6])

    def _write(self, status: int, data1: int, data2: int) -> bool:
        message = [status, data1] if status & 0xF0 == PROGRAM_CHANGE else [status, data1, data2]
        try:
            self._send(message)
        except Exception:  # a port error must not kill the sender thread
            log.exception("cannot send MIDI message %s", message)
        return True  # a message the port refused is not tried again

    def program_change(self, channel: int, program: int) -> None:
        with self._cond:
            self._queue.program(channel, program)
            self._queue.flush(self._write_message)
            self._cond.notify()

    # -- stop / panic / transport --------------------------------------------------------------
    def panic(self) -> None:
        with self._cond:
            self._epoch += 1
            self._queue.panic()
            self._queue.flush(self._write_message)
            self._cond.notify()

    def hold(self, keep_from: float = math.inf) -> None:
        with self._cond:
            self._epoch += 1
            self._queue.hold(keep_from)
            self._queue.flush(self._write_message)
            self._cond.notify()

    def jump(self, from_beat: float, to_beat: float, shift: bool) -> None:
        """The tempo map is the caller's: after a shift, the map it gives must be moved the
        same way (``note_queue.reanchored``) until the clock's next map, so the shifted notes
        keep their times."""
        with self._cond:
            self._epoch += 1
            self._queue.jump(from_beat, to_beat, shift)
            self._queue.flush(self._write_message)
            self._cond.notify()

    @property
    def sounding(self) -> int:
        return self._queue.sounding

    @property
    def held(self) -> bool:
        return self._queue.held
