"""The styles: tempo, feel and which instruments and patterns each one uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    name: str
    bpm: tuple[int, int]
    modes: tuple[str, ...]
    swing: float  # 0 = straight 16ths, 0.5 = heavy swing (delay of every second 16th)
    bass_programs: tuple[int, ...]
    chord_programs: tuple[int, ...]
    lead_programs: tuple[int, ...]
    bass_patterns: tuple[str, ...]  # names in bass.PATTERNS
    chord_styles: tuple[str, ...]  # names in chords.RHYTHMS
    lead_density: float  # chance of a note on each 8th of the motif
    gmd_styles: tuple[str, ...]  # Groove MIDI styles that suit it
    velocity: int  # base velocity of the tonal parts


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("house", (118, 128), ("minor", "dorian", "major"), 0.08, (38, 39, 33),
              (4, 5, 81, 89), (80, 81, 11), ("offbeat", "octave_pump", "root_8ths"),
              ("stabs_offbeat", "stabs_syncopated", "pad"), 0.45, ("funk", "soul", "pop"), 92),
        Style("techno", (124, 134), ("minor", "phrygian", "dorian"), 0.0, (38, 39),
              (89, 90, 81), (81, 80, 87), ("rolling_16ths", "offbeat"),
              ("pad", "stabs_offbeat", "arp_16ths"), 0.35, ("rock", "funk"), 96),
        Style("hiphop", (82, 96), ("minor", "dorian"), 0.22, (33, 34, 38),
              (4, 0, 5, 11), (11, 73, 80), ("hiphop", "root_long"),
              ("comp_hiphop", "pad", "arp_8ths"), 0.4, ("hiphop", "funk", "soul"), 84),
        Style("dnb", (168, 176), ("minor", "dorian", "phrygian"), 0.0, (38, 39, 33),
              (89, 88, 4), (81, 80, 73), ("dnb_sub", "root_long"),
              ("pad", "arp_8ths"), 0.35, ("funk", "rock"), 90),
        Style("pop", (96, 124), ("major", "minor", "mixolydian"), 0.0, (33, 34),
              (0, 4, 24, 89), (80, 73, 40, 11), ("root_8ths", "pop_drive"),
              ("strum_pop", "arp_8ths", "pad"), 0.5, ("pop", "rock"), 88),
        Style("lofi", (70, 88), ("major", "dorian", "minor"), 0.28, (33, 32),
              (4, 0, 11, 5), (11, 73, 0), ("root_long", "hiphop"),
              ("comp_hiphop", "pad", "arp_8ths"), 0.35, ("hiphop", "jazz", "soul"), 72),
    )
}  # fmt: skip
