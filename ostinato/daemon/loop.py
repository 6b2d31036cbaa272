"""The loop the session plays over, and the bars each generated bar varies.

Where the loop comes from, in order:

1. ``loop_bars`` set by hand (config, ``--loop-bars``, OSC, the panel): that many bars from the
   DAW's loop start when it has one, else from song bar 0;
2. the DAW's loop jumps (:attr:`Clock.loop`, kept from two jumps over the same span): its
   start and length, when they are whole bars;
3. the musician's own repetition when the DAW plays straight through: the bars heard repeat
   with a period of 1, 2, 4 or 8 bars (each bar's notes, on the 16th grid, against the bar one
   period earlier), over at least two periods; the smallest such period wins, anchored where
   the repetition began.

:class:`PassMemory` keeps, by position in the loop, the last bar Ostinato played there and
the musician's bar there; those are the copy prior's references (see
:mod:`ostinato.engine.copy`) and what a late bar falls back to. It holds two passes of the
longest loop the settings allow (:data:`PASS_MEMORY_BARS`): the pass before, and the one
before that for when a take is thrown away. Pure logic; the session holds its lock around
every call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ostinato.daemon.recorder import RecordedNote
from ostinato.settings import SETTINGS

PERIODS = (1, 2, 4, 8)
SIMILAR = 0.75  # Jaccard similarity of two bars' note sets that counts as a repeat
GRID = 4  # onsets compared on the 16th-note grid (positions per beat)
#: Bars :class:`PassMemory` keeps of each kind: two passes of the longest ``loop_bars``.
PASS_MEMORY_BARS = 2 * int(SETTINGS["loop_bars"].hi or 64)


@dataclass(frozen=True)
class LoopInfo:
    """``bars`` bars from song bar ``start`` (0-based), known from ``source``: "set",
    "daw" or "repetition"."""

    start: int
    bars: int
    source: str

    def index(self, bar: int) -> int:
        """Where ``bar`` falls in the loop (0 = its first bar)."""
        return (bar - self.start) % self.bars

    def is_last(self, bar: int) -> bool:
        return self.bars > 1 and self.index(bar) == self.bars - 1


Signature = frozenset[tuple[int, int, int]]


def signature(notes: list[RecordedNote], bar: int, beats_per_bar: float) -> Signature:
    """A bar's notes as (onset on the 16th grid, program, pitch)."""
    start = bar * beats_per_bar
    return frozenset((round((n.start_beats - start) * GRID), n.program, n.pitch) for n in notes)


def similar(a: Signature, b: Signature) -> bool:
    if not a and not b:
        return True
    return len(a & b) / len(a | b) >= SIMILAR


def detect_period(bars: list[Signature]) -> tuple[int, int] | None:
    """``(period, first)``: the smallest period (in bars) with which the newest bars repeat,
    over at least two periods, and the index in ``bars`` where the repetition begins; None
    when they do not repeat (or hold no notes at all)."""
    n = len(bars)
    if not any(bars[-2:]):
        return None
    for period in PERIODS:
        if n < 2 * period:
            break
        if not all(similar(bars[i], bars[i - period]) for i in range(n - period, n)):
            continue
        if period > 1 and all(not b for b in bars[n - period :]):
            continue
        first = n - 2 * period
        while first > 0 and similar(bars[first - 1], bars[first - 1 + period]):
            first -= 1
        return period, first
    return None


class LoopFollower:
    """Which loop is playing now: by hand, from the DAW, or from the musician's repetition."""

    def __init__(self, beats_per_bar: float, history: int = 24) -> None:
        self.beats_per_bar = beats_per_bar
        self._heard: deque[tuple[int, int, Signature]] = deque(maxlen=history)
        self.loop: LoopInfo | None = None

    def heard(self, bar: int, epoch: int, human: list[RecordedNote]) -> None:
        """The musician's notes of a complete bar (in time order of hearing)."""
        self._heard.append((bar, epoch, signature(human, bar, self.beats_per_bar)))

    def clear(self) -> None:
        self._heard.clear()

    def update(
        self, daw_loop: tuple[float, float] | None, loop_bars: int | None
    ) -> LoopInfo | None:
        """The loop now, from the setting, the DAW's loop (start beat, end beat), or what
        was heard."""
        bpb = self.beats_per_bar
        daw = None
        if daw_loop is not None:
            start, end = daw_loop[0] / bpb, daw_loop[1] / bpb
            whole = abs(start - round(start)) < 0.02 and abs(end - round(end)) < 0.02
            if whole and round(end) > round(start):
                daw = LoopInfo(round(start), round(end) - round(start), "daw")
        if loop_bars is not None:
            self.loop = LoopInfo(daw.start if daw else 0, loop_bars, "set")
        elif daw is not None:
            self.loop = daw
        else:
            self.loop = self._from_repetition()
        return self.loop

    def _from_repetition(self) -> LoopInfo | None:
        run: list[tuple[int, int, Signature]] = []
        for item in reversed(self._heard):  # the newest straight run of consecutive bars
            if run and (item[1] != run[-1][1] or item[0] != run[-1][0] - 1):
                break
            run.append(item)
        run.reverse()
        found = detect_period([sig for _, _, sig in run])
        if found is None:
            return None
        period, first = found
        return LoopInfo(run[first][0] % period, period, "repetition")


@dataclass
class PlayedBar:
    """A bar as played: its tokens (starting with ``Bar``) and notes, beats from its start."""

    tokens: np.ndarray
    notes: list[tuple[float, float, int, int, int]] = field(default_factory=list)
    # (offset beats, duration beats, program, pitch, velocity)


class PassMemory:
    """The bars of the last passes, Ostinato's and the musician's, by song bar and epoch, so
    that a loop found later (a DAW's loop is known from its first jump) still finds them."""

    def __init__(self, keep: int = PASS_MEMORY_BARS) -> None:
        self.keep = keep
        self.own: dict[tuple[int, int], PlayedBar] = {}
        self.human: dict[tuple[int, int], PlayedBar] = {}

    def played(self, bar: int, epoch: int, played: PlayedBar) -> None:
        self._put(self.own, (bar, epoch), played)

    def heard(self, bar: int, epoch: int, played: PlayedBar) -> None:
        self._put(self.human, (bar, epoch), played)

    def _put(self, store: dict, key: tuple[int, int], value: PlayedBar) -> None:
        store.pop(key, None)
        store[key] = value  # newest last
        while len(store) > self.keep:
            del store[next(iter(store))]

    def forget(self, bar: int, epoch: int) -> None:
        """Ostinato's bar there was taken back (a take thrown away): the bar played there
        before it is the newest again."""
        self.own.pop((bar, epoch), None)

    def clear(self) -> None:
        self.own.clear()
        self.human.clear()

    def last_own(self) -> PlayedBar | None:
        return next(reversed(self.own.values()), None)

    def at(
        self, loop: LoopInfo, bar: int, human: bool = False, besides: PlayedBar | None = None
    ) -> PlayedBar | None:
        """The newest bar played (or heard) at ``bar``'s place in the loop (other than
        ``besides``: a take thrown away)."""
        k = loop.index(bar)
        store = self.human if human else self.own
        for (b, _), played in reversed(store.items()):
            if loop.index(b) == k and played is not besides:
                return played
        return None
