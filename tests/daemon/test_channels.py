"""Channels both ways through a real JACK server: a jam on drums, bass and keys comes out on
channels 10, 2 and 1, each pitched instrument's Bank Select + Program Change before its first
note; what the musician plays on channel 2 reaches the model as bass (as the session recording
shows: its input track is named for the instrument heard)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import mido

from ostinato.channels import ChannelMap, family_of, parse_in, parse_out
from tests.daemon.jack_rig import DAEMON_IN, DAEMON_OUT, REPO, JackServer, Probe, daemon_command


def test_the_maps_and_their_words() -> None:
    default = ChannelMap()
    assert [default.channel_for(p) for p in (-1, 0, 4, 25, 33, 48, 81, 89, 100)] == [
        9, 0, 0, 4, 1, 2, 3, 2, 5,
    ]  # fmt: skip
    assert [family_of(p) for p in (-1, 19, 24, 39, 40, 56, 87, 88, 95, 96)] == [
        "drums", "keys", "guitar", "bass", "pad", "lead", "lead", "pad", "pad", "other",
    ]  # fmt: skip
    changed = ChannelMap(parse_out({"bass": 7, "81": 12}), parse_in("2=lead,11=33,3=0"))
    assert changed.channel_for(33) == 6 and changed.channel_for(81) == 11
    assert changed.channel_for(80) == 3  # lead's channel, not 81's
    assert changed.program_for(1) == 81 and changed.program_for(10) == 33
    assert changed.program_for(2) == 0 and changed.program_for(9) == -1
    assert changed.program_for(12) == 0  # a channel not in the map: keys
    for bad in ("bass=17", "bass=0", "flute=2", "bass", "200=3", {"bass": True}):
        try:
            parse_out(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")


def test_a_jam_on_three_instruments_comes_out_on_three_channels(tmp_path) -> None:
    server = JackServer(f"ostinato-chan-{os.getpid()}")
    sessions = tmp_path / "sessions"
    log_path = tmp_path / "daemon.log"
    try:
        with log_path.open("w") as log:
            daemon = server.spawn(
                daemon_command("--clock", "internal", "--bpm", "150", "--mode", "jam",
                               "--programs", "drums,33,0", "--program-change", "--seed", "3",
                               "--no-osc", "--record", str(sessions)),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        server.wait_for(lambda: DAEMON_IN in server.ports(), 60, "the daemon never started")
        probe = Probe()
        server.connect(DAEMON_OUT, probe.in_port)
        server.connect(probe.out_port, DAEMON_IN)
        # playing means listening (input before the daemon is ready is not read)
        server.wait_for(lambda: len(probe.notes()) >= 1, 60, "Ostinato never played")
        xruns = probe.xruns
        for k in range(12):  # the musician's bass line, on channel 2
            probe.send([0x91, 40 + k % 3, 100])
            time.sleep(0.2)
            probe.send([0x81, 40 + k % 3, 0])
        server.wait_for(lambda: len(probe.notes()) >= 30, 60, "Ostinato played too little")
        # JACK drops the MIDI of a cycle a client was late for: each xrun while the notes went
        # out (on a loaded machine, the daemon planning its first bar) may have taken one
        xruns = probe.xruns - xruns
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, log_path.read_text()[-2000:]
        got = [m for _, m in probe.snapshot()]
    finally:
        server.close()
    ons = [m for m in got if m[0] & 0xF0 == 0x90 and m[2] > 0]
    channels = {m[0] & 0x0F for m in ons}
    assert channels <= {9, 1, 0} and len(channels) >= 2, channels
    programs = [m for m in got if m[0] & 0xF0 == 0xC0]
    assert all(len(m) == 2 for m in programs)  # two bytes, as MIDI has it
    assert {(m[0] & 0x0F, m[1]) for m in programs} <= {(1, 33), (0, 0)}
    for channel, program in ((1, 33), (0, 0)):
        first_on = next((i for i, m in enumerate(got) if m in ons and m[0] & 0x0F == channel),
                        None)  # fmt: skip
        if first_on is None:
            continue
        pc = got.index([0xC0 | channel, program])
        assert pc < first_on  # said before the instrument's first note
        assert got[pc - 2 : pc] == [[0xB0 | channel, 0, 0], [0xB0 | channel, 32, 0]]
    assert not any(m[0] == 0xC9 for m in programs)  # the drum channel takes no program
    (path,) = sessions.glob("*.mid")
    tracks = {t.name: t for t in mido.MidiFile(str(path)).tracks}
    assert "In ch2 program 33" in tracks, list(tracks)  # heard as bass, not piano
    heard = sum(m.type == "note_on" and m.velocity > 0 for m in tracks["In ch2 program 33"])
    assert 12 - xruns <= heard <= 12, (heard, xruns)
