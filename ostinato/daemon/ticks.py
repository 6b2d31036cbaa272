"""Clock byte arrivals → counted ticks and the tempo line through them (MIDI clock, 24 ppqn).

Pure logic, fed by :class:`ostinato.daemon.clock.Clock` under its lock (the thread that hands
over the input: JACK's reports thread or the rtmidi input worker); every time is the event's
own, in seconds on the input's time line.

Counting. A virtual port does not lose bytes, so every clock byte is a tick; only a byte that
is off the tempo line is not (a stray 0xF8 in a burst of garbage, a second clock merged in).
:class:`TickFollower` decides which arrivals are ticks: one on or after the next tick's place
on the line is counted at once (on time, late, or a slower tempo); one that comes early by
more than a quarter of a tick (plus the stamps' own jitter) waits for the arrivals after it.
If an arrival then lands on the line's next tick and the early ones do not make a regular
pulse with it, they were strays: rejected and counted (one stray inside a faster pulse is
rejected alone). If they make a regular pulse that goes on for a sixth of a beat, the tempo
went up: all are ticks (a burst of garbage can put strays half-way between a few ticks in a
row, which looks like a clock twice as fast until it breaks off). A stray that coincides with
a tempo step within a tick can still be taken for the step's first tick: the two cannot be
told apart when they happen.

Gaps. A tick is never inferred from a gap, except where the line says so: right after the
backend reported that input was lost (:meth:`TickFollower.lost`: the line's ticks that fell in
the frames it lost are counted), and when ticks come back after the clock suspended
(:meth:`TickFollower.place`: the gap in whole ticks, when the tick that comes back is on the
line).

Epochs. After a Start, Continue or Song Position Pointer (:meth:`TickFollower.open_epoch`) the
arrivals still undecided belong to the old epoch and are dropped, and the next arrival is the
new epoch's first tick, never a stray: on the line it keeps the line; off it (a DAW whose clock
starts on a new grid at Start: jack_midi_clock after a relocate, a clock that ticks while
stopped) the line starts again from it, the tempo kept as the first guess.

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
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np

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
        self._first = False  # the next arrival is an epoch's first tick (open_epoch)
        self._opened: float | None = None  # when the epoch opened (open_epoch's time)
        self._epoch_loss: tuple[float, float] | None = None  # input lost before its 1st tick
        self.first_lost = 0  # ticks of the epoch lost before its first counted one
        # the epoch's first arrival and the loss before it, until its second arrival measures
        # the epoch's own tick period (the line's may be the tempo from before a Stop)
        self._first_check: tuple[float, tuple[float, float], float] | None = None
        self.first_revised = False  # first_lost changed at the epoch's second arrival
        self._epoch_ticks = 0  # ticks counted since the epoch opened
        # input lost between the epoch's first and second arrivals: (first, second, ticks
        # counted lost between them, the first's check) until the third measures the tick
        self._deferred: (
            tuple[float, float, int, tuple[float, tuple[float, float], float] | None] | None
        ) = None

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
        self._deferred = None

    def lost(self, since: float | None = None, until: float | None = None) -> None:
        """The backend lost input: the next gap of whole ticks counts them (an epoch's first
        ticks, lost before its first arrival: :attr:`first_lost`)."""
        window = None if since is None or until is None else (since, until)
        if self._first:  # between an epoch's opening and its first tick
            self._epoch_loss = window
            return
        self._lost_reported = True
        self._lost_window = window

    def open_epoch(self, t: float | None = None) -> None:
        """A Start, Continue or Song Position Pointer at ``t``: the arrivals still undecided
        belong to the old epoch (dropped, counted as strays), a loss reported before it is no
        gap in the new one (but one whose frames run past ``t`` may hold the new epoch's first
        ticks), and the next arrival is the new epoch's first tick, never a stray."""
        self.drop_pending()
        window = self._lost_window
        self._epoch_loss = window if t is not None and window and window[1] > t else None
        self._opened = t
        self._lost_reported = False
        self._lost_window = None
        self._first = True
        self.first_lost = 0
        self._first_check = None
        self.first_revised = False
        self._epoch_ticks = 0
        self._deferred = None

    def place(self, t: float) -> int | None:
        """Whole ticks of the line from its next tick to an arrival at ``t`` after a gap (the
        ticks the gap held), or None when ``t`` is off the line: more than a quarter of a tick
        plus the stamps' slack from every tick of it. Coarse stamps come late, never early:
        half their slack is taken off first."""
        period = self.period
        if period is None or self.last_arrival is None:
            return None
        slack = (self.slack or 0.0) / period
        missing = (t - self.line_time(self.count)) / period
        if not self.exact_stamps:
            missing -= slack / 2
        whole = max(0, round(missing))
        return whole if abs(missing - whole) <= EARLY_TICKS + slack else None

    def skip(self, ticks: int) -> None:
        """The line holds ``ticks`` ticks before the next arrival (a gap :meth:`place`
        measured): the next tick counted gets its index after them."""
        self.count += ticks
        self._lost_reported = False
        self._lost_window = None

    # -- feeding ----------------------------------------------------------------------------
    def feed(self, t: float) -> list[tuple[int, float]]:
        """One clock byte at time ``t``: the ticks now counted (maybe none, maybe several
        that waited), each as (index, time)."""
        if self._first:
            self._first = False
            return [self._count_first(t)]
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

    def _count_first(self, t: float) -> tuple[int, float]:
        """An epoch's first tick. On the line it keeps the line (the tick gets the index the
        line gives it); off it (a clock that starts a new grid at Start) the line starts
        again from it, the tempo kept as the first guess."""
        window, opened = self._epoch_loss, self._opened
        self.first_lost = self._lost_before_first(t)
        whole = self.place(t)
        if whole is None:
            self._window.clear()
        else:
            self.count += whole
        counted = self._count(t)
        if window is not None and opened is not None:
            self._first_check = (t, window, opened)
        return counted

    def _lost_before_first(self, t: float) -> int:
        """The epoch's ticks the backend lost before its first arrival at ``t``: the tick
        places a period apart back from ``t`` that fell in the frames it lost and after the
        epoch opened (the first tick comes within a tick of a Start or Continue). The period
        is the line's, the tempo before the epoch: :meth:`_revise_first` counts again with the
        epoch's own at its second arrival."""
        window, opened, period = self._epoch_loss, self._opened, self.period
        self._epoch_loss = None
        if window is None or opened is None or period is None:
            return 0
        return self._slots_lost(t, window, opened, period)

    def _revise_first(self, t: float) -> None:
        """The epoch's second arrival at ``t``: its interval from the first is the epoch's
        tick period (a DAW's tempo may have changed while it was stopped); the ticks lost
        before the first arrival are counted again with it (:attr:`first_revised` when that
        changed them)."""
        check, self._first_check = self._first_check, None
        if check is None or not self.exact_stamps or self._lost_reported:
            return  # (input lost since the first arrival: the interval may hold lost ticks)
        period = t - check[0]
        if period > 0:
            self._recount_first(check, period)

    def _recount_first(
        self, check: tuple[float, tuple[float, float], float], period: float
    ) -> None:
        """The ticks lost before the epoch's first arrival, counted with its own tick
        ``period`` (:attr:`first_revised` when that changed them)."""
        first, window, opened = check
        lost = self._slots_lost(first, window, opened, period)
        if lost != self.first_lost:
            self.first_lost = lost
            self.first_revised = True

    @staticmethod
    def _slots_lost(t: float, window: tuple[float, float], opened: float, period: float) -> int:
        since, until = window
        margin = 0.25 * period
        lost = 0
        while True:
            slot = t - (lost + 1) * period
            if slot < opened - margin or not since - margin <= slot <= until + margin:
                return lost
            lost += 1

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
        if self._deferred is not None:
            self._recount_second(t)
        second_after_loss = self._epoch_ticks == 1 and self._lost_reported and self.exact_stamps
        check = self._first_check
        if check is not None:  # set only after the epoch's first arrival
            self._revise_first(t)
        step = 1
        if self._lost_reported and self.period is not None and self.last_arrival is not None:
            self._lost_reported = False
            step += self._ticks_lost_before(t)
        if second_after_loss and self.last_arrival is not None:
            self._lost_reported = False
            # the ticks lost since the epoch's first were counted with the line's tick, the
            # tempo from before the epoch (or none): counted again at the third arrival
            self._deferred = (self.last_arrival, t, step - 1, check)
        index = self.count + step - 1
        self.count = index + 1
        self.last_arrival = t
        self._epoch_ticks += 1
        self._window.append((index, t))
        self._fit()
        return index, t

    def _recount_second(self, t: float) -> None:
        """The epoch's third arrival at ``t`` after input was lost between its first two:
        the interval from the second is the epoch's tick; the ticks lost between the first
        two (and before the first) are counted again with it, and the second tick's index
        and every one after it move by the difference."""
        first, second, counted, check = self._deferred  # type: ignore[misc]
        self._deferred = None
        period = t - second
        if self._lost_reported or period <= 0:
            return  # lost again: this interval may hold lost ticks too
        ticks = (second - first) / period
        if abs(ticks - round(ticks)) > EARLY_TICKS:
            return  # not a whole number of these ticks apart: a stray among them
        lost = max(0, round(ticks) - 1)
        if lost != counted:  # (the fit after this arrival takes the line from the window)
            shift = lost - counted
            self.count += shift
            index, stamp = self._window.pop()
            self._window.append((index + shift, stamp))
        if check is not None:
            self._recount_first(check, period)

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
