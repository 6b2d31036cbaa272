"""The transport's timebase master of the benchmarks and the test rig, on a real JACK server.

Bar, beat and tick come from each cycle's frame alone, so a position JACK hands over without
them (a locate's frame, zero ticks per beat: the case that hung ``jack_transport`` for good on
a loaded machine) is answered like any other; relocating while rolling never leaves the
transport waiting in Starting."""

from __future__ import annotations

import os
import time

import jack
import pytest

from ostinato.jack_timebase import TICKS_PER_BEAT, TimebaseMaster
from tests.daemon.jack_rig import JackServer


@pytest.fixture(scope="module")
def server():
    s = JackServer(f"ostinato-timebase-{os.getpid()}", period=128)
    yield s
    s.close()


def test_a_located_position_without_bars_gets_them_from_its_frame(server: JackServer) -> None:
    master = TimebaseMaster(120, servername=server.name)
    try:
        pos = jack._ffi.new("jack_position_t*")
        pos.frame_rate = 48000
        pos.frame = 48000 * 5 + 12000  # 5.25 s at 120 BPM: beat 10.5, bar 3 beat 3 and a half
        pos.ticks_per_beat = 0.0  # a locate request's position: no BBT at all
        pos.valid = 0
        master._timebase(jack.ROLLING, 128, pos, False)
        assert pos.valid & jack.POSITION_BBT
        assert (pos.bar, pos.beat, pos.tick) == (3, 3, int(TICKS_PER_BEAT) // 2)
        assert pos.bar_start_tick == 2 * 4 * TICKS_PER_BEAT
        assert (pos.beats_per_bar, pos.beat_type, pos.beats_per_minute) == (4.0, 4.0, 120.0)
        master.tempo(150)
        pos.frame = 48000 * 2  # 2 s at 150 BPM: beat 5 exactly, bar 2 beat 2
        master._timebase(jack.ROLLING, 128, pos, True)
        assert (pos.bar, pos.beat, pos.tick, pos.beats_per_minute) == (2, 2, 0, 150.0)
        with pytest.raises(ValueError, match="tempo"):
            master.tempo(0)
    finally:
        master.close()


def test_relocating_while_rolling_rolls_again_at_bar_one(server: JackServer) -> None:
    master = TimebaseMaster(100, servername=server.name)
    listener = None
    try:
        listener = jack.Client("listener", no_start_server=True, servername=server.name)
        master.roll()
        server.wait_for(lambda: master.state() == "rolling", 5, "the transport never rolled")
        for _ in range(6):
            time.sleep(0.7)  # rolled on from the last relocate: past 0.7 s of frames
            master.roll()

            def back_at_bar_one() -> bool:  # a missed relocate: 0.7 s of frames and more
                state, pos = listener.transport_query()
                return state == jack.ROLLING and pos["frame"] < 0.3 * master.rate

            server.wait_for(back_at_bar_one, 1.0, "no relocate, or stuck after it")
            _state, pos = listener.transport_query()
            assert pos["beats_per_minute"] == 100.0 and pos["bar"] == 1, pos
        master.stop()
        server.wait_for(lambda: master.state() == "stopped", 5, "the transport never stopped")
    finally:
        if listener is not None:
            listener.close()
        master.close()
