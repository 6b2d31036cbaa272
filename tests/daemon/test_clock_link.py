"""The clock fed by Ableton Link (Clock.on_link) and the daemon's choice of clock, with fake
times and a fake peer: no network, no aalink."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ostinato.daemon.clock import LINK_JUMP_S, Clock, TempoMap, TransportEvent
from ostinato.daemon.collector import Collector
from ostinato.daemon.daemon import Daemon, DaemonConfig
from ostinato.daemon.input_router import InputRouter
from ostinato.daemon.recorder import Recorder


def linked(bpm: float = 120.0) -> tuple[Clock, list]:
    """A clock and what its listeners heard, transport events and maps in one list."""
    clock = Clock(bpm=100.0)
    heard: list = []
    clock.listeners.append(heard.append)
    clock.map_listeners.append(heard.append)
    return clock, heard


def events(heard: list) -> list[TransportEvent]:
    return [e for e in heard if isinstance(e, TransportEvent)]


def test_a_stopped_session_shows_its_tempo_and_waits() -> None:
    clock, heard = linked()
    clock.on_link(1.0, 17.25, 120.0, False)
    assert clock.source == "link" and not clock.running and not clock.position_known
    assert clock.bpm == 120.0 and clock.map is None and heard == []


def test_start_opens_an_epoch_before_its_map() -> None:
    clock, heard = linked()
    clock.on_link(1.0, 17.25, 120.0, False)
    clock.on_link(2.0, -1.5, 120.0, True)  # bar 1 begins 0.75 s from now
    start, tempo = heard
    assert isinstance(start, TransportEvent) and isinstance(tempo, TempoMap)
    assert (start.kind, start.beat, start.time, start.epoch) == ("start", -1.5, 2.0, 1)
    assert tempo == TempoMap(2.0, -1.5, 0.5)
    assert clock.running and clock.position_known and clock.epoch == 1
    assert clock.beat_now(2.75) == pytest.approx(0.0)


def test_drift_and_tempo_changes_move_the_map_without_an_epoch() -> None:
    clock, heard = linked()
    clock.on_link(0.0, 0.0, 120.0, True)
    clock.on_link(10.0, 20.0 + 30e-6 / 0.5, 120.0, True)  # 30 µs of clock drift
    assert clock.map == TempoMap(10.0, 20.0 + 60e-6, 0.5) and clock.epoch == 1
    # 120 → 133 BPM, 4 ms before the follower saw it: Link's beat went on at the new rate
    t = 11.0
    beat = clock.map.beat_at(t - 0.004) + 0.004 * 133 / 60
    clock.on_link(t, beat, 133.0, True)
    assert clock.epoch == 1 and len(events(heard)) == 1
    assert clock.map == TempoMap(t, beat, 60 / 133) and clock.bpm == 133.0
    assert clock.beat_now(t + 60 / 133) == pytest.approx(beat + 1)


def test_a_peer_forcing_the_beat_is_a_jump() -> None:
    clock, heard = linked()
    clock.on_link(0.0, 0.0, 120.0, True)
    clock.on_link(5.0, 10.0 + 1.5 * LINK_JUMP_S / 0.5, 120.0, True)  # 3 ms: more than drift
    clock.on_link(9.0, 4.0, 120.0, True)  # back to bar 2
    _, small, back = events(heard)
    assert (small.kind, small.from_beat, small.epoch) == ("jump", pytest.approx(10.0), 2)
    assert (back.kind, back.beat, back.from_beat, back.epoch) == ("jump", 4.0, pytest.approx(
        18.0 + 1.5 * LINK_JUMP_S / 0.5), 3)  # fmt: skip
    assert clock.map == TempoMap(9.0, 4.0, 0.5) and clock.jumps == 2
    # a jump is an event before its map, like a DAW's
    assert isinstance(heard[-2], TransportEvent) and heard[-1] == clock.map


def test_stop_and_start_again() -> None:
    clock, heard = linked()
    clock.on_link(0.0, -2.0, 120.0, True)
    clock.on_link(3.1, 4.2, 120.0, False)
    stop = events(heard)[-1]
    assert (stop.kind, stop.beat, stop.time, stop.epoch) == ("stop", pytest.approx(4.2), 3.1, 2)
    assert not clock.running and clock.beat_now(3.2) is None
    clock.on_link(3.5, 4.9, 120.0, False)  # still stopped: nothing new
    assert len(events(heard)) == 2
    clock.on_link(6.0, -0.5, 120.0, True)  # the session starts again: bar 1 in a beat
    start = events(heard)[-1]
    assert (start.kind, start.beat, start.epoch) == ("start", -0.5, 3)
    assert clock.running and clock.beat_now(6.25) == pytest.approx(0.0)


def test_link_takes_over_from_the_internal_tempo() -> None:
    """clock = auto: playing at --bpm when a Link session appears."""
    clock, heard = linked()
    clock.start_internal(0.0, 100.0)
    clock.on_link(3.0, -1.0, 120.0, True)
    jump = events(heard)[-1]
    assert (jump.kind, jump.beat, jump.from_beat) == ("jump", -1.0, pytest.approx(5.0))
    assert clock.source == "link" and clock.running and clock.map == TempoMap(3.0, -1.0, 0.5)


def test_midi_clock_wins_and_a_midi_stop_does_not_stop_link() -> None:
    clock, heard = linked()
    clock.on_link(0.0, 0.0, 120.0, True)
    clock.on_stop(1.0)  # a Stop without MIDI clock on the input: not the session's
    assert clock.running and clock.source == "link" and len(events(heard)) == 1
    clock.on_start(2.0)  # the DAW's clock comes: it drives the clock from now on
    assert clock.source == "midi" and events(heard)[-1].kind == "start"
    count = len(heard)
    clock.on_link(2.5, 5.0, 120.0, True)
    clock.on_link(3.0, 6.0, 120.0, False)
    assert len(heard) == count and clock.source == "midi" and clock.running


def test_bad_link_state_is_refused() -> None:
    clock, _ = linked()
    with pytest.raises(ValueError, match="Link"):
        clock.on_link(0.0, float("nan"), 120.0, True)
    with pytest.raises(ValueError, match="Link"):
        clock.on_link(0.0, 0.0, 0.0, True)


def test_with_clock_link_midi_clock_and_transport_are_ignored() -> None:
    clock, heard = linked()
    inputs = InputRouter(clock, Recorder(), threading.Lock(), lambda *cc: None)
    inputs.midi_clock = False  # clock = link
    clock.on_link(0.0, 0.0, 120.0, True)
    for message in ([0xFC], [0xFA], [0xF8], [0xFB], [0xF2, 0, 1]):
        inputs.handle(1.0, message)
    assert inputs.ignored == 5 and inputs.garbage == 0
    assert clock.source == "link" and clock.running and len(events(heard)) == 1
    assert clock.follower.count == 0  # not even a tick counted


class FakeLink:
    def __init__(self, peers: int) -> None:
        self.peers, self.engaged = peers, False

    def engage(self) -> None:
        self.engaged = True


def auto_daemon(peers: int, clock_setting: str = "auto", waited: bool = True) -> Daemon:
    """Just what Daemon.poll reads: the clock, the Link peer, the sender's liveness."""
    daemon = Daemon.__new__(Daemon)
    daemon.config = DaemonConfig(model_dir=Path("."), clock=clock_setting)
    daemon.clock = Clock(bpm=120.0)
    daemon.link = cast(Any, FakeLink(peers))
    daemon.scheduler = cast(Any, SimpleNamespace(alive=True, now=lambda: 50.0))
    daemon._waiting_said = False
    daemon.collector = Collector()  # never started: it only watches the transport
    daemon._started_at = time.perf_counter() - (10.0 if waited else 0.0)
    return daemon


def test_auto_order_midi_clock_then_a_link_session_then_the_internal_tempo() -> None:
    # the first 3 s belong to MIDI clock, even with a Link session there
    daemon = auto_daemon(peers=2, waited=False)
    assert daemon.poll() and not daemon.link.engaged and daemon.clock.source == "none"
    # then a session with peers
    daemon = auto_daemon(peers=2)
    assert daemon.poll() and daemon.link.engaged and daemon.clock.source == "none"
    # no peers: the internal tempo, until one shows up
    daemon = auto_daemon(peers=0)
    assert daemon.poll() and daemon.clock.source == "internal" and not daemon.link.engaged
    daemon.link.peers = 1
    assert daemon.poll() and daemon.link.engaged
    # MIDI clock heard (ticks, no Start yet): Link stays out
    daemon = auto_daemon(peers=1)
    for k in range(30):
        daemon.clock.on_tick(1.0 + k * 0.5 / 24)
    assert daemon.poll() and not daemon.link.engaged and daemon.clock.source == "none"
    # clock = link: never the internal tempo
    daemon = auto_daemon(peers=0, clock_setting="link")
    assert daemon.poll() and daemon.clock.source == "none" and daemon._waiting_said
