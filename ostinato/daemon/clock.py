"""Musical time: MIDI clock (24 ppqn) or an internal tempo → a beat ↔ time map, and the
DAW's transport (Start, Stop, Continue, Song Position, loop jumps) as epochs.

Pure logic: every method takes the event's time (seconds on the input's time line: JACK frame
time for the JACK backend, ``time.perf_counter()`` for the others) so tests drive it with
fake time. The map is an immutable :class:`TempoMap`, replaced as a whole on every change, so
other threads read a consistent snapshot without a lock.

Counting. A virtual port does not lose bytes, so every clock byte is a tick; only a byte that
is off the tempo line is not (a stray 0xF8 in a burst of garbage, a second clock merged in).
:class:`TickFollower` decides which arrivals are ticks: one on or after the next tick's place
on the line is counted at once (on time, late, or a slower tempo); one that comes early by
more than a quarter of a tick (plus the stamps' own jitter) waits for the arrivals after it.
If an arrival then lands on the line's next tick and the early ones do not make a regular
pulse with it, they were strays: rejected and counted (one stray inside a faster pulse is
rejected alone). If they make a regular pulse that goes on for a sixth of a beat, the tempo
went up: all are ticks (a burst of garbage can put strays half-way between a few ticks in a
row, which looks like a clock twice as fast until it breaks off). A tick is never inferred
from a gap, except right after the backend reported that input was lost
(:meth:`Clock.on_input_lost`). A stray that coincides with a tempo step within a tick can
still be taken for the step's first tick: the two cannot be told apart when they happen.

Tempo and phase. With exact stamps (JACK frames), a second-order least-squares fit through the
last beat of ticks, its slope at the newest tick as the tempo (a ramp is followed tick by
tick); a tick far off it (a stray taken for a tick) is left out. When three intervals in a
row agree with each other and not with the line (a tempo step), the fit starts again from
them: a step is followed within a few ticks. A clock that jitters by itself (a hardware box,
jack_midi_clock -J) is measured from how much each interval differs from the last (a step
moves one of them, jitter all) and fitted over eight beats. Stamps that come a cycle at a
time (rtmidi backends behind a large period) are always late, never early: the line goes
through the earliest fifth of the ticks of eight beats, and while the stamps are looser than
a quarter of a tick the follower counts every byte.

Transport (how DAWs send it). Start: song position 0 at the next tick. Continue: the position
from the last Song Position Pointer (or where it stopped). A Stop followed within about a tick
by Start or Continue, with the ticks still on the same tempo line, is a *loop jump*: Ardour
loops that way (Stop, Start one tick after the last tick; or Stop, SPP, Continue). So are a
Song Position Pointer while running and a Start without a Stop. Every jump, start and continue
opens a new epoch; listeners get a :class:`TransportEvent`. Repeated jumps from the same place
to the same place make the loop (start, end) kept in :attr:`Clock.loop`. Ticks without a Start
(joining a DAW that is already playing) give the tempo at once; the position, and with it the
bar lines, only comes with the next Start or Song Position Pointer.

Ableton Link (:meth:`Clock.on_link`, fed by :mod:`ostinato.daemon.link`): the session's beat at
a time, its tempo and whether it plays. A start opens a "start" epoch (a "jump" when the clock
was running on its internal tempo), a stop a "stop"; while playing, a beat more than
``LINK_JUMP_S`` off the current map (a peer forced the beat, a session joined with another
phase) is a "jump"; anything less only re-anchors the map. Once MIDI clock has driven the
clock (``clock = "auto"``), Link is ignored.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

PPQN = 24
MIN_BPM, MAX_BPM = 20.0, 400.0
EARLY_TICKS = 0.25  # an arrival this much (in ticks) before the line's next tick is suspect
REGULAR = 0.15  # intervals within this fraction of their median make a regular pulse
FASTER = 0.9  # a regular pulse this much faster than the line is a faster clock
STEP = 0.08  # three agreeing intervals this far from the line's: a tempo step
MAX_PENDING = 12  # undecided arrivals held at most (a clock many times faster)
FASTER_CONFIRM = 8  # intervals of a faster pulse before it is believed (a sixth of a beat)
EARLY_PERCENTILE = 20  # coarse stamps: the line through the earliest fifth of the ticks
COARSE_WINDOW = 8 * PPQN + 1  # ticks fitted when stamps come a cycle at a time
SILENCE_TICKS, SILENCE_MIN_S = 6, 0.15  # no tick for this long while running: stopped
JUMP_TICKS = 1.5  # Stop → Start/Continue within this many ticks: a loop jump
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
    """``kind``: "start", "continue", "stop" or "jump". ``beat``: the song position where the
    music goes on (for "stop": where it stopped). ``from_beat``: for a jump, the position the
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


