"""A held-out loop set for ``ostinato eval --mode loop``: ``ostinato data loops --held-out OUT``.

Loops the corpus generator (:mod:`ostinato.loops.generate`, ``ostinato data synth``) never
makes, to measure how the model varies music it was not trained on:

* **progressions**: 4-chord progressions of free-midi-chords (MIT licence, copyright 2019
  Ludovic Drolez; ``shared/data/free-midi-chords/progressions.json``, commit baf0896694de),
  copied below as a fixed list so that nothing outside the package is read at run time, and
  2-chord vamps of our own. Each one is kept only where no rotation of its chords, in any
  key, is four consecutive chords of a loop the generator can make (every progression of
  :data:`ostinato.loops.theory.PROGRESSIONS`, and every 8-bar pair of them): see
  :func:`corpus_chord_windows`. Chords take their quality from the numeral's case (``V`` in
  minor is major) and their root from the mode's scale; ``7``, ``sus2``, ``sus4``, ``dim``
  are honoured;
* **instruments**: GM programs no style of :mod:`ostinato.loops.styles` uses, and drum
  patterns of their own (one drop, jazz ride, afrobeat, bossa, breakbeat) with kit pieces
  the generator's patterns never play (cowbell, tambourine, congas, claves, cabasa, ride
  bell, pedal hat);
* **tempos**: 56–68 and 180–196 BPM, outside every style's range (70–176 in all). Tempo is
  not a token, so this changes the files, not what the model sees.

Each file is 16 bars: a 2- or 4-bar loop (one chord per bar) played 8 or 4 times, every pass
with its own human variation (timing and velocity jitter, drum hits dropped or ghosted, a
few pitched notes left out) and a drum fill on the last bar. ``heldout.csv`` lists each
file's key, progression, loop length, tempo and instruments.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Score, Tempo, TimeSignature
from tqdm import tqdm

from ostinato.loops import bass, chords, lead
from ostinato.loops.generate import BAR_TICKS, TPQ, _track, humanize
from ostinato.loops.theory import MODES, PROGRESSIONS, Key
from ostinato.model.grammar import default_pitch_range

BARS = 16
STREAM = 0x4E1D  # third entry of every held-out loop's RNG seed: apart from the corpus' streams

#: (mode, numerals, source): one chord per bar.
HELD_OUT_PROGRESSIONS: tuple[tuple[str, str, str], ...] = (
    ("major", "I iii IV vi", "free-midi-chords"),
    ("major", "I IV vi V", "free-midi-chords"),
    ("major", "I V IV vi", "free-midi-chords"),
    ("major", "I vi ii IV", "free-midi-chords"),
    ("major", "I vi IV iii", "free-midi-chords"),
    ("major", "ii IV vi V", "free-midi-chords"),
    ("major", "IV I ii vi", "free-midi-chords"),
    ("major", "IV vi iii I", "free-midi-chords"),
    ("major", "I iii vi Isus4", "free-midi-chords"),
    ("minor", "i III iv VI", "free-midi-chords"),
    ("minor", "i III VII iv", "free-midi-chords"),
    ("minor", "i iv III VI", "free-midi-chords"),
    ("minor", "i iv VII i", "free-midi-chords"),
    ("minor", "i v iv VII", "free-midi-chords"),
    ("minor", "i VI VII v", "free-midi-chords"),
    ("minor", "i VII v VI", "free-midi-chords"),
    ("minor", "i VII VI iv", "free-midi-chords"),
    ("minor", "iv v VI VII", "free-midi-chords"),
    ("minor", "VI iv i v", "free-midi-chords"),
    ("minor", "VII iv VII i", "free-midi-chords"),
    ("major", "I ii", "ostinato"),
    ("major", "I vi", "ostinato"),
    ("major", "IV V", "ostinato"),
    ("minor", "i v", "ostinato"),
    ("minor", "iv v", "ostinato"),
)

#: GM programs per part, none of them in any style (see the disjointness test).
HELD_OUT_PROGRAMS: dict[str, tuple[int, ...]] = {
    "bass": (35, 36, 37, 43),  # fretless, slap 1, slap 2, contrabass
    "chords": (1, 16, 19, 26, 27, 48, 61),  # bright piano, organs, jazz/clean guitar, strings,
    # brass section
    "lead": (22, 56, 65, 71, 82, 104),  # harmonica, trumpet, alto sax, clarinet, calliope, sitar
}
HELD_OUT_TEMPOS: tuple[tuple[int, int], ...] = ((56, 68), (180, 196))

KICK, SIDE_STICK, SNARE, CLOSED_HAT, PEDAL_HAT, RIDE = 36, 37, 38, 42, 44, 51
RIDE_BELL, TAMBOURINE, COWBELL, HIGH_CONGA, LOW_CONGA, CABASA, CLAVES = 53, 54, 56, 62, 64, 69, 75
FILL_TOMS = (50, 47, 45, 41)  # high, mid, low, low floor tom

#: Per pattern: swing, and instrument → 16 steps of base velocity (0 = silent).
HELD_OUT_DRUMS: dict[str, tuple[float, dict[int, tuple[int, ...]]]] = {
    "one_drop": (0.15, {
        KICK: (0, 0, 0, 0, 0, 0, 0, 0, 110, 0, 0, 0, 0, 0, 0, 0),
        SIDE_STICK: (0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0),
        CLOSED_HAT: (0, 0, 80, 0) * 4,
        CABASA: (55, 0, 0, 0) * 4,
    }),
    "jazz_ride": (0.0, {
        KICK: (90, 0, 0, 0, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0),
        RIDE: (95, 0, 0, 0, 80, 0, 0, 60, 90, 0, 0, 0, 80, 0, 0, 60),
        PEDAL_HAT: (0, 0, 0, 0, 70, 0, 0, 0) * 2,
        SNARE: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 45, 0, 0, 0, 0),
    }),
    "afrobeat": (0.05, {
        KICK: (110, 0, 0, 0, 0, 0, 95, 0, 0, 0, 100, 0, 0, 0, 0, 0),
        SNARE: (0, 0, 0, 0, 100, 0, 0, 40, 0, 0, 0, 0, 100, 0, 40, 0),
        COWBELL: (90, 0, 70, 0, 0, 0, 80, 0, 90, 0, 0, 0, 80, 0, 70, 0),
        HIGH_CONGA: (0, 0, 0, 70, 0, 0, 0, 0, 0, 0, 0, 70, 0, 0, 0, 0),
        LOW_CONGA: (0, 0, 0, 0, 0, 0, 0, 75, 0, 0, 0, 0, 0, 0, 0, 75),
    }),
    "bossa": (0.0, {
        KICK: (100, 0, 0, 70) * 4,
        SIDE_STICK: (90, 0, 0, 90, 0, 0, 90, 0, 0, 0, 90, 0, 90, 0, 0, 0),
        CABASA: (60, 40, 50, 40) * 4,
    }),
    "breakbeat": (0.12, {
        KICK: (110, 0, 90, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 0, 0),
        SNARE: (0, 0, 0, 0, 105, 0, 0, 40, 0, 40, 0, 0, 105, 0, 0, 0),
        RIDE_BELL: (85, 0, 60, 0) * 4,
        TAMBOURINE: (0, 0, 0, 0, 70, 0, 0, 0) * 2,
        CLAVES: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 65),
    }),
}  # fmt: skip

# -- progressions --------------------------------------------------------------------------
_NUMERAL = re.compile(r"^(VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(.*)$")
_DEGREES = {"i": 0, "ii": 1, "iii": 2, "iv": 3, "v": 4, "vi": 5, "vii": 6}
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
           "sus2": (0, 2, 7), "sus4": (0, 5, 7)}  # fmt: skip


@dataclass(frozen=True)
class Chord:
    degree: int  # scale degree of the root (0 = tonic)
    root: int  # semitones above the tonic
    quality: str  # a key of _TRIADS
    seventh: bool = False  # a minor seventh on top

    def pitch_classes(self, tonic: int) -> tuple[int, ...]:
        intervals = _TRIADS[self.quality] + ((10,) if self.seventh else ())
        return tuple((tonic + self.root + i) % 12 for i in intervals)


def parse_chord(numeral: str, mode: str) -> Chord:
    """A free-midi-chords numeral (``vi``, ``V7``, ``Isus4``, ``vdim``) in ``mode``."""
    match = _NUMERAL.match(numeral)
    if match is None:
        raise ValueError(f"not a chord numeral: {numeral!r}")
    roman, suffix = match.groups()
    degree = _DEGREES[roman.lower()]
    quality = "maj" if roman.isupper() else "min"
    for name in ("dim", "sus2", "sus4"):
        if name in suffix:
            quality = name
    return Chord(degree, MODES[mode][degree], quality, seventh=suffix.endswith("7"))


def progression_chords(mode: str, numerals: str) -> list[Chord]:
    return [parse_chord(n, mode) for n in numerals.split()]


def _triad_quality(pitch_classes: tuple[int, ...]) -> str:
    root = pitch_classes[0]
    intervals = tuple((pc - root) % 12 for pc in pitch_classes[:3])
    return next(q for q, triad in _TRIADS.items() if triad == intervals)


ChordWindow = tuple[tuple[int, str], ...]


def chord_windows(cycle: list[tuple[int, str]], length: int = 4) -> set[ChordWindow]:
    """Every ``length`` consecutive chords of a loop (it wraps around), as (root relative to
    the window's first root, triad quality): the same in any key."""
    n = len(cycle)
    windows = set()
    for start in range(n):
        chords_ = [cycle[(start + j) % n] for j in range(length)]
        first = chords_[0][0]
        windows.add(tuple(((root - first) % 12, quality) for root, quality in chords_))
    return windows


def corpus_chord_windows() -> set[ChordWindow]:
    """Windows of 4 chords of every loop the corpus generator can make: each progression of
    a mode (4 bars) and each pair of them (8 bars), as diatonic triads."""
    windows: set[ChordWindow] = set()
    for mode, progressions in PROGRESSIONS.items():
        key = Key(0, mode)
        cycles = [
            [(key.degree_pc(d), _triad_quality(key.chord(d, 3))) for d in p] for p in progressions
        ]
        for a in cycles:
            for b in cycles:
                windows |= chord_windows(a + b)
    return windows


def held_out_windows(mode: str, numerals: str) -> set[ChordWindow]:
    cycle = [(c.root, c.quality) for c in progression_chords(mode, numerals)]
    return chord_windows(cycle * (4 // len(cycle)) if len(cycle) < 4 else cycle)


# -- the loops -----------------------------------------------------------------------------
@dataclass(frozen=True)
class HeldOutLoop:
    score: Score
    key: Key
    numerals: str
    source: str
    loop_bars: int
    bpm: int
    drums: str
    programs: dict[str, int]


def _drum_bar(
    pattern: dict[int, tuple[int, ...]], bar: int, fill: bool, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    step = TPQ // 4
    notes = []
    for pitch, velocities in pattern.items():
        for i, base in enumerate(velocities):
            if fill and i >= 12 and pitch != KICK:
                continue
            if base == 0:
                if pitch in (CLOSED_HAT, SNARE, SIDE_STICK) and rng.random() < 0.04:
                    base = 35  # ghost note
                else:
                    continue
            elif pitch != KICK and rng.random() < 0.05:
                continue
            velocity = int(np.clip(base + rng.normal(0, 6), 1, 127))
            notes.append(((bar * 16 + i) * step, TPQ // 8, pitch, velocity))
    if fill:
        for i in range(12, 16):
            if rng.random() < 0.85:
                pitch = FILL_TOMS[int(rng.integers(len(FILL_TOMS)))]
                notes.append(((bar * 16 + i) * step, TPQ // 8, pitch, int(rng.integers(80, 115))))
    return notes


def _chord_notes(
    voicings: list[list[int]], rhythm: str, velocity: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """One loop's chord part: as :func:`chords.chord_part`, from voiced chords."""
    return chords.play_voicings(voicings, rhythm, TPQ, velocity, rng)


def _in_range(
    notes: list[tuple[int, int, int, int]], program: int
) -> list[tuple[int, int, int, int]]:
    """Notes moved by octaves into the range the grammar lets ``program`` play (a trumpet
    lead stops at E6)."""
    low, high = default_pitch_range(program)
    out = []
    for tick, length, pitch, velocity in notes:
        while pitch > high:
            pitch -= 12
        while pitch < low:
            pitch += 12
        out.append((tick, length, pitch, velocity))
    return out


def _passes(
    notes: list[tuple[int, int, int, int]], loop_bars: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """The loop's notes played over the 16 bars, each pass with a few notes left out and
    its own velocities."""
    out = []
    for p in range(BARS // loop_bars):
        offset = p * loop_bars * BAR_TICKS
        for tick, length, pitch, velocity in notes:
            if rng.random() < 0.03:
                continue
            vel = int(np.clip(velocity + rng.normal(0, 4), 1, 127))
            out.append((offset + tick, length, pitch, vel))
    return out


def make_held_out_loop(seed: int, index: int) -> HeldOutLoop:
    rng = np.random.default_rng([seed, index, STREAM])

    def pick(options):
        return options[int(rng.integers(len(options)))]

    loop_bars = 2 if rng.random() < 0.3 else 4
    mode, numerals, source = pick(
        [p for p in HELD_OUT_PROGRESSIONS if len(p[1].split()) == loop_bars]
    )
    progression = progression_chords(mode, numerals)
    key = Key(int(rng.integers(12)), mode)
    low, high = pick(HELD_OUT_TEMPOS)
    bpm = int(rng.integers(low, high + 1))
    drum_name = pick(sorted(HELD_OUT_DRUMS))
    swing, pattern = HELD_OUT_DRUMS[drum_name]
    velocity = int(rng.integers(78, 97))
    total_ticks = BARS * BAR_TICKS

    score = Score(TPQ)
    score.tempos.append(Tempo(0, float(bpm)))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    drum_notes = [n for bar in range(BARS) for n in _drum_bar(pattern, bar, bar == BARS - 1, rng)]
    score.tracks.append(_track("drums", 0, humanize(drum_notes, total_ticks, swing, rng), True))

    programs = {part: pick(options) for part, options in HELD_OUT_PROGRAMS.items()}
    roots = [(key.tonic + c.root) % 12 for c in progression]
    parts = {"bass": bass.bass_line(key, roots, pick(sorted(bass.PATTERNS)), TPQ, velocity, rng)}
    if rng.random() < 0.9:
        voicings, previous = [], None
        for c in progression:
            previous = chords.voice(c.pitch_classes(key.tonic), previous)
            voicings.append(previous)
        parts["chords"] = _chord_notes(voicings, pick(sorted(chords.RHYTHMS)), velocity, rng)
    if rng.random() < 0.8:
        degrees = [c.degree for c in progression]
        density = float(rng.uniform(0.3, 0.55))
        parts["lead"] = lead.lead_line(key, degrees, density, TPQ, velocity, rng)
    for part, notes in parts.items():
        notes = _in_range(notes, programs[part])
        played = humanize(_passes(notes, loop_bars, rng), total_ticks, swing, rng)
        score.tracks.append(_track(part, programs[part], played))
    used = {part: programs[part] for part in parts}
    return HeldOutLoop(score, key, numerals, source, loop_bars, bpm, drum_name, used)


def write_held_out(out: str | Path, count: int, seed: int = 0, progress: bool = True) -> dict:
    """Write ``count`` held-out loops to ``out`` and ``out/heldout.csv``."""
    if count < 1:
        raise ValueError("count must be ≥ 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    lengths: list[int] = []
    for index in tqdm(range(count), desc="held-out loops", unit="loop", disable=not progress):
        loop = make_held_out_loop(seed, index)
        slug = loop.numerals.replace(" ", "-")
        name = f"{index:04d}_{loop.key.name}_{slug}_{loop.loop_bars}bar_{loop.bpm}bpm.mid"
        loop.score.dump_midi(str(out / name))
        programs = " ".join(f"{part}:{program}" for part, program in loop.programs.items())
        rows.append([name, loop.key.name, loop.numerals, loop.source, loop.loop_bars, loop.bpm,
                     loop.drums, programs])  # fmt: skip
        lengths.append(loop.loop_bars)
    with (out / "heldout.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "key", "progression", "source", "loop_bars", "bpm", "drums",
                         "programs"])  # fmt: skip
        writer.writerows(rows)
    bars = lengths
    return {"loops": count, "seed": seed, "bars": BARS, "out": str(out),
            "loop_bars": {str(b): bars.count(b) for b in sorted(set(bars))}}  # fmt: skip
