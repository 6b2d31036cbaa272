from __future__ import annotations

import numpy as np
import pytest

from ostinato.daemon.clock import PPQN, Clock, TempoMap, validate_bpm
from ostinato.daemon.daemon import parse_meter
from ostinato.daemon.recorder import HUMAN, OSTINATO, Recorder
from ostinato.settings import GenerationSettings


def feed_ticks(clock: Clock, t0: float, bpm: float, ticks: int, jitter_s=0.0, seed=0) -> float:
    rng = np.random.default_rng(seed)
    spt = 60.0 / bpm / PPQN
    for i in range(ticks):
        clock.on_tick(t0 + i * spt + rng.normal(0, jitter_s))
    return t0 + ticks * spt


def test_tempo_from_jittery_clock() -> None:
    clock = Clock()
    clock.on_start(0.0)
    feed_ticks(clock, 0.01, 128.0, 4 * PPQN, jitter_s=0.0005)
    assert clock.map.bpm == pytest.approx(128.0, abs=0.5)
    # beat 4 happens at the 96th tick after the first one
    assert clock.map.time_at(4.0) == pytest.approx(0.01 + 4 * 60 / 128, abs=0.002)


def test_late_deliveries_do_not_move_the_grid() -> None:
    """Ticks arrive late (a process cycle that ran late), never early. A tick in five comes
    2–8 ms late, sometimes several in a row: the grid the scheduler plays on stays within
    0.5 ms of the true one after every tick."""
    rng = np.random.default_rng(3)
    clock = Clock()
    clock.on_start(0.0)
    spt = 0.5 / PPQN  # 120 BPM
    worst = 0.0
    for i in range(16 * PPQN):
        late = rng.uniform(0.002, 0.008) if rng.random() < 0.2 or (i % 97) < 3 else 0.0
        clock.on_tick(0.01 + i * spt + late)
        if i >= PPQN:
            worst = max(worst, abs(clock.map.time_at(i / PPQN + 0.5) - (0.01 + i * spt + 0.25)))
    assert worst < 0.0005, f"grid moved {worst * 1e3:.2f} ms"


def test_tempo_change_followed_within_a_beat() -> None:
    clock = Clock()
    clock.on_start(0.0)
    t = feed_ticks(clock, 0.0, 120.0, 4 * PPQN)
    feed_ticks(clock, t, 150.0, PPQN + 1)
    assert clock.map.bpm == pytest.approx(150.0, abs=1.0)


def test_lost_ticks_do_not_shift_the_beat() -> None:
    clock = Clock()
    clock.on_start(0.0)
    spt = 60.0 / 120 / PPQN
    for i in range(4 * PPQN + 1):
        if i not in (30, 31, 70):  # three ticks lost in two places
            clock.on_tick(i * spt)
    assert clock.map.anchor_beat == pytest.approx(4.0)
    assert clock.map.bpm == pytest.approx(120.0, abs=0.5)


def test_a_delayed_tick_is_not_counted_twice() -> None:
    clock = Clock()
    clock.on_start(0.0)
    spt = 60.0 / 120 / PPQN
    times = [i * spt for i in range(4 * PPQN + 1)]
    times[50] = times[51] - 0.0002  # tick 50 held up, delivered just before tick 51
    for t in times:
        clock.on_tick(t)
    assert clock.map.anchor_beat == pytest.approx(4.0)


def test_a_duplicated_tick_is_not_counted() -> None:
    clock = Clock()
    clock.on_start(0.0)
    spt = 60.0 / 120 / PPQN
    times = [i * spt for i in range(4 * PPQN + 1)]
    times[40:40] = [times[40] + 0.003]  # tick 40 handed over twice, 3 ms apart
    times[70:70] = [times[69]]  # and tick 69 twice at the same moment
    for t in times:
        clock.on_tick(t)
    assert clock.map.anchor_beat == pytest.approx(4.0)
    assert clock.map.bpm == pytest.approx(120.0, abs=0.5)


def test_start_stop_continue_and_song_position() -> None:
    events = []
    clock = Clock()
    clock.listeners.append(lambda e, b: events.append((e, round(b, 3))))
    clock.on_start(0.0)
    t = feed_ticks(clock, 0.0, 120.0, 2 * PPQN + 1)  # ticks 0..48: beat 2
    assert clock.beat_now(t - 60 / 120 / PPQN) == pytest.approx(2.0, abs=1e-6)
    clock.on_stop(t)
    assert not clock.running and clock.beat_now(t) is None
    clock.on_song_position(t + 1, 16)  # 16 sixteenths = bar 2 = beat 4
    clock.on_continue(t + 1)
    clock.on_tick(t + 1.01)
    assert clock.map.anchor_beat == pytest.approx(4.0)
    assert [e for e, _ in events] == ["start", "stop", "continue"]


def test_internal_clock() -> None:
    clock = Clock(bpm=90)
    clock.start_internal(10.0)
    assert clock.source == "internal"
    assert clock.beat_now(10.0 + 2.0) == pytest.approx(3.0)
    clock.set_internal_bpm(12.0, 180)
    assert clock.beat_now(13.0) == pytest.approx(6.0)


def test_tempo_map_round_trip() -> None:
    m = TempoMap(5.0, 8.0, 0.5)
    assert m.time_at(m.beat_at(7.3)) == pytest.approx(7.3)
    with pytest.raises(ValueError, match="tempo"):
        validate_bpm(1000)


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
