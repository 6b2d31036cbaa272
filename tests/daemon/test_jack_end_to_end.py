"""The daemon end to end through a real JACK server: MIDI clock from jack_midi_clock, a probe
client that plays phrases into "Ostinato In" and records "Ostinato Out"."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter

import numpy as np
import pytest

from tests.daemon.jack_rig import (
    CLOCK_PORT,
    DAEMON_IN,
    DAEMON_OUT,
    REPO,
    ClockGrid,
    JackServer,
    Probe,
    Transport,
    daemon_command,
)

GRID = 8  # generated notes sit on 1/8-beat positions
# Onsets are measured in JACK frames at the probe, against the frames jack_midi_clock put its
# ticks on: the reference has no jitter of its own. The daemon's notes go out at the start of
# a JACK cycle (64 frames at 48 kHz = 1.33 ms), which is most of the error measured here. On
# a shared 2-core machine where JACK cannot run real-time, 95% of onsets must be within 3 ms
# of the grid and every one within 5 ms (the 2 ms target is measured by `ostinato bench
# --realtime`, where timing targets live). After the garbage burst (which floods the port the
# clock arrives on, so ticks are dropped there) a lost tick may shift the answer by one tick
# (16.7 ms at 150 BPM): 20 ms still catches drift, a wrong tempo or notes off the grid.
ONSET_TOLERANCE_S = 0.003
ONSET_MAX_S = 0.005
TICK_MS = 60_000 / (120 * 24)  # a clock tick at the test's first tempo
AFTER_BURST_MAX_S = 0.020
STOP_TOLERANCE_S = 0.010


def play_phrase(probe: Probe, bars: range, beats_per_bar: int = 4) -> None:
    """Kick on every beat, closed hat on the 8ths (channel 10), on the clock's grid."""
    events = []
    for bar in bars:
        for eighth in range(2 * beats_per_bar):
            beat = bar * beats_per_bar + eighth / 2
            if eighth % 2 == 0:
                events.append((beat, [0x99, 36, 110]))
                events.append((beat + 0.2, [0x89, 36, 0]))
            events.append((beat, [0x99, 42, 80]))
            events.append((beat + 0.1, [0x99, 42, 0]))  # velocity-0 note-on = note-off
    for beat, message in sorted(events, key=lambda e: e[0]):
        due = ClockGrid(probe.ticks()).predict(beat)  # from the newest beat of ticks
        while probe.now() < due - 0.05:
            time.sleep(0.005)
        probe.play_at(due, message)  # on its frame, as a DAW plays it


def garbage_burst(probe: Probe) -> None:
    rng = random.Random(7)
    junk: list[list[int]] = [
        [0x89, 99, 0],  # note-off without note-on
        [0x80, 60, 0],
        [0x90, 60],  # truncated
        [0x90],
        [0xF0, *[rng.randrange(0, 128) for _ in range(65536)], 0xF7],  # 64 KiB SysEx
        [0xF2, 0x7F],  # truncated song position
        [0xB0, 123, 0, 5, 6, 7],  # too long
        [0xF4],
        [0xFD],
    ]
    transport = {0xF2, 0xF8, 0xFA, 0xFB, 0xFC}  # valid commands, not garbage: they move time
    while len(junk) < 200:
        message = [rng.randrange(0, 256) for _ in range(rng.randrange(1, 4))]
        note_on = 0x90 <= message[0] <= 0x9F and len(message) == 3 and max(message[1:]) < 0x80
        if message[0] not in transport and not note_on:  # a valid note-on is music
            junk.append(message)
    for message in junk:
        # python-rtmidi refuses some of these itself; the rest go out
        with contextlib.suppress(Exception):
            probe.send(message)


