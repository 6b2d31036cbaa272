"""Takes: regenerate the next bar (at once, or the next pass when it is too late), keep a bar at
its place in the loop (or an answer), undo; the note queue taking notes back; a MIDI button
learned for a take action. The session is driven bar by bar with fake time: no ports, no
threads (tests/daemon/test_loop.py's rig)."""

from __future__ import annotations

import threading

import pytest

from ostinato.daemon.cc_learner import CcLearner
from ostinato.daemon.clock import Clock
from ostinato.daemon.jack_io import JackCycle
from ostinato.daemon.note_queue import NOTE_ON, NoteQueue
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.protocol import CANCEL, NOTE, TEMPO
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.daemon.takes import TakeError
from ostinato.engine.engine import Engine
from ostinato.settings import GenerationSettings
from tests.daemon.test_jack_io import FakeIn, FakeOut, Full, add_note
from tests.daemon.test_loop import RIFFS, FakeTime, ours, play_bar
from tests.daemon.test_scheduler import Port, play_until


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
                                  key_lock=False, loop_bars=2)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=time)
    marks: list[tuple[float, str]] = []
    session.markers.append(lambda beat, text: marks.append((beat, text)))
    return session, recorder, time, scheduler, marks


def drive(session: BarPlanner, recorder: Recorder, time: FakeTime, bars) -> None:
    """The musician loops two bars; 250 ms before each next bar the cycle prepares it."""
    for bar in bars:
        play_bar(recorder, bar, RIFFS[bar % 2])
        at(session, time, bar)


def at(session: BarPlanner, time: FakeTime, bar: int) -> int:
    """The cycle that prepares ``bar + 1``, 250 ms before it (in bar ``bar``)."""
    time.t = bar * 2.0 + 1.75
    return session.run_cycle(bar + 1, bar * 4.0 + 3.5)


def queued(scheduler: Scheduler) -> set[int]:
    """The ids of the notes whose note-on is still queued (never sent: every bar's)."""
    queue = scheduler._queue
    return {e[6] for e in queue._heap[: queue.pending] if e[2] == NOTE_ON}


def memory(session: BarPlanner, bar: int) -> list[tuple]:
    played = session.passes.at(session.loop, bar)
    assert played is not None
    return sorted((round(o, 4), d, p, n, v) for o, d, p, n, v in played.notes)


def test_regenerate_throws_the_queued_bar_away_and_generates_it_at_once(rig) -> None:
    session, recorder, time, scheduler, marks = rig
    drive(session, recorder, time, range(6))  # in bar 5; bar 6 is queued
    before, old_ids = ours(recorder, 6), set(session._takes[6].ids)
    assert before and old_ids and old_ids <= queued(scheduler)
    assert memory(session, 6) == before
    reply = session.regenerate()
    assert reply == "bar 7: its take is thrown away and generated again now"
    assert session._urgent_bar == 6 and session._prepared_bar == 5
    assert not old_ids & queued(scheduler)  # none of its notes will sound
    assert ours(recorder, 6) == []  # nor is it remembered as played
    assert session.run_cycle(6, 5 * 4.0 + 3.5)  # the session thread: the urgent bar, at once
    after, new_ids = ours(recorder, 6), set(session._takes[6].ids)
    assert after and after != before  # a new take (variation 0 would have copied the pass)
    assert new_ids <= queued(scheduler) and not old_ids & queued(scheduler)
    assert memory(session, 6) == after  # the next pass varies the new take
    assert session._takes[6].kind == "retake"
    assert session.takes == 1 and session.last_take == "regenerate bar 7"
    assert marks == [(23.5, "regenerate bar 7"), (24.0, "bar 7: new take")]
    drive(session, recorder, time, (6, 7))  # bar 9, the same place in the loop, varies it
    assert ours(recorder, 8) == after


def test_regenerate_while_the_bar_is_generated_stops_it_and_takes_its_notes_back(rig) -> None:
    """The OSC thread asks while the session thread generates the very bar: the generation
    stops at its next note, what it queued is taken back, the bar is prepared again."""
    session, recorder, time, scheduler, _ = rig
    drive(session, recorder, time, range(5))
    play_bar(recorder, 5, RIFFS[1])
    time.t = 5 * 2.0 + 1.75
    ids: list[int] = []
    replies: list[str] = []
    schedule, step = scheduler.schedule_note, session.engine._step

    def record(*args, **kwargs) -> int:
        ids.append(schedule(*args, **kwargs))
        return ids[-1]

    def step_then_regenerate(token: int) -> None:  # the model, between two notes
        if len(ids) == 2 and not replies:
            other = threading.Thread(target=lambda: replies.append(session.regenerate()))
            other.start()
            other.join(5)
        step(token)

    scheduler.schedule_note = record  # type: ignore[method-assign]
    session.engine._step = step_then_regenerate  # type: ignore[method-assign]
    session.run_cycle(6, 5 * 4.0 + 3.5)
    assert replies == ["bar 7: its take is thrown away and generated again now"]
    assert len(ids) == 2  # it stopped at the next note
    assert not set(ids) & queued(scheduler) and ours(recorder, 6) == []
    assert session._urgent_bar == 6 and (6, session._epoch) not in session.passes.own
    session.run_cycle(6, 5 * 4.0 + 3.5)
    assert session._takes[6].kind == "retake" and len(ours(recorder, 6)) > 2


