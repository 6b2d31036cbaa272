"""Chord parts: stabs, pads, strums and arpeggios, voiced close with smooth voice leading."""

from __future__ import annotations

import numpy as np

from ostinato.loops.theory import Key

LOW, HIGH = 48, 79  # chord register (C3..G5)

#: Rhythm per bar: (16th step, length in 16ths); "arp" styles pick one chord tone per hit.
RHYTHMS: dict[str, tuple[tuple[int, int], ...]] = {
    "stabs_offbeat": ((2, 1), (6, 1), (10, 1), (14, 1)),
    "stabs_syncopated": ((0, 2), (3, 2), (6, 2), (10, 2), (13, 2)),
    "pad": ((0, 16),),
    "comp_hiphop": ((0, 6), (7, 3), (12, 4)),
    "strum_pop": ((0, 4), (4, 2), (6, 4), (10, 2), (12, 4)),
    "arp_8ths": tuple((i, 2) for i in range(0, 16, 2)),
    "arp_16ths": tuple((i, 1) for i in range(16)),
}


def voice(chord_pcs: tuple[int, ...], previous: list[int] | None) -> list[int]:
    """Close voicing of the chord inside the register, nearest to the previous voicing."""
    options = []
    for bass_pc_index in range(len(chord_pcs)):
        order = chord_pcs[bass_pc_index:] + chord_pcs[:bass_pc_index]
        for base in range(LOW, HIGH - 11):
            if base % 12 != order[0]:
                continue
            pitches = [base]
            for pc in order[1:]:
                p = pitches[-1] + 1
                while p % 12 != pc:
                    p += 1
                pitches.append(p)
            if pitches[-1] <= HIGH:
                options.append(pitches)
    if previous is None:
        return min(options, key=lambda v: abs(sum(v) / len(v) - 62))
    return min(options, key=lambda v: sum(abs(a - b) for a, b in zip(v, previous, strict=False)))


def chord_part(
    key: Key, degrees: list[int], rhythm: str, tpq: int, velocity: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Notes (tick, length, pitch, velocity) playing the diatonic chord of each bar's degree."""
    size = 4 if rng.random() < 0.35 else 3  # sometimes sevenths
    voicings = []
    previous = None
    for degree in degrees:
        previous = voice(key.chord(degree, size), previous)
        voicings.append(previous)
    return play_voicings(voicings, rhythm, tpq, velocity, rng)


def play_voicings(
    voicings: list[list[int]], rhythm: str, tpq: int, velocity: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Notes (tick, length, pitch, velocity) of voiced chords, one a bar, in ``rhythm``: block
    chords, or an arpeggio up and down (``arp…``)."""
    step = tpq // 4
    notes = []
    arp = rhythm.startswith("arp")
    for bar, pitches in enumerate(voicings):
        order = pitches + pitches[-2:0:-1]  # up and down
        for i, (start, length) in enumerate(RHYTHMS[rhythm]):
            tick = (bar * 16 + start) * step
            accent = 6 if start % 4 == 0 else 0
            if arp:
                vel = int(np.clip(velocity - 6 + accent + rng.normal(0, 5), 1, 127))
                notes.append((tick, length * step, order[i % len(order)], vel))
            else:
                for pitch in pitches:
                    vel = int(np.clip(velocity - 10 + accent + rng.normal(0, 4), 1, 127))
                    notes.append((tick, length * step - step // 4, pitch, vel))
    return notes
