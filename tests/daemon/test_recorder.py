from __future__ import annotations

import random

import pytest

from ostinato.daemon.recorder import EARLY_BEATS, HUMAN, OSTINATO, Recorder
from ostinato.settings import SETTINGS, GenerationSettings, parse_meter


def test_recorder_pairs_notes_and_handles_edge_cases() -> None:
    rec = Recorder(beats_per_bar=4)
    rec.note_on(0.0, 0, 60, 100)
    rec.note_on(0.5, 0, 60, 0)  # velocity-0 note-on is a note-off
    rec.note_off(1.0, 0, 61)  # unmatched: ignored
    rec.note_on(1.0, 9, 36, 110)
    rec.note_on(1.5, 9, 36, 90)  # retrigger closes the first
    rec.note_off(1.6, 9, 36)
    rec.note_on(3.5, 0, 48, 80)  # held across the bar line
    rec.add_generated(4.0, 1.0, 40, 90, 33)
    bar0 = rec.bar_notes(0, now_beat=5.0)
    assert [(n.start_beats, n.pitch, n.program) for n in bar0] == [
        (0.0, 60, 0), (1.0, 36, -1), (1.5, 36, -1), (3.5, 48, 0)
    ]  # fmt: skip
    assert bar0[0].duration_beats == 0.5 and bar0[-1].duration_beats == 1.5
    assert rec.bar_notes(1)[0].source == OSTINATO
    assert rec.human_played_in(0) and not rec.human_played_in(1)
    assert all(n.source == HUMAN for n in bar0)
    rec.prune(current_bar=rec.keep_bars + 2)
    assert rec.notes == []


def test_meter_and_settings_validation() -> None:
    assert parse_meter("4/4") == 4 and parse_meter("6/8") == 3 and parse_meter("7/8") == 3.5
    with pytest.raises(ValueError):
        parse_meter("4-4")
    s = GenerationSettings()
    assert s.replace(temperature=0.5).temperature == 0.5
    for bad in ({"temperature": -1}, {"mode": "solo"}, {"bars": 0}, {"programs": (200,)},
                {"nope": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            s.replace(**bad)
    assert s.replace(programs=[33, -1, 33]).programs == (-1, 33)


@pytest.mark.parametrize("beats_per_bar", [4.0, 3.5])
def test_notes_found_by_bar_are_those_a_scan_of_every_note_finds(beats_per_bar) -> None:
    """The recorder keeps as many bars as the longest phrase (``phrase_bars`` at its most)
    and finds a bar's notes through an index: the same notes, in the same order, as a scan of
    every note would, through notes pushed a hair early, ours on the bar line, jumps, takes
    thrown away and pruning."""
    assert Recorder().keep_bars > SETTINGS["phrase_bars"].hi
    rng = random.Random(7)
    rec = Recorder(beats_per_bar=beats_per_bar)

    def scanned(bar: int, epoch: int) -> list:
        lo, hi = bar * beats_per_bar - EARLY_BEATS, (bar + 1) * beats_per_bar - EARLY_BEATS
        return sorted((n for n in rec.notes if n.epoch == epoch and (
            lo <= n.start_beats < hi if n.source == HUMAN
            else lo + EARLY_BEATS - 1e-6 <= n.start_beats < hi + EARLY_BEATS - 1e-6)),
            key=lambda n: (n.start_beats, n.program, n.pitch))  # fmt: skip

    note_id, beat, epoch = 0, 0.0, 0
    for step in range(3000):
        beat += rng.choice((0.0, 0.125, 0.25))
        on_line = round(beat / beats_per_bar) * beats_per_bar
        start = rng.choice((beat, on_line - 0.05, on_line - EARLY_BEATS, on_line))
        pitch = rng.randint(36, 40)
        if rng.random() < 0.5:
            rec.note_on(start, 0, pitch, 90)
            rec.note_off(start + 0.2, 0, pitch)
        else:
            rec.add_generated(start, 0.25, pitch, 80, 33, note_id)
            note_id += 1
        if step % 400 == 399:  # a jump back: a new pass
            epoch += 1
            rec.jump(beat, beat - 8 * beats_per_bar, epoch, keep_prepared=True)
            beat -= 8 * beats_per_bar
        if step % 150 == 0:
            rec.forget_generated({note_id - 1, note_id - 3})
        if step % 50 == 0:
            rec.prune(int(beat // beats_per_bar))
        if step % 25 == 0:
            for bar in range(int(beat // beats_per_bar) - 3, int(beat // beats_per_bar) + 2):
                for e in (epoch, epoch - 1):
                    assert rec.bar_notes(bar, epoch=e) == scanned(bar, e), (step, bar, e)
                human = any(n.source == HUMAN for n in scanned(bar, epoch))
                assert rec.human_played_in(bar) == human
