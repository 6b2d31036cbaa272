"""A real JACK server (dummy driver) with real clients, for end-to-end tests.

The server gets a name of its own (JACK_DEFAULT_SERVER) so tests never touch another JACK
server on the machine. Before it starts, what servers killed without their clean exit left in
JACK's registry is cleared (:func:`ostinato.jack_shm.clear_stale`): a run killed half-way does
not stop the next one's servers from starting. ``jack_midi_clock`` sends MIDI clock while
:class:`Transport` (the timebase master, :class:`ostinato.jack_timebase.TimebaseMaster`, so
its tempo changes live) rolls the transport.
"""

from __future__ import annotations

import atexit
import heapq
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import jack
import numpy as np

from ostinato import jack_shm
from ostinato.jack_timebase import TimebaseMaster

CLOCK_PORT = "jack_midi_clock:mclk_out"
# One JACK client, the daemon's note sender, owns both ports (ostinato/daemon/jack_io.py)
DAEMON_IN, DAEMON_OUT = "ostinato:Ostinato In", "ostinato:Ostinato Out"
PPQN = 24
WRITES_PER_CYCLE = 16  # a Python process callback must stay well inside a 1.33 ms cycle


def require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's jackd2 and jack-midi-clock "
            "(.ci/run does)"
        )


class JackServer:
    def __init__(self, name: str, period: int = 64, rate: int = 48000) -> None:
        require("jackd", "jack_lsp", "jack_connect", "jack_midi_clock")
        self.name = name
        self.lsp_timeouts = 0  # jack_lsp calls that got no answer in time (ports())
        os.environ["JACK_DEFAULT_SERVER"] = name  # this process's clients (python-rtmidi)
        os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
        self.env = dict(os.environ)
        self.log = open(f"/tmp/jackd-{name}.log", "w")  # noqa: SIM115
        jack_shm.clear_stale()  # servers of killed runs (running ones stay)
        self.proc = subprocess.Popen(
            # Real-time, as JACK runs for musicians (priority 10, its default; the daemon's
            # sender sits below at 5): without it, clients' process cycles run late on a
            # loaded 2-core machine and deliver the clock late (where real-time scheduling is
            # not allowed, jackd says so and runs without it). -t: a client may be late
            # answering the server by 5 s (not 0.5 s) before it is thrown out: startup of the
            # daemon can hold up jack_midi_clock that long.
            ["jackd", "--realtime", "-t", "5000", "-n", name,
             "-d", "dummy", "-r", str(rate), "-p", str(period)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )  # fmt: skip
        self.children: list[subprocess.Popen] = []
        atexit.register(self.close)  # a fixture that failed half-way leaves no server behind
        try:
            self.wait_for(lambda: self.run("jack_lsp").returncode == 0, 10, "")
        except TimeoutError:
            self.log.flush()
            text = Path(self.log.name).read_text()
            why = [line for line in text.splitlines() if "fail" in line.lower() or "Too" in line]
            hint = ""
            if "Too many servers" in text:
                hint = f" (JACK's registry is full of running servers: {jack_shm.servers()})"
            raise TimeoutError(f"jackd did not start: {' / '.join(why[:3])}{hint}") from None

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        # jack_lsp and jack_connect wait while the server waits on a late client (up to -t)
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=30)

    def ports(self) -> list[str]:
        """The server's ports; none while ``jack_lsp`` cannot get an answer (the server busy
        with a client registering on a loaded machine): a caller polling asks again."""
        try:
            return self.run("jack_lsp").stdout.splitlines()
        except subprocess.TimeoutExpired:
            self.lsp_timeouts += 1
            return []

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
        if self.log.closed:
            return
        if self.proc.poll() is None:  # a JACK client outliving its server crashes in libjack
            for probe in list(Probe.open):
                probe.close()
        for proc in [*reversed(self.children), self.proc]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.log.close()


class Transport(TimebaseMaster):
    """The transport rolled as a DAW rolls it (a client of this process; closed with the
    server)."""

    def __init__(self, server: JackServer, bpm: float) -> None:
        super().__init__(bpm, servername=server.name)
        Probe.open.append(self)

    def close(self) -> None:
        if self in Probe.open:
            Probe.open.remove(self)
        super().close()


