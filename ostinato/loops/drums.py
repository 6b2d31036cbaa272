"""Drum parts: a pattern per style on the 16th grid, or a real groove cut from the Groove
MIDI Dataset's ``beat`` files at its own tempo."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Score

KICK, RIM, SNARE, CLAP, CLOSED_HAT, OPEN_HAT, RIDE, CRASH = 36, 37, 38, 39, 42, 46, 51, 49
LOW_TOM, MID_TOM, HIGH_TOM, SHAKER = 45, 47, 50, 70

#: Per style: instrument → (16 steps of base velocity, 0 = silent).
PATTERNS: dict[str, dict[int, tuple[int, ...]]] = {
    "house": {
        KICK: (110, 0, 0, 0) * 4,
        CLAP: (0, 0, 0, 0, 100, 0, 0, 0) * 2,
        OPEN_HAT: (0, 0, 90, 0) * 4,
        CLOSED_HAT: (60, 0, 0, 50) * 4,
    },
    "techno": {
        KICK: (115, 0, 0, 0) * 4,
        RIM: (0, 0, 0, 0, 0, 0, 0, 70, 0, 0, 0, 0, 0, 0, 70, 0),
        CLOSED_HAT: (70, 45, 90, 45) * 4,
        CLAP: (0, 0, 0, 0, 95, 0, 0, 0) * 2,
    },
    "hiphop": {
        KICK: (110, 0, 0, 0, 0, 0, 0, 80, 0, 0, 100, 0, 0, 0, 0, 0),
        SNARE: (0, 0, 0, 0, 105, 0, 0, 0) * 2,
        CLOSED_HAT: (80, 0, 60, 0) * 4,
    },
    "dnb": {
        KICK: (115, 0, 0, 0, 0, 0, 0, 0, 0, 0, 105, 0, 0, 0, 0, 0),
        SNARE: (0, 0, 0, 0, 110, 0, 0, 0, 0, 0, 0, 0, 110, 0, 0, 0),
        CLOSED_HAT: (75, 0, 60, 0) * 4,
        RIDE: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    },
    "pop": {
        KICK: (110, 0, 0, 0, 0, 0, 0, 0, 100, 0, 80, 0, 0, 0, 0, 0),
        SNARE: (0, 0, 0, 0, 105, 0, 0, 0) * 2,
        CLOSED_HAT: (80, 0, 65, 0) * 4,
    },
    "lofi": {
        KICK: (95, 0, 0, 0, 0, 0, 0, 0, 0, 0, 85, 0, 0, 0, 0, 0),
        RIM: (0, 0, 0, 0, 85, 0, 0, 0) * 2,
        CLOSED_HAT: (60, 0, 45, 0) * 4,
        SHAKER: (0, 40, 0, 40) * 4,
    },
}

#: Groove MIDI Dataset notes of its electronic kit that GM places elsewhere.
GMD_TO_GM = {22: CLOSED_HAT, 26: OPEN_HAT, 58: LOW_TOM}


@dataclass(frozen=True)
class DrumHit:
    tick: int
    pitch: int
    velocity: int


def pattern_drums(style: str, bars: int, tpq: int, rng: np.random.Generator) -> list[DrumHit]:
    """The style's pattern with ghost notes, dropped hits and a fill in the last bar."""
    step = tpq // 4
    hits: list[DrumHit] = []
    for bar in range(bars):
        last = bar == bars - 1
        for pitch, velocities in PATTERNS[style].items():
            for i, base in enumerate(velocities):
                if last and i >= 12 and pitch != KICK:
                    continue  # the fill replaces the last beat
                if base == 0:
                    if pitch in (CLOSED_HAT, SNARE, RIM) and rng.random() < 0.04:
                        base = 35  # ghost note
                    else:
                        continue
                elif pitch != KICK and rng.random() < 0.05:
                    continue
                velocity = int(np.clip(base + rng.normal(0, 6), 1, 127))
                hits.append(DrumHit((bar * 16 + i) * step, pitch, velocity))
        if last:
            toms = (SNARE, HIGH_TOM, MID_TOM, LOW_TOM)
            for i in range(12, 16):
                if rng.random() < 0.8:
                    pitch = toms[int(rng.integers(len(toms)))]
                    hits.append(DrumHit((bar * 16 + i) * step, pitch, int(rng.integers(80, 115))))
    if rng.random() < 0.3:
        hits.append(DrumHit(0, CRASH, 100))
    return hits


@dataclass(frozen=True)
class Groove:
    path: Path
    style: str
    bpm: int


def read_gmd_index(gmd_dir: Path) -> list[Groove]:
    """The 4/4 ``beat`` files listed in the Groove MIDI Dataset's info.csv."""
    info = gmd_dir / "info.csv"
    if not info.is_file():
        raise FileNotFoundError(f"{info} missing: is {gmd_dir} the Groove MIDI Dataset folder?")
    grooves = []
    with info.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["beat_type"] == "beat" and row["time_signature"] == "4-4":
                path = gmd_dir / row["midi_filename"]
                if path.is_file():
                    grooves.append(Groove(path, row["style"].split("/")[0], int(row["bpm"])))
    return sorted(grooves, key=lambda g: g.path.as_posix())


def groove_drums(
    groove: Groove, bars: int, tpq: int, rng: np.random.Generator
) -> list[DrumHit] | None:
    """``bars`` bars of a real groove, starting on one of its bar lines; None if too short."""
    score = Score(str(groove.path)).resample(tpq, min_dur=1)
    notes = [n for track in score.tracks if track.is_drum for n in track.notes]
    if not notes:
        return None
    bar_ticks = 4 * tpq
    total_bars = (max(n.time for n in notes) // bar_ticks) + 1
    if total_bars < bars + 1:
        return None
    first = int(rng.integers(0, total_bars - bars))  # skip nothing, but never run off the end
    start, end = first * bar_ticks, (first + bars) * bar_ticks
    hits = [
        DrumHit(n.time - start, GMD_TO_GM.get(n.pitch, n.pitch), n.velocity)
        for n in notes
        if start <= n.time < end
    ]
    return hits or None
