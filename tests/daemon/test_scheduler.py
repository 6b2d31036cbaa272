from __future__ import annotations

import threading
import time

from ostinato.daemon.clock import TempoMap
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
    assert {m[0] & 0x0F for _, m in ons} == {9, 0}  # drums on channel 10, bass on 1
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
    sched.retime()
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
