from __future__ import annotations

import threading
import time

import pytest

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.note_queue import NOTE_ON, NoteQueue, reanchored
from ostinato.daemon.scheduler import Scheduler


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[float, list[int]]] = []
        self.lock = threading.Lock()

    def __call__(self, message: list[int]) -> None:
        with self.lock:
            self.messages.append((time.perf_counter(), list(message)))


def make(tempo: TempoMap, **kwargs) -> tuple[Scheduler, Capture]:
    cap = Capture()
    holder = {"map": tempo}
    sched = Scheduler(cap, lambda: holder["map"], **kwargs)
    sched.holder = holder  # type: ignore[attr-defined]
    sched.start()
    return sched, cap


def test_notes_go_out_on_time_with_note_offs() -> None:
    t0 = time.perf_counter() + 0.05
    sched, cap = make(TempoMap(t0, 0.0, 0.1))  # 600 BPM: a beat every 100 ms
    for beat in range(4):
        sched.schedule_note(beat, 0.5, -1, 36, 100)
    sched.schedule_note(1.0, 1.0, 33, 40, 90)
    time.sleep(0.6)
    sched.stop()
    ons = [(t, m) for t, m in cap.messages if m[0] & 0xF0 == 0x90]
    offs = [(t, m) for t, m in cap.messages if m[0] & 0xF0 == 0x80]
    assert len(ons) == 5 and len(offs) == 5
    assert {m[0] & 0x0F for _, m in ons} == {9, 1}  # drums on channel 10, bass on 2
    for t, _ in ons:  # coarse bound: precise lateness is measured by the JACK tests and bench
        beat = round((t - t0) / 0.1, 1)
        assert abs((t - t0) - beat * 0.1) < 0.01
    assert sched.stats.deadline_misses == 0 and sched.sounding == 0


def test_late_notes_are_dropped_never_played_off_grid() -> None:
    t0 = time.perf_counter() - 1.0  # beat 0 was a second ago
    sched, cap = make(TempoMap(t0, 0.0, 0.5))
    sched.schedule_note(0.0, 4.0, 0, 60, 100)  # due 1 s ago, would still be sounding
    time.sleep(0.05)
    sched.stop()
    assert sched.stats.deadline_misses == 1
    assert not [m for _, m in cap.messages if m[0] & 0xF0 == 0x90]


def test_panic_releases_sounding_notes_and_sends_all_notes_off() -> None:
    t0 = time.perf_counter()
    sched, cap = make(TempoMap(t0, 0.0, 0.5))
    sched.schedule_note(0.05, 20.0, 0, 60, 100)
    sched.schedule_note(0.05, 20.0, -1, 42, 100)
    time.sleep(0.1)
    assert sched.sounding == 2
    sched.panic()
    sched.stop()
    msgs = [m for _, m in cap.messages]
    assert [0x80, 60, 0] in msgs and [0x89, 42, 0] in msgs
    assert [0xB0, 123, 0] in msgs and [0xB9, 123, 0] in msgs
    assert sched.sounding == 0 and sched.pending() == 0


def test_retrigger_and_tempo_change_retimes_queue() -> None:
    t0 = time.perf_counter() + 0.05
    sched, cap = make(TempoMap(t0, 0.0, 0.1))
    sched.schedule_note(0.0, 1.0, 0, 60, 100)
    sched.schedule_note(0.5, 1.0, 0, 60, 100)  # same pitch while sounding
    sched.schedule_note(4.0, 0.5, 0, 64, 100)
    time.sleep(0.12)
    sched.holder["map"] = TempoMap(t0, 0.0, 0.05)  # twice as fast: beat 4 at +200 ms
    sched.push_tempo(sched.holder["map"])
    time.sleep(0.35)
    sched.stop()
    ons = [(t, m) for t, m in cap.messages if m[0] == 0x90]
    assert [m[1] for _, m in ons] == [60, 60, 64]
    assert abs((ons[2][0] - t0) - 0.2) < 0.01
    first_off = next(i for i, (_, m) in enumerate(cap.messages) if m == [0x80, 60, 0])
    assert cap.messages[first_off + 1][1] == [0x90, 60, 100]  # released, then struck again


def test_latency_offset_moves_notes_earlier() -> None:
    t0 = time.perf_counter() + 0.1
    sched, cap = make(TempoMap(t0, 0.0, 0.1), latency_ms=30)
    sched.schedule_note(0.0, 0.2, 0, 60, 100)
    time.sleep(0.2)
    sched.stop()
    t_on = next(t for t, m in cap.messages if m[0] == 0x90)
    assert abs((t_on - t0) + 0.030) < 0.01


def _policy_of(sched: Scheduler) -> int:
    import os

    deadline = time.monotonic() + 2.0
    while sched.realtime is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sched._thread is not None
    return os.sched_getscheduler(sched._thread.native_id)


