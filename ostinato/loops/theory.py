"""Keys, modes, diatonic chords and the table of common progressions."""

from __future__ import annotations

from dataclasses import dataclass

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}

#: Common progressions as scale degrees (0 = tonic), one chord per bar, per mode.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": (
        (0, 4, 5, 3),  # I V vi IV
        (0, 5, 3, 4),  # I vi IV V
        (5, 3, 0, 4),  # vi IV I V
        (0, 3, 4, 3),  # I IV V IV
        (1, 4, 0, 0),  # ii V I I
        (0, 3, 0, 4),  # I IV I V
        (3, 0, 4, 5),  # IV I V vi
    ),
    "minor": (
        (0, 5, 2, 6),  # i VI III VII
        (0, 3, 4, 0),  # i iv v i
        (0, 6, 5, 6),  # i VII VI VII
        (0, 3, 5, 4),  # i iv VI v
        (0, 5, 3, 4),  # i VI iv v
        (0, 0, 5, 6),  # i i VI VII
    ),
    "dorian": ((0, 3, 0, 3), (0, 1, 0, 3), (0, 6, 3, 0)),
    "mixolydian": ((0, 6, 3, 0), (0, 3, 6, 0), (0, 0, 6, 3)),
    "phrygian": ((0, 1, 0, 1), (0, 1, 6, 0)),
}


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class 0..11
    mode: str

    @property
    def intervals(self) -> tuple[int, ...]:
        return MODES[self.mode]

    @property
    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.tonic + i) % 12 for i in self.intervals)

    @property
    def name(self) -> str:
        return f"{NOTE_NAMES[self.tonic]}-{self.mode}"

    def degree_pc(self, degree: int) -> int:
        """Pitch class of a scale degree (any integer; wraps around the octave)."""
        return (self.tonic + self.intervals[degree % 7]) % 12

    def chord(self, degree: int, size: int = 3) -> tuple[int, ...]:
        """Diatonic chord on ``degree`` as pitch classes, stacked in thirds (root first)."""
        return tuple(self.degree_pc(degree + 2 * i) for i in range(size))

    def in_range(self, low: int, high: int) -> list[int]:
        """Every scale pitch from ``low`` to ``high`` inclusive."""
        pcs = self.pitch_classes
        return [p for p in range(low, high + 1) if p % 12 in pcs]


def nearest(pitch_class: int, target: int, low: int, high: int) -> int:
    """The pitch of ``pitch_class`` closest to ``target`` inside [low, high]."""
    candidates = [p for p in range(low, high + 1) if p % 12 == pitch_class]
    return min(candidates, key=lambda p: (abs(p - target), p))
