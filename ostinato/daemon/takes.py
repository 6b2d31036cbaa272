"""Takes: what a musician asks for as "regenerate this bar", "keep that one", "undo".

A *take* is a bar Ostinato prepared: the ids of its notes in the scheduler's queue, their
offsets in the bar, and the bar as :class:`~ostinato.daemon.loop.PlayedBar` once complete
(what :class:`~ostinato.daemon.loop.PassMemory` holds for the next pass to vary). The session
(:mod:`ostinato.daemon.planner`) keeps the takes of the last bars by where they play on the
current timeline (a loop jump moves the prepared one with it) and acts on them:

- *regenerate* throws away the take queued for the next bar (continue mode: and the rest of
  the answer) and generates it again as a new take: a seed of its own and at least
  :data:`TAKE_VARIATION`, varying the bar before the one thrown away. With time left before
  the bar begins its notes are taken back and the bar is prepared again at once; without, it
  plays as prepared and the next pass at that place in the loop (no loop: the next bar) is
  the new take. Nothing prepared yet: the bar is a new take when its turn comes.
- *keep* freezes the bar playing now at its place in the loop (loop and jam, with a loop
  known): that place plays it again, note for note, each pass while the other places vary;
  in continue mode it freezes the current answer, which the next answers replay. ``keep 0``
  releases everything kept.
- *undo* goes back one action (:data:`HISTORY` are remembered): a keep is released (a
  release kept again); a regenerate brings the take it threw away back, into the queue when
  its bar has not begun, otherwise as a kept bar for that place on the next pass.

Pure data here; the session holds its lock around every change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ostinato.daemon.loop import LoopInfo, PlayedBar
from ostinato.model.grammar import GrammarConfig
from ostinato.model.sampling import SamplingSettings

HISTORY = 16  # actions undo can go back through
TAKE_VARIATION = 0.3  # a new take varies what it replaces at least this much (0 would copy)
RESEED = 7919  # a new take's seed: the bar's, moved by this for each new take


class TakeError(Exception):
    """A take action with nothing to act on; the message says why."""


Notes = list[tuple[float, float, int, int, int]]  # (offset beats, duration, program, pitch, vel)


@dataclass(frozen=True, eq=False)
class Plan:
    """What a bar was generated with, so that a re-plan of its rest keeps the same rules."""

    grammar: GrammarConfig
    references: tuple[np.ndarray, ...]
    variation: float
    free_pitches: bool
    seed: int | None
    sampling: SamplingSettings | None = None  # None: the settings' (a part entering: cooler)


@dataclass(eq=False)
class Take:
    """One bar Ostinato prepared. ``bar``: where it plays on the current timeline; ``memory``:
    its key in PassMemory, (bar, epoch) as it was prepared. ``kind``: "new" (generated as
    usual), "retake" (a regenerate's), "back" (brought back by an undo) or "kept" (a kept
    bar played again)."""

    bar: int
    memory: tuple[int, int]
    kind: str = "new"
    ids: list[int] = field(default_factory=list)
    notes: Notes = field(default_factory=list)  # as queued, offsets from the bar's start
    played: PlayedBar | None = None  # complete
    source: PlayedBar | None = None  # what a kept take plays
    answer: int | None = None  # continue mode: the first bar of the answer it belongs to
    action: TakeAction | None = None  # the regenerate it answers
    abandoned: bool = False  # thrown away: nothing more of it is queued or remembered
    place: int | None = None  # its place in the loop (for the markers), when known
    plan: Plan | None = None  # what it was generated with (None: never re-planned)
    # re-planning (the commit setting): the musician's onsets in the bar its plan heard, and
    # where in the bar (beats) the notes planned before that begin (None: none are left)
    heard: frozenset[tuple[float, int, int]] = frozenset()
    stale_from: float | None = None


@dataclass
class Kept:
    """Bars kept: by place in a loop (``loop``: its (start mod length, length)), and an
    answer kept in continue mode (``answer_first``: the first bar of the answer it is)."""

    places: dict[int, PlayedBar] = field(default_factory=dict)
    loop: tuple[int, int] | None = None
    answer: list[PlayedBar] | None = None
    answer_first: int | None = None

    def copy(self) -> Kept:
        return Kept(dict(self.places), self.loop,
                    None if self.answer is None else list(self.answer),
                    self.answer_first)  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.places) or self.answer is not None

    def text(self) -> str:
        """For the status: the kept loop places, 1-based ("1,3"), and "answer"."""
        parts = [str(place + 1) for place in sorted(self.places)]
        if self.answer is not None:
            parts.append("answer")
        return ",".join(parts)

    def at(self, loop: LoopInfo | None, bar: int) -> PlayedBar | None:
        """The bar kept at ``bar``'s place in ``loop`` (kept on that same loop), or None."""
        if loop is None or self.loop != loop_key(loop):
            return None
        return self.places.get(loop.index(bar))


@dataclass(eq=False)
class TakeAction:
    """One action in the history. ``text``: what it did, short ("regenerate bar 5");
    ``kept``: the kept bars before it (what undo restores). A regenerate's ``old`` is the
    take it threw away (None: nothing was prepared yet), ``bar`` the bar prepared again at
    once (-1: none), ``new`` the takes generated for it."""

    kind: str  # "regenerate", "keep", "release"
    text: str
    kept: Kept
    old: Take | None = None
    bar: int = -1
    new: list[Take] = field(default_factory=list)
    loop: tuple[int, int] | None = None  # the loop its place marks refer to


def loop_key(loop: LoopInfo) -> tuple[int, int]:
    """A loop's places: the same for every pass (start modulo length, length)."""
    return loop.start % loop.bars, loop.bars