def test_sender_thread_asks_for_real_time_priority() -> None:
    """The OS's own view of the sender thread: SCHED_FIFO at the asked priority when the
    scheduler says it got it, normal scheduling when refused or not asked for."""
    import os

    sched, _ = make(TempoMap(time.perf_counter(), 0.0, 0.5), rt_priority=10)
    try:
        policy = _policy_of(sched)
        if sched.realtime:
            assert policy == os.SCHED_FIFO
            assert os.sched_getparam(sched._thread.native_id).sched_priority == 10
        else:  # refused (no rtprio allowance here): still sending, at normal priority
            assert policy == os.SCHED_OTHER
    finally:
        sched.stop()
    plain, _ = make(TempoMap(time.perf_counter(), 0.0, 0.5), rt_priority=0)
    try:
        assert _policy_of(plain) == os.SCHED_OTHER and plain.realtime is False
    finally:
        plain.stop()


# -- the note queue, with a fake port ---------------------------------------------------------
class Port:
    """Takes up to ``room`` messages (None: any number), like a JACK buffer that fills."""

    def __init__(self, room: int | None = None) -> None:
        self.messages: list[list[int]] = []
        self.room = room

    def __call__(self, status: int, data1: int, data2: int) -> bool:
        if self.room is not None:
            if self.room == 0:
                return False
            self.room -= 1
        self.messages.append([status, data1, data2])
        return True


def play_until(queue: NoteQueue, port: Port, beat: float) -> list[float]:
    """Play every event before ``beat``; the beats played."""
    assert queue.flush(port)
    played = []
    while (event := queue.peek()) is not None and event[0] < beat:
        assert queue.play_next(port)
        played.append(event[0])
    return played


def test_note_queue_plays_in_order_with_every_note_off() -> None:
    queue, port = NoteQueue(capacity=4), Port()  # grows past its first capacity
    queue.schedule(1.0, 2.0, 0, 60, 100, note_id=1, handed_over=0.0)
    queue.schedule(0.0, 3.0, 9, 36, 90, note_id=2, handed_over=0.0)
    queue.schedule(1.0, 1.5, 0, 64, 80, note_id=3, handed_over=0.0)
    assert queue.pending == 6
    assert play_until(queue, port, 1.2) == [0.0, 1.0, 1.0]
    assert queue.sounding == 3
    play_until(queue, port, 10.0)
    assert port.messages == [
        [0x99, 36, 90], [0x90, 60, 100], [0x90, 64, 80],
        [0x80, 64, 0], [0x80, 60, 0], [0x89, 36, 0],
    ]  # fmt: skip
    assert queue.sounding == 0 and queue.pending == 0 and queue.channels_used() == [0, 9]


def test_a_retrigger_releases_first_and_a_dropped_note_has_no_note_off() -> None:
    queue, port = NoteQueue(), Port()
    queue.schedule(0.0, 2.0, 0, 60, 100, note_id=1, handed_over=0.0)
    queue.schedule(1.0, 1.5, 0, 60, 90, note_id=2, handed_over=0.0)  # same pitch, sounding
    queue.schedule(1.2, 1.4, 0, 62, 90, note_id=3, handed_over=0.0)
    play_until(queue, port, 1.1)
    assert port.messages == [[0x90, 60, 100], [0x80, 60, 0], [0x90, 60, 90]]
    event = queue.peek()
    assert event is not None and event[2] == NOTE_ON and event[6] == 3
    queue.drop_next()  # too late: dropped
    play_until(queue, port, 10.0)
    # note 1's note-off at beat 2 finds note 2 sounding: skipped; note 3's has nothing to end
    assert port.messages[3:] == [[0x80, 60, 0]]
    assert queue.sounding == 0 and queue.pending == 0


def test_panic_drops_the_queue_and_sends_all_notes_off_on_used_channels() -> None:
    queue, port = NoteQueue(), Port()
    queue.schedule(0.0, 8.0, 0, 60, 100, note_id=1, handed_over=0.0)
    queue.schedule(0.0, 8.0, 9, 42, 100, note_id=2, handed_over=0.0)
    queue.schedule(4.0, 5.0, 3, 50, 100, note_id=3, handed_over=0.0)
    play_until(queue, port, 1.0)
    port.messages.clear()
    queue.panic()
    assert queue.pending == 0 and queue.sounding == 0 and queue.peek() is None
    assert queue.flush(port)
    assert sorted(port.messages[:2]) == [[0x80, 60, 0], [0x89, 42, 0]]
    assert port.messages[2:] == [[0xB0, 123, 0], [0xB9, 123, 0]]  # not channel 4: never used


