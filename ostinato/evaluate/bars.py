"""Token bars as the evaluation reads them: their notes, their notes in time, parts kept or
merged.

A *bar* here is one bar of token ids starting with its ``Bar`` token (then its ``TimeSig``
token where the vocabulary has them, then its instrument header where it has one). Times are
in quarter notes from the start of the first bar given; a bar's length comes from its
``TimeSig`` token (4 quarters without one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ostinato.model.parts import NoteTable
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    Meter,
    TokenType,
    Vocab,
    add_headers,
    strip_headers,
)


@dataclass(frozen=True)
class NoteEvent:
    bar: int
    position: int
    program: int
    pitch: int
    velocity: int
    duration: int  # positions


def _last(mask: np.ndarray) -> np.ndarray:
    """For each index, the index of the newest True of ``mask`` up to it (-1: none yet)."""
    return np.maximum.accumulate(np.where(mask, np.arange(len(mask)), -1))


def parse_notes(vocab: Vocab, tokens: np.ndarray) -> list[NoteEvent]:
    """Notes of a REMI+ token sequence, one per ``Duration`` token, each with the newest
    ``Position``, ``Program``, pitch and ``Velocity`` before it (0 where there is none); bar 0
    starts at the first Bar token. A header's ``Program`` entries make no note: every note
    has its own ``Program`` token."""
    ids = np.asarray(tokens, dtype=np.int64)
    if not len(ids):
        return []
    kinds, values = vocab.types[ids], vocab.values[ids].astype(np.int64)
    notes = np.flatnonzero(kinds == TokenType.DURATION)
    if not len(notes):
        return []
    bar = np.maximum(np.cumsum(kinds == TokenType.BAR) - 1, 0)
    found = []
    for mask in (kinds == TokenType.POSITION, kinds == TokenType.PROGRAM,
                 (kinds == TokenType.PITCH) | (kinds == TokenType.PITCH_DRUM),
                 kinds == TokenType.VELOCITY):  # fmt: skip
        at = _last(mask)[notes]
        found.append(np.where(at >= 0, values[np.maximum(at, 0)], 0).tolist())
    position, program, pitch, velocity = found
    return [
        NoteEvent(b, p, g, h, v, d)
        for b, p, g, h, v, d in zip(bar[notes].tolist(), position, program, pitch, velocity,
                                    values[notes].tolist(), strict=True)
    ]  # fmt: skip


def programs_of(vocab: Vocab, bar: np.ndarray) -> set[int]:
    """The instruments whose notes ``bar`` holds (its header not counted)."""
    return {n.program for n in parse_notes(vocab, bar)}


def bar_meter(vocab: Vocab, bar: np.ndarray) -> Meter:
    """The meter of a bar: its ``TimeSig`` token's, else 4/4."""
    if vocab.has_meters and len(bar) > 1 and vocab.types[bar[1]] == TokenType.TIME_SIG:
        return vocab.meter_of_token(int(bar[1]))
    return (4, 4)


def bar_quarters(vocab: Vocab, bar: np.ndarray) -> float:
    """The length of a bar in quarter notes."""
    num, den = bar_meter(vocab, bar)
    return num * 4 / den if vocab.has_meters else 4.0


def quarters_per_position(vocab: Vocab, meter: Meter) -> float:
    return vocab.beat_quarters(meter) / vocab.positions_per_beat


@dataclass(frozen=True)
class TimedNote:
    bar: int  # index in the bars given
    position: int  # onset in the bar's positions
    start: float  # quarters from the first bar's start
    length: float  # quarters
    program: int
    pitch: int


def bar_starts_quarters(vocab: Vocab, bars: Sequence[np.ndarray]) -> np.ndarray:
    """Where each bar starts (quarters from the first), and where the last ends."""
    return np.concatenate(([0.0], np.cumsum([bar_quarters(vocab, b) for b in bars])))


def timed_notes(vocab: Vocab, bars: Sequence[np.ndarray]) -> list[TimedNote]:
    """Every note of ``bars`` with its onset and length in quarter notes."""
    starts = bar_starts_quarters(vocab, bars)
    out = []
    for i, bar in enumerate(bars):
        step = quarters_per_position(vocab, bar_meter(vocab, bar))
        for n in parse_notes(vocab, bar):
            out.append(TimedNote(i, n.position, float(starts[i] + n.position * step),
                                 n.duration * step, n.program, n.pitch))  # fmt: skip
    return out


def sounding_pitch_classes(
    notes: Iterable[TimedNote], start: float, end: float, programs: Iterable[int]
) -> set[int]:
    """Pitch classes of the pitched ``programs``' notes that sound in ``[start, end)``: struck
    in it, or struck before and still held into it."""
    chosen = set(programs) - {DRUM_PROGRAM}
    return {
        n.pitch % 12
        for n in notes
        if n.program in chosen and n.start < end and n.start + n.length > start
    }


def keep_parts(vocab: Vocab, bar: np.ndarray, programs: Iterable[int]) -> np.ndarray:
    """``bar`` with only the notes of ``programs`` (its header written again, for a vocabulary
    with headers; a position left without notes dropped)."""
    ids = strip_headers(vocab, np.asarray(bar, dtype=np.int64))
    table = NoteTable(vocab, ids)
    kept = table.without(~np.isin(table.note_program, list(programs)))
    return add_headers(vocab, kept) if vocab.has_header else kept


def _onsets(vocab: Vocab, bar: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[int, list[int]]]]:
    """A bar's head (``Bar``, ``TimeSig``) and its notes' tokens per onset: position →
    (its ``Position`` token, the tokens of the notes struck there)."""
    ids = strip_headers(vocab, np.asarray(bar, dtype=np.int64))
    at = np.flatnonzero(vocab.types[ids] == TokenType.POSITION)
    onsets: dict[int, tuple[int, list[int]]] = {}
    if not len(at):  # a bar without a note
        return ids, onsets
    head_end = int(at[0])
    for s, e in zip(at, [*at[1:], len(ids)], strict=True):
        position = int(vocab.values[ids[s]])
        onsets.setdefault(position, (int(ids[s]), []))[1].extend(int(t) for t in ids[s + 1 : e])
    return ids[:head_end], onsets


def merge_bars(vocab: Vocab, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One bar holding the notes of both (the head of ``first``; at each onset the notes of
    ``first``, then those of ``second``), with its header written for a vocabulary with
    headers: the bar as the daemon hears it, the musician's part and Ostinato's together."""
    head, a = _onsets(vocab, first)
    _, b = _onsets(vocab, second)
    out = [int(t) for t in head]
    for position in sorted(a.keys() | b.keys()):
        token = (a.get(position) or b[position])[0]
        out.append(token)
        out.extend(a.get(position, (token, []))[1])
        out.extend(b.get(position, (token, []))[1])
    ids = np.asarray(out, dtype=np.int64)
    return add_headers(vocab, ids) if vocab.has_header else ids


def group_of(name: str) -> str:
    """A corpus file's group: the first folder of its source path (``freedoom-midi``,
    ``openscore-lieder`` …; empty for a file at the top)."""
    return name.split("/", 1)[0] if "/" in name else ""
