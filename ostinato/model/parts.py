"""Parts left out: the training cases that teach the model to accompany.

Every training bar holds all of its file's parts, and the daemon asks for something else: the
bar it generates holds only Ostinato's instruments (the musician's part of that bar is not
known yet), and an instrument the musician never played must start from nothing. A model
that never saw either rarely starts a bass under a keyboard player's chords. With the
instrument header (:mod:`ostinato.model.tokens`) the bar says which parts it holds, and these
augmentations make token windows where that set differs from the bars before:

* **partial bars** (:func:`partial_bars`): the last 1–4 bars of a file's stretch keep only a
  random subset of their instruments — Ostinato's part generated alone;
* **entering parts** (:func:`entering_part`): one instrument is absent from the stretch's
  first bars and present, header and notes, from bar ``j`` on — keys alone, then bass joins;
* **bars cut at a position** (:func:`cut_bar`): the last bar keeps every part up to a
  position and only a subset after it — what the daemon knows when it plans the rest of a bar
  while the musician plays.

:func:`augment` applies them with the rates of :class:`PartRates` and writes every bar's
header from the notes left (:func:`~ostinato.model.tokens.add_headers`). Pure numpy over one
file's stretch of tokens (no header in it: a corpus is stored without); a note is always
``Program Pitch/PitchDrum Velocity Duration``, and a ``Position`` left with no note is removed
with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ostinato.model.tokens import (
    DRUM_PROGRAM,
    KICKS,
    TokenType,
    Vocab,
    add_headers,
    strip_headers,
)


@dataclass(frozen=True)
class PartRates:
    """The chance a file's stretch of a training window gets each augmentation."""

    partial: float = 0.3
    entering: float = 0.2
    cut: float = 0.15

    def validate(self) -> None:
        for name in ("partial", "entering", "cut"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


class NoteTable:
    """Where each note of ``ids`` is: its bar, position, program and pitch, per token."""

    def __init__(self, vocab: Vocab, ids: np.ndarray) -> None:
        self.vocab, self.ids = vocab, ids
        kinds = vocab.types[ids]
        self.bar = np.cumsum(ids == vocab.bar_id) - 1  # per token; -1 before the first Bar
        self.bars = int(self.bar[-1]) + 1 if len(ids) else 0
        # a note's four tokens: its Program and the three after it
        starts = np.flatnonzero(kinds == TokenType.PROGRAM)
        self.note_start = starts
        self.note_program = vocab.values[ids[starts]]
        self.note_pitch = vocab.values[ids[np.minimum(starts + 1, len(ids) - 1)]]
        self.note_bar = self.bar[starts]
        # each note's position: the last Position token before it
        pos_idx = np.flatnonzero(kinds == TokenType.POSITION)
        k = np.searchsorted(pos_idx, starts) - 1
        self.note_position = np.where(k >= 0, vocab.values[ids[pos_idx[np.maximum(k, 0)]]], 0)
        self.is_position = kinds == TokenType.POSITION

    def programs(self, bars: slice | None = None) -> np.ndarray:
        """The programs with notes in ``bars`` (all bars: None)."""
        if bars is None:
            return np.unique(self.note_program)
        lo = 0 if bars.start is None else bars.start
        hi = self.bars if bars.stop is None else bars.stop
        sel = (self.note_bar >= lo) & (self.note_bar < hi)
        return np.unique(self.note_program[sel])

    def without(self, drop: np.ndarray) -> np.ndarray:
        """The tokens without the notes ``drop`` marks (one flag per note), and without the
        ``Position`` tokens left with no note."""
        if not drop.any():
            return self.ids
        keep = np.ones(len(self.ids), dtype=bool)
        for offset in range(4):  # (a stretch cut off inside its last note: what there is)
            at = self.note_start[drop] + offset
            keep[at[at < len(keep)]] = False
        kept_ids = self.ids[keep]
        kinds = self.vocab.types[kept_ids]
        is_pos = kinds == TokenType.POSITION
        # a Position followed by another Position, a Bar or the end holds no note
        nxt = np.empty(len(kept_ids), dtype=bool)
        nxt[:-1] = (kinds[1:] == TokenType.POSITION) | (kinds[1:] == TokenType.BAR)
        nxt[-1:] = True
        return kept_ids[~(is_pos & nxt)]


def _subset(programs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random non-empty proper subset of ``programs`` (two or more)."""
    while True:
        pick = rng.random(len(programs)) < 0.5
        if 0 < pick.sum() < len(programs):
            return programs[pick]


def partial_bars(table: NoteTable, rng: np.random.Generator) -> np.ndarray | None:
    """Drop-flags per note: the last 1–4 bars keep a random subset of their instruments
    (None: fewer than two instruments there, or no bar)."""
    if table.bars < 2:
        return None
    k = int(rng.integers(1, min(4, table.bars - 1) + 1))
    first = table.bars - k
    programs = table.programs(slice(first, None))
    if len(programs) < 2:
        return None
    kept = _subset(programs, rng)
    return (table.note_bar >= first) & ~np.isin(table.note_program, kept)


def entering_part(table: NoteTable, rng: np.random.Generator) -> np.ndarray | None:
    """Drop-flags per note: one instrument absent before bar ``j`` (at least one bar of it
    left after), the others untouched (None: fewer than two instruments or bars).

    A part enters on the downbeat: bar ``j`` is drawn among the instrument's bars with a note
    at their first position (drums: a kick there), where it has any such bar after its first.
    A band's part comes in on the one, and the daemon asks for exactly that when it brings
    drums in under a keyboard player; an entry drawn from any bar also taught fills and
    cymbal-only bars as entries (measured: a model so trained opened 0.27 of its joining drum
    parts without a downbeat kick; 0.20 of the held-out songs' own drum bars lack one)."""
    programs = table.programs()
    if len(programs) < 2 or table.bars < 2:
        return None
    program = programs[rng.integers(len(programs))]
    own = table.note_program == program
    own_bars = np.unique(table.note_bar[own])
    if len(own_bars) < 2:
        return None
    on_one = own & (table.note_position == 0)
    if program == DRUM_PROGRAM:
        on_one &= np.isin(table.note_pitch, list(KICKS))
    downbeats = np.intersect1d(own_bars[1:], table.note_bar[on_one])
    later = downbeats if len(downbeats) else own_bars[1:]
    j = int(later[rng.integers(len(later))])  # it plays in bar j
    return own & (table.note_bar < j)


def cut_bar(table: NoteTable, rng: np.random.Generator) -> np.ndarray | None:
    """Drop-flags per note: the last bar keeps every part before a random position of its
    own and only a random subset of its instruments from there on (None: fewer than two
    instruments in it)."""
    if table.bars < 1:
        return None
    last = table.bars - 1
    in_bar = table.note_bar == last
    programs = np.unique(table.note_program[in_bar])
    positions = np.unique(table.note_position[in_bar])
    if len(programs) < 2 or len(positions) < 2:
        return None
    cut = positions[rng.integers(1, len(positions))]
    kept = _subset(programs, rng)
    return in_bar & (table.note_position >= cut) & ~np.isin(table.note_program, kept)


def augment(
    vocab: Vocab, ids: np.ndarray, rng: np.random.Generator, rates: PartRates
) -> np.ndarray:
    """One file's stretch of tokens with parts left out at ``rates`` (each case at most once)
    and every bar's instrument header written."""
    ids = strip_headers(vocab, np.asarray(ids, dtype=np.int64))
    draws = rng.random(3)
    if (draws < (rates.partial, rates.entering, rates.cut)).any():
        table = NoteTable(vocab, ids)
        drop = np.zeros(len(table.note_start), dtype=bool)
        cases = (partial_bars, entering_part, cut_bar)
        chances = (rates.partial, rates.entering, rates.cut)
        for chance, draw, case in zip(chances, draws, cases, strict=True):
            if draw < chance:
                flags = case(table, rng)
                if flags is not None:
                    drop |= flags
        ids = table.without(drop)
    return add_headers(vocab, ids)
