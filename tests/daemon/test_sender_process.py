"""The note sender process and the input's timestamps, through a real JACK server."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.ports import MidiPorts
from ostinato.daemon.sender import SenderProcess
from tests.daemon.jack_rig import (
    CLOCK_PORT,
    DAEMON_IN,
    DAEMON_OUT,
    REPO,
    JackServer,
    Probe,
    Transport,
    daemon_command,
    sounding,
)


@pytest.fixture(scope="module")
def jack():
    server = JackServer(f"ostinato-sender-{os.getpid()}")
    yield server
    server.close()


def test_killing_the_daemon_leaves_no_note_hanging(jack: JackServer, tmp_path) -> None:
    """SIGKILL gives the daemon no chance to clean up: its sender process sees the pipe
    close, releases every sounding note, sends All Notes Off and exits."""
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = jack.spawn(
            daemon_command("--clock", "internal", "--bpm", "90", "--mode", "jam",
                           "--programs", "33,4", "--seed", "3", "--no-osc"),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    probe = Probe("probe-kill")
    try:
        jack.wait_for(lambda: DAEMON_IN in jack.ports(), 60, "the daemon's ports never appeared")
        jack.connect(DAEMON_OUT, probe.in_port)
        # wait for a moment with notes sounding (bass and piano hold theirs)
        jack.wait_for(lambda: sounding(probe.notes()), 60, "no note ever sounded: "
                      + log_path.read_text()[-2000:])  # fmt: skip
        held = sounding(probe.notes())
        daemon.kill()
        assert daemon.wait(10) == -signal.SIGKILL
        jack.wait_for(lambda: DAEMON_OUT not in jack.ports(), 10, "the sender did not exit")
        time.sleep(0.1)
        notes = probe.notes()
        assert held and not sounding(notes), f"left sounding: {sounding(notes)}"
        all_off = {m[0] & 0x0F for _, m in probe.snapshot() if m[0] & 0xF0 == 0xB0 and m[1] == 123}
        assert {channel for channel, _ in held} <= all_off
    finally:
        if daemon.poll() is None:
            daemon.kill()
        probe.close()


def test_a_backlog_of_input_keeps_its_timing(jack: JackServer) -> None:
    """Clock ticks queued while nobody polled (the daemon still loading) are stamped when
    JACK delivered them, not all at the moment of the poll."""
    ports = MidiPorts("jack", client_name="backlog", with_output=False)
    clock = jack.spawn(["jack_midi_clock"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    transport = Transport(jack, bpm=120)
    try:
        jack.wait_for(lambda: CLOCK_PORT in jack.ports(), 30, "jack_midi_clock did not start")
        jack.connect(CLOCK_PORT, "backlog-in:Ostinato In")
        transport.roll()
        time.sleep(1.0)  # ~48 ticks pile up
        ticks = np.array([t for t, m in ports.poll() if m == [0xF8]])
        assert len(ticks) >= 24
        gaps = np.diff(ticks)
        tick = 60 / 120 / 24
        # JACK stamps each in the cycle it arrived in: within a 1.33 ms cycle of the tick, but
        # where jack_midi_clock itself was late for a cycle (an xrun on a loaded machine); and
        # none bunched together, as ticks all stamped at the poll would be
        on_time = np.abs(gaps - tick) < 0.004
        assert on_time.mean() >= 0.9 and np.all(gaps > tick / 2), np.round(gaps * 1000, 2)
        time.sleep(0.3)
        later = [t for t, m in ports.poll() if m == [0xF8]]
        # the next batch goes on forward; its offset may be refined by up to the tick the
        # first poll could not see how late it was
        assert 0 < later[0] - ticks[-1] < 2 * tick
    finally:
        transport.stop()
        transport.close()
        clock.terminate()
        ports.close()


def test_an_output_port_that_does_not_exist_is_a_clear_error(jack: JackServer) -> None:
    """--out names a port the sender process cannot find: its words reach the user, exit 2,
    and nothing is left behind (neither process, nor a port)."""
    result = subprocess.run(
        daemon_command("--out", "No Such Synth", "--no-osc"),
        env=jack.env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no MIDI output port named 'No Such Synth'" in result.stderr
    assert not [p for p in jack.run("jack_lsp").stdout.splitlines() if p.startswith("ostinato")]


def test_a_cancelled_note_never_reaches_the_output_port(jack: JackServer) -> None:
    """A take thrown away: the notes not yet started are taken back in the sender process and
    never sound; a note already sounding is not cut, it ends at its own time. The JACK
    sender takes the CANCEL records read together back in one pass."""
    probe = Probe("probe-cancel")
    sender = SenderProcess(lambda: None, "jack", out_port=probe.in_port, client_name="cancel")
    try:
        spb = 0.5
        sounding_id = sender.schedule_note(0.0, 4.0, 33, 64, 100)  # sounding at the cancel
        kept = sender.schedule_note(2.0, 0.5, 33, 60, 100)  # another take's: plays
        gone = [sender.schedule_note(1.0 + k / 4, 0.25, 33, 62 + k, 100) for k in range(3)]
        t0 = sender.now() + 0.3
        sender.push_tempo(TempoMap(t0, 0.0, spb))
        jack.wait_for(lambda: any(m[1] == 64 for _, m in probe.notes()), 5, "nothing sounded")
        cancelled_at = probe.now()
        assert cancelled_at < t0 + 1.0 * spb - 0.1, "too late to test a cancel"
        sender.cancel([*gone, sounding_id])
        jack.wait_for(lambda: probe.now() > t0 + 4.0 * spb + 0.2, 10, "")
        notes = probe.notes()
        ons = sorted(m[1] for _, m in notes if m[0] & 0xF0 == 0x90 and m[2] > 0)
        assert ons == [60, 64], notes  # 62, 63 and 64 were never sent
        off_64 = [t for t, m in notes if m[1] == 64 and (m[0] & 0xF0 == 0x80 or m[2] == 0)]
        assert len(off_64) == 1 and abs(off_64[0] - (t0 + 4.0 * spb)) < 0.005, off_64
        assert not sounding(notes)
        assert sender.stats.sent_notes == 2 and sender.stats.deadline_misses == 0
        assert kept != gone[0]
    finally:
        sender.stop()
        probe.close()


def test_the_clock_input_is_read_at_real_time_priority(jack: JackServer) -> None:
    """The thread that reads the clock's ticks (the sender's reports) runs at SCHED_FIFO one
    below the sender where the OS grants it: a busy CPU cannot keep a tick waiting. The OS's
    own view of the thread that handed the ticks over."""
    seen: list[tuple[int, int]] = []

    def on_input(t: float, message: list[int]) -> None:
        if message == [0xF8] and len(seen) < 4:
            seen.append((os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

    sender = SenderProcess(lambda: None, "jack", client_name="rt-input", rt_priority=5,
                           with_input=True, on_input=on_input)  # fmt: skip
    clock = jack.spawn(["jack_midi_clock"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    transport = Transport(jack, bpm=120)
    try:
        jack.wait_for(lambda: CLOCK_PORT in jack.ports(), 30, "jack_midi_clock did not start")
        jack.connect(CLOCK_PORT, "rt-input:Ostinato In")
        # again: jack_midi_clock sends no Start if its first cycle came after the roll
        for _ in range(3):
            transport.roll()
            try:
                jack.wait_for(lambda: len(seen) >= 4, 5, "")
                break
            except TimeoutError:
                continue
        assert len(seen) == 4, "no ticks reached the daemon's side"
        if sender.input_realtime:
            assert set(seen) == {(os.SCHED_FIFO, 4)}, seen
        else:  # refused (no rtprio allowance): still read, at normal priority
            assert set(seen) == {(os.SCHED_OTHER, 0)}, seen
    finally:
        transport.stop()
        transport.close()
        clock.terminate()
        sender.stop()