class Probe:
    """A test client that hears what a DAW would: every event it receives is stamped with its
    JACK frame (the cycle's first frame plus the event's offset), the time base JACK clients
    record in, so the reference grid has no scheduling jitter of its own; what it plays goes
    out at the frame asked for. Times are seconds of JACK frame time (frames / sample rate).
    """

    # closed by JackServer.close before the server goes (with the transport)
    open: ClassVar[list[Probe | Transport]] = []

    def __init__(self, name: str = "probe") -> None:
        self.client = jack.Client(name, no_start_server=True)
        Probe.open.append(self)
        self.rate = self.client.samplerate
        self._in = self.client.midi_inports.register("in")
        self._out = self.client.midi_outports.register("out")
        self.lock = threading.Lock()
        self.events: list[tuple[float, list[int]]] = []
        self._pending: list[tuple[int, int, bytes]] = []  # heap of (frame, order, message)
        self._order = 0
        self.refused = 0  # messages too large for a JACK MIDI buffer
        self._last_cycle, self._seen = -1, set()
        self.cycles = self.missed = 0
        # (first frame of the last cycle run, first frame of the next one run, its length)
        # where cycles between were not run for this client: JACK hands it then what was
        # written in the cycle it missed, stamped a cycle late
        self.gaps: list[tuple[int, int, int]] = []
        self.xruns = 0  # JACK's xrun notices: a late client's MIDI of that cycle may be lost
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._on_xrun)
        self.client.activate()
        self.in_port = f"{self.client.name}:in"
        self.out_port = f"{self.client.name}:out"

    def _process(self, frames: int) -> None:
        self.cycles += 1
        first = self.client.last_frame_time
        if first != self._last_cycle:
            if self._last_cycle >= 0 and first != self._last_cycle + frames:
                self.missed += 1  # cycles this client was not run for (late, non-RT server)
                self.gaps.append((self._last_cycle, first, frames))
            self._last_cycle, self._seen = first, set()
        received = []
        for offset, data in self._in.incoming_midi_events():
            event = (first + offset, bytes(data))
            if event not in self._seen:  # a late, non-RT server can hand a cycle over twice
                self._seen.add(event)
                received.append((event[0] / self.rate, list(event[1])))
        self._out.clear_buffer()
        with self.lock:
            self.events.extend(received)
            written = 0
            end = first + frames
            while self._pending and self._pending[0][0] < end and written < WRITES_PER_CYCLE:
                frame, _, message = self._pending[0]
                try:
                    self._out.write_midi_event(max(0, frame - first), message)
                except jack.JackError:
                    if written == 0:  # does not fit even an empty buffer
                        heapq.heappop(self._pending)
                        self.refused += 1
                        continue
                    break  # the buffer is full: the rest go out next cycle
                heapq.heappop(self._pending)
                written += 1

    def _on_xrun(self, delay: float) -> None:
        self.xruns += 1

    def now(self) -> float:
        return self.client.frame_time / self.rate

    def play_at(self, t: float, message: list[int]) -> None:
        with self.lock:
            self._order += 1
            heapq.heappush(self._pending, (round(t * self.rate), self._order, bytes(message)))

    def send(self, message: list[int]) -> None:
        self.play_at(0.0, message)  # in the next cycle

    def snapshot(self) -> list[tuple[float, list[int]]]:
        with self.lock:
            return list(self.events)

    def ticks(self) -> np.ndarray:
        """Times of the clock ticks since the last Start."""
        events = self.snapshot()
        starts = [i for i, (_, m) in enumerate(events) if m[0] == 0xFA]
        first = starts[-1] if starts else 0
        return np.array([t for t, m in events[first:] if m[0] == 0xF8])

    def notes(self, since: float = 0.0) -> list[tuple[float, list[int]]]:
        return [(t, m) for t, m in self.snapshot() if t >= since and 0x80 <= m[0] < 0xC0]

    def close(self) -> None:
        if self not in Probe.open:
            return
        Probe.open.remove(self)
        self.client.deactivate()
        self.client.close()


class ClockGrid:
    """Beat ↔ time from the received clock ticks: a local least-squares line over the ticks
    within a beat of the moment asked for (follows tempo changes). jack_midi_clock puts ticks
    on exact frames, so a tick lost on the way (a client that missed a cycle) shows as an
    interval of a whole multiple of the tick length and is counted, and a tick repeated in a
    later cycle (a cycle the late server ran again) as an interval under half a tick."""

    def __init__(self, ticks: np.ndarray) -> None:
        kept, index = list(ticks[:1]), [0]
        gaps = np.diff(ticks)
        usual = float(np.median(gaps[:PPQN])) if len(gaps) else 1.0
        for t in ticks[1:]:
            ratio = (t - kept[-1]) / usual
            if ratio < 0.5:
                continue
            whole = max(1, round(ratio))
            usual = (t - kept[-1]) / whole
            kept.append(t)
            index.append(index[-1] + whole)
        self.ticks = np.array(kept)
        self.index = np.array(index, dtype=np.float64)

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


def sounding(notes: list[tuple[float, list[int]]]) -> set[tuple[int, int]]:
    """(channel, pitch) of every note struck and not released, after ``notes`` in order."""
    held: set[tuple[int, int]] = set()
    for _, m in notes:
        key = (m[0] & 0x0F, m[1])
        if m[0] & 0xF0 == 0x90 and m[2] > 0:
            held.add(key)
        elif m[0] & 0xF0 == 0x80 or m[0] & 0xF0 == 0x90:
            held.discard(key)
    return held


def sender_ports(client_name: str) -> tuple[str, str]:
    """The JACK names of a note sender's input and output ports."""
    return f"{client_name}:Ostinato In", f"{client_name}:Ostinato Out"


def daemon_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ostinato", "run", "--backend", "jack", *args]


REPO = Path(__file__).resolve().parents[2]
