"""The daemon's MIDI input: every message checked, the same for every backend, and sent on.

Input arrives on one thread: for JACK, the sender process owns both ports and forwards every
input event with its exact frame time (its reports thread calls :meth:`InputRouter.on_input`);
for ALSA, CoreMIDI and WinMM the router's input worker drains python-rtmidi's queue
(:meth:`InputRouter.poll`). Real-time bytes (clock, transport) go to the clock first; notes go
to the recorder; All Notes Off (CC 120 and 123, which DAWs send at a stop or a loop jump) ends
the notes held on its channel, and every CC goes on to ``on_cc`` (MIDI learn and the knobs).
Garbage, truncated messages and stray data bytes (``garbage``), and Active Sensing, SysEx and
the other messages that are neither notes, CCs nor clock (``ignored``) are counted and dropped
after the time base has seen them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ostinato.daemon.clock import Clock
from ostinato.daemon.ports import MidiPorts
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import realtime_thread

log = logging.getLogger(__name__)

_DATA_LEN = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
ALL_NOTES_OFF_CCS = (120, 123)  # All Sound Off, All Notes Off
IGNORED_SYSTEM = {0xF0, 0xF1, 0xF3, 0xF6, 0xF7, 0xFE, 0xFF}


class InputRouter:
    """Bytes → clock, recorder (under ``lock``, the session's) and ``on_cc(channel, cc,
    value)``. ``on_note(beat, bytes)`` and ``on_tick(t)``, when set, hear every note-on/off
    and every clock tick (the stats' logs)."""

    def __init__(
        self,
        clock: Clock,
        recorder: Recorder,
        lock: AbstractContextManager[Any],
        on_cc: Callable[[int, int, int], None],
    ) -> None:
        self.clock = clock
        self.recorder = recorder
        self.lock = lock
        self.on_cc = on_cc
        self.on_note: Callable[[float, list[int]], None] | None = None
        # (time, bytes) of every note-on/off and CC 120/123, known beat or not: the recording
        self.on_played: Callable[[float, list[int]], None] | None = None
        self.on_tick: Callable[[float], None] | None = None
        self.garbage = 0  # malformed messages dropped
        self.ignored = 0  # well-formed messages that are not for us (SysEx, Active Sensing…)
        self.midi_clock = True  # False (clock = link): clock and transport bytes are ignored
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.realtime: bool | None = None  # SCHED_FIFO granted to the input worker

    # -- the input worker (python-rtmidi backends) -----------------------------------------
    def poll(self, ports: MidiPorts, priority: int = 0) -> None:
        """Start the input worker on ``ports`` (at SCHED_FIFO ``priority``; 0: normal)."""
        self._thread = threading.Thread(target=self._poll, args=(ports, priority),
                                        name="ostinato-input", daemon=True)  # fmt: skip
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the input worker (if any)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _poll(self, ports: MidiPorts, priority: int) -> None:
        """Drain rtmidi's queue every millisecond, parse, dispatch. Timestamps come from the
        backend, so a late poll does not move any event in time; polling more often would only
        take CPU from the MIDI backend's own threads."""
        self.realtime = realtime_thread(priority, "the clock input")
        while not self._stop.is_set():
            read_at = time.perf_counter()
            events = ports.poll()
            for t, data in events:
                self.on_input(t, data)
            self.clock.input_read_until(read_at)  # all it had before read_at is handled
            if not events:
                time.sleep(0.001)

    # -- messages --------------------------------------------------------------------------
    def on_input(self, t: float, data: list[int]) -> None:
        """One message with its time (the input worker, or the JACK sender's reports)."""
        try:
            self.handle(t, data)
        except Exception:  # a bad message must never stop the input
            self.garbage += 1
            log.debug("dropped MIDI message %r", data, exc_info=True)

    def handle(self, t: float, data: list[int]) -> None:
        if data and data[0] == 0xF0:  # SysEx (MMC, device messages): not for us
            self.ignored += 1
            return
        if not data or not 0x80 <= data[0] <= 0xFF or any(not 0 <= b <= 0x7F for b in data[1:]):
            self.garbage += 1
            return
        status = data[0]
        if status >= 0xF0:
            self._system(t, status, data)
            return
        kind, channel = status & 0xF0, status & 0x0F
        if len(data) != 1 + _DATA_LEN[kind]:
            self.garbage += 1
            return
        if kind == 0xB0:
            if data[1] in ALL_NOTES_OFF_CCS:  # DAWs send these at a stop or a loop jump
                if self.on_played is not None:
                    self.on_played(t, data)
                beat = self.clock.beat_now(t)
                if beat is not None:
                    with self.lock:
                        self.recorder.all_notes_off(beat, channel)
            self.on_cc(channel, data[1], data[2])
            return
        if kind not in (0x80, 0x90):
            self.ignored += 1  # program change, pitch bend, pressure: not for the model
            return
        if self.on_played is not None:
            self.on_played(t, data)
        beat = self.clock.beat_now(t)
        if beat is None:
            return
        if self.on_note is not None:
            self.on_note(beat, data)
        with self.lock:
            if kind == 0x90:
                self.recorder.note_on(beat, channel, data[1], data[2])
            else:
                self.recorder.note_off(beat, channel, data[1])

    def _system(self, t: float, status: int, data: list[int]) -> None:
        """Clock and transport to the clock; the rest of the system messages are dropped."""
        if not self.midi_clock and status in (0xF2, 0xF8, 0xFA, 0xFB, 0xFC):
            self.ignored += 1  # Link drives the clock
            return
        if status == 0xF8:
            if self.on_tick is not None:
                self.on_tick(t)
            self.clock.on_tick(t)
        elif status == 0xFA:
            self.clock.on_start(t)
        elif status == 0xFB:
            self.clock.on_continue(t)
        elif status == 0xFC:
            self.clock.on_stop(t)
        elif status == 0xF2 and len(data) == 3:
            self.clock.on_song_position(t, data[1] | (data[2] << 7))
        elif status in IGNORED_SYSTEM and len(data) >= 1:
            self.ignored += 1  # SysEx (MMC), Active Sensing, MTC, song select, tune, reset
        else:
            self.garbage += 1  # undefined status bytes, a truncated song position
