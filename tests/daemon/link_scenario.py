"""The daemon following an Ableton Link peer, end to end; run by test_link.py inside a private
network namespace (Link multicasts on every interface: here only loopback exists).

``python -m tests.daemon.link_scenario OUT.json``: a JACK server (dummy driver), a Link peer
(aalink, in this process) at 120 BPM, the daemon (``--clock link --backend jack --mode jam
--programs drums``, ``--bpm 100``: the session's tempo must win) and a probe client that
records the daemon's notes with their JACK frames. The peer starts the session, changes the
tempo 120 → 133, stops it and starts it again; every note-on is judged against the peer's
beat at the moment the probe heard it.

Two clocks meet on the monotonic clock: JACK frames through ``frame_time`` sampled with
``time.monotonic()`` (a line through the samples), the peer's beat through ``link.beat``
sampled with ``time.monotonic()`` every 5 ms (Link's own clock is CLOCK_MONOTONIC_RAW and
never crosses over). What it measured goes to OUT.json for the test to judge.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tests.daemon.jack_rig import DAEMON_OUT, REPO, JackServer, Probe, daemon_command

GRID = 8  # the daemon's notes sit on 1/8 beats
QUANTUM = 4
SAMPLE_S = 0.005
SAMPLE_MAX_S = 30e-6


class Peer:
    """A Link peer with a private asyncio loop in a thread: records (monotonic time, beat,
    tempo) every 5 ms and (monotonic time, JACK frame) when given a JACK client."""

    def __init__(self, bpm: float, client=None) -> None:
        self.bpm, self.client = bpm, client
        self.beats: list[tuple[float, float, float]] = []
        self.frames: list[tuple[float, int]] = []
        self.link = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the Link peer did not start")

    async def _main(self) -> None:
        from aalink import Link

        link = Link(self.bpm)
        link.quantum = QUANTUM
        link.start_stop_sync_enabled = True
        link.enabled = True
        self.link = link
        self._ready.set()
        while not self._stop.is_set():
            for _ in range(5):
                before = time.monotonic()
                beat = link.beat
                after = time.monotonic()
                if after - before <= SAMPLE_MAX_S:
                    self.beats.append((0.5 * (before + after), beat, link.tempo))
                    break
            if self.client is not None:
                for _ in range(5):
                    before = time.monotonic()
                    frame = self.client.frame_time
                    after = time.monotonic()
                    if after - before <= SAMPLE_MAX_S:
                        self.frames.append((0.5 * (before + after), frame))
                        break
            await asyncio.sleep(SAMPLE_S)
        link.enabled = False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def now_beat(self) -> float:
        return self.link.beat

    def wait_beat(self, beat: float, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while self.link.beat < beat:
            if time.monotonic() > end:
                raise TimeoutError(f"the peer never reached beat {beat}")
            time.sleep(0.002)

    def wait_phase(self, lo: float, hi: float) -> None:
        """Until the phase in the bar is within [lo, hi)."""
        end = time.monotonic() + 10
        while not lo <= self.link.phase < hi:
            if time.monotonic() > end:
                raise TimeoutError("phase")
            time.sleep(0.001)

    def start(self) -> float:
        """Start the session: beat 0 on the next bar line (as Link's examples do)."""
        mono = time.monotonic()
        self.link.set_is_playing_and_request_beat_at_time(True, self.link.time, 0.0)
        return mono

    def beat_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = np.array(self.beats)
        return data[:, 0], data[:, 1], data[:, 2]


def frames_to_monotonic(samples: list[tuple[float, int]]):
    """JACK frame → monotonic time, between the (monotonic, frame_time) samples around it:
    JACK's frame time runs on a line only between xruns (a loaded machine skips cycles)."""
    data = np.array(samples, dtype=np.float64)
    mono, frames = data[:, 0], data[:, 1]
    order = np.argsort(frames, kind="stable")
    return lambda frame: float(np.interp(frame, frames[order], mono[order]))


def beat_at(times: np.ndarray, beats: np.ndarray, t: float) -> tuple[float, float]:
    """The peer's beat at monotonic time t and its rate (beats/s), from the two samples around
    it (a line between samples 5 ms apart; Link's beat is linear between tempo changes)."""
    i = int(np.searchsorted(times, t))
    i = min(max(i, 1), len(times) - 1)
    rate = (beats[i] - beats[i - 1]) / (times[i] - times[i - 1])
    return float(beats[i - 1] + (t - times[i - 1]) * rate), float(rate)


def main(out: Path) -> int:
    started = time.monotonic()
    marks: dict[str, float] = {}
    server = JackServer(f"ostinato-link-{os.getpid()}")
    stats = Path(str(out) + ".stats.json")
    log_path = Path(str(out) + ".daemon.log")
    peer = None
    daemon = None
    try:
        probe = Probe()
        peer = Peer(120.0, probe.client)  # the session exists before the daemon joins it
        with log_path.open("w") as log:
            daemon = server.spawn(
                daemon_command("--clock", "link", "--bpm", "100", "--mode", "jam",
                               "--programs", "drums", "--seed", "1", "--no-osc",
                               "--record", str(out.parent), "--stats-json", str(stats)),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        server.wait_for(lambda: DAEMON_OUT in server.ports(), 60, "the daemon's ports")
        server.connect(DAEMON_OUT, probe.in_port)
        server.wait_for(lambda: peer.link.num_peers >= 1, 20, "the daemon never joined")
        marks["joined"] = time.monotonic()
        time.sleep(0.5)
        # Start a beat into the bar: bar 1 comes 3 beats later, time for the daemon to
        # prepare it.
        peer.wait_phase(1.0, 1.2)
        marks["start"] = peer.start()
        peer.wait_beat(16.45)  # four bars at 120, then 133 half-way through a beat
        before = time.monotonic()
        peer.link.tempo = 133.0
        marks["tempo"] = 0.5 * (before + time.monotonic())
        peer.wait_beat(28.3)  # three bars at 133, then a stop inside a beat
        before = time.monotonic()
        peer.link.playing = False
        marks["stop"] = 0.5 * (before + time.monotonic())
        time.sleep(2.0)
        peer.wait_phase(1.0, 1.2)
        marks["restart"] = peer.start()
        time.sleep(0.05)
        peer.wait_beat(12.0)  # three bars after the restart
        time.sleep(0.1)
        marks["end"] = time.monotonic()
        assert daemon.poll() is None, "the daemon died: " + log_path.read_text()[-3000:]
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(20)
        time.sleep(0.2)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        if peer is not None:
            peer.close()
        events = probe.snapshot() if "probe" in locals() else []
        server.close()

    to_mono = frames_to_monotonic(peer.frames)
    times, beats, tempos = peer.beat_grid()
    rate = probe.rate
    daemon_stats = json.loads(stats.read_text()) if stats.exists() else {}
    # notes the daemon handed over after their time go out late, off the grid whatever the
    # clock: the sender says which (sent after due), they are judged apart
    late = {round(n["sent"] * rate) for n in daemon_stats.get("notes", [])
            if n["sent"] - n["due"] > 1.5 / rate}  # fmt: skip
    notes = []
    for t, message in events:
        if message[0] & 0xF0 != 0x90 or message[2] == 0:
            continue
        mono = to_mono(t * rate)
        beat, beats_per_s = beat_at(times, beats, mono)
        nearest = round(beat * GRID) / GRID
        notes.append({
            "mono": mono, "frame": round(t * rate), "beat": beat, "pitch": message[1],
            "error_ms": (beat - nearest) / beats_per_s * 1e3, "bpm": beats_per_s * 60,
            "late": round(t * rate) in late,
            "after_gap": any(end <= round(t * rate) < end + n for _, end, n in probe.gaps),
        })  # fmt: skip
    heard = [(to_mono(t * rate), list(m)) for t, m in events if 0x80 <= m[0] < 0xA0]
    result = {
        "exit_code": code, "marks": marks, "notes": notes, "heard": heard,
        "frames": peer.frames, "beats": peer.beats,
        "peer_samples": len(times), "frame_samples": len(peer.frames),
        "link": daemon_stats.get("link"),
        "probe": {"cycles": probe.cycles, "missed": probe.missed, "xruns": probe.xruns},
        "deadline_misses": daemon_stats.get("deadline_misses"),
        "late_wakeups": daemon_stats.get("late_wakeups"),
        "seconds": time.monotonic() - started,
        "log": log_path.read_text()[-4000:],
    }  # fmt: skip
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
