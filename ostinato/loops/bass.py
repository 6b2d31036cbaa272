"""Bass lines that follow the chord roots with the style's rhythm."""

from __future__ import annotations

import numpy as np

from ostinato.loops.theory import Key, nearest

LOW, HIGH = 28, 52  # bass register (E1..E3)

#: Rhythm per bar: (16th step, length in 16ths, interval choice) where the choice is
#: "R" root, "O" octave above, "5" fifth, "A" approach note (scale step to the next root).
PATTERNS: dict[str, tuple[tuple[int, int, str], ...]] = {
    "offbeat": ((2, 2, "R"), (6, 2, "R"), (10, 2, "R"), (14, 2, "O")),
    "octave_pump": ((0, 2, "R"), (2, 2, "O"), (4, 2, "R"), (6, 2, "O"), (8, 2, "R"),
                    (10, 2, "O"), (12, 2, "R"), (14, 2, "O")),
    "root_8ths": tuple((i, 2, "R") for i in range(0, 16, 2)),
    "rolling_16ths": tuple((i, 1, "R" if i % 4 else "O") for i in range(16) if i % 4 != 0),
    "hiphop": ((0, 5, "R"), (7, 2, "R"), (10, 3, "5"), (14, 2, "A")),
    "root_long": ((0, 12, "R"), (12, 4, "5")),
    "dnb_sub": ((0, 10, "R"), (10, 6, "R")),
    "pop_drive": ((0, 3, "R"), (3, 3, "R"), (6, 2, "5"), (8, 3, "R"), (11, 3, "O"),
                  (14, 2, "A")),
}  # fmt: skip


def bass_line(
    key: Key, roots: list[int], pattern: str, tpq: int, velocity: int, rng: np.random.Generator
) -> list[tuple[int, int, int, int]]:
    """Notes (tick, length in ticks, pitch, velocity); ``roots`` are pitch classes per bar."""
    step = tpq // 4
    notes = []
    scale = key.in_range(LOW, HIGH)
    for bar, root_pc in enumerate(roots):
        root = nearest(root_pc, 36, LOW, HIGH - 12)
        next_root = nearest(roots[(bar + 1) % len(roots)], 36, LOW, HIGH - 12)
        fifth = next((p for p in scale if p >= root + 6 and p % 12 == (root_pc + 7) % 12), root)
        for start, length, choice in PATTERNS[pattern]:
            if choice == "O":
                pitch = root + 12
            elif choice == "5":
                pitch = fifth if fifth <= HIGH else root
            elif choice == "A":  # the scale note just below or above the next root
                below = [p for p in scale if p < next_root]
                above = [p for p in scale if p > next_root]
                pitch = below[-1] if below and (rng.random() < 0.6 or not above) else above[0]
            else:
                pitch = root
            accent = 8 if start % 4 == 0 else 0
            vel = int(np.clip(velocity + accent + rng.normal(0, 5), 1, 127))
            notes.append(((bar * 16 + start) * step, length * step, pitch, vel))
    return notes
