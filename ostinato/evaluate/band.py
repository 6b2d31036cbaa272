"""A band's parts in an evaluation window: which parts Ostinato is asked for, which are the
musician's, and how what is played in the asked-for parts scores against the real ones (the
figures of ``ostinato eval --mode accompany``, :mod:`ostinato.evaluate.accompany`)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ostinato.evaluate.bars import (
    NoteEvent,
    bar_meter,
    bar_starts_quarters,
    group_of,
    keep_parts,
    parse_notes,
    sounding_pitch_classes,
    timed_notes,
)
from ostinato.evaluate.metrics import (
    OVERLAP_METRICS,
    drum_hits,
    f1,
    onset_histogram,
    overlap,
    pitch_class_histogram,
)
from ostinato.model.corpus import CorpusSplit
from ostinato.model.tokens import DRUM_PROGRAM, KICKS, Meter, Vocab, split_bars

CONTEXT_BARS = 4
DEFAULT_BARS = 8
BASS_PROGRAMS = frozenset(range(32, 40))
CONTEXTS = ("all", "musician")
#: Pitched parts a window needs, without a bass program, for its lowest to play the bass role.
LOWEST_AS_BASS = 3


@dataclass(frozen=True)
class AccompanyWindow:
    file: str
    start: int  # the first context bar, in the file
    asked: tuple[int, ...]  # Ostinato's parts
    bass: tuple[int, ...]  # the asked-for parts the chord-tone ratios read
    musician: tuple[int, ...]  # the other parts of the window
    real_context: list[np.ndarray]  # the context bars as they are, all parts
    real: list[np.ndarray]  # the bars generated, as they are, all parts
    heard: list[np.ndarray]  # the context as the model hears it before its first bar

    @property
    def group(self) -> str:
        return group_of(self.file)


#: Per bar, per program: (notes, sum of their pitches).
BarParts = dict[int, tuple[int, int]]


def bars_parts(vocab: Vocab, tokens: np.ndarray) -> list[BarParts]:
    """:data:`BarParts` of every bar of ``tokens`` (one per ``Bar`` token)."""
    tokens = np.asarray(tokens)
    parts: list[BarParts] = [{} for _ in range(int((tokens == vocab.bar_id).sum()))]
    for n in parse_notes(vocab, tokens):
        count, total = parts[n.bar].get(n.program, (0, 0))
        parts[n.bar][n.program] = (count + 1, total + n.pitch)
    return parts


def bar_parts(vocab: Vocab, bar: np.ndarray) -> BarParts:
    """:data:`BarParts` of one bar."""
    return bars_parts(vocab, bar)[0]


def lowest_part(bars: Sequence[BarParts], among: set[int]) -> int:
    """Of the pitched programs ``among``, the one whose notes in ``bars`` lie lowest on
    average (a program with no note there counts as highest)."""

    def mean_pitch(p: int) -> float:
        notes = sum(b[p][0] for b in bars if p in b)
        return sum(b[p][1] for b in bars if p in b) / notes if notes else math.inf

    return min(among, key=lambda p: (mean_pitch(p), p))


def window_roles(
    bars: Sequence[BarParts], programs: Sequence[int] | None = None, lowest: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(asked, bass, musician) of a stretch of bars (:func:`bar_parts` each); see the module
    docstring. ``lowest``: the part that lies lowest over the whole file (so a quartet's
    cello keeps the bass's role where it climbs above the viola), used where it plays in
    ``bars``; else the lowest of ``bars``."""
    present = set().union(*bars) if len(bars) else set()
    if programs is not None:
        asked = set(programs)
        bass = (asked & BASS_PROGRAMS) or (asked - {DRUM_PROGRAM})
    else:
        bass = present & BASS_PROGRAMS
        asked = bass | (present & {DRUM_PROGRAM})
        pitched = present - {DRUM_PROGRAM}
        if not bass and len(pitched) >= LOWEST_AS_BASS:
            bass = {lowest if lowest in pitched else lowest_part(bars, pitched)}
            asked |= bass
    musician = present - asked
    return tuple(sorted(asked)), tuple(sorted(bass)), tuple(sorted(musician))


