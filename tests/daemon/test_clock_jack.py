"""The clock fed by a real MIDI clock: jack_midi_clock's stream, recorded with exact frames
through a real JACK server, then fed to :class:`Clock` message by message.

jack_midi_clock starts its tick grid anew from the transport's frame at every relocate (a
Start while rolling), whatever the phase of the old grid: the first tick after that Start can
come any fraction of a tick after the last old one. Each Start must be song position 0 at the
tick after it; a first tick taken for a stray leaves every beat a tick late until the next
Start (the test rig's transport retries relocate exactly so)."""

from __future__ import annotations

import os
import random
import subprocess
import time

from ostinato.daemon.clock import PPQN, Clock
from tests.daemon.jack_rig import CLOCK_PORT, JackServer, Probe, Transport

RELOCATES = 8


def test_every_relocate_of_jack_midi_clock_starts_at_tick_zero() -> None:
    server = JackServer(f"ostinato-clock-{os.getpid()}", period=128)
    probe = clock = transport = None
    try:
        probe = Probe("clock-ear")
        clock = server.spawn(["jack_midi_clock"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        server.wait_for(lambda: CLOCK_PORT in server.ports(), 30, "jack_midi_clock did not start")
        server.connect(CLOCK_PORT, probe.in_port)
        transport = Transport(server, bpm=120)
        # again: jack_midi_clock sends no Start if its first cycle came after the roll
        for _ in range(3):
            transport.roll()
            try:
                server.wait_for(lambda: len(probe.ticks()) > PPQN, 5, "")
                break
            except TimeoutError:
                continue
        rng = random.Random(5)
        for _ in range(RELOCATES):
            time.sleep(0.4 + rng.random() * 0.3)
            transport.roll()  # relocate to bar 1 while rolling: Start, a new grid
        time.sleep(0.6)
        events = probe.snapshot()
    finally:
        if transport is not None:
            transport.stop()
            transport.close()
        if clock is not None:
            clock.terminate()
        if probe is not None:
            probe.close()
        server.close()

    follower = Clock(exact_stamps=True)
    starts = ticks_since = 0
    wrong = []
    for t, message in events:
        status = message[0]
        if status == 0xFA:
            if ticks_since:  # where the last epoch ended, by the clock and by the wire
                heard = round(follower.map.anchor_beat * PPQN) + 1
                if heard != ticks_since:
                    wrong.append((starts, heard - ticks_since))
            starts += 1
            ticks_since = 0
            follower.on_start(t)
        elif status == 0xF8:
            follower.on_tick(t)
            ticks_since += starts > 0
        elif status == 0xF2 and len(message) == 3:
            follower.on_song_position(t, message[1] | message[2] << 7)
        elif status == 0xFC:
            follower.on_stop(t)
    assert starts >= RELOCATES // 2, f"only {starts} Starts heard"  # the rig's own account
    assert not wrong, f"(epoch, ticks off) where the clock miscounted: {wrong}"
    assert follower.rejected_ticks == 0