def test_hold_releases_without_all_notes_off_and_waits_for_a_jump() -> None:
    queue, port = NoteQueue(), Port()
    queue.schedule(0.0, 6.0, 0, 60, 100, note_id=1, handed_over=0.0)  # sounding at the stop
    queue.schedule(2.0, 3.0, 0, 62, 100, note_id=2, handed_over=0.0)
    play_until(queue, port, 1.0)
    port.messages.clear()
    queue.hold()
    assert queue.held and queue.peek() is None and queue.releasing == 1
    assert queue.flush(port) and port.messages == [[0x80, 60, 0]]  # no CC 123
    assert queue.pending == 2  # note 2's on and off; note 1's note-off went with the release
    queue.jump(1.0, 1.0, shift=True)  # Continue where it stopped
    assert not queue.held
    assert play_until(queue, port, 10.0) == [2.0, 3.0]


def test_a_jump_shifts_the_notes_from_its_beat_and_drops_the_rest() -> None:
    queue, port = NoteQueue(), Port()
    queue.schedule(14.0, 17.0, 0, 40, 100, note_id=1, handed_over=0.0)  # sounding at the jump
    queue.schedule(15.5, 16.5, 0, 41, 100, note_id=2, handed_over=0.0)  # not played yet
    queue.schedule(16.0 - 1e-9, 16.5, 0, 42, 100, note_id=3, handed_over=0.0)  # on the loop end
    queue.schedule(17.0, 17.25, 0, 43, 100, note_id=4, handed_over=0.0)
    play_until(queue, port, 15.0)
    port.messages.clear()
    queue.jump(16.0, 0.0, shift=True)  # the loop's end (beat 16) back to its start
    assert queue.flush(port) and port.messages == [[0x80, 40, 0]]
    port.messages.clear()
    beats = play_until(queue, port, 100.0)
    assert [round(b, 6) for b in beats] == [0.0, 0.5, 1.0, 1.25]
    assert port.messages == [[0x90, 42, 100], [0x80, 42, 0], [0x90, 43, 100], [0x80, 43, 0]]
    queue.schedule(5.0, 6.0, 0, 44, 100, note_id=5, handed_over=0.0)
    queue.jump(3.0, 8.0, shift=False)  # a relocate that does not keep the queue
    assert queue.pending == 0


def test_the_loop_downbeat_played_before_the_stop_sounds_on_through_the_jump() -> None:
    """The bar after the loop's end begins in the cycle the DAW's Stop comes in: its downbeat
    is out before the Stop is heard. A Stop at that bar line keeps it sounding; the loop jump
    a tick later moves it (and its note-off) to the loop's start: a held bass note is not
    cut to a stab on every pass. Without a jump, a second hold releases it."""
    queue, port = NoteQueue(), Port()
    queue.schedule(14.0, 16.0, 0, 40, 100, note_id=1, handed_over=0.0)
    queue.schedule(16.0, 18.0, 0, 45, 100, note_id=2, handed_over=0.0)  # the pass's downbeat
    queue.schedule(17.0, 17.5, 0, 47, 100, note_id=3, handed_over=0.0)
    play_until(queue, port, 16.01)
    port.messages.clear()
    queue.hold(16.0)
    assert queue.flush(port) and port.messages == [] and queue.sounding == 1
    queue.jump(16.0, 0.0, shift=True)
    assert queue.flush(port) and port.messages == [] and queue.sounding == 1
    assert [round(b, 6) for b in play_until(queue, port, 100.0)] == [1.0, 1.5, 2.0]
    assert port.messages == [[0x90, 47, 100], [0x80, 47, 0], [0x80, 45, 0]]
    # a real Stop at a bar line: kept for a moment, then released with the second hold
    queue.schedule(4.0, 8.0, 0, 50, 100, note_id=4, handed_over=0.0)
    play_until(queue, port, 4.01)
    port.messages.clear()
    queue.hold(4.0)
    assert queue.flush(port) and port.messages == []
    queue.hold()
    assert queue.flush(port) and port.messages == [[0x80, 50, 0]] and queue.pending == 0


def test_a_full_port_carries_the_rest_and_never_loses_a_note_off() -> None:
    queue = NoteQueue()
    for pitch in range(60, 64):
        queue.schedule(0.0, 1.0, 0, pitch, 100, note_id=pitch, handed_over=0.0)
    port = Port(room=3)
    play_until(queue, Port(), 0.5)
    queue.panic()
    assert not queue.flush(port)  # 3 of 4 note-offs and no CC 123 yet
    port.room = 1
    assert not queue.flush(port)
    port.room = 5
    assert queue.flush(port)
    assert len(port.messages) == 5 and port.messages[-1] == [0xB0, 123, 0]
    assert sorted(m[1] for m in port.messages[:4]) == [60, 61, 62, 63]
    # a retrigger that does not fit: the note-off goes out, the note-on waits
    queue.schedule(2.0, 3.0, 0, 70, 100, note_id=10, handed_over=0.0)
    queue.schedule(2.5, 3.0, 0, 70, 90, note_id=11, handed_over=0.0)
    play_until(queue, Port(), 2.2)
    port = Port(room=1)
    assert not queue.play_next(port) and port.messages == [[0x80, 70, 0]]
    port.room = 1
    assert queue.play_next(port) and port.messages[-1] == [0x90, 70, 90]