class TickFollower:
    """Clock byte arrivals → counted ticks (index, time) and a tempo line through them.

    ``exact_stamps``: each arrival carries its own exact time (JACK frames). Otherwise the
    stamps' slack is measured from the ticks and stray rejection waits until it is known.
    """

    def __init__(self, exact_stamps: bool = False) -> None:
        self.exact_stamps = exact_stamps
        self.count = 0  # ticks counted; the next one gets this index
        self.rejected = 0  # arrivals judged off the line (strays)
        self.period: float | None = None  # seconds per tick (the line's slope)
        self.ref_index = -1  # the newest tick's index and its time on the line
        self.ref_time = 0.0
        self.last_arrival: float | None = None  # raw time of the newest counted tick
        self.slack = 0.0 if exact_stamps else None  # stamp jitter (s), None until measured
        self._window: deque[tuple[int, float]] = deque(maxlen=COARSE_WINDOW)
        self._pending: list[float] = []
        self._lost_reported = False
        self._lost_window: tuple[float, float] | None = None  # when input was lost, if known

    # -- reading ----------------------------------------------------------------------------
    def line_time(self, index: float) -> float:
        assert self.period is not None
        return self.ref_time + (index - self.ref_index) * self.period

    @property
    def locked(self) -> bool:
        return self.period is not None

    def restart(self) -> None:
        """The ticks stopped (a real Stop): the next one starts a new line; the tempo is kept
        as the first guess."""
        self._window.clear()
        self._pending.clear()
        self.last_arrival = None
        self._lost_reported = False  # a loss while stopped is no gap in the new line

    def lost(self, since: float | None = None, until: float | None = None) -> None:
        """The backend lost input: the next gap of whole ticks counts them."""
        self._lost_reported = True
        self._lost_window = None if since is None or until is None else (since, until)

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, t: float) -> list[tuple[int, float]]:
        """One clock byte at time ``t``: the ticks now counted (maybe none, maybe several
        that waited), each as (index, time)."""
        if not self.exact_stamps and self.period is not None:
            previous = self._pending[-1] if self._pending else self.last_arrival
            if previous is not None and t - previous < 0.01 * self.period:
                # two bytes with one stamp: the backend stamps a cycle at a time, too coarse
                # to tell a stray from a tick: every byte counts (the port loses none)
                self.slack = max(self.slack or 0.0, self.period)
        self._pending.append(t)
        counted: list[tuple[int, float]] = []
        while self._pending:
            decision = self._decide()
            if decision is None:
                break
            strays, take = decision
            if strays:
                self.rejected += strays
                del self._pending[:strays]
            for _ in range(take):
                counted.append(self._count(self._pending.pop(0)))
        return counted

    def drop_pending(self) -> None:
        """The transport stopped: arrivals still undecided (early ones) were strays; a loop
        jump's position must not count them."""
        self.rejected += len(self._pending)
        self._pending.clear()

    def _rejecting(self) -> bool:
        if self.period is None or self.last_arrival is None or len(self._window) < 3:
            return False
        return self.slack is not None and EARLY_TICKS + self.slack / self.period < 0.45

    def _decide(self) -> tuple[int, int] | None:
        """(strays to drop from the front of the pending list, arrivals to count next), or
        None to wait for more arrivals; (0, 0) after it rejected one stray inside the list
        itself (decide again)."""
        pending = self._pending
        if not self._rejecting():
            return 0, 1
        period = self.period
        assert period is not None and self.last_arrival is not None
        slot = self.line_time(self.count)
        tolerance = EARLY_TICKS + (self.slack or 0.0) / period
        errors = [(p - slot) / period for p in pending]
        if errors[0] >= -tolerance:
            return 0, 1  # on time, late, or a slower tempo
        on_or_after = next((i for i, e in enumerate(errors) if e >= -tolerance), None)
        if on_or_after is None:
            if len(pending) < MAX_PENDING:
                return None
            if self._regular([self.last_arrival, *pending]):
                return 0, len(pending)  # a clock many times faster
            return 1, 0
        k = on_or_after
        slack = self.slack or 0.0
        if errors[k] > tolerance:
            # Past the next tick's place. A slower tempo with strays before it (the gap from
            # the last tick goes on), or a faster one (the latest early arrival is the tick).
            if len(pending) == k + 1:
                return None
            gap = pending[k] - self.last_arrival
            if abs(pending[k + 1] - pending[k] - gap) <= REGULAR * gap + slack:
                return k, 0
            return k - 1, 1
        pulse = [self.last_arrival, *pending[: k + 1]]
        if not self._regular(pulse):
            for j in range(k):  # one stray in a faster pulse: drop just that one
                if k > 1 and self._regular(pulse[: j + 1] + pulse[j + 2 :]):
                    del pending[j]
                    self.rejected += 1
                    return 0, 0  # decide again without it
            return k, 0  # the early ones were strays; pending[k] is the tick
        # A faster clock, or strays that split the ticks evenly (a burst of garbage can put
        # one half-way between several ticks in a row): only a pulse that goes on for
        # FASTER_CONFIRM intervals is a faster clock; one that breaks off was strays.
        step = (pulse[-1] - pulse[0]) / (len(pulse) - 1)
        intervals = k + 1
        for before, after in zip(pending[k:], pending[k + 1 :], strict=False):
            if abs(after - before - step) > REGULAR * step + slack:
                return k, 0
            intervals += 1
        if intervals >= FASTER_CONFIRM:
            return 0, len(pending)
        return None

    def _regular(self, times: list[float]) -> bool:
        intervals = np.diff(times)
        median = float(np.median(intervals))
        assert self.period is not None
        if median <= 0 or median > FASTER * self.period:
            return False
        spread = REGULAR * median + (self.slack or 0.0)
        return bool(np.all(np.abs(intervals - median) <= spread))

    def _count(self, t: float) -> tuple[int, float]:
        step = 1
        if self._lost_reported and self.period is not None and self.last_arrival is not None:
            self._lost_reported = False
            step += self._ticks_lost_before(t)
        index = self.count + step - 1
        self.count = index + 1
        self.last_arrival = t
        self._window.append((index, t))
        self._fit()
        return index, t

    def _ticks_lost_before(self, t: float) -> int:
        """Ticks the backend lost before the arrival at ``t``: the line's ticks that fell in
        the window it lost (an xrun's frames), else whole ticks missing from the gap."""
        assert self.period is not None
        missing = (t - self.line_time(self.count)) / self.period  # ticks' worth before t
        if self._lost_window is None:
            return max(0, round(missing)) if missing >= 0.75 else 0
        since, until = self._lost_window
        margin = 0.25 * self.period
        lost = 0
        while lost < missing - 0.5:
            slot = self.line_time(self.count + lost)
            if not since - margin <= slot <= until + margin:
                break
            lost += 1
        return lost

    def _fit(self) -> None:
        window = self._window
        n = len(window)
        if n < 2:
            index, t = window[-1]
            self.ref_index, self.ref_time = index, t
            return
        # Stamps are fitted over the last beat only when they spread under 2% of a tick: a
        # one-beat curve through them then holds the tempo within 0.1%. More spread — a
        # clock's jitter (5% of a tick read 60 BPM as 59.72 over one beat), stamps a cycle at
        # a time (a 128-frame period at 94 BPM spreads 10% of a tick, its stamps stepping by
        # whole cycles for 37 ticks in a row: a beat of them has the cycles' slope, 93.75) —
        # is fitted over 8 beats.
        period = self.period
        fine = self.slack is not None and period is not None and self.slack < 0.02 * period
        keep = PPQN + 1 if fine else COARSE_WINDOW
        tail = list(itertools.islice(window, max(0, n - keep), n))  # only what is fitted
        n = len(tail)
        ticks = np.fromiter((k for k, _ in tail), dtype=np.float64, count=n)
        times = np.fromiter((s for _, s in tail), dtype=np.float64, count=n)
        if n >= 4 and fine and period is not None:
            # a tempo step: the newest three intervals agree with each other, not the line
            intervals = np.diff(times[-4:]) / np.diff(ticks[-4:])
            median = float(np.median(intervals))
            agree = np.all(np.abs(intervals - median) <= 0.1 * median + (self.slack or 0.0))
            if agree and abs(median - period) > STEP * period:
                for _ in range(len(window) - 4):
                    window.popleft()
                ticks, times, n = ticks[-4:], times[-4:], 4
        x = ticks - ticks[-1]
        # A tempo that is moving (a ramp) bends the ticks' times: with fine stamps a second
        # order fit follows it, and the map takes the tempo at the newest tick.
        degree = 2 if fine and len(x) >= 6 else 1
        if len(x) == 2:
            slope = (times[1] - times[0]) / (x[1] - x[0])
            intercept = times[1]
        else:
            coefficients = np.polyfit(x, times, degree)
            residual = times - np.polyval(coefficients, x)
            if self.exact_stamps:
                # exact stamps sit on the line: only a stray taken for a tick stands out
                off = np.abs(residual)
                kept = off <= max(2e-5, 3.0 * float(np.median(off)))
                if 3 + degree <= kept.sum() < len(x):
                    coefficients = np.polyfit(x[kept], times[kept], degree)
                    residual = residual[kept]
                consecutive = np.diff(ticks) == 1
                if len(x) >= 8 and consecutive.all():
                    # The clock's own jitter (jack_midi_clock -J, a hardware box), from how
                    # much each interval differs from the last: a tempo step or ramp moves
                    # only one or none of them, so the median ignores it.
                    bend = np.abs(np.diff(times, 2))
                    self.slack = max(0.99 * (self.slack or 0.0), 2.0 * float(np.median(bend)))
            slope, intercept = coefficients[-2], coefficients[-1]
            if not self.exact_stamps and len(x) >= 8:
                self._measure_slack(residual)
                early = residual <= np.percentile(residual, EARLY_PERCENTILE)
                slope, intercept = np.polyfit(x[early], times[early], 1)
        if 60.0 / MAX_BPM <= slope * PPQN <= 60.0 / MIN_BPM:
            self.period = float(slope)
            self.ref_index, self.ref_time = int(ticks[-1]), float(intercept)
        else:
            self.ref_index, self.ref_time = int(ticks[-1]), float(times[-1])

    def _measure_slack(self, residual: np.ndarray) -> None:
        spread = float(np.percentile(residual, 95) - np.percentile(residual, 5))
        if len(residual) < 4 * PPQN:  # too few to know the slack of coarse stamps
            self.slack = max(self.slack or 0.0, spread) if self.slack is not None else None
            return
        self.slack = spread if self.slack is None else max(0.999 * self.slack, spread)


