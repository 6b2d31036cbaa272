"""The session through the DAW's transport: loop jumps keep the prepared bar, a jump in the
middle of a bar's generation moves (or drops) the rest of it, the context stays in time order.
Driven bar by bar with fake time: no ports, no threads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ostinato.daemon.clock import PPQN, Clock
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import OSTINATO, Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM
from ostinato.settings import GenerationSettings

SPT = 0.5 / PPQN  # 120 BPM


class RecordingScheduler(Scheduler):
    """The real scheduler's queue, never started; every call is also kept in order."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(lambda message: None, clock.snapshot)
        self.calls: list[tuple] = []
        self.after_note = None  # called after each note (to make a jump arrive mid-bar)

    def schedule_note(self, start_beats, duration_beats, program, pitch, velocity):
        self.calls.append(("note", round(start_beats, 4)))
        note_id = super().schedule_note(start_beats, duration_beats, program, pitch, velocity)
        if self.after_note is not None:
            self.after_note(len([c for c in self.calls if c[0] == "note"]))
        return note_id

    def hold(self, keep_from=math.inf):
        self.calls.append(("hold", keep_from))
        super().hold(keep_from)

    def jump(self, from_beat, to_beat, shift):
        self.calls.append(("jump", from_beat, to_beat, shift))
        super().jump(from_beat, to_beat, shift)


@pytest.fixture
def rig(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu")
    clock = Clock(exact_stamps=True)
    scheduler = RecordingScheduler(clock)
    recorder = Recorder()
    settings = GenerationSettings(mode="jam", programs=(DRUM_PROGRAM,), temperature=1.0, seed=3,
                                  key_lock=False)  # fmt: skip
    # bars are driven by hand ahead of their time: the session's clock stays at 0, before
    # every note (the fallback for late bars has tests of its own)
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=lambda: 0.0)
    return clock, scheduler, recorder, session


def play_ticks(clock: Clock, first: int, last: int) -> None:
    """Ticks first..last-1 of one continuous line (tick k at k × SPT)."""
    for k in range(first, last):
        clock.on_tick(0.01 + k * SPT)


def test_a_loop_jump_plays_the_prepared_bar_at_the_loop_start(rig) -> None:
    clock, scheduler, recorder, session = rig
    clock.on_start(0.0)
    play_ticks(clock, 0, 15 * PPQN)
    for bar in range(1, 5):  # the cycles run during bars 0..3; the last prepares bar 4
        session.run_cycle(bar, bar * 4.0 - 0.5)
    prepared = [c[1] for c in scheduler.calls if c[0] == "note" and c[1] >= 16]
    assert prepared, "nothing generated for bar 5"
    play_ticks(clock, 15 * PPQN, 16 * PPQN)
    t_jump = 0.01 + 16 * PPQN * SPT  # where the next tick would be
    clock.on_stop(t_jump)  # Ardour: Stop, then Start one tick after the last tick
    clock.on_start(t_jump)
    assert ("hold", 16.0) in scheduler.calls  # the downbeat after the Stop may sound on
    assert scheduler.calls[-1] == ("jump", 16.0, 0.0, True)
    assert session._prepared_bar == 0  # bar 5 became the first bar of the next pass
    moved = [n for n in recorder.notes if n.source == OSTINATO and n.epoch == clock.epoch]
    assert sorted(round(n.start_beats, 4) for n in moved) == sorted(b - 16 for b in prepared)
    # the next cycle: the loop's last bar is committed, then the new pass's first bar is fed
    context_before = len(session.engine.context_tokens())
    play_ticks(clock, 16 * PPQN, 17 * PPQN)
    session.run_cycle(1, 3.5)
    assert session._heard == [(0, clock.epoch)]
    assert len(session.engine.context_tokens()) > context_before
    assert [c for c in scheduler.calls if c[0] == "note"][-1][1] >= 4.0  # bar 2 of the pass


def test_a_jump_while_a_bar_is_generated_moves_the_rest_of_it(rig, monkeypatch) -> None:
    clock, scheduler, _recorder, session = rig
    monkeypatch.setattr("ostinato.engine.accompany.ENTER_COOLING", 1.0)  # a busy bar
    clock.on_start(0.0)
    play_ticks(clock, 0, 4 * PPQN)
    session.settings = session.settings.replace(temperature=1.5)

    def jump_after_two(count: int) -> None:
        if count == 2:
            clock.on_song_position(0.01 + 4 * PPQN * SPT - 0.001, 0)  # SPP while running

    scheduler.after_note = jump_after_two
    session.run_cycle(2, 7.5)  # bar 2 (beats 8..12); the SPP jumps from beat 4 to 0
    notes = [c[1] for c in scheduler.calls if c[0] == "note"]
    after_start = scheduler.calls[1:]  # the Start dropped what was queued: ("jump", 0, 0, False)
    assert after_start[2] == ("jump", 4.0, 0.0, True)
    assert all(8 <= b < 12 for b in notes[:2])
    assert notes[2:], "no note after the jump"
    assert all(4 <= b < 8 for b in notes[2:])  # the rest moved back by the bar jumped


def test_a_jump_off_the_bar_lines_drops_the_queue_and_prepares_the_new_bar(rig) -> None:
    clock, scheduler, _recorder, session = rig
    clock.on_start(0.0)
    play_ticks(clock, 0, 3 * PPQN)
    session.run_cycle(1, 2.9)
    # an SPP to beat 6 (16th 24): the next tick is there, off the bar lines
    clock.on_song_position(0.01 + 3 * PPQN * SPT - 0.001, 24)
    assert scheduler.calls[-1] == ("jump", 3.0, 6.0, False)
    assert scheduler.pending() == 0
    assert session._prepared_bar == 1 and session._urgent_bar is None  # bar 3 comes next
    # a relocate that lands on a bar line: that bar is prepared at once
    clock.on_song_position(0.01 + 3 * PPQN * SPT + 0.001, 32)  # from beat 6 to beat 8
    assert session._urgent_bar == 2


def test_a_jump_before_the_bar_was_prepared_prepares_it_at_once_after_the_loop(rig) -> None:
    """The cycle for the bar after the loop's end had not run when the loop jumped (a slow
    bar): the loop's first bar is prepared at once, with the loop's last bar committed before
    it and no empty bar of the new pass in between."""
    clock, _scheduler, recorder, session = rig
    clock.on_start(0.0)
    play_ticks(clock, 0, 16 * PPQN)
    for bar in range(1, 4):  # bars 1..3 prepared; bar 4 (after the loop's end) never was
        session.run_cycle(bar, bar * 4.0 - 0.5)
    t_jump = 0.01 + 16 * PPQN * SPT
    clock.on_stop(t_jump)
    clock.on_start(t_jump)
    assert session._urgent_bar == 0 and session._prepared_bar == -1
    generated = session.bars_generated
    session.run_cycle(0, 0.0, clock.epoch)  # bar 1 of the new pass, played now
    assert session.bars_generated == generated + 1 and session._prepared_bar == 0
    assert session._heard == []  # the loop's last bar was committed; nothing partial
    committed = session._committed_len - (session.engine.dropped_front - session._committed_dropped)
    last_bar = session.bar_tokens(recorder.bar_notes(3, epoch=clock.epoch - 2), 3)
    context = session.engine.context_tokens()
    np.testing.assert_array_equal(context[committed - len(last_bar) : committed], last_bar)
    assert session.run_cycle(1, 3.5, clock.epoch - 1) == 0  # planned before a jump: nothing
