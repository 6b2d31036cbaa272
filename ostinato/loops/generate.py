"""Assemble loops: pick a style, key, progression and instruments, write the parts, add
human timing and velocity variation, and save bar-aligned 4- or 8-bar MIDI files.

Every loop draws from its own RNG seeded by (seed, index): the same seed gives the same
files, and loop N does not depend on how many loops are made.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track
from tqdm import tqdm

from ostinato.loops import bass, chords, drums, lead
from ostinato.loops.styles import STYLES, Style
from ostinato.loops.theory import MODES, PROGRESSIONS, Key

TPQ = 480
BAR_TICKS = 4 * TPQ


@dataclass(frozen=True)
class Loop:
    score: Score
    style: str
    key: Key
    bpm: int
    bars: int
    drum_source: str  # "pattern" or the Groove MIDI file it was cut from


def humanize(
    notes: list[tuple[int, int, int, int]],
    loop_ticks: int,
    swing: float,
    rng: np.random.Generator,
    timing_sd_ticks: float = TPQ / 120,
) -> list[tuple[int, int, int, int]]:
    """Swing the off 16ths, jitter onsets a little; every note stays inside the loop."""
    step = TPQ // 4
    out = []
    for tick, length, pitch, velocity in notes:
        if swing and (tick // step) % 2 == 1 and tick % step == 0:
            tick += round(swing * step)
        tick = int(np.clip(tick + round(rng.normal(0, timing_sd_ticks)), 0, loop_ticks - 1))
        length = max(1, min(length, loop_ticks - tick))
        out.append((tick, length, pitch, velocity))
    return out


def _track(name: str, program: int, notes, is_drum: bool = False) -> Track:
    track = Track(name=name, program=program, is_drum=is_drum)
    for tick, length, pitch, velocity in sorted(notes):
        track.notes.append(Note(tick, length, pitch, velocity))
    return track


def make_loop(
    seed: int,
    index: int,
    styles: tuple[str, ...] | None = None,
    grooves: list[drums.Groove] | None = None,
    groove_share: float = 0.5,
) -> Loop:
    rng = np.random.default_rng([seed, index])
    names = styles or tuple(STYLES)
    style: Style = STYLES[names[int(rng.integers(len(names)))]]
    mode = style.modes[int(rng.integers(len(style.modes)))]
    key = Key(int(rng.integers(12)), mode)
    progressions = PROGRESSIONS[mode]
    degrees = list(progressions[int(rng.integers(len(progressions)))])
    bars = 8 if rng.random() < 0.4 else 4
    if bars == 8:  # second half: the same progression, or another one of the mode
        other = progressions[int(rng.integers(len(progressions)))]
        degrees = degrees + (degrees if rng.random() < 0.5 else list(other))
    roots = [key.degree_pc(d) for d in degrees]
    loop_ticks = bars * BAR_TICKS

    bpm = int(rng.integers(style.bpm[0], style.bpm[1] + 1))
    drum_hits, source = None, "pattern"
    if grooves and rng.random() < groove_share:
        matching = [g for g in grooves if g.style in style.gmd_styles] or grooves
        groove = matching[int(rng.integers(len(matching)))]
        drum_hits = drums.groove_drums(groove, bars, TPQ, rng)
        if drum_hits is not None:
            bpm, source = groove.bpm, groove.path.name
    if drum_hits is None:
        drum_hits = drums.pattern_drums(style.name, bars, TPQ, rng)
        drum_notes = humanize(
            [(h.tick, TPQ // 8, h.pitch, h.velocity) for h in drum_hits], loop_ticks,
            style.swing, rng,
        )  # fmt: skip
    else:
        drum_notes = [(h.tick, TPQ // 8, h.pitch, h.velocity) for h in drum_hits]

    def pick(options):
        return options[int(rng.integers(len(options)))]

    score = Score(TPQ)
    score.tempos.append(Tempo(0, float(bpm)))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tracks.append(_track("drums", 0, drum_notes, is_drum=True))
    vel = style.velocity
    bass_notes = bass.bass_line(key, roots, pick(style.bass_patterns), TPQ, vel, rng)
    score.tracks.append(
        _track(
            "bass", pick(style.bass_programs), humanize(bass_notes, loop_ticks, style.swing, rng)
        )
    )
    if rng.random() < 0.9:
        chord_notes = chords.chord_part(key, degrees, pick(style.chord_styles), TPQ, vel, rng)
        score.tracks.append(
            _track("chords", pick(style.chord_programs),
                   humanize(chord_notes, loop_ticks, style.swing, rng))
        )  # fmt: skip
    if rng.random() < 0.7:
        lead_notes = lead.lead_line(key, degrees, style.lead_density, TPQ, vel, rng)
        score.tracks.append(
            _track("lead", pick(style.lead_programs),
                   humanize(lead_notes, loop_ticks, style.swing, rng))
        )  # fmt: skip
    return Loop(score, style.name, key, bpm, bars, source)


def synth_loops(
    out: str | Path,
    loops: int,
    seed: int = 0,
    gmd_dir: str | Path | None = None,
    styles: tuple[str, ...] | None = None,
    groove_share: float = 0.5,
    progress: bool = True,
) -> dict:
    """Write ``loops`` MIDI files under ``out/<style>/`` and ``out/loops.csv``."""
    if loops < 1:
        raise ValueError("loops must be ≥ 1")
    for name in styles or ():
        if name not in STYLES:
            raise ValueError(f"unknown style {name!r}; choose from {sorted(STYLES)}")
    if not 0.0 <= groove_share <= 1.0:
        raise ValueError("groove_share must be in [0, 1]")
    out = Path(out)
    grooves = drums.read_gmd_index(Path(gmd_dir)) if gmd_dir else None
    counts: dict[str, int] = {}
    rows = []
    for index in tqdm(range(loops), desc="loops", unit="loop", disable=not progress):
        loop = make_loop(seed, index, styles, grooves, groove_share)
        name = f"{index:06d}_{loop.style}_{loop.key.name}_{loop.bpm}bpm.mid"
        path = out / loop.style / name
        path.parent.mkdir(parents=True, exist_ok=True)
        loop.score.dump_midi(str(path))
        counts[loop.style] = counts.get(loop.style, 0) + 1
        rows.append(
            [path.relative_to(out).as_posix(), loop.style, loop.key.name, loop.bpm, loop.bars,
             loop.drum_source, " ".join(str(t.program) for t in loop.score.tracks[1:])]
        )  # fmt: skip
    with (out / "loops.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "style", "key", "bpm", "bars", "drums", "programs"])
        writer.writerows(rows)
    return {"loops": loops, "seed": seed, "styles": counts, "modes": sorted(MODES)}
