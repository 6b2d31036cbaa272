"""A real JACK server (dummy driver) with real clients, for end-to-end tests.

The server gets a name of its own (JACK_DEFAULT_SERVER) so tests never touch another JACK
server on the machine. ``jack_midi_clock`` sends MIDI clock while ``jack_transport`` (the
timebase master, so its ``tempo`` command changes the tempo live) rolls the transport.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rtmidi

CLOCK_PORT = "jack_midi_clock:mclk_out"
DAEMON_IN, DAEMON_OUT = "ostinato-in:Ostinato In", "ostinato-out:Ostinato Out"
PPQN = 24


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's jackd2 and jack-midi-clock "
            "(.ci/run does)"
        )


class JackServer:
    def __init__(self, name: str, period: int = 64, rate: int = 48000) -> None:
        require("jackd", "jack_lsp", "jack_connect", "jack_midi_clock", "jack_transport")
        self.name = name
        os.environ["JACK_DEFAULT_SERVER"] = name  # this process's clients (python-rtmidi)
        os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
        self.env = dict(os.environ)
        self.log = open(f"/tmp/jackd-{name}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", name,
             "-d", "dummy", "-r", str(rate), "-p", str(period)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )  # fmt: skip
        self.wait_for(lambda: self.run("jack_lsp").returncode == 0, 10, "jackd did not start")
        self.children: list[subprocess.Popen] = []

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=10)

    def ports(self) -> list[str]:
        return self.run("jack_lsp").stdout.splitlines()

    def connect(self, a: str, b: str) -> None:
        result = self.run("jack_connect", a, b)
        if result.returncode != 0:
            raise RuntimeError(f"jack_connect {a} {b}: {result.stderr}{result.stdout}")

    def spawn(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=self.env, **kwargs)
        self.children.append(proc)
        return proc

    @staticmethod
    def wait_for(predicate, timeout: float, message: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.05)
        raise TimeoutError(message)

    def close(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Transport:
    """jack_transport driven through its stdin."""

    def __init__(self, server: JackServer, bpm: float) -> None:
        self.proc = server.spawn(
            ["jack_transport"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        time.sleep(0.5)  # let it connect to the server before it reads commands
        self.send("master")
        self.send(f"tempo {bpm}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()


class Probe:
    """A test client: plays into the daemon and records everything it receives. Like the
    daemon it polls rtmidi's queue from a thread and uses rtmidi's timestamps (taken in the
    JACK cycle), so its JACK client never waits for this process's GIL."""

    def __init__(self, name: str = "probe") -> None:
        self.midi_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=f"{name}-in")
        self.midi_in.ignore_types(sysex=False, timing=False, active_sense=True)
        self.midi_in.open_virtual_port("in")
        self.midi_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{name}-out")
        self.midi_out.open_virtual_port("out")
        self.lock = threading.Lock()
        self.events: list[tuple[float, list[int]]] = []
        self.in_port, self.out_port = f"{name}-in:in", f"{name}-out:out"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        elapsed, offset = 0.0, None
        while not self._stop.is_set():
            event = self.midi_in.get_message()
            if event is None:
                time.sleep(0.001)
                continue
            elapsed += event[1]
            lag = time.perf_counter() - elapsed
            offset = lag if offset is None else min(offset, lag)
            with self.lock:
                self.events.append((offset + elapsed, event[0]))

    def snapshot(self) -> list[tuple[float, list[int]]]:
        with self.lock:
            return list(self.events)

    def ticks(self) -> np.ndarray:
        """Arrival times of the clock ticks since the last Start."""
        events = self.snapshot()
        starts = [i for i, (_, m) in enumerate(events) if m[0] == 0xFA]
        first = starts[-1] if starts else 0
        return np.array([t for t, m in events[first:] if m[0] == 0xF8])

    def notes(self, since: float = 0.0) -> list[tuple[float, list[int]]]:
        return [(t, m) for t, m in self.snapshot() if t >= since and 0x80 <= m[0] < 0xC0]

    def send(self, message: list[int]) -> None:
        self.midi_out.send_message(message)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        for port in (self.midi_in, self.midi_out):
            port.close_port()
            port.delete()


class ClockGrid:
    """Beat ↔ time from the received clock ticks: a local least-squares line over the ticks
    within a beat of the moment asked for (follows tempo changes)."""

    def __init__(self, ticks: np.ndarray) -> None:
        self.ticks = ticks
        # Tick numbers, counting a lost tick where an interval is about twice the usual.
        gaps = np.diff(ticks)
        typical = np.median(gaps[-PPQN:]) if len(gaps) else 1.0
        steps = np.ones(len(gaps))
        for i, gap in enumerate(gaps):
            usual = np.median(gaps[max(0, i - PPQN) : i]) if i >= 4 else typical
            whole = round(gap / usual)
            if whole >= 2 and abs(gap / usual - whole) < 0.25:
                steps[i] = whole
        self.index = np.concatenate(([0.0], np.cumsum(steps)))

    def _fit(self, t: float) -> tuple[float, float]:
        i = int(np.searchsorted(self.ticks, t))
        lo, hi = max(0, i - PPQN), min(len(self.ticks), i + PPQN)
        k = self.index[lo:hi]
        slope, intercept = np.polyfit(k, self.ticks[lo:hi], 1)  # time = slope·tick + b
        return slope, intercept

    def beat_at(self, t: float) -> float:
        slope, intercept = self._fit(t)
        return (t - intercept) / slope / PPQN

    def time_at(self, beat: float, near: float) -> float:
        slope, intercept = self._fit(near)
        return intercept + slope * beat * PPQN

    def predict(self, beat: float) -> float:
        """Time of a future beat from the newest beat of ticks."""
        k = self.index[-PPQN:]
        slope, intercept = np.polyfit(k, self.ticks[-PPQN:], 1)
        return intercept + slope * beat * PPQN


def daemon_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ostinato", "run", "--backend", "jack", *args]


REPO = Path(__file__).resolve().parents[2]