def wait_until_beat(probe: Probe, beat: float, timeout: float = 60) -> None:
    try:
        JackServer.wait_for(lambda: len(probe.ticks()) >= max(1, beat * 24), timeout, "")
    except TimeoutError:
        events = probe.snapshot()
        others = [m for _, m in events if m[0] != 0xF8][-5:]
        raise TimeoutError(
            f"clock never reached beat {beat}: {len(probe.ticks())} ticks since Start, "
            f"{len(events)} events in all, last others {others}, probe cycles {probe.cycles}"
        ) from None


@pytest.fixture(scope="module")
def jack():
    server = JackServer(f"ostinato-test-{os.getpid()}")
    yield server
    server.close()


def test_daemon_through_jack(jack: JackServer, tmp_path) -> None:
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        daemon = jack.spawn(
            daemon_command("--mode", "continue", "--bars", "2", "--phrase-bars", "2",
                           "--programs", "drums,33", "--temperature", "0.8", "--seed", "1",
                           "--stats-json", str(tmp_path / "stats.json")),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    jack.wait_for(lambda: DAEMON_IN in jack.ports(), 60, "the daemon's ports never appeared")
    probe = Probe()
    clock = jack.spawn(["jack_midi_clock"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jack.wait_for(lambda: CLOCK_PORT in jack.ports(), 30, "jack_midi_clock did not start")
    jack.connect(CLOCK_PORT, DAEMON_IN)
    jack.connect(CLOCK_PORT, probe.in_port)
    jack.connect(probe.out_port, DAEMON_IN)
    jack.connect(DAEMON_OUT, probe.in_port)
    transport = Transport(jack, bpm=120)
    transport.roll()
    try:
        # again: jack_midi_clock sends no Start if its first cycle came after the roll
        for _ in range(3):
            try:
                wait_until_beat(probe, 0.5, timeout=5)
                break
            except TimeoutError:
                transport.roll()
        wait_until_beat(probe, 2)
        play_phrase(probe, range(1, 3))  # phrase 1: bars 2-3 (beats 4-11)
        wait_until_beat(probe, 20.5)
        burst_at = probe.now()
        garbage_burst(probe)
        transport.tempo(150)  # a tempo change between the phrases
        wait_until_beat(probe, 22)
        play_phrase(probe, range(6, 8))  # phrase 2: bars 7-8 (beats 24-31)
        wait_until_beat(probe, 34.5)
        transport.stop()
        time.sleep(0.5)
        assert daemon.poll() is None, "the daemon died: " + log_path.read_text()[-2000:]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        time.sleep(0.2)
    finally:
        clock.terminate()
        transport.close()

    events = probe.snapshot()
    grid = ClockGrid(probe.ticks())
    stop_time = next(t for t, m in events if m[0] == 0xFC)
    ons = [(t, m) for t, m in probe.notes() if m[0] & 0xF0 == 0x90 and m[2] > 0]
    offs = [(t, m) for t, m in probe.notes() if m[0] & 0xF0 == 0x80 or
            (m[0] & 0xF0 == 0x90 and m[2] == 0)]  # fmt: skip
    beats = np.array([grid.beat_at(t) for t, _ in ons])
    log_text = log_path.read_text()

    stats = json.loads((tmp_path / "stats.json").read_text())
    if os.environ.get("OSTINATO_DEBUG_TIMING"):
        print("probe ticks", len(probe.ticks()), "daemon ticks", len(stats["clock_ticks"]),
              "probe cycles", probe.cycles, "missed", probe.missed)  # fmt: skip
        for n in stats["notes"]:
            print(f"daemon beat {n['beat']:.3f} sent-due {(n['sent'] - n['due']) * 1e3:.2f} ms")

    # The start-up heap is out of the collector's reach (a full pass would stall the sender).
    assert stats["gc_frozen_objects"] > 50_000
    assert stats["sender_realtime"] in (True, False)
    # what a long night is watched by: the clock's listeners ran on every map; the session
    # file was written; positions were never renumbered inside a bar
    assert stats["clock"]["listener_ms_max"] > 0
    assert stats["recording"]["writes"] >= 1 and stats["recording"]["write_ms_max"] > 0
    assert stats["engine"]["renumbered_inside_bar"] == 0

    # Continue mode: silent during the phrase, answers in the two bars after it, twice.
    assert len(ons) > 0, log_text[-2000:]
    slack = 1 / GRID  # a lost clock tick may move a note by 1/24 beat
    assert beats.min() >= 12 - slack, f"played during the phrase: {beats.min():.2f}"
    first_answer = beats[(beats >= 12 - slack) & (beats < 20)]
    second_answer = beats[(beats >= 32 - slack) & (beats < 40)]
    assert len(first_answer) > 0 and len(second_answer) > 0, log_text[-2000:]
    between = (beats >= 20) & (beats < 32 - slack)
    assert not between.any(), beats[between]

    # On the grid of the clock (local fit: follows the tempo change). The first answer is
    # judged on the ticks heard before the garbage burst: the burst floods the probe's own
    # cycles, and a tick it then counts wrong tilts a fit that reaches into it (the last
    # notes before beat 20 read 3-6 ms late while the daemon sent them on their frames).
    ticks = probe.ticks()
    before_burst = ClockGrid(ticks[ticks < burst_at])
    errors = []
    for (t, _), beat in zip(ons, beats, strict=True):
        reference = before_burst if t < burst_at else grid
        # On the clock's ticks: this probe both feeds the daemon and records it (a loop in
        # JACK's graph, so one side is a cycle late) and its own grid can miss a tick when
        # JACK skips it; beat-exact timing is judged by test_daw_timing's DAW stand-in.
        nearest = round(beat * 24) / 24
        errors.append(abs(t - reference.time_at(nearest, near=t)))
    errors_ms = np.array(errors) * 1e3
    detail = [(round(b, 3), round(e, 2)) for b, e in zip(beats, errors_ms, strict=True)]
    if os.environ.get("OSTINATO_DEBUG_TIMING"):
        print("ERRORS", detail)
    clean = beats < 20  # the first answer: before the garbage burst and the tempo change
    assert np.percentile(errors_ms[clean], 95) <= ONSET_TOLERANCE_S * 1e3, detail
    # one note may be off by this probe's own grid where it missed cycles (it shares this
    # process); the daemon's exactness is judged frame by frame in test_daw_timing
    ordered = np.sort(errors_ms[clean])
    if probe.missed and len(ordered) > 1:
        assert ordered[-2] <= ONSET_MAX_S * 1e3 and ordered[-1] <= TICK_MS, detail
    else:
        assert ordered[-1] <= ONSET_MAX_S * 1e3, detail
    assert errors_ms[~clean].max() <= AFTER_BURST_MAX_S * 1e3, detail
    assert 149 < 60 / (np.median(np.diff(probe.ticks()[-200:])) * 24) < 151  # the new tempo

    # Stop silences everything within 10 ms; nothing starts after it.
    assert not [t for t, _ in ons if t > stop_time + STOP_TOLERANCE_S]
    sounding: dict[tuple[int, int], float] = {}
    for t, m in sorted(ons + offs):
        key = (m[0] & 0x0F, m[1])
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            sounding[key] = t
        elif t <= stop_time + STOP_TOLERANCE_S:
            sounding.pop(key, None)
    assert not sounding, f"notes still sounding 10 ms after Stop: {sounding}"
    # Every note-on has its note-off. JACK drops the MIDI of a cycle a client was late for:
    # each xrun the probe saw (a loaded machine) may have taken one message on its way in.
    balance = Counter((m[0] & 0x0F, m[1]) for _, m in ons)
    balance.subtract((m[0] & 0x0F, m[1]) for _, m in offs)
    unbalanced = {key: n for key, n in balance.items() if n > 0}
    assert len(offs) >= len(ons) - probe.xruns, (len(ons), len(offs), probe.xruns, unbalanced)
    assert "bad messages dropped" in log_text
    dropped = int(log_text.split("late wake-ups, ")[1].split(" bad")[0])
    assert dropped > 0  # the garbage reached the daemon and was counted, not played
    probe.close()
