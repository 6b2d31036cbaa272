"""Musical time: MIDI clock (24 ppqn) or an internal tempo → a beat ↔ time map, and the
DAW's transport (Start, Stop, Continue, Song Position, loop jumps) as epochs.

Pure logic: every method takes the event's time (seconds on the input's time line: JACK frame
time for the JACK backend, ``time.perf_counter()`` for the others) so tests drive it with
fake time. The map is an immutable :class:`TempoMap`, replaced as a whole on every change, so
other threads read a consistent snapshot without a lock.

Counting and tempo: :mod:`ostinato.daemon.ticks` (:class:`TickFollower`) decides which clock
bytes are ticks and fits the tempo line through them.

Transport (how DAWs send it). Start: song position 0 at the next tick. Continue: the position
from the last Song Position Pointer (or where it stopped). A Stop followed within about a tick
by Start or Continue, with the ticks still on the same tempo line, is a *loop jump*: Ardour
loops that way (Stop, Start one tick after the last tick; or Stop, SPP, Continue). So are a
Song Position Pointer while running and a Start without a Stop. Every jump, start and continue
opens a new epoch; listeners get a :class:`TransportEvent`; the first tick after it is its
song position, whatever came before. Repeated jumps from the same place to the same place make
the loop (start, end) kept in :attr:`Clock.loop`. Ticks without a Start (joining a DAW that is
already playing) give the tempo at once; the position, and with it the bar lines, only comes
with the next Start or Song Position Pointer.

Gaps (:meth:`Clock.check_silence`, called every few ms). Ticks that stop coming while running,
without a Stop (an xrun ate them, a USB device re-enumerates, the machine stalled), *suspend*
the clock after the threshold of :mod:`ostinato.daemon.transport`: ``gap_listeners`` get a
"suspend" event (the daemon releases every sounding note), the epoch and the map are kept.
Ticks that come back on the same tempo line resume it where the line puts them, the gap
counted in whole ticks (``gap_listeners`` get "resume"). Ticks that come back on another line
(two in a row: one alone may be a stray) end the epoch, as does a Stop or ``timeout_s``
without a tick.

Ableton Link (:meth:`Clock.on_link`, fed by :mod:`ostinato.daemon.link`): the session's beat at
a time, its tempo and whether it plays. A start opens a "start" epoch (a "jump" when the clock
was running on its internal tempo), a stop a "stop"; while playing, a beat more than
``LINK_JUMP_S`` off the current map (a peer forced the beat, a session joined with another
phase) is a "jump"; anything less only re-anchors the map. Once MIDI clock has driven the
clock (``clock = "auto"``), Link is ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from ostinato.daemon.thread_sched import sched_times, split_wait
from ostinato.daemon.ticks import MAX_BPM, MIN_BPM, PPQN, TickFollower
from ostinato.daemon.transport import CLOCK_TIMEOUT_S, is_loop_jump, suspend_after_s

log = logging.getLogger(__name__)

LINK_JUMP_S = 0.002  # a Link beat this far (in time) off the map is a jump, not a drift
LINK_UNSEEN_S = 0.05  # a Link tempo change is seen within this (the follower polls every 5 ms)


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


@dataclass(frozen=True)
class TransportEvent:
    """``kind``: "start", "continue", "stop" or "jump"; for ``Clock.gap_listeners``,
    "suspend" or "resume" (the same epoch). ``beat``: the song position where the music goes
    on (for "stop" and "suspend": where it stopped). ``from_beat``: for a jump, the position the
    next tick would have had without it (the loop's end). ``time``: when it was received."""

    kind: str
    beat: float
    time: float
    epoch: int
    from_beat: float | None = None


def validate_bpm(bpm: float) -> float:
    if not (np.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ValueError(f"tempo must be {MIN_BPM:g}..{MAX_BPM:g} BPM, got {bpm}")
    return float(bpm)


class Clock:
    """Transport state and tempo map, fed by MIDI clock messages or run internally.

    ``listeners`` get a :class:`TransportEvent` for every start, continue, stop and jump,
    called on the thread that fed the clock, before the new position's map is published.
    ``map_listeners`` get every new :class:`TempoMap` (under the clock's lock, in order).
    ``gap_listeners`` get the "suspend" and "resume" events of a gap in the ticks (same
    epoch; under the clock's lock: on the thread that calls :meth:`check_silence`, and on the
    input thread after the map of the tick that resumes). ``timeout_s``: no tick for this
    long while running ends the epoch (the ``clock_timeout_s`` setting).
    """

    def __init__(self, bpm: float = 120.0, exact_stamps: bool = False,
                 timeout_s: float = CLOCK_TIMEOUT_S) -> None:  # fmt: skip
        if not (np.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"the clock's timeout must be > 0 s, got {timeout_s}")
        self._lock = threading.Lock()
        self.default_bpm = validate_bpm(bpm)
        self.timeout_s = float(timeout_s)
        self.follower = TickFollower(exact_stamps)
        self.running = False
        self.source = "none"  # "midi", "internal" or "link" once running
        self.position_known = False  # bar lines known (a Start or Song Position seen)
        self.epoch = 0
        self.jumps = 0
        self.input_gaps = 0  # times the backend said input was lost
        self.gaps = 0  # times the ticks stopped without a Stop (suspended)
        self.timeouts = 0  # of those, times no tick came back within timeout_s
        self.loop: tuple[float, float] | None = None  # (start beat, end beat) from jumps
        self.loop_passes = 0  # jumps seen over the same loop in a row
        self.map_listeners: list = []
        self.listener_ms_max = 0.0  # the longest the map listeners took on one new map
        self.listener_max_at: float | None = None  # when (time.monotonic(): any process's)
        self.listener_max_split: dict | None = None  # see thread_sched.split_wait
        self.listeners: list = []
        self.gap_listeners: list = []
        self._map: TempoMap | None = None
        self._song_base = 0  # song position (ticks) of the follower's tick _base_index
        self._base_index = 0
        self._first_index = 0  # the follower's index of the epoch's first tick
        self._position_ticks = 0  # where Continue resumes (SPP or where it stopped)
        self._stopped_at: float | None = None  # when the last Stop came
        self._stopped_next = 0  # song position the tick after the Stop would have had
        self._rejected_logged = 0
        self._link_bpm: float | None = None  # the Link session's tempo (also while stopped)
        self._first_tick = False  # an epoch opened and its first tick has not come yet
        self._heard_at: float | None = None  # the newest tick (or Start) while running
        self._suspended_at: float | None = None  # when the ticks were found missing
        self._read_until: float | None = None  # every clock byte before this has been fed
        self._off_line: list[float] = []  # arrivals off the line while suspended

    @property
    def suspended(self) -> bool:
        """The ticks stopped without a Stop: notes released, the epoch kept (see the module's
        docstring)."""
        return self._suspended_at is not None

    @property
    def map(self) -> TempoMap | None:
        return self._map

    @map.setter
    def map(self, tempo: TempoMap | None) -> None:
        self._map = tempo
        sched = sched_times()
        started = time.perf_counter()
        for listener in self.map_listeners:
            listener(tempo)
        # what a tick waits for its listeners (they only append or set: ~µs; a long wait
        # here is a lock held elsewhere, which would delay the next tick's reading)
        waited = (time.perf_counter() - started) * 1e3
        if waited > self.listener_ms_max:
            self.listener_ms_max, self.listener_max_at = waited, time.monotonic()
            # the longest wait, split: the machine's (no CPU) or a lock's (asleep)
            self.listener_max_split = split_wait(waited, sched, sched_times())

    @property
    def bpm(self) -> float | None:
        """The tempo heard on the clock input (also before the position is known)."""
        period = self.follower.period
        if self.source == "link":
            return self._link_bpm
        if self.source == "internal" and self._map is not None:
            return self._map.bpm
        return None if period is None else 60.0 / (period * PPQN)

    @property
    def rejected_ticks(self) -> int:
        return self.follower.rejected

    # -- internal clock ---------------------------------------------------------------------
    def start_internal(self, t: float, bpm: float | None = None, beat: float = 0.0) -> None:
        spb = 60.0 / validate_bpm(bpm or self.default_bpm)
        with self._lock:
            self.running, self.source, self.position_known = True, "internal", True
            self.epoch += 1
            event = TransportEvent("start", beat, t, self.epoch)
            self._notify(event)
            self.map = TempoMap(t, beat, spb)

    # -- Ableton Link -----------------------------------------------------------------------
    def on_link(self, t: float, beat: float, bpm: float, playing: bool) -> None:
        """The Link session at time ``t`` (the input's time line): its song position ``beat``
        (bar lines at multiples of beats_per_bar), tempo and playing state. Called by the Link
        follower when one of them changed or the beat drifted off the map; ignored once MIDI
        clock has driven the clock."""
        if not (np.isfinite(bpm) and bpm > 0 and np.isfinite(beat)):
            raise ValueError(f"bad Link state: beat {beat}, tempo {bpm}")
        spb = 60.0 / bpm
        with self._lock:
            if self.source == "midi":
                return
            tempo = self._map
            was_link = self.source == "link"
            self.source, self._link_bpm = "link", float(bpm)
            if not playing:
                if self.running:
                    self.running = False
                    self.epoch += 1
                    where = tempo.beat_at(t) if tempo is not None else beat
                    self._notify(TransportEvent("stop", where, t, self.epoch))
                return
            if not self.running or not was_link or tempo is None:
                self.epoch += 1
                self.position_known = True
                if self.running and tempo is not None:  # from the internal tempo to Link's
                    from_beat = tempo.beat_at(t)
                    event = TransportEvent("jump", beat, t, self.epoch, from_beat)
                    self._note_jump(from_beat, beat)
                else:
                    event = TransportEvent("start", beat, t, self.epoch)
                self.running = True
                self._notify(event)
                self.map = TempoMap(t, beat, spb)
                return
            expected = tempo.beat_at(t)
            # a tempo change is seen up to LINK_UNSEEN_S late: the beat moved at the new rate
            # meanwhile, the map at the old one
            unseen = abs(1.0 / spb - 1.0 / tempo.seconds_per_beat) * LINK_UNSEEN_S
            if abs(beat - expected) > LINK_JUMP_S / spb + unseen:
                self.epoch += 1
                self._note_jump(expected, beat)
                self._notify(TransportEvent("jump", beat, t, self.epoch, expected))
            self.map = TempoMap(t, beat, spb)

    # -- MIDI clock -------------------------------------------------------------------------
    def on_start(self, t: float) -> None:
        """MIDI Start: song position 0 at the next clock tick."""
        with self._lock:
            self._resume(t, 0, "start")

    def on_continue(self, t: float) -> None:
        with self._lock:
            self._resume(t, self._position_ticks, "continue")

    def _resume(self, t: float, position: int, kind: str) -> None:
        """A new epoch at song position ``position`` (ticks) from the next arrival on: a jump
        when the music went on through it, else a start or continue."""
        follower = self.follower
        period = follower.period
        # suspended: the ticks had stopped, so whatever opens an epoch now is no loop jump
        was_running = self.running and self.source == "midi" and self._suspended_at is None
        just_stopped = (
            not self.running and self._stopped_at is not None and period is not None
            and follower.last_arrival is not None
            and is_loop_jump(self._stopped_at, t, period, follower.slack or 0.0)
        )  # fmt: skip
        if was_running:
            from_ticks = self._next_song_tick()
        elif just_stopped:
            from_ticks = self._stopped_next
        else:
            from_ticks = None
            stale = (
                follower.last_arrival is None
                or period is None
                or (t - follower.last_arrival > 2 * period)
            )
            if stale:
                follower.restart()  # the ticks start again after a pause: a new line
        # arrivals still undecided are the old epoch's; the next one is this epoch's first tick
        follower.open_epoch(t)
        self._first_tick = True
        self._suspended_at, self._heard_at = None, t
        self._off_line.clear()
        self.running, self.source, self.position_known = True, "midi", True
        self._stopped_at = None
        self._base_index, self._song_base = follower.count, position
        self._position_ticks = position
        self.epoch += 1
        if from_ticks is None:
            event = TransportEvent(kind, position / PPQN, t, self.epoch)
        else:
            event = TransportEvent("jump", position / PPQN, t, self.epoch, from_ticks / PPQN)
            self._note_jump(from_ticks / PPQN, position / PPQN)
        self._notify(event)
        self._publish(t)

    def on_stop(self, t: float) -> None:
        with self._lock:
            self.follower.drop_pending()
            if not (self.running and self.source == "midi"):
                return  # a Stop without its clock does not stop the internal tempo or Link
            self._stop(t)

    def _stop(self, t: float) -> None:
        self.running = False
        self._first_tick = False
        self._suspended_at = None
        self._off_line.clear()
        self._stopped_at = t
        self._stopped_next = self._position_ticks = self._next_song_tick()
        self.epoch += 1
        beat = self._map.beat_at(t) if self._map is not None else 0.0
        self._notify(TransportEvent("stop", beat, t, self.epoch))

    def on_song_position(self, t: float, sixteenths: int) -> None:
        """Song Position Pointer (16th notes). While running, a jump at the next tick; while
        stopped, where Continue resumes; with ticks arriving but no position yet, the start
        of the bar lines."""
        position = int(sixteenths) * (PPQN // 4)
        with self._lock:
            if self.running and self.source == "midi":
                # while suspended the count stands still: wherever it points, the song moved
                if self._suspended_at is not None or position != self._next_song_tick():
                    self._resume(t, position, "jump")
                return
            self._position_ticks = position
            ticking = (
                self.follower.last_arrival is not None and self.follower.period is not None
                and t - self.follower.last_arrival <= 2 * self.follower.period
            )  # fmt: skip
            if not self.position_known and ticking and self._stopped_at is None:
                self._resume(t, position, "continue")

    def on_input_lost(self, t: float, until: float | None = None) -> None:
        """The backend lost input (an overflow, an xrun) from ``t`` (to ``until`` when it
        knows): ticks the line puts in that time are counted with the next tick."""
        with self._lock:
            self.follower.lost(t, until)
            self.input_gaps += 1
        if self.input_gaps == 1:
            log.warning("MIDI input was lost by the backend (the next clock gap is counted as "
                        "ticks); further losses are counted in the status")  # fmt: skip

    def input_read_until(self, t: float) -> None:
        """Every byte of the input stamped before ``t`` has been fed to the clock (the JACK
        sender's SYNC reports, the rtmidi input worker's polls; any thread, no lock: one
        float). A gap is measured up to there, never up to a ``now`` the input has not caught
        up with: a process starved of CPU reads its input late, and that is no gap."""
        self._read_until = t

    def check_silence(self, now: float) -> bool:
        """While running on MIDI clock a DAW sends ticks without pause. When they stop coming
        without a Stop (an xrun ate them, a cable was pulled, the machine stalled; measured up
        to where the input was read, :meth:`input_read_until`), the clock suspends after the
        threshold of :func:`~ostinato.daemon.transport.suspend_after_s`:
        ``gap_listeners`` release every sounding note, the epoch and the map stay. After
        ``timeout_s`` without a tick the DAW stopped and its Stop was lost: the epoch ends
        there. True when either happened now. Called every few ms (the daemon's clock watch,
        the session thread)."""
        with self._lock:
            period = self.follower.period
            if not (self.running and self.source == "midi") or period is None:
                return False
            heard = self._heard_at
            if heard is None:
                return False
            if self._read_until is not None:
                now = min(now, self._read_until)
            if now - heard > self.timeout_s:
                self.timeouts += 1
                if self.timeouts == 1:
                    log.warning("no MIDI clock for %g s without a Stop (lost on the way?): "
                                "stopped", self.timeout_s)  # fmt: skip
                self._stop(heard + period)
                return True
            if self._suspended_at is not None or now - heard <= suspend_after_s(period):
                return False
            self._suspended_at = now
            self.gaps += 1
            if self.gaps == 1:
                log.warning("the MIDI clock stopped without a Stop: notes released, playing on "
                            "when it comes back on the same tempo; further gaps are counted in "
                            "the status")  # fmt: skip
            event = TransportEvent("suspend", self._next_song_tick() / PPQN, heard + period,
                                   self.epoch)  # fmt: skip
            for listener in list(self.gap_listeners):
                listener(event)
            return True

    def _back(self, t: float) -> bool:
        """A clock byte at ``t`` while suspended: True when the ticks resume with it (the
        caller counts it, the gap before it in whole ticks); False while it waits to tell a
        stray from a new line, or when the ticks came back on another line (the epoch ends)."""
        follower = self.follower
        if self._first_tick or follower.last_arrival is None or follower.period is None:
            self._suspended_at = None  # an epoch opened and no tick came since: this is its first
            return True
        whole = follower.place(t)
        if whole is not None:
            follower.rejected += len(self._off_line)  # strays that came before the ticks
            self._off_line.clear()
            follower.skip(whole)
            self._suspended_at = None
            return True
        self._off_line.append(t)
        if len(self._off_line) < 2:
            return False
        # Two in a row off the line: the DAW's tempo or song moved while its clock was silent,
        # and nothing said where to. The epoch ends where the ticks stopped; these give the
        # tempo of a new line, the position comes with the next Start or Song Position.
        arrivals = list(self._off_line)
        assert self._heard_at is not None
        log.warning("the MIDI clock came back off its tempo line after a gap: stopped until "
                    "the DAW's next Start or Song Position")  # fmt: skip
        self._stop(self._heard_at + follower.period)
        follower.restart()
        for arrival in arrivals:
            follower.feed(arrival)
        return False

    def on_tick(self, t: float) -> None:
        with self._lock:
            resumed = self._suspended_at is not None
            if resumed and not self._back(t):
                return  # held, or fed to a new line (the epoch ended)
            counted = self.follower.feed(t)
            for index, tick_time in counted:
                self._on_counted(index, tick_time)
            if self.follower.rejected > self._rejected_logged:
                if self._rejected_logged == 0:
                    log.warning("a clock byte off the tempo line was ignored (a stray 0xF8); "
                                "further ones are counted in the status")  # fmt: skip
                self._rejected_logged = self.follower.rejected
            if counted:
                self._publish(counted[-1][1])
            if resumed:
                beat = self._song_ticks(counted[0][0] if counted else self.follower.count)
                event = TransportEvent("resume", beat / PPQN, t, self.epoch)
                for listener in list(self.gap_listeners):
                    listener(event)

    def _on_counted(self, index: int, t: float) -> None:
        if self.running and self.source == "midi":
            follower = self.follower
            if self._first_tick:  # the epoch's song position begins at its first tick
                self._first_tick = False
                # (at the first one the backend lost, when it lost the first ones)
                self._first_index = index
                self._base_index = index - follower.first_lost
            elif follower.first_revised:  # counted again with the epoch's own tick period
                follower.first_revised = False
                self._base_index = self._first_index - follower.first_lost
            self._heard_at = t
            self._position_ticks = self._song_base + index + 1 - self._base_index

    def _next_song_tick(self) -> int:
        """The song position the next tick would have without a jump."""
        return self._song_base + self.follower.count - self._base_index

    def _publish(self, t: float) -> None:
        """A new map from the tempo line (MIDI clock) for the current epoch's positions."""
        follower = self.follower
        if not (self.running and self.source == "midi"):
            return
        if follower.period is None or follower.last_arrival is None:
            spb = self._map.seconds_per_beat if self._map else 60.0 / self.default_bpm
            if follower.count > self._base_index:  # one tick of this epoch so far
                self.map = TempoMap(follower.ref_time, self._song_ticks(follower.ref_index) / PPQN,
                                    spb)  # fmt: skip
            else:  # the first tick comes one tick from now
                self.map = TempoMap(t + spb / PPQN, self._song_base / PPQN, spb)
            return
        if follower.count <= self._base_index and follower.last_arrival < t - 2 * follower.period:
            spb = follower.period * PPQN  # restarted, no tick yet: one tick from now
            self.map = TempoMap(t + follower.period, self._song_base / PPQN, spb)
            return
        self.map = TempoMap(follower.ref_time, self._song_ticks(follower.ref_index) / PPQN,
                            follower.period * PPQN)  # fmt: skip

    def _song_ticks(self, index: int) -> int:
        return self._song_base + index - self._base_index

    def _note_jump(self, from_beat: float, to_beat: float) -> None:
        self.jumps += 1
        tick = 1.5 / PPQN
        if (
            self.loop is not None and abs(self.loop[0] - to_beat) < tick
            and abs(self.loop[1] - from_beat) < tick
        ):  # fmt: skip
            self.loop_passes += 1
        elif to_beat < from_beat:
            self.loop, self.loop_passes = (to_beat, from_beat), 1
        else:
            self.loop, self.loop_passes = None, 0

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> TempoMap | None:
        return self._map

    def state(self) -> tuple[TempoMap | None, int, bool]:
        """(map, epoch, running) read together: never a new epoch with the old map. Never
        called with a listener's lock held (listeners run under the clock's lock)."""
        with self._lock:
            return self._map, self.epoch, self.running

    def beat_now(self, t: float) -> float | None:
        m = self._map
        return m.beat_at(t) if (m is not None and self.running) else None

    def _notify(self, event: TransportEvent) -> None:
        for listener in list(self.listeners):
            listener(event)
