"""``bench --accompany``'s reading of what the daemon played: notes placed on the DAW's tick
grid, and the figures against the chord of each bar."""

from __future__ import annotations

from ostinato.bench_accompany import PROGRESSIONS, on_grid, score

CHORDS = [voicing for _, voicing in PROGRESSIONS["Am-F-C-G"]]  # Am F C G


def test_notes_land_on_the_nearest_tick_after_the_start():
    ticks = [(0, b"\xf8"), (100, b"\xfa"), *((200 + 1000 * k, b"\xf8") for k in range(200))]
    notes_played = [
        (200 + 1000 * 96 + 30, bytes((0x91, 45, 90))),  # bar 1, beat 1: bass
        (200 + 1000 * 48 - 400, bytes((0x99, 36, 100))),  # bar 0, beat 3: kick
        (200 + 1000 * 5, bytes((0x91, 45, 0))),  # a note-off: not a note
    ]
    events = [*ticks, *notes_played]
    notes, n = on_grid(sorted(events))
    assert n == 200  # the tick before the Start is not counted
    assert sorted(notes) == [(48, 9, 36), (96, 1, 45)]


def _bass_line(pitch_of_bar, bars=12, beats=(0, 48)):
    return [(b * 96 + t, 1, pitch_of_bar(b)) for b in range(1, bars) for t in beats]


def test_a_bass_on_the_roots_scores_every_chord_tone():
    roots = [45, 41, 36, 43]  # A F C G
    notes = _bass_line(lambda b: roots[b % 4]) + [(b * 96, 9, 36) for b in range(1, 12)]
    result = score(notes, 12 * 96, CHORDS)
    assert result["bass_bars"] == result["drum_bars"] == result["kick_on_one_bars"] == 11
    assert result["bass_chord_tones_passes_2_3"] == 1.0
    assert result["bass_chord_tones_beats_1_3"] == 1.0


def test_a_bass_a_bar_late_misses_and_an_absent_part_counts():
    roots = [45, 41, 36, 43]
    late = _bass_line(lambda b: roots[(b - 1) % 4] + 1)  # the last chord's root, a semitone up
    result = score(late, 12 * 96, CHORDS)
    assert result["bass_chord_tones_passes_2_3"] == 0.0
    assert result["drum_bars"] == 0 and result["kick_on_one_bars"] == 0