def test_a_loop_jump_moves_the_prepared_take_with_it(rig) -> None:
    session, recorder, time, scheduler, _ = rig
    drive(session, recorder, time, range(4))  # bar 4 (after a 4-bar DAW loop) is prepared
    take = session._takes[4]
    session._retake_bars[4] = session._retake_bars[2] = None  # type: ignore[assignment]
    with session.lock:
        session._jump(16.0, 0.0, session._epoch + 1)
    assert session._takes == {0: take} and take.bar == 0 and take.memory == (4, 1)
    assert set(take.ids) <= queued(scheduler)
    assert list(session._retake_bars) == [0]
    with session.lock:
        session._jump(2.0, 9.0, session._epoch + 1)  # off the bar lines: the queue is gone
    assert session._takes == {} and session._retake_bars == {}


def test_regenerate_too_close_to_the_bar_makes_the_next_pass_a_new_take(rig) -> None:
    session, recorder, time, scheduler, marks = rig
    drive(session, recorder, time, range(6))
    before, old_ids = ours(recorder, 6), set(session._takes[6].ids)
    time.t = 6 * 2.0 - 0.004  # 4 ms before bar 7 begins: no time to generate it again
    reply = session.regenerate()
    assert reply == ("bar 7 begins too soon and plays as prepared; the next pass at loop "
                     "place 1 is a new take")  # fmt: skip
    assert session._urgent_bar is None and old_ids <= queued(scheduler)
    assert ours(recorder, 6) == before
    for bar in (6, 7):
        play_bar(recorder, bar, RIFFS[bar % 2])
        at(session, time, bar)
    assert session._takes[7].kind == "new" and session._takes[8].kind == "retake"
    assert ours(recorder, 8) != before  # at variation 0 it would have been bar 7 again
    assert ("32.0", "bar 9: new take") in [(f"{b:.1f}", t) for b, t in marks]


def test_a_kept_place_replays_its_bar_note_for_note_while_the_other_varies(rig) -> None:
    session, recorder, time, _, marks = rig
    session.settings = session.settings.replace(variation=0.8)
    drive(session, recorder, time, range(6))  # in bar 5 (loop place 2)
    kept = ours(recorder, 5)
    assert kept
    assert session.keep() == "bar 6 is kept at loop place 2: it plays again each pass"
    assert session.kept.text() == "2"
    drive(session, recorder, time, range(6, 14))
    for bar in (7, 9, 11, 13):
        assert ours(recorder, bar) == kept, bar
        assert session._takes[bar].kind == "kept"
    others = {tuple(ours(recorder, bar)) for bar in (6, 8, 10, 12)}
    assert len(others) > 1  # place 1 still varies each pass
    assert (28.0, "bar 8: kept take (loop place 2)") in marks
    assert (23.5, "keep loop place 2") in marks
    # undo releases it: place 2 varies again
    assert session.undo() == "undo keep loop place 2: released"
    assert session.kept.text() == "" and session.takes == 2
    drive(session, recorder, time, range(14, 20))
    assert {session._takes[bar].kind for bar in (15, 17, 19)} == {"new"}
    assert any(ours(recorder, bar) != kept for bar in (15, 17, 19))


def test_a_keep_just_after_loop_bars_is_changed_counts_places_in_the_new_loop(rig) -> None:
    """The musician sets loop_bars and presses keep in the same bar: the place is in the loop
    just set, not the one the session followed until then (it would only follow the setting
    at the next bar heard)."""
    session, recorder, time, _, _ = rig
    session.settings = session.settings.replace(loop_bars=4)
    drive(session, recorder, time, range(8))  # in bar 7: loop place 4 of 4
    assert session.loop is not None and session.loop.bars == 4
    session.settings = session.settings.replace(loop_bars=2)
    session.follow_loop_setting()
    assert session.loop is not None and session.loop.bars == 2
    assert session.keep() == "bar 8 is kept at loop place 2: it plays again each pass"
    session.settings = session.settings.replace(loop_bars=None)  # auto: the riffs' own period
    session.follow_loop_setting()
    assert session.loop is not None and (session.loop.bars, session.loop.source) == (
        2,
        "repetition",
    )


