"""The loop: found from the setting, the DAW's jumps or the musician's repetition; loop mode
replays its last pass at variation 0; a bar generation cannot finish in time plays from the
previous pass. Driven bar by bar with fake time: no ports, no threads."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.daemon.clock import Clock
from ostinato.daemon.loop import (
    LoopFollower,
    LoopInfo,
    PassMemory,
    PlayedBar,
    detect_period,
    signature,
)
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import HUMAN, OSTINATO, RecordedNote, Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM
from ostinato.settings import SETTINGS, GenerationSettings

RIFFS = [  # four different bars of bass (program 33): (16th step, pitch)
    [(0, 45), (6, 45), (8, 52), (14, 45)],
    [(0, 41), (4, 48), (8, 41), (12, 48)],
    [(0, 36), (6, 43), (10, 36), (12, 43)],
    [(0, 43), (3, 43), (8, 50), (11, 43)],
]


def bar_notes(riff, bar: int) -> list[RecordedNote]:
    return [RecordedNote(bar * 4.0 + step / 4, 0.5, pitch, 100, 33, HUMAN) for step, pitch in riff]


def sigs(pattern: list[int]) -> list:
    return [signature(bar_notes(RIFFS[i], b), b, 4.0) if i >= 0 else frozenset()
            for b, i in enumerate(pattern)]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ([0, 0, 0], (1, 0)),
        ([0, 1, 0, 1], (2, 0)),
        ([2, 3, 0, 1, 2, 3, 0, 1, 2, 3], (4, 0)),
        ([3, 2, 0, 1, 2, 3, 0, 1, 2, 3], (4, 2)),  # repetition begins at bar 2
        ([0, 1, 2, 3, 2, 1, 0, 3], None),  # through-composed
        ([0, 1, 2, 0, 1], None),  # not yet two periods of 4
        ([-1, -1, -1, -1], None),  # silence is no loop
    ],
)
def test_period_of_repetition(pattern, expected) -> None:
    assert detect_period(sigs(pattern)) == expected


def test_a_repeat_with_a_changed_note_still_counts_in_a_full_bar() -> None:
    def full(bar, changed=False):
        hats = [RecordedNote(bar * 4.0 + s / 4, 0.25, 42, 80, DRUM_PROGRAM, HUMAN)
                for s in range(0, 16, 2)]  # fmt: skip
        bass = bar_notes(RIFFS[0], bar)
        if changed:
            bass[-1] = RecordedNote(bar * 4.0 + 14 / 4, 0.5, 47, 100, 33, HUMAN)
        return hats + bass

    found = detect_period([signature(full(b, b == 1), b, 4.0) for b in range(3)])
    assert found == (1, 0)  # 11 of 13 notes shared
    a, b = bar_notes(RIFFS[0], 0), bar_notes(RIFFS[0], 1)[:2]  # a sparse bar missing two
    assert detect_period([signature(a, 0, 4.0), signature(b, 1, 4.0)]) is None


def test_loop_from_the_setting_the_daw_and_repetition() -> None:
    follower = LoopFollower(4.0)
    for b in range(8):
        follower.heard(b, 1, bar_notes(RIFFS[b % 2], b))
    assert follower.update(None, None) == LoopInfo(0, 2, "repetition")
    assert follower.update((16.0, 48.0), None) == LoopInfo(4, 8, "daw")  # bars 5-12
    assert follower.update((16.0, 48.0), 4) == LoopInfo(4, 4, "set")  # the DAW's start
    assert follower.update(None, 3) == LoopInfo(0, 3, "set")
    assert follower.update((16.5, 48.0), None) == LoopInfo(0, 2, "repetition")  # not whole bars
    follower.heard(9, 1, bar_notes(RIFFS[2], 9))  # a gap in the bars heard: a new run
    assert follower.update(None, None) is None
    info = LoopInfo(4, 8, "daw")
    assert info.index(4) == 0 and info.index(11) == 7 and info.index(12) == 0
    assert info.is_last(11) and not info.is_last(12)


# -- the session ---------------------------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu")
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)  # a bar is 2 s
    scheduler = Scheduler(lambda message: None, clock.snapshot)  # queued only, never sent
    recorder = Recorder(channel_programs={0: 33})
    recorder.keep_bars = 64
    time = FakeTime()
    settings = GenerationSettings(mode="loop", variation=0.0, temperature=1.0, seed=2,
                                  key_lock=False)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=time)
    return session, recorder, time


def play_bar(recorder: Recorder, bar: int, riff) -> None:
    for step, pitch in riff:
        recorder.note_on(bar * 4.0 + step / 4, 0, pitch, 100)
        recorder.note_off(bar * 4.0 + step / 4 + 0.5, 0, pitch)


def ours(recorder: Recorder, bar: int) -> list[tuple]:
    return sorted(
        (round(n.start_beats - bar * 4.0, 4), n.duration_beats, n.program, n.pitch, n.velocity)
        for n in recorder.bar_notes(bar)
        if n.source == OSTINATO
    )


def test_loop_mode_at_variation_zero_replays_its_last_pass(rig) -> None:
    session, recorder, time = rig
    for bar in range(14):  # the musician loops two bars, straight through
        play_bar(recorder, bar, RIFFS[bar % 2])
        time.t = bar * 2.0 + 1.75
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
    assert session.loop == LoopInfo(0, 2, "repetition")
    assert session.fallbacks == 0
    # from the first pass after the loop was found, each bar is the one two bars before
    for bar in range(8, 15):
        assert ours(recorder, bar), bar
        assert ours(recorder, bar) == ours(recorder, bar - 2), bar


def test_the_loop_length_set_by_hand_wins(rig) -> None:
    session, recorder, time = rig
    session.settings = session.settings.replace(loop_bars=4)
    for bar in range(10):
        play_bar(recorder, bar, RIFFS[bar % 2])
        time.t = bar * 2.0 + 1.75
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
    assert session.loop == LoopInfo(0, 4, "set")
    for bar in range(6, 11):
        assert ours(recorder, bar) == ours(recorder, bar - 4), bar


def test_a_fill_varies_the_last_bar_of_the_loop(rig) -> None:
    session, recorder, time = rig
    session.settings = session.settings.replace(loop_bars=2, fill=True, seed=11)
    for bar in range(12):
        play_bar(recorder, bar, RIFFS[bar % 2])
        time.t = bar * 2.0 + 1.75
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
    firsts = [ours(recorder, b) for b in range(4, 13, 2)]
    lasts = [ours(recorder, b) for b in range(5, 13, 2)]
    assert all(f == firsts[0] for f in firsts)  # the loop's first bar: replayed
    assert len({tuple(x) for x in lasts}) > 1  # its last bar: a new fill each pass


def test_a_bar_generation_cannot_finish_in_time_plays_the_previous_pass(rig) -> None:
    session, recorder, time = rig
    session.settings = session.settings.replace(loop_bars=2)
    engine = session.engine
    for bar in range(6):
        play_bar(recorder, bar, RIFFS[bar % 2])
        time.t = bar * 2.0 + 1.75
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
    assert session.fallbacks == 0
    # what Ostinato played in bar 5, the same place in the loop as bar 7: a known bar
    riff = bar_notes(RIFFS[2], 5)
    session.passes.played(5, session._epoch, session._played_bar(riff, 5))
    expected = sorted((n.start_beats - 20.0, n.duration_beats, 33, n.pitch, n.velocity)
                      for n in riff)  # fmt: skip
    step = engine._step
    steps = []

    def slow_step(token: int) -> None:  # the model slows down to 130 ms a token
        time.t += 0.01 if len(steps) < 7 else 0.13
        steps.append(token)
        step(token)

    engine._step = slow_step
    play_bar(recorder, 6, RIFFS[0])
    time.t = 6 * 2.0 + 1.75  # 250 ms before bar 7
    session.run_cycle(7, 6 * 4.0 + 3.5)
    assert session.fallbacks == 1
    bar_tokens = len(session._played_bar(riff, 5).tokens)
    assert len(steps) < bar_tokens  # generation gave up part-way through the bar
    # variation 0 copies the bar as far as it got in time, the fallback plays the rest of it:
    # the whole bar, nothing twice, nothing after its time
    assert [n[:4] for n in ours(recorder, 7)] == [n[:4] for n in expected]  # (velocity: binned)
    kept = session.passes.at(session.loop, 9).notes  # bar 9 will vary what bar 7 played
    assert [n[:4] for n in kept] == [n[:4] for n in session._played_bar(riff, 5).notes]


def test_continue_mode_answers_as_long_as_the_phrase_with_bars_auto(rig) -> None:
    session, recorder, time = rig
    session.settings = session.settings.replace(mode="continue", bars=None, variation=0.0)
    for bar in range(3):  # a three-bar phrase, then silence
        play_bar(recorder, bar, RIFFS[bar])
    answered = []
    for bar in range(3, 9):
        time.t = bar * 2.0 + 1.75
        if session.run_cycle(bar + 1, bar * 4.0 + 3.5):
            answered.append(bar + 1)
    assert answered == [4, 5, 6]  # after a bar of silence, three bars
    # at variation 0 the answer has the phrase's shape: its notes, bar by bar
    for k in range(3):
        phrase = sorted((s / 4, p) for s, p in RIFFS[k])
        assert [(n[0], n[3]) for n in ours(recorder, 4 + k)] == phrase


@pytest.mark.parametrize("phrase_bars", [18, 64])
def test_a_phrase_as_long_as_the_settings_allow_is_answered_whole(tiny_model_dir, phrase_bars):
    """The recorder's memory is sized from the largest ``phrase_bars``: a phrase of 18 bars,
    and one of 64 (the most the setting takes), is answered once it is that long, every bar
    of it, the first included (a recorder that kept 16 bars never answered either)."""
    engine = Engine(tiny_model_dir, device="cpu")
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)
    recorder = Recorder(channel_programs={0: 33})  # the memory the daemon makes
    time = FakeTime()
    settings = GenerationSettings(mode="continue", bars=1, phrase_bars=phrase_bars,
                                  variation=0.0, seed=2, key_lock=False)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=time)
    answered = None
    for bar in range(phrase_bars + 2):  # the musician plays on, bar after bar
        play_bar(recorder, bar, RIFFS[bar % 4])
        time.t = bar * 2.0 + 1.75
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
        if session._answer is not None:
            answered = bar + 1
            break
    assert answered == phrase_bars
    first, phrase = session._answer
    assert first == phrase_bars and len(phrase) == phrase_bars
    for bar, played in enumerate(phrase):
        assert sorted((round(o * 4), n) for o, _, _, n, _ in played.notes) == sorted(
            RIFFS[bar % 4]
        ), bar


def test_the_pass_memory_holds_two_passes_of_the_longest_loop() -> None:
    """``loop_bars`` at its most (64): the bar a pass plays varies the one the pass before
    played there, and a take thrown away finds the one before that."""
    memory = PassMemory()
    loop_bars = int(SETTINGS["loop_bars"].hi)
    loop = LoopInfo(0, loop_bars, "set")
    for bar in range(3 * loop_bars):  # three passes played straight through
        memory.played(bar, 0, PlayedBar(np.array([bar // loop_bars, bar % loop_bars])))
        memory.heard(bar, 0, PlayedBar(np.array([bar // loop_bars, bar % loop_bars])))
    next_pass = 3 * loop_bars
    for place in (0, 17, loop_bars - 1):
        assert list(memory.at(loop, next_pass + place).tokens) == [2, place]
        assert list(memory.at(loop, next_pass + place, human=True).tokens) == [2, place]
        memory.forget(2 * loop_bars + place, 0)  # that take thrown away
        assert list(memory.at(loop, next_pass + place).tokens) == [1, place]