class Clock:
    """Transport state and tempo map, fed by MIDI clock messages or run internally.

    ``listeners`` get a :class:`TransportEvent` for every start, continue, stop and jump,
    called on the thread that fed the clock, before the new position's map is published.
    ``map_listeners`` get every new :class:`TempoMap` (under the clock's lock, in order).
    """

    def __init__(self, bpm: float = 120.0, exact_stamps: bool = False) -> None:
        self._lock = threading.Lock()
        self.default_bpm = validate_bpm(bpm)
        self.follower = TickFollower(exact_stamps)
        self.running = False
        self.source = "none"  # "midi", "internal" or "link" once running
        self.position_known = False  # bar lines known (a Start or Song Position seen)
        self.epoch = 0
        self.jumps = 0
        self.input_gaps = 0  # times the backend said input was lost
        self._silence_said = False
        self.loop: tuple[float, float] | None = None  # (start beat, end beat) from jumps
        self.loop_passes = 0  # jumps seen over the same loop in a row
        self.map_listeners: list = []
        self.listeners: list = []
        self._map: TempoMap | None = None
        self._song_base = 0  # song position (ticks) of the follower's tick _base_index
        self._base_index = 0
        self._position_ticks = 0  # where Continue resumes (SPP or where it stopped)
        self._stopped_at: float | None = None  # when the last Stop came
        self._stopped_next = 0  # song position the tick after the Stop would have had
        self._rejected_logged = 0
        self._link_bpm: float | None = None  # the Link session's tempo (also while stopped)

    @property
    def map(self) -> TempoMap | None:
        return self._map

    @map.setter
    def map(self, tempo: TempoMap | None) -> None:
        self._map = tempo
        for listener in self.map_listeners:
            listener(tempo)

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
        follower = self.follower
        period = follower.period
        was_running = self.running and self.source == "midi"
        just_stopped = (
            not self.running and self._stopped_at is not None and period is not None
            and t - self._stopped_at <= JUMP_TICKS * period + (follower.slack or 0.0)
            and follower.last_arrival is not None
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
            self.running = False
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
                if position != self._next_song_tick():
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

    def check_silence(self, now: float) -> bool:
        """While running on MIDI clock a DAW sends ticks without pause; when they stop coming
        (six ticks' worth, at least 150 ms) it stopped and its Stop was lost (an xrun ate
        it, a cable was pulled): stop here too, so nothing goes on sounding. True if so."""
        with self._lock:
            follower = self.follower
            if not (self.running and self.source == "midi") or follower.period is None:
                return False
            last = follower.last_arrival
            if last is None or now - last <= max(SILENCE_TICKS * follower.period, SILENCE_MIN_S):
                return False
            stopped_at = last + follower.period
        if not self._silence_said:
            self._silence_said = True
            log.warning("the MIDI clock stopped without a Stop (lost on the way?): stopping")
        self.on_stop(stopped_at)
        return True

    def on_tick(self, t: float) -> None:
        with self._lock:
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

    def _on_counted(self, index: int, t: float) -> None:
        if self.running and self.source == "midi":
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
