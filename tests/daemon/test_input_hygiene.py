"""What the daemon does with each kind of input message, the same for every backend: a real
daemon (JACK backend, its sender process and ports) whose input handler is fed directly."""

from __future__ import annotations

import os

import pytest

from ostinato.daemon.clock import PPQN
from ostinato.daemon.daemon import Daemon, DaemonConfig
from ostinato.daemon.takes import TakeError
from tests.daemon.jack_rig import JackServer

SPT = 0.5 / PPQN  # 120 BPM


@pytest.fixture(scope="module")
def daemon(tiny_model_dir):
    server = JackServer(f"ostinato-hygiene-{os.getpid()}")
    config = DaemonConfig(model_dir=tiny_model_dir, backend="jack", osc_port=None,
                          client_name="hygiene")  # fmt: skip
    d = Daemon(config)
    yield d
    d.shutdown()
    server.close()


def test_take_actions_while_stopped_are_refused(daemon: Daemon) -> None:
    """No Start yet: nothing plays, so there is nothing to regenerate, keep or undo."""
    stopped = "the transport is stopped"
    for action, reason in (("regenerate", stopped), ("keep", stopped), ("undo", "nothing to undo")):
        with pytest.raises(TakeError, match=reason):
            daemon.take(action)
    assert daemon.planner.takes == 0 and daemon.telemetry.state()["last_take"] == ""


def test_sysex_active_sensing_and_garbage_change_nothing(daemon: Daemon) -> None:
    t0 = 1000.0
    daemon.inputs.handle(t0, [0xFA])
    for k in range(2 * PPQN):
        daemon.inputs.handle(t0 + 0.001 + k * SPT, [0xF8])
    tempo = daemon.clock.snapshot()
    ignored, garbage = daemon.inputs.ignored, daemon.inputs.garbage
    t = t0 + 0.001 + 2 * PPQN * SPT - 0.002
    for message in ([0xF0, 0x7F, 0x7F, 0x06, 0x02, 0xF7],  # MMC Play, as SysEx
                    [0xFE], [0xF1, 0x10], [0xF3, 2]):  # fmt: skip
        daemon.inputs.handle(t, message)
    assert daemon.inputs.ignored == ignored + 4
    for message in ([0xF4], [0xFD], [0xF2, 5], [0x90, 60], [0x45, 0x12], [0x90, 60, 200], []):
        daemon.inputs.handle(t, message)
    assert daemon.inputs.garbage == garbage + 7
    assert daemon.clock.snapshot() is tempo  # the time base did not move
    assert daemon.clock.running and daemon.clock.epoch == 1


def test_all_notes_off_closes_held_notes_and_is_never_learned(daemon: Daemon) -> None:
    beat_time = daemon.clock.snapshot().time_at
    daemon.inputs.handle(beat_time(1.0), [0x90, 60, 100])
    daemon.inputs.handle(beat_time(1.0), [0x90, 64, 100])
    daemon.inputs.handle(beat_time(1.5), [0xB0, 123, 0])  # a DAW's Stop or loop jump sends it
    notes = daemon.recorder.bar_notes(0)
    assert sorted((n.pitch, round(n.duration_beats, 6)) for n in notes) == [(60, 0.5), (64, 0.5)]
    daemon.learn("temperature")
    daemon.inputs.handle(beat_time(1.6), [0xB0, 123, 0])
    daemon.inputs.handle(beat_time(1.6), [0xB3, 120, 0])
    assert daemon.learner.learning == "temperature"  # channel-mode CCs are not knobs
    daemon.inputs.handle(beat_time(1.7), [0xB2, 21, 64])  # learned with its channel (3)
    assert daemon.learner.cc_map == {(2, 21): "temperature"} and daemon.learner.learning is None
    temperature = daemon.planner.settings.temperature
    daemon.inputs.handle(beat_time(1.8), [0xB0, 21, 0])  # CC 21 on channel 1: another knob
    assert daemon.planner.settings.temperature == temperature


def test_a_meter_the_vocabulary_cannot_hold_is_refused(tiny_model_dir) -> None:
    config = DaemonConfig(model_dir=tiny_model_dir, backend="jack", osc_port=None,
                          beats_per_bar=5.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"5/4 \(5 beats\) is longer than it can hold"):
        Daemon(config)
