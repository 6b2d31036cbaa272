"""Lead lines: a one-bar motif of chord and scale tones, repeated over the progression with
variation (moved to the new chord, a changed ending, an answer phrase on the last bar)."""

from __future__ import annotations

import numpy as np

from ostinato.loops.theory import Key, nearest

LOW, HIGH = 60, 88  # lead register (C4..E6)


def motif_rhythm(density: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(16th step, length) of the motif's notes: 8th-note grid with some 16th pickups."""
    hits = []
    for eighth in range(8):
        if eighth == 0 or rng.random() < density:
            start = eighth * 2 + (1 if rng.random() < 0.15 else 0)
            hits.append(start)
    hits = sorted(set(hits))
    out = []
    for i, start in enumerate(hits):
        end = hits[i + 1] if i + 1 < len(hits) else 16
        out.append((start, max(1, min(end - start, int(rng.integers(1, 5))))))
    return out


def lead_line(
    key: Key,
    degrees: list[int],
    density: float,
    tpq: int,
    velocity: int,
    rng: np.random.Generator,
) -> list[tuple[int, int, int, int]]:
    """Notes (tick, length, pitch, velocity) of a lead over the progression."""
    step = tpq // 4
    scale = key.in_range(LOW, HIGH)
    rhythm = motif_rhythm(density, rng)
    # Motif as scale-step offsets from the chord root; strong beats sit on chord tones.
    offsets = []
    for start, _ in rhythm:
        if start % 4 == 0:
            offsets.append(int(rng.choice([0, 2, 4])))
        else:
            offsets.append(int(rng.integers(-2, 6)))
    center = int(rng.integers(66, 76))
    notes = []
    for bar, degree in enumerate(degrees):
        root = nearest(key.degree_pc(degree), center, LOW + 5, HIGH - 10)
        root_index = scale.index(root)
        bar_offsets = list(offsets)
        if bar % 2 == 1 and rng.random() < 0.6:  # vary the ending of every second bar
            for i in range(max(0, len(bar_offsets) - 2), len(bar_offsets)):
                bar_offsets[i] += int(rng.integers(-2, 3))
        if bar == len(degrees) - 1:  # resolve: the last note lands on the tonic chord tone
            bar_offsets[-1] = 0
        for (start, length), offset in zip(rhythm, bar_offsets, strict=True):
            pitch = scale[int(np.clip(root_index + offset, 0, len(scale) - 1))]
            accent = 10 if start % 4 == 0 else 0
            vel = int(np.clip(velocity + accent + rng.normal(0, 6), 1, 127))
            notes.append(((bar * 16 + start) * step, length * step, pitch, vel))
    return notes