def accompany_windows(
    split: CorpusSplit,
    names: Sequence[str],
    vocab: Vocab,
    n: int,
    seed: int,
    programs: Sequence[int] | None = None,
    bars: int = DEFAULT_BARS,
    context: str = "all",
) -> tuple[list[AccompanyWindow], dict[str, int]]:
    """Up to ``n`` windows (one per file first), and the files that gave none, by reason."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    rng = np.random.default_rng(seed)
    span = CONTEXT_BARS + bars
    skipped: Counter[str] = Counter()
    candidates = []
    for f in rng.permutation(len(split.files)):
        start, length = (int(x) for x in split.files[f])
        tokens = np.asarray(split.tokens[start : start + length], np.int64)
        file_bars = split_bars(tokens, vocab.bar_id)
        if len(file_bars) < span:
            skipped[f"fewer than {span} bars"] += 1
            continue
        per_bar = bars_parts(vocab, tokens[len(tokens) - sum(len(b) for b in file_bars) :])
        pitched = set().union(*per_bar) - {DRUM_PROGRAM}
        lowest = lowest_part(per_bar, pitched) if pitched else None
        found = []
        for s in rng.permutation(len(file_bars) - span + 1):
            s = int(s)
            asked, bass, musician = window_roles(per_bar[s : s + span], programs, lowest)
            target = set().union(*per_bar[s + CONTEXT_BARS : s + span])
            if asked and musician and target & set(musician):
                found.append((s, asked, bass, musician))
                if len(found) == n:  # no file gives more than all the windows asked for
                    break
        if not found:
            skipped["no part to ask for beside a musician's"] += 1
            continue
        name = names[f] if f < len(names) else f"file {f}"
        candidates.append((name, file_bars, found))
    windows: list[AccompanyWindow] = []
    for round_ in range(max((len(c[2]) for c in candidates), default=0)):
        for name, file_bars, found in candidates:
            if len(windows) == n:
                return windows, dict(skipped)
            if round_ < len(found):
                s, asked, bass, musician = found[round_]
                real_context = file_bars[s : s + CONTEXT_BARS]
                real = file_bars[s + CONTEXT_BARS : s + span]
                heard = (real_context if context == "all"
                         else [keep_parts(vocab, b, musician) for b in real_context])  # fmt: skip
                windows.append(AccompanyWindow(name, s, asked, bass, musician, real_context,
                                               real, heard))  # fmt: skip
    return windows, dict(skipped)


def strong_positions(vocab: Vocab, meter: Meter) -> list[tuple[int, int]]:
    """The strong beats of a bar as [start, end) position ranges: the downbeat and, in an
    even number of beats, the bar's middle, each up to a 16th after it."""
    per_beat = vocab.positions_per_beat
    sixteenth = max(1, round(per_beat * 0.25 / vocab.beat_quarters(meter)))
    beats = meter[0] if vocab.has_meters else 4
    starts = [0] + ([beats // 2 * per_beat] if beats % 2 == 0 and beats > 1 else [])
    return [(s, s + sixteenth) for s in starts]


def accompany_metrics(vocab: Vocab, window: AccompanyWindow, played: Sequence[np.ndarray]) -> dict:
    """One window's counts (pooled later) and figures (averaged later) for the bars
    ``played`` against the real asked-for parts."""
    timeline = [*window.real_context, *window.real]
    starts = bar_starts_quarters(vocab, timeline)
    musician = [n for n in timed_notes(vocab, timeline) if n.program in window.musician]
    asked, bass = set(window.asked), set(window.bass)
    counts: Counter[str] = Counter()
    by_program: dict[int, list[int]] = {p: [0, 0] for p in window.asked}
    mine, real_notes = [], []
    for k, (real_bar, bar) in enumerate(zip(window.real, played, strict=True)):
        i = len(window.real_context) + k
        harmony = sounding_pitch_classes(musician, starts[i], starts[i + 1], window.musician)
        strong = strong_positions(vocab, bar_meter(vocab, real_bar))
        notes = [n for n in parse_notes(vocab, bar) if n.program in asked]
        there = {n.program for n in notes}
        for p in window.asked:
            by_program[p][0] += p in there
            by_program[p][1] += 1
        counts["part_bars"] += len(asked)
        counts["parts_played"] += len(asked & there)
        if bass:
            counts["bass_bars"] += 1
            counts["bass_played"] += bool(bass & there)
        if DRUM_PROGRAM in asked:
            counts["drum_bars"] += 1
            counts["drums_played"] += DRUM_PROGRAM in there
            counts["kick_on_one"] += any(
                n.program == DRUM_PROGRAM and n.pitch in KICKS and n.position == 0 for n in notes
            )
        for n in notes:
            if n.program in bass and harmony:
                hit = n.pitch % 12 in harmony
                counts["bass_notes"] += 1
                counts["chord_tones"] += hit
                if any(lo <= n.position < hi for lo, hi in strong):
                    counts["strong_notes"] += 1
                    counts["strong_chord_tones"] += hit
        mine += [_at_bar(n, k) for n in notes]
        real_notes += [_at_bar(n, k) for n in parse_notes(vocab, real_bar) if n.program in asked]
    counts["notes"] += len(mine)
    counts["real_notes"] += len(real_notes)
    return {
        "counts": counts,
        "by_program": by_program,
        "pitch_class_overlap": overlap(pitch_class_histogram(mine),
                                       pitch_class_histogram(real_notes)),
        "onset_overlap": overlap(onset_histogram(vocab, mine), onset_histogram(vocab, real_notes)),
        "drum_onset_f1": f1(drum_hits(mine), drum_hits(real_notes)),
    }  # fmt: skip


def _at_bar(note: NoteEvent, k: int) -> NoteEvent:
    return replace(note, bar=k)


def _ratio(counts: Counter, hits: str, total: str) -> float:
    return counts[hits] / counts[total] if counts[total] else float("nan")


def summarize_accompany(rows: Sequence[dict]) -> dict:
    """The figures of the module docstring over ``rows`` (windows' :func:`accompany_metrics`)."""
    counts: Counter[str] = Counter()
    by_program: dict[int, list[int]] = {}
    for row in rows:
        counts.update(row["counts"])
        for p, (hits, bars) in row["by_program"].items():
            slot = by_program.setdefault(p, [0, 0])
            slot[0] += hits
            slot[1] += bars
    with warnings.catch_warnings():  # a figure NaN in every window stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {k: float(np.nanmean([r[k] for r in rows])) if rows else math.nan
                 for k in OVERLAP_METRICS}  # fmt: skip
        overlap_mean = float(np.nanmean(list(means.values())))
    return {
        "presence": _ratio(counts, "parts_played", "part_bars"),
        "bass_presence": _ratio(counts, "bass_played", "bass_bars"),
        "drums_presence": _ratio(counts, "drums_played", "drum_bars"),
        "kick_on_one": _ratio(counts, "kick_on_one", "drum_bars"),
        "bass_chord_tones": _ratio(counts, "chord_tones", "bass_notes"),
        "bass_chord_tones_strong": _ratio(counts, "strong_chord_tones", "strong_notes"),
        **means,
        "overlap_mean": overlap_mean,
        "density_ratio": _ratio(counts, "notes", "real_notes"),
        "bass_notes": counts["bass_notes"],
        "presence_by_program": {str(p): h / b for p, (h, b) in sorted(by_program.items()) if b},
    }
