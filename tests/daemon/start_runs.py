"""Repeated starts through JACK, judged on the clock's own grid: is the daemon's first answer
after Start on the ticks jack_midi_clock sends, or a tick off?

Each run: a fresh daemon in continue mode, jack_midi_clock started by the rig's transport (Start,
then ticks from the transport's frame), a 2-bar phrase played in on the grid, the 2-bar
answer recorded with its JACK frames. Every onset's distance to the nearest 32nd of the
clock's grid (1/8 beat in 4/4) is measured; a run whose onsets sit about a tick (1/24 beat)
from it is "a tick off". The check the issue of starts a tick off asked for (20 runs, period
128, 120 BPM); too slow for the suite (about 30 s a run), a command instead::

    python -m tests.daemon.start_runs --runs 20 --period 128
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
from tests.daemon.test_jack_end_to_end import play_phrase, wait_until_beat

TICK_BEATS = 1 / 24
GRID_BEATS = 1 / 8  # the model's grid in 4/4: 32nds


def one_run(server: JackServer, work: Path, seed: int) -> dict:
    log_path = work / f"daemon-{seed}.log"
    with log_path.open("w") as log:
        daemon = server.spawn(
            daemon_command("--mode", "continue", "--bars", "2", "--phrase-bars", "2",
                           "--programs", "drums,33", "--seed", str(seed), "--record", "off"),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    probe = clock = transport = None
    try:
        server.wait_for(lambda: DAEMON_IN in server.ports(), 90, "the daemon's ports never came")
        probe = Probe(f"start-{seed}")
        clock = server.spawn(["jack_midi_clock"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        server.wait_for(lambda: CLOCK_PORT in server.ports(), 30, "jack_midi_clock did not start")
        server.connect(CLOCK_PORT, DAEMON_IN)
        server.connect(CLOCK_PORT, probe.in_port)
        server.connect(probe.out_port, DAEMON_IN)
        server.connect(DAEMON_OUT, probe.in_port)
        transport = Transport(server, bpm=120)
        # again: jack_midi_clock sends no Start if its first cycle came after the roll
        for _ in range(3):
            transport.roll()
            try:
                wait_until_beat(probe, 0.5, timeout=5)
                break
            except TimeoutError:
                continue
        wait_until_beat(probe, 2)
        play_phrase(probe, range(1, 3))  # bars 2-3: beats 4-11
        wait_until_beat(probe, 20)
        transport.stop()
        time.sleep(0.3)
        grid = ClockGrid(probe.ticks())
        ons = [t for t, m in probe.notes() if m[0] & 0xF0 == 0x90 and m[2] > 0]
    finally:
        if transport is not None:
            transport.close()
        if clock is not None:
            clock.terminate()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        if probe is not None:
            probe.close()
        # the note sender owns the ports and outlives the daemon by a moment: the next run
        # must not find this one's ports
        server.wait_for(lambda: DAEMON_IN not in server.ports(), 15, "the old ports stayed")
    beats = np.array([grid.beat_at(t) for t in ons])
    answer = beats[(beats >= 12 - TICK_BEATS) & (beats < 20)]
    off = answer - np.round(answer / GRID_BEATS) * GRID_BEATS  # beats from the 32nd grid
    off_ms = off * 500.0  # 120 BPM: 500 ms a beat
    # the probe both feeds the daemon and records it, a loop in JACK's graph: one side is a
    # period late (2.7 ms at 128 frames), well inside half a tick
    # a tick off: most onsets a tick (about 20.8 ms at 120 BPM) from the grid
    tick_off = bool(len(off) and np.median(np.abs(off)) > TICK_BEATS / 2)
    return {
        "seed": seed,
        "onsets": len(answer),
        "median_ms": round(float(np.median(off_ms)), 3) if len(off) else None,
        "max_abs_ms": round(float(np.abs(off_ms).max()), 3) if len(off) else None,
        "a_tick_off": tick_off,
        "onsets_a_tick_off": int((np.abs(off) > TICK_BEATS / 2).sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--period", type=int, default=128)
    parser.add_argument("--json", help="write the runs here")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.runs):
            # a fresh server each run: JACK's transport (its state, its timebase master)
            # outlives the clients of the run before
            server = JackServer(f"ostinato-starts-{os.getpid()}-{seed}", period=args.period)
            try:
                run = one_run(server, Path(tmp), seed)
            finally:
                server.close()
            runs.append(run)
            print(json.dumps(run), flush=True)
    off = sum(r["a_tick_off"] for r in runs)
    some = sum(r["onsets_a_tick_off"] > 0 for r in runs)
    print(f"{len(runs)} runs at period {args.period}: {off} a tick off, {some} with any onset "
          f"a tick off, {sum(r['onsets'] == 0 for r in runs)} without an answer; onsets "
          f"{sum(r['onsets'] for r in runs)}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"period": args.period, "runs": runs}, indent=2))
    silent = sum(r["onsets"] == 0 for r in runs)
    return 1 if off or some or silent else 0


if __name__ == "__main__":
    sys.exit(main())
