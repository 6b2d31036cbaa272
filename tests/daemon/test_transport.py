"""The transport's thresholds (ostinato/daemon/transport.py), shared by the clock and the JACK
sender's Stop reflex: the two must call a Stop and the Start after it the same thing at every
delay, or the sender would play on through what the clock calls a stop (or the reverse)."""

from __future__ import annotations

import pytest

from ostinato.daemon.clock import PPQN, Clock, TempoMap, TransportEvent
from ostinato.daemon.protocol import TEMPO
from ostinato.daemon.transport import JUMP_TICKS, suspend_after_s
from tests.daemon.test_jack_io import START, STOP, TICK, add_note, make_cycle, play_into

TICK_S = 0.5 / PPQN  # 120 BPM: TICK frames at 48 kHz


@pytest.mark.parametrize("delay_ticks", [0.3, 1.0, 1.45, 1.55, 2.0, 6.0])
def test_the_clock_and_the_stop_reflex_agree_on_a_loop_jump(delay_ticks: float) -> None:
    clock = Clock(exact_stamps=True)
    events: list[TransportEvent] = []
    clock.listeners.append(events.append)
    clock.on_start(0.0)
    for i in range(2 * PPQN):
        clock.on_tick(0.01 + i * TICK_S)
    stop_s = 0.01 + 2 * PPQN * TICK_S  # where the next tick would be
    clock.on_stop(stop_s)
    clock.on_start(stop_s + delay_ticks * TICK_S)
    clock_says_jump = events[-1].kind == "jump"

    cycle, out = make_cycle(frames=256)
    cycle.commands.put((TEMPO, TempoMap(0.0, 0.0, 0.5)))
    add_note(cycle, 3.0, 8.0, 60, note_id=1)
    stop = 96_100
    start = stop + round(delay_ticks * TICK)
    play_into(cycle, out, 90_112, start + 1024, inputs={stop: STOP, start: START})
    reflex_says_jump = not cycle.queue.held

    assert clock_says_jump == reflex_says_jump == (delay_ticks <= JUMP_TICKS)


def test_a_gap_is_six_ticks_and_never_under_150_ms() -> None:
    assert suspend_after_s(60.0 / 60 / PPQN) == pytest.approx(0.25)  # 60 BPM
    assert suspend_after_s(60.0 / 300 / PPQN) == pytest.approx(0.15)  # 300 BPM: 50 ms of ticks