def test_a_queue_that_may_not_grow_refuses_notes_when_full() -> None:
    queue = NoteQueue(capacity=4, growable=False)
    assert queue.schedule(0.0, 1.0, 0, 60, 100, note_id=1, handed_over=0.0)
    assert queue.schedule(0.0, 1.0, 0, 61, 100, note_id=2, handed_over=0.0)
    assert not queue.schedule(0.0, 1.0, 0, 62, 100, note_id=3, handed_over=0.0)
    assert queue.refused == 1 and queue.pending == 4


@pytest.mark.parametrize("shift", [True, False])
def test_the_sender_thread_holds_and_jumps(shift: bool) -> None:
    """Stop: the sounding note ends at once, the next does not play. A loop jump with shift:
    the queue moves with the map, so what was due still plays on time; without: it is gone."""
    t0 = time.perf_counter() + 0.05
    sched, cap = make(TempoMap(t0, 0.0, 0.1))
    sched.schedule_note(0.0, 4.0, 0, 60, 100)
    sched.schedule_note(2.0, 0.5, 0, 62, 100)  # due at t0 + 0.2
    time.sleep(0.1)
    sched.hold()
    t_hold = time.perf_counter()
    assert sched.held and sched.sounding == 0
    time.sleep(0.05)
    if shift:  # the sender process moves its map with the queue (the map is the caller's)
        sched.holder["map"] = reanchored(sched.holder["map"], 1.0, 9.0)
    sched.jump(1.0, 9.0, shift=shift)
    time.sleep(0.25)
    t_stop = time.perf_counter()
    sched.stop()
    msgs = cap.messages
    off_60 = next(t for t, m in msgs if m == [0x80, 60, 0])
    assert off_60 <= t_hold + 0.005
    assert not [t for t, m in msgs if m == [0xB0, 123, 0] and t < t_stop]  # a hold: no CC 123
    on_62 = [t for t, m in msgs if m == [0x90, 62, 100]]
    if shift:
        assert len(on_62) == 1 and abs(on_62[0] - (t0 + 0.2)) < 0.01
    else:
        assert not on_62


def test_each_instrument_on_its_channel_with_its_program_change() -> None:
    """The default map (keys 1, bass 2, pad 3, drums 10), a map changed live, and Bank Select +
    Program Change before an instrument's first note on its channel, once (again when another
    instrument takes the channel)."""
    from ostinato.channels import ChannelMap, parse_out

    t0 = time.perf_counter() + 0.05
    sched, cap = make(TempoMap(t0, 0.0, 0.1))
    sched.set_channels(ChannelMap(), send_programs=True)
    sched.schedule_note(0.0, 0.5, -1, 36, 100)  # drums: channel 10, no program change
    sched.schedule_note(0.0, 0.5, 33, 40, 90)  # bass: channel 2
    sched.schedule_note(0.5, 0.5, 33, 43, 90)  # the same instrument: no second change
    sched.schedule_note(1.0, 0.5, 4, 60, 80)  # keys (E. piano): channel 1
    sched.schedule_note(1.0, 0.5, 89, 64, 70)  # pad: channel 3
    sched.set_channels(ChannelMap(parse_out({"bass": 7})), send_programs=True)
    sched.schedule_note(1.5, 0.5, 34, 45, 90)  # bass (picked): now on channel 7
    time.sleep(0.35)
    sched.stop()
    got = [m for _, m in cap.messages]
    programs = [m for m in got if m[0] & 0xF0 == 0xC0]
    assert programs == [[0xC1, 33], [0xC0, 4], [0xC2, 89], [0xC6, 34]]  # two bytes each
    for pc in programs:  # Bank Select 0 (MSB, LSB) right before each
        i = got.index(pc)
        assert got[i - 2 : i] == [[0xB0 | pc[0] & 0x0F, 0, 0], [0xB0 | pc[0] & 0x0F, 32, 0]]
        first_note = next(j for j, m in enumerate(got)
                          if m[0] == 0x90 | pc[0] & 0x0F and m[2] > 0)  # fmt: skip
        assert i < first_note  # before the instrument's first note
    ons = {(m[0] & 0x0F, m[1]) for m in got if m[0] & 0xF0 == 0x90 and m[2]}
    assert ons == {(9, 36), (1, 40), (1, 43), (0, 60), (2, 64), (6, 45)}
