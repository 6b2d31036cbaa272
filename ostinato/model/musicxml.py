"""MusicXML → symusic Score, for the corpus builder.

The OpenScore corpora (``../shared/data/openscore-lieder``, ``openscore-quartets``) come as
compressed MusicXML. :func:`convert_musicxml` parses a ``.mxl``/``.musicxml``/``.xml`` file
with music21 and copies its notes straight into a symusic :class:`~symusic.Score` (480 ticks
per quarter), which then goes through the same tokenizer as MIDI. It never goes through
music21's MIDI writer (45 s for one large quartet, against a few seconds to parse it).

What comes out, and why:

* **Parts → programs** (:func:`part_program`). A vocal part (named Voice, Singstimme,
  Soprano…, or with lyrics on a quarter of its notes, or a music21 vocalist) becomes
  :data:`VOICE_PROGRAM` = 73 (flute): a melody instrument the loop generator also uses for
  leads, so the singing line teaches the lead slot; choir aahs (52) would read as pads. A
  piano part, both staves, becomes 0. Violin 40, viola 41, cello 42 and double bass 43 keep
  their own General MIDI programs: the cello plays the quartets' bass line, and the model
  meets bass lines on 32–39 elsewhere; we keep 42 rather than pretend a cello is a bass
  guitar (the grammar's string range, 28–100, holds the cello's). Anything else takes its
  music21 MIDI program when known, else piano. A part that only doubles others (an ossia,
  a piano reduction "for practice only") is left out (counted).
* **Ties** are merged into one note. **Repeats** are expanded as played, movement by
  movement (music21's repeat Expander, voltas and D.C./D.S./Coda/Fine included; see
  :func:`play_order`); when the Expander refuses a movement (some quartets carry badly
  formed repeats) it is taken as written and that is counted.
* **Grace notes** are dropped (counted). Onsets and ends are **snapped to the tokenizer's
  grid** (8 per quarter by default): a triplet eighth lies a third of a step off and snaps;
  onsets further than :data:`SNAP_TOLERANCE` of a step from the grid (quintuplet and
  septuplet runs, 64th notes) are dropped (counted): the tokenizer cannot place them.
* **Bar lines stay bar lines.** The tokenizer counts bars from tick 0 by the time signature,
  so a pickup measure is padded on the left to a full bar, and a short measure that the
  next one does not complete (a bar split at a repeat sign is completed by its other half)
  is padded with silence to the bar's end (both counted; see :func:`bar_grid`).
* **Tempo and meter.** Metronome marks (music21 also reads an "Allegro" as a number) become
  tempos, or :data:`DEFAULT_BPM` when there is none; every time signature is kept.
  Dynamics (pp … ff, sf) set velocities, mf (70) before the first one.

Why music21 and not partitura: both read compressed MusicXML, at similar speed (one large
quartet, Brahms op. 67: music21 6–11 s, partitura 1.9 4.4 s, on a shared core), and the
conversion is cached by content, so parsing speed matters once per file. What decides is
the repeats. partitura's ``unfold_part_maximal`` raised RecursionError on that quartet's
score, and unfolded part by part gave 24,414 notes where the quartet plays 16,482 (each
movement expanded on its own); music21's ``Score.expandRepeats`` also ran across the
movements (27,340 notes, 2 of the 2½ minutes of the conversion) and expands each part on
its own. music21's :class:`~music21.repeat.Expander` is a public class that also takes a
stream we build, so :func:`play_order` runs it on a light skeleton of the measures, one
movement at a time, for one play order shared by all parts; it reads voltas and the
D.C./D.S./Coda/Fine marks. music21 also gives what the part roles need (lyrics, part and
instrument names, MIDI programs) and reads a tempo word ("Allegro") as a number.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import itertools
import math
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track

MUSICXML_SUFFIXES = (".mxl", ".musicxml", ".xml")
TICKS_PER_QUARTER = 480
#: Program of a vocal part (73: flute), a piano's (0) and a string quartet's.
VOICE_PROGRAM = 73
PIANO_PROGRAM = 0
VIOLIN_PROGRAM, VIOLA_PROGRAM, CELLO_PROGRAM, DOUBLE_BASS_PROGRAM = 40, 41, 42, 43
DEFAULT_BPM = 100.0
#: Velocity before a score's first dynamic mark (music21's mf: 0.55 × 127).
DEFAULT_VELOCITY = 70
#: An onset (or end) further from the grid than this share of a grid step is dropped. A
#: triplet lies 1/3 of a 32nd-note step off, a quintuplet 16th 0.2 or 0.4, a 64th 0.5.
SNAP_TOLERANCE = 0.35
#: Part of the cache key: bump when the conversion changes what it writes.
CONVERTER_VERSION = 1

_EPS = 1e-6

# Names are matched on the part's name, abbreviation and instrument name, lower case.
_PIANO = re.compile(r"\b(piano|pianoforte|fortepiano|klavier|clavier|pf|pno)\b")
_VIOLIN = re.compile(r"\b(violin|violino|violon|geige|vn|vl|vln)\b")
_VIOLA = re.compile(r"\b(viola|bratsche|vla|va)\b")
_CELLO = re.compile(r"\b(violoncello|violoncelle|cello|vc|vlc)\b")
_DOUBLE_BASS = re.compile(r"\b(contrabass|double bass|kontrabass|contrebasse|cb)\b")
_VOCAL = re.compile(
    r"\b(voice|voix|voce|vocal|vocals|singstimme|gesang|stimme|singer|canto|chant|"
    r"soprano|sopran|mezzo|mezzosoprano|alto|contralto|tenor|tenore|baritone|bariton|"
    r"basso|bass voice)\b"
)
# An instrument named like this is never a voice ("Alto Saxophone", "Tenor Horn").
_NOT_VOCAL = re.compile(r"sax|horn|trombone|flute|recorder|clarinet|oboe|viol|drum|tuba")
# A part that doubles others rather than sounds with them: an easier alternative (ossia) or
# a piano reduction of the voices "for practice only".
_DOUBLING = re.compile(r"\bossia\b|practice|rehearsal|reduction")


class MusicXMLError(ValueError):
    """A file that cannot be converted; the message is the short reason."""


@dataclass
class Conversion:
    """A converted score and what the conversion dropped or changed on the way."""

    score: Score
    counts: dict[str, int] = field(default_factory=dict)
    composer: str | None = None
    parts: list[tuple[str, int]] = field(default_factory=list)  # (name, program) per track


def is_musicxml(path: str | Path) -> bool:
    return str(path).lower().endswith(MUSICXML_SUFFIXES)


def _names(part) -> tuple[str, str]:
    """What the score calls a part, and what else names it: its abbreviation and its
    instrument (the playback sound, often left at a default); lower case."""
    inst = part.getInstrument(returnDefault=False)
    other = [part.partAbbreviation]
    if inst is not None:
        other += [inst.partName, inst.instrumentName, inst.instrumentAbbreviation]

    def join(names: list) -> str:
        return " ".join(str(n) for n in names if n).lower().replace(".", " ")

    return join([part.partName]), join(other)


def _role_by_name(names: str) -> tuple[int, str] | None:
    for pattern, program, role in (
        (_PIANO, PIANO_PROGRAM, "piano"),
        (_CELLO, CELLO_PROGRAM, "cello"),
        (_VIOLA, VIOLA_PROGRAM, "viola"),
        (_VIOLIN, VIOLIN_PROGRAM, "violin"),
        (_DOUBLE_BASS, DOUBLE_BASS_PROGRAM, "double bass"),
    ):
        if pattern.search(names):
            return program, role
    if _VOCAL.search(names) and not _NOT_VOCAL.search(names):
        return VOICE_PROGRAM, "voice"
    return None


def part_program(staves: list) -> tuple[int, str]:
    """The program for one part (all its staves) and the role that chose it.

    The part's name decides first (a "Voice" whose abbreviation and playback sound say
    cello is a voice); then lyrics on a quarter of its notes (a sung line the engraver
    played back as an "Oboe" or "Clarinet in C", or named "Solo" with a viola's sound, as
    in some OpenScore songs); then its abbreviation and instrument names; then music21's
    instrument class and MIDI program; else piano."""
    from music21 import instrument

    written, sound = _names(staves[0])
    role = _role_by_name(written)
    if role is not None:
        return role
    notes = [n for s in staves for n in s.recurse().notes]
    if sum(1 for n in notes if n.lyrics) * 4 >= len(notes) > 0:
        return VOICE_PROGRAM, "voice"
    role = _role_by_name(sound)
    if role is not None:
        return role
    inst = staves[0].getInstrument(returnDefault=False)
    if isinstance(inst, instrument.Vocalist):
        return VOICE_PROGRAM, "voice"
    if inst is not None and inst.midiProgram is not None:
        return int(inst.midiProgram), "instrument"
    return PIANO_PROGRAM, "default"


def _repeat_marks(measure) -> list:
    from music21 import bar, repeat

    marks = [b for b in (measure.leftBarline, measure.rightBarline) if isinstance(b, bar.Repeat)]
    return marks + list(measure.getElementsByClass(repeat.RepeatExpression))


_DA_CAPO = re.compile(r"\bd\.\s*c\.|\bda\s+capo\b", re.IGNORECASE)
_DAL_SEGNO = re.compile(r"\bd\.\s*s\.|\bdal\s+segno\b", re.IGNORECASE)
_AL_CODA = re.compile(r"\bal\s+coda\b", re.IGNORECASE)


def _jump_words(measure) -> list[tuple[float, str]]:
    """D.C. and D.S. written as words music21 did not read as a repeat mark
    ("M.D.C. al Fine", "Menuetto D.C."): (offset, text)."""
    from music21 import expressions

    found = []
    for el in measure.getElementsByClass(expressions.TextExpression):
        text = str(el.content or "")
        if _DA_CAPO.search(text) or _DAL_SEGNO.search(text):
            found.append((float(measure.elementOffset(el)), text))
    return found


def _movement_marks(sources: list[list], movement: range) -> dict[int, list[tuple[float, type]]]:
    """Repeat marks of one movement, all parts together: (offset, class) by measure index.

    D.C./D.S. written as words become their command; a D.C. or D.S. in a movement with a
    Fine goes to the Fine ("Menuetto D.C."); a Fine, Coda or Segno that no command jumps to
    is dropped (a movement's last bar marked Fine). The Expander refuses all of these as
    written."""
    from music21 import repeat

    marks: dict[int, list[tuple[float, type]]] = {}
    for i in movement:
        for ms in sources:
            src = ms[i]
            for el in src.getElementsByClass(repeat.RepeatExpression):
                mark = (float(src.elementOffset(el)), type(el))
                if mark not in marks.get(i, []):
                    marks.setdefault(i, []).append(mark)
    kinds: set[type] = {kind for found in marks.values() for _, kind in found}
    if not any(issubclass(k, repeat.RepeatExpressionCommand) for k in kinds):
        for i in movement:
            for offset, text in _jump_words(sources[0][i])[:1]:
                capo = bool(_DA_CAPO.search(text))
                command: type
                if _AL_CODA.search(text):
                    command = repeat.DaCapoAlCoda if capo else repeat.DalSegnoAlCoda
                else:
                    command = repeat.DaCapo if capo else repeat.DalSegno
                marks.setdefault(i, []).append((offset, command))
    to_fine: dict[type, type] = {}
    if any(kind is repeat.Fine for found in marks.values() for _, kind in found):
        to_fine = {repeat.DaCapo: repeat.DaCapoAlFine, repeat.DalSegno: repeat.DalSegnoAlFine}
    kinds = {to_fine.get(kind, kind) for found in marks.values() for _, kind in found}
    jumps_to: dict[type, set[type]] = {
        repeat.Fine: {repeat.DaCapoAlFine, repeat.DalSegnoAlFine},
        repeat.Coda: {repeat.DaCapoAlCoda, repeat.DalSegnoAlCoda},
        repeat.Segno: {repeat.DalSegno, repeat.DalSegnoAlFine, repeat.DalSegnoAlCoda},
    }
    cleaned: dict[int, list[tuple[float, type]]] = {}
    for i, found in marks.items():
        for offset, written in found:
            kind = to_fine.get(written, written)
            if kind not in jumps_to or jumps_to[kind] & kinds:
                cleaned.setdefault(i, []).append((offset, kind))
    return cleaned


def _drop_unclosed_starts(measures: list) -> None:
    """A start-repeat sign that no end-repeat closes (the next sign is another start, or
    there is none) is a missing end in the engraving: play that part once."""
    from music21 import bar

    open_start = None
    for m in measures:
        left, right = m.leftBarline, m.rightBarline
        if isinstance(left, bar.Repeat) and left.direction == "start":
            if open_start is not None:
                open_start.leftBarline = None
            open_start = m
        if isinstance(left, bar.Repeat) and left.direction == "end":
            open_start = None
        if isinstance(right, bar.Repeat):
            open_start = None
    if open_start is not None:
        open_start.leftBarline = None


def _ends_section(measure) -> bool:
    from music21 import bar

    right = measure.rightBarline
    return (
        right is not None
        and not isinstance(right, bar.Repeat)
        and right.type in ("final", "light-heavy")
    )


def movements(measures: list) -> list[range]:
    """Measure ranges of the movements in one file: a new movement starts where the
    measure numbers start again at 0 or 1 (a quartet's movements, whether the one before
    ends on a final bar line or a repeat sign), not at a final bar line inside a movement
    (a minuet's, before its trio and D.C.)."""
    bounds = [0]
    for i in range(1, len(measures)):
        if measures[i].number <= 1 < measures[i - 1].number:
            bounds.append(i)
    bounds.append(len(measures))
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


def play_order(parts: list, counts: dict[str, int] | None = None) -> list[int]:
    """Indices of the measures in the order they are played: repeats, voltas, D.C., D.S.,
    Coda and Fine, expanded by music21's repeat Expander one movement at a time (a D.C.
    goes back to its movement's start). A movement whose repeats the Expander refuses is
    taken as written (counted in ``counts``).

    The Expander runs on a skeleton of the measures that carries only the repeat marks of
    all parts, each measure one rest long: one play order for every part, and no copies of
    the notes. ``Score.expandRepeats`` took 2 of the 2½ minutes of a large quartet, and
    expands each part on its own: a D.C. written in the top staff only gave a song's voice
    73 bars and its piano 66."""
    from music21 import bar, note, repeat, spanner, stream

    counts = {} if counts is None else counts
    measure_lists = [list(p.getElementsByClass(stream.Measure)) for p in parts]
    n = len(measure_lists[0])
    # Parts that agree with the first on the measures lend it their repeat marks.
    agreeing = [(p, ms) for p, ms in zip(parts, measure_lists, strict=True) if len(ms) == n]
    sources = [ms for _, ms in agreeing]
    brackets: dict[tuple[int, ...], str] = {}
    for part, ms in agreeing:
        index = {id(m): i for i, m in enumerate(ms)}
        for rb in part.recurse().getElementsByClass(spanner.RepeatBracket):
            members = tuple(index[id(m)] for m in rb.getSpannedElements() if id(m) in index)
            if members:
                brackets.setdefault(members, rb.number)
    order: list[int] = []
    for movement in movements(measure_lists[0]):
        has_marks = any(_repeat_marks(ms[i]) for ms in sources for i in movement) or any(
            _jump_words(ms[i]) for ms in sources for i in movement
        )
        inside = {k: v for k, v in brackets.items() if k[0] in movement and k[-1] in movement}
        if not has_marks and not inside:
            order.extend(movement)
            continue
        marks = _movement_marks(sources, movement)
        skeleton = stream.Part()
        skeletons = {}
        for i in movement:
            m = stream.Measure(number=i + 1)
            m.ostinato_index = i  # type: ignore[attr-defined]  # kept by the Expander's copies
            for ms in sources:
                src = ms[i]
                if isinstance(src.leftBarline, bar.Repeat) and m.leftBarline is None:
                    left = src.leftBarline
                    m.leftBarline = bar.Repeat(direction=left.direction, times=left.times)
                if isinstance(src.rightBarline, bar.Repeat) and m.rightBarline is None:
                    m.rightBarline = bar.Repeat(direction="end", times=src.rightBarline.times)
            for offset, kind in marks.get(i, ()):
                m.insert(offset, kind())
            m.insert(0, note.Rest(quarterLength=1))
            skeleton.append(m)
            skeletons[i] = m
        _drop_unclosed_starts([skeletons[i] for i in movement])
        for members, number in inside.items():
            rb = spanner.RepeatBracket([skeletons[i] for i in members], number=number)
            skeleton.insert(0, rb)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expanded = repeat.Expander(skeleton).process()
            order.extend(int(m.ostinato_index) for m in expanded.getElementsByClass(stream.Measure))
            counts["repeats expanded"] = 1
        except Exception:  # ExpanderException and others on badly formed repeats
            order.extend(movement)
            counts["repeats as written (expansion failed)"] = 1
    return order


def bar_grid(
    durations: list[float],
    bar_lengths: list[float],
    section_ends: list[bool],
    counts: dict[str, int],
    tolerance: float = 1 / 16,
) -> tuple[list[float], list[float]]:
    """Start (quarters) of each played measure such that bars fall on bar lines, and the
    bar line before each (where its time signature goes).

    The tokenizer counts bars from tick 0 by the time signature, so every played measure
    must start on a bar line or complete the bar begun by the one before (a bar split at a
    repeat sign). A short measure that the next one does not complete is a pickup, padded
    on the left to a full bar, unless it ends a section (final bar line, last measure),
    where it is padded on the right; an overfull measure is padded to the next bar line.
    Durations within ``tolerance`` (quarters) of a bar count as a full bar."""

    def count(what: str) -> None:
        counts[what] = counts.get(what, 0) + 1

    starts: list[float] = []
    bar_lines: list[float] = []
    time = 0.0
    phase = 0.0  # quarters into the current bar
    n = len(durations)
    for i in range(n):
        dur, bar_len = durations[i], bar_lengths[i]
        if phase > tolerance and (
            bar_len != bar_lengths[i - 1] or phase + dur > bar_len + tolerance
        ):
            time += bar_lengths[i - 1] - phase  # the bar begun before is not completed
            phase = 0.0
            count("short bars padded")
        if phase <= tolerance and dur < bar_len - tolerance:
            completed = (
                i + 1 < n
                and bar_lengths[i + 1] == bar_len
                and dur + durations[i + 1] <= bar_len + tolerance
                and not section_ends[i]
            )
            if not completed and not section_ends[i]:
                bar_lines.append(time)
                time += bar_len - dur  # a pickup: it leads into the next bar line
                count("pickup bars padded")
                starts.append(time)
                time += dur
                continue
        bar_lines.append(time - phase)
        starts.append(time)
        time += dur
        phase += dur
        if phase > bar_len + tolerance:  # overfull: go on at the next bar line
            time += math.ceil(phase / bar_len - tolerance / bar_len) * bar_len - phase
            phase = 0.0
            count("long bars padded")
        elif phase >= bar_len - tolerance:
            time += bar_len - phase
            phase = 0.0
    return starts, bar_lines


def _snap(q: float, grid: int) -> float | None:
    """``q`` (quarters) on the grid of ``grid`` steps per quarter, or None if too far off."""
    steps = q * grid
    nearest = round(steps)
    if abs(steps - nearest) > SNAP_TOLERANCE + _EPS:
        return None
    return nearest / grid


def _velocity_lookup(flat_staves: list):
    from music21 import dynamics

    marks = sorted(
        (float(d.offset), round(float(d.volumeScalar) * 127))
        for flat in flat_staves
        for d in flat.getElementsByClass(dynamics.Dynamic)
        if d.volumeScalar is not None
    )
    times = [t for t, _ in marks]
    values = [v for _, v in marks]

    def velocity(t: float) -> int:
        i = bisect.bisect_right(times, t + _EPS) - 1
        return max(1, min(127, values[i])) if i >= 0 else DEFAULT_VELOCITY

    return velocity


class _Timeline:
    """Maps a time of one part as written to its times as played."""

    def __init__(self, measure_starts: list[float], order: list[int], played_starts: list[float]):
        self.starts = measure_starts
        self.occurrences: list[list[float]] = [[] for _ in measure_starts]
        for j, start in zip(order, played_starts, strict=True):
            self.occurrences[j].append(start)

    def played(self, t: float) -> list[float]:
        j = max(0, bisect.bisect_right(self.starts, t + _EPS) - 1)
        return [start + t - self.starts[j] for start in self.occurrences[j]]


def _count(counts: dict[str, int], what: str, n: int = 1) -> None:
    counts[what] = counts.get(what, 0) + n


def _part_notes(
    staves: list, timelines: list[_Timeline], grid: int, counts: dict[str, int]
) -> np.ndarray:
    """(N, 4) int64 time, duration, pitch, velocity in ticks of one part, ties merged."""
    from music21 import harmony, note

    flats = [s.flatten() for s in staves]
    velocity = _velocity_lookup(flats)
    merged: list[tuple[float, float, int, int]] = []
    for flat, timeline in zip(flats, timelines, strict=True):
        events = []  # (played start, played end, pitch, tie, velocity)
        for el in flat.notes:
            if isinstance(el, harmony.Harmony):
                continue
            if el.duration.isGrace:
                _count(counts, "grace notes skipped")
                continue
            members = [n for n in getattr(el, "notes", (el,)) if isinstance(n, note.Note)]
            if not members:
                _count(counts, "unpitched notes skipped")
                continue
            written = float(el.offset)
            length = float(el.duration.quarterLength)
            vel = velocity(written)
            for start in timeline.played(written):
                for n in members:
                    tie = n.tie.type if n.tie is not None else None
                    events.append((start, start + length, int(n.pitch.midi), tie, vel))
        events.sort(key=lambda e: (e[0], e[2]))
        open_ties: dict[int, tuple[float, float, int]] = {}  # pitch → start, end, velocity
        for start, end, pitch, tie, vel in events:
            held = open_ties.get(pitch)
            if tie in ("stop", "continue") and held is not None and abs(held[1] - start) < 1e-3:
                open_ties[pitch] = (held[0], end, held[2])
                if tie == "stop":
                    first, _, velocity_at = open_ties.pop(pitch)
                    merged.append((first, end, pitch, velocity_at))
                continue
            if held is not None:  # a tie that never stopped
                del open_ties[pitch]
                merged.append((held[0], held[1], pitch, held[2]))
            if tie in ("start", "continue"):
                open_ties[pitch] = (start, end, vel)
            else:
                merged.append((start, end, pitch, vel))
        merged.extend((a, b, pitch, v) for pitch, (a, b, v) in open_ties.items())
    rows = []
    for start, end, pitch, vel in merged:
        on = _snap(start, grid)
        if on is None:
            _count(counts, "off-grid notes skipped")
            continue
        off = max(on + 1 / grid, round(end * grid) / grid)
        rows.append(
            (round(on * TICKS_PER_QUARTER), round((off - on) * TICKS_PER_QUARTER), pitch, vel)
        )
    if not rows:
        return np.zeros((0, 4), dtype=np.int64)
    arr = np.array(rows, dtype=np.int64)
    return arr[np.lexsort((arr[:, 3], arr[:, 1], arr[:, 2], arr[:, 0]))]  # time, pitch, …


def _parse(path: Path):
    try:
        from music21 import converter, stream
    except ImportError as exc:
        raise MusicXMLError("music21 not installed (pip install 'ostinato[train]')") from exc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # music21 warns on every overfull bar
        try:
            parsed = converter.parseFile(
                path, format="musicxml", forceSource=True, storePickle=False
            )
        except Exception as exc:
            raise MusicXMLError(f"unreadable MusicXML: {type(exc).__name__}") from exc
    score = parsed.scores[0] if isinstance(parsed, stream.Opus) and parsed.scores else parsed
    if not isinstance(score, stream.Score) or not score.parts:
        raise MusicXMLError("no parts in MusicXML")
    return score


def _composer(score) -> str | None:
    md = score.metadata
    name = md.composer if md is not None else None
    return str(name) if name else None


def convert_musicxml(path: str | Path, *, grid: int = 8) -> Conversion:
    """Convert one MusicXML file (``grid``: tokenizer positions per quarter note).

    Raises :class:`MusicXMLError` with a short reason for a file that cannot be read."""
    parsed = _parse(Path(path))
    from music21 import stream, tempo

    counts: dict[str, int] = {}
    parts = list(parsed.parts)
    measure_lists = [list(p.getElementsByClass(stream.Measure)) for p in parts]
    reference = measure_lists[0]
    if not reference:
        raise MusicXMLError("no measures in MusicXML")
    order = play_order(parts, counts)

    # Meter of every measure as written (a time signature holds until the next one).
    meters: list[tuple[int, int, float]] = []
    current = (4, 4, 4.0)
    for m in reference:
        ts = m.timeSignature
        if ts is not None:
            current = (ts.numerator, ts.denominator, float(ts.barDuration.quarterLength))
        meters.append(current)
    # A measure lasts until the next one starts (music21 shortens a bar overfull by a
    # rounding error); the last one by its notes.
    offsets = [float(m.getOffsetBySite(parts[0])) for m in reference]
    lengths = [b - a for a, b in itertools.pairwise(offsets)]
    lengths.append(float(reference[-1].duration.quarterLength))
    ends = [_ends_section(m) for m in reference]
    played_starts, bar_lines = bar_grid(
        [lengths[j] for j in order],
        [meters[j][2] for j in order],
        [ends[j] or k == len(order) - 1 for k, j in enumerate(order)],
        counts,
        tolerance=0.5 / grid,
    )

    def timeline(i: int) -> _Timeline:
        part, ms = (parts[i], measure_lists[i])
        if len(ms) != len(reference):
            part, ms = parts[0], reference
        return _Timeline([float(m.getOffsetBySite(part)) for m in ms], order, played_starts)

    # Staves of one part (a piano's two PartStaffs) share the MusicXML part id before "-Staff".
    groups: dict[str, list[int]] = {}
    for i, part in enumerate(parts):
        groups.setdefault(re.sub(r"-Staff\d+$", "", str(part.id)), []).append(i)

    score = Score(TICKS_PER_QUARTER)
    names: list[tuple[str, int]] = []
    for members in groups.values():
        staves = [parts[i] for i in members]
        if _DOUBLING.search(" ".join(_names(staves[0]))):
            _count(counts, "doubling parts skipped")
            continue
        program, _ = part_program(staves)
        notes = _part_notes(staves, [timeline(i) for i in members], grid, counts)
        if not len(notes):
            continue
        name = str(staves[0].partName or staves[0].id)
        track = Track(name, program, False)
        track.notes = Note.from_numpy(
            notes[:, 0].astype(np.int32),
            notes[:, 1].astype(np.int32),
            notes[:, 2].astype(np.int8),
            notes[:, 3].astype(np.int8),
            "tick",
        )
        score.tracks.append(track)
        names.append((name, program))
    counts["notes"] = sum(len(t.notes) for t in score.tracks)

    previous = None
    for j, start in zip(order, bar_lines, strict=True):
        if meters[j][:2] != previous:
            previous = meters[j][:2]
            tick = round(start * TICKS_PER_QUARTER)
            score.time_signatures.append(TimeSignature(tick, *previous))

    marks: dict[int, float] = {}
    ref_timeline = timeline(0)
    for part in parts:  # the top part's marks first; a lower staff's fill the gaps
        for mm in part.flatten().getElementsByClass(tempo.MetronomeMark):
            bpm = mm.getQuarterBPM()
            if bpm and 10 <= bpm <= 400:
                for start in ref_timeline.played(float(mm.offset)):
                    # A mark on the first (maybe padded pickup) measure holds from tick 0.
                    tick = round(max(0.0, start - played_starts[0]) * TICKS_PER_QUARTER)
                    marks.setdefault(tick if start > played_starts[0] else 0, float(bpm))
    if not marks:
        counts["default tempo"] = 1
    if 0 not in marks:
        marks[0] = DEFAULT_BPM
    last = None
    for tick in sorted(marks):
        if marks[tick] != last:
            score.tempos.append(Tempo(tick, qpm=marks[tick]))
            last = marks[tick]
    return Conversion(score=score, counts=counts, composer=_composer(parsed), parts=names)


class ConversionCache:
    """Converted scores by the content hash of their file: ``<sha256>.pkl``, a pickle of the
    symusic Score with the counts, composer and parts, or of the failure reason.

    A pickle, not a MIDI file: MIDI cannot hold two overlapping notes of one pitch on one
    track (a piano's hands in unison), and reads notes of one onset back in another order,
    so a build from a MIDI cache tokenized differently from a cold one. The folder's name
    holds the converter's, music21's and symusic's versions and the grid, so a change to
    any of them starts a fresh cache instead of reading stale conversions."""

    def __init__(self, root: str | Path, grid: int = 8) -> None:
        versions = []
        for package in ("music21", "symusic"):
            try:  # without importing it: a MIDI-only build never needs music21
                version = ".".join(importlib.metadata.version(package).split(".")[:2])
            except importlib.metadata.PackageNotFoundError:
                version = "none"
            versions.append(f"{package}_{version}")
        self.dir = Path(root) / f"v{CONVERTER_VERSION}-{'-'.join(versions)}-grid{grid}"

    def _path(self, sha256: str) -> Path:
        return self.dir / f"{sha256}.pkl"

    def load(self, sha256: str) -> Conversion | str | None:
        """The cached conversion, the cached failure reason, or None if not cached."""
        try:
            entry = pickle.loads(self._path(sha256).read_bytes())
            if "error" in entry:
                return str(entry["error"])
            return Conversion(
                entry["score"], dict(entry["counts"]), entry["composer"], list(entry["parts"])
            )
        except Exception:  # not cached, or a torn or foreign file: convert again
            return None

    def store(self, sha256: str, result: Conversion | str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if isinstance(result, str):
            entry: dict = {"error": result}
        else:
            entry = {
                "score": result.score,
                "counts": result.counts,
                "composer": result.composer,
                "parts": result.parts,
            }
        data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        _atomic_write(self._path(sha256), lambda p: Path(p).write_bytes(data))


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file and rename, so parallel builds never read a half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