def test_undo_after_regenerate_brings_the_thrown_away_bar_back(rig) -> None:
    session, recorder, time, scheduler, marks = rig
    drive(session, recorder, time, range(6))
    before = ours(recorder, 6)
    session.regenerate()
    session.run_cycle(6, 5 * 4.0 + 3.5)
    new_ids = set(session._takes[6].ids)
    assert ours(recorder, 6) != before
    reply = session.undo()
    assert reply == "undo regenerate bar 7: the take thrown away is back in bar 7"
    back = session._takes[6]
    assert back.kind == "back" and ours(recorder, 6) == before
    assert set(back.ids) <= queued(scheduler) and not new_ids & queued(scheduler)
    assert memory(session, 6) == before
    assert session.run_cycle(6, 5 * 4.0 + 3.5) == 0  # a cycle late for it leaves it alone
    assert marks[-2:] == [(24.0, "bar 7: the take before is back"),
                          (23.5, "undo regenerate bar 7")]  # fmt: skip
    # an undo before the urgent cycle ran: the old take goes straight back
    session.regenerate()
    assert session._urgent_bar == 6 and not set(back.ids) & queued(scheduler)
    session.undo()
    assert session._urgent_bar is None and session._prepared_bar == 6
    assert ours(recorder, 6) == before and set(session._takes[6].ids) <= queued(scheduler)
    with pytest.raises(TakeError, match="nothing to undo"):
        session.undo()


def test_undo_after_the_bar_began_keeps_the_old_take_for_the_next_pass(rig) -> None:
    session, recorder, time, _, _ = rig
    drive(session, recorder, time, range(6))
    before = ours(recorder, 6)
    session.regenerate()
    session.run_cycle(6, 5 * 4.0 + 3.5)
    time.t = 6 * 2.0 + 0.5  # bar 7 is playing its new take
    assert session.undo() == ("undo regenerate bar 7: bar 7 has begun: the take thrown away is "
                              "kept at loop place 1 from the next pass on")  # fmt: skip
    assert session.kept.text() == "1"
    at(session, time, 6)  # bar 7's cycle is done; bar 8 (place 2) as usual
    play_bar(recorder, 7, RIFFS[1])
    at(session, time, 7)
    assert ours(recorder, 8) == before


def test_continue_mode_regenerates_the_rest_of_the_answer_and_keeps_an_answer(rig) -> None:
    session, recorder, time, _, _ = rig
    session.settings = session.settings.replace(mode="continue", bars=3, variation=0.5,
                                                loop_bars=None)  # fmt: skip
    with pytest.raises(TakeError, match="no answer is playing"):
        session.regenerate()
    for bar in range(2):  # a two-bar phrase: bars 3-5 answer it (0-based 2-4)
        play_bar(recorder, bar, RIFFS[bar])
    for bar in range(1, 3):
        at(session, time, bar)
    assert session.answering_until == 4 and sorted(session._takes) == [2, 3]
    before = ours(recorder, 3)
    reply = session.regenerate()  # in bar 3: bar 4 queued, bar 5 not yet
    assert reply == "bar 4: its take is thrown away and generated again now"
    session.run_cycle(3, 2 * 4.0 + 3.5)
    at(session, time, 3)
    assert session._takes[3].kind == session._takes[4].kind == "retake"
    assert ours(recorder, 3) != before
    answer = [ours(recorder, bar) for bar in (2, 3, 4)]
    time.t = 4 * 2.0 + 1.0  # in the answer's last bar
    with pytest.raises(TakeError, match="the answer's last"):
        session.regenerate()
    assert session.keep() == "the answer from bar 3 is kept: the next answers play it again"
    assert session.kept.text() == "answer"
    for bar in (8, 9):  # a new phrase; the next answer plays the kept one again
        play_bar(recorder, bar, RIFFS[2 + bar % 2])
    for bar in range(4, 13):
        at(session, time, bar)
    assert session.answering_until == 12
    assert [ours(recorder, bar) for bar in (10, 11, 12)] == answer
    assert {session._takes[bar].kind for bar in (10, 11, 12)} == {"kept"}


