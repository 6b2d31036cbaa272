"""Musical time: MIDI clock (24 ppqn) or an internal tempo → a beat ↔ wall-time map.

Pure logic: every method takes the event's time (``time.perf_counter()`` seconds, stamped by
the caller when the message arrived) so tests drive it with fake time. The map is an
immutable :class:`TempoMap`, replaced as a whole on every change, so the scheduler's thread
reads a consistent snapshot without a lock.

Tempo comes from a least-squares line through the last beat of clock ticks (24 intervals),
fitted again through the ticks on or before the first line: a tick can be delivered late
(a client's process cycle ran late) but never early, so the earlier ticks are the better
measure of when they were sent. Jitter of single ticks averages out, and a tempo change is
followed within one beat.

Ticks get lost (a MIDI buffer overflowing under a burst of other data drops them), and a
clock that only counts would then run a tick ahead for ever. An interval within 25% of a
whole multiple (2× or more) of the expected tick length is read as that many ticks. (A jump
to half the tempo or less in a single tick would be read the same way; DAWs change tempo in
smaller steps or ramps.) A tick less than half a tick after the last is a duplicate (a merge
of two clock sources, a repeated buffer): counting it would put the clock a tick ahead.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

PPQN = 24
MIN_BPM, MAX_BPM = 20.0, 400.0


@dataclass(frozen=True)
class TempoMap:
    """beat = anchor_beat + (t − anchor_time) / seconds_per_beat."""

    anchor_time: float
    anchor_beat: float
    seconds_per_beat: float

    @property
    def bpm(self) -> float:
        return 60.0 / self.seconds_per_beat

    def beat_at(self, t: float) -> float:
        return self.anchor_beat + (t - self.anchor_time) / self.seconds_per_beat

    def time_at(self, beat: float) -> float:
        return self.anchor_time + (beat - self.anchor_beat) * self.seconds_per_beat


def validate_bpm(bpm: float) -> float:
    if not (np.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ValueError(f"tempo must be {MIN_BPM:g}..{MAX_BPM:g} BPM, got {bpm}")
    return float(bpm)


class Clock:
    """Transport state and tempo map, fed by MIDI clock messages or run internally.

    ``listeners`` get ``on_transport(event, beat)`` with event "start", "stop" or
    "continue", called on the thread that fed the clock.
    """

    def __init__(self, bpm: float = 120.0, window_ticks: int = PPQN) -> None:
        self._lock = threading.Lock()
        self.default_bpm = validate_bpm(bpm)
        self.window_ticks = window_ticks
        self.running = False
        self.source = "none"  # "midi" or "internal" once running
        self.map_listeners: list = []  # called with every new TempoMap (under the lock)
        self._map: TempoMap | None = None
        self._ticks = 0  # clock ticks since song position 0
        self._tick_times: deque[tuple[int, float]] = deque(maxlen=window_ticks + 1)
        self._awaiting_first_tick = False
        self._counted_missing = 0  # ticks counted as lost at the last long gap
        self._count_anchor = 0.0  # the plain fit's time for the newest tick (for counting)
        self.last_tick_time: float | None = None
        self.listeners: list = []

    @property
    def map(self) -> TempoMap | None:
        return self._map

    @map.setter
    def map(self, tempo: TempoMap | None) -> None:
        self._map = tempo
        for listener in self.map_listeners:
            listener(tempo)

    # -- internal clock ---------------------------------------------------------------------
    def start_internal(self, t: float, bpm: float | None = None, beat: float = 0.0) -> None:
        spb = 60.0 / validate_bpm(bpm or self.default_bpm)
        with self._lock:
            self.map = TempoMap(t, beat, spb)
            self.running, self.source = True, "internal"
        self._notify("start", beat)

    def set_internal_bpm(self, t: float, bpm: float) -> None:
        """Change the internal tempo at time t without moving the current beat."""
        spb = 60.0 / validate_bpm(bpm)
        with self._lock:
            if self.map is None or self.source != "internal":
                self.default_bpm = 60.0 / spb
                return
            self.map = TempoMap(t, self.map.beat_at(t), spb)

    # -- MIDI clock -------------------------------------------------------------------------
    def on_start(self, t: float) -> None:
        """MIDI Start: bar 1 beat 1 at the next clock tick."""
        with self._lock:
            self._ticks = 0
            self._start_rolling(t)
        self._notify("start", 0.0)

    def on_continue(self, t: float) -> None:
        with self._lock:
            self._start_rolling(t)
        self._notify("continue", self._ticks / PPQN)

    def _start_rolling(self, t: float) -> None:
        spb = self.map.seconds_per_beat if self.map else 60.0 / self.default_bpm
        self.running, self.source = True, "midi"
        self._tick_times.clear()
        self._awaiting_first_tick = True
        # Until the first tick arrives, assume it comes one tick from now.
        self.map = TempoMap(t + spb / PPQN, self._ticks / PPQN, spb)

    def on_stop(self, t: float) -> None:
        with self._lock:
            was_running = self.running
            self.running = False
            beat = self.map.beat_at(t) if self.map else 0.0
        if was_running:
            self._notify("stop", beat)

    def on_song_position(self, t: float, sixteenths: int) -> None:
        """Song Position Pointer (in 16th notes); takes effect at the next Continue/tick."""
        with self._lock:
            self._ticks = int(sixteenths) * (PPQN // 4)
            self._tick_times.clear()
            if self.map is not None:
                self.map = TempoMap(t, self._ticks / PPQN, self.map.seconds_per_beat)

    def on_tick(self, t: float) -> None:
        with self._lock:
            self.last_tick_time = t
            if not self.running or self.source != "midi":
                return
            if self._awaiting_first_tick:
                self._awaiting_first_tick = False  # this tick is the position itself
            else:
                step = self._ticks_since_last(t)
                if step == 0:  # a delayed tick: its place is already counted
                    return
                self._ticks += step
            self._tick_times.append((self._ticks, t))
            spb = self.map.seconds_per_beat if self.map else 60.0 / self.default_bpm
            if len(self._tick_times) >= 3:
                ticks = np.fromiter((k for k, _ in self._tick_times), dtype=np.float64)
                times = np.fromiter((s for _, s in self._tick_times), dtype=np.float64)
                x = ticks - ticks[-1]
                slope, intercept = np.polyfit(x, times, 1)
                self._count_anchor = intercept  # tick counting keeps the plain fit
                if len(x) >= 8:
                    # Delivery delays are one-sided (a tick never arrives before it was sent):
                    # fit again through the earlier half, so late ticks do not pull the line.
                    residual = times - (slope * x + intercept)
                    early = residual <= np.median(residual)
                    slope, intercept = np.polyfit(x[early], times[early], 1)
                fitted_spb = slope * PPQN
                if 60.0 / MAX_BPM <= fitted_spb <= 60.0 / MIN_BPM:
                    spb = fitted_spb
                    t = intercept  # the line's time for the newest tick: jitter removed
            self.map = TempoMap(t, self._ticks / PPQN, spb)

    def _ticks_since_last(self, t: float) -> int:
        """1, or more when ticks went missing. Measured from the fitted line's time for the
        newest tick (not its raw arrival, which one delayed delivery can move). A tick that
        arrives in a burst right after a long gap was delayed, not lost: it takes back one
        tick counted as missing; one within half a tick of both the line and the last tick's
        arrival, with nothing counted as missing, is a duplicate and counts for nothing."""
        if len(self._tick_times) < 3 or self.map is None:
            return 1
        expected = self.map.seconds_per_beat / PPQN
        ahead = (t - self._count_anchor) / expected
        if ahead < 0.5 and self._counted_missing > 0:  # the late one of the ticks counted lost
            self._counted_missing -= 1
            return 0
        since_last = (t - self._tick_times[-1][1]) / expected
        if ahead < 0.5 and since_last < 0.5:  # a duplicate (merged clocks, a repeated buffer)
            return 0
        whole = round(ahead)
        if whole >= 2 and abs(ahead - whole) < 0.3:
            self._counted_missing = whole - 1
            return whole
        self._counted_missing = 0
        return 1

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> TempoMap | None:
        return self._map

    def beat_now(self, t: float) -> float | None:
        m = self._map
        return m.beat_at(t) if (m is not None and self.running) else None

    def _notify(self, event: str, beat: float) -> None:
        for listener in list(self.listeners):
            listener(event, beat)
