from __future__ import annotations

import pytest

from ostinato.daemon.recorder import HUMAN, OSTINATO, Recorder
from ostinato.settings import GenerationSettings, parse_meter


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
    rec.prune(current_bar=20)
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