def test_nothing_to_act_on_is_an_error(rig) -> None:
    session, recorder, time, scheduler, _ = rig
    stopped = BarPlanner(session.engine, Clock(), scheduler, recorder, session.settings, now=time)
    with pytest.raises(TakeError, match="the transport is stopped"):
        stopped.regenerate()
    with pytest.raises(TakeError, match="the transport is stopped"):
        stopped.keep()
    with pytest.raises(TakeError, match="nothing is kept"):
        session.keep(False)
    with pytest.raises(TakeError, match="nothing to undo"):
        session.undo()
    session.settings = session.settings.replace(loop_bars=None, mode="jam")
    at(session, time, 0)
    time.t = 2.5
    with pytest.raises(TakeError, match="no loop is known"):
        session.keep()
    # nothing prepared for the next bar yet: it will be a new take when its turn comes
    assert session.regenerate() == ("bar 3 will be a new take (nothing was prepared for it "
                                    "yet)")  # fmt: skip
    at(session, time, 1)
    assert session._takes[2].kind == "retake"
    assert session.takes == 1


# -- the note queue ---------------------------------------------------------------------------
def test_cancel_takes_back_queued_notes_and_never_cuts_one_sounding() -> None:
    queue, port = NoteQueue(), Port()
    queue.schedule(0.0, 4.0, 0, 60, 100, note_id=1, handed_over=0.0)  # sounding at the cancel
    queue.schedule(2.0, 3.0, 0, 62, 100, note_id=2, handed_over=0.0)  # queued: never sounds
    queue.schedule(2.5, 3.0, 0, 64, 100, note_id=3, handed_over=0.0)  # another take: stays
    play_until(queue, port, 1.0)
    assert queue.cancel(frozenset({1, 2})) == 1
    assert queue.pending == 3  # note 1's note-off, note 3's on and off
    assert play_until(queue, port, 10.0) == [2.5, 3.0, 4.0]
    assert port.messages == [[0x90, 60, 100], [0x90, 64, 100], [0x80, 64, 0], [0x80, 60, 0]]
    assert queue.sounding == 0 and queue.cancel({7}) == 0


def test_the_jack_cycle_takes_a_cancel_command() -> None:
    from ostinato.daemon.clock import TempoMap

    out = FakeOut(1024)
    cycle = JackCycle(out, FakeIn(), 48000, full_error=Full)
    assert cycle.commands.put((TEMPO, TempoMap(0.0, 0.0, 0.5)))
    add_note(cycle, 0.5, 1.0, 60, note_id=1)
    add_note(cycle, 0.6, 1.0, 62, note_id=2)
    assert cycle.commands.put((CANCEL, frozenset({2})))
    for k in range(60):  # 1.28 s
        out.first = k * 1024
        cycle.run(out.first, 1024)
    assert [m for _, m in out.written] == [[0x90, 60, 100], [0x80, 60, 0]]
    assert NOTE != CANCEL


def test_the_rtmidi_scheduler_cancels_by_id() -> None:
    from ostinato.daemon.clock import TempoMap

    scheduler = Scheduler(lambda message: None, lambda: TempoMap(0.0, 0.0, 0.5))
    kept = scheduler.schedule_note(4.0, 1.0, 33, 40, 100)
    gone = scheduler.schedule_note(4.0, 1.0, 33, 41, 100)
    scheduler.cancel([gone])
    assert queued(scheduler) == {kept} and scheduler.pending() == 2


# -- MIDI learn -------------------------------------------------------------------------------
def test_a_learned_button_fires_its_action_once_per_press() -> None:
    fired: list[str] = []
    applied: list[dict] = []
    learner = CcLearner({}, None, lambda **changes: applied.append(changes), lambda: None,
                        fired.append)  # fmt: skip
    learner.learn("regenerate")
    learner.on_cc(1, 30, 127)  # the press that learns it does not fire it
    assert learner.cc_map == {(1, 30): "regenerate"} and fired == []
    for value in (0, 127, 127, 100, 0, 64, 63, 64):  # presses: 127, 64, 64
        learner.on_cc(1, 30, value)
    assert fired == ["regenerate"] * 3 and applied == []
    learner.on_cc(0, 30, 127)  # the same CC on another channel is another control
    assert len(fired) == 3
    learner.learn("undo")
    learner.on_cc(1, 120, 127)  # channel-mode CCs are never learned
    assert learner.learning == "undo"
    learner.on_cc(1, 31, 0)
    learner.on_cc(1, 31, 127)
    assert fired[-1] == "undo"

    def refuse(action: str) -> None:
        raise TakeError("nothing to undo")

    learner._trigger = refuse
    learner.on_cc(1, 31, 0)
    learner.on_cc(1, 31, 127)  # refused: logged, the input goes on
