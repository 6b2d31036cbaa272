"""The note sender as a process of its own: it owns the output port and sends every note.

Why a process. In the daemon's process the sender thread shares one interpreter lock with
generation, MIDI input and control: each time it wakes for a note it may first wait for
whichever thread holds that lock, and a thread holding it may itself be waiting for a CPU.
A process of its own has its own lock and a small heap (python-rtmidi and the scheduler,
frozen out of the garbage collector), so the only thing it waits for is the OS.

And it keeps notes from hanging. However the daemon ends (an exception, SIGKILL, the OOM
killer), the pipe to the sender closes; the sender then releases every sounding note, sends
All Notes Off on every channel it used and exits. SIGTERM does the same; SIGINT is left to
the daemon, which shuts down in order (Ctrl-C in a terminal reaches both processes).

The daemon talks to it over the sender's stdin, it answers over its stdout: fixed 32-byte
records (``RECORD``: kind, channel, pitch, velocity, note id, three doubles), all times on
``time.perf_counter()``'s clock (CLOCK_MONOTONIC on Linux, QueryPerformanceCounter on
Windows, mach_absolute_time on macOS: the same for every process). Reports never block the
sender: when the daemon does not read them, they are dropped and counted.

Run as ``python -m ostinato.daemon.sender --backend B [--out NAME] ...``; the daemon starts it.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.ports import MidiPorts, PortError
from ostinato.daemon.scheduler import Scheduler, SchedulerStats, default_program_channels

log = logging.getLogger(__name__)

RECORD = struct.Struct("<BBBBIddd")  # 32 bytes: one write is atomic on a pipe
# daemon → sender
TEMPO, NOTE, PANIC, QUIT = 1, 2, 3, 4
# sender → daemon
READY, SENT, DROPPED, ERROR, DONE = 10, 11, 12, 13, 14
START_TIMEOUT_S = 20.0
WEDGED_AFTER_S = 5.0  # the sender's own watchdog (see _watchdog)


def _set_blocking(fd: int, blocking: bool) -> None:
    """Python before 3.12 cannot make a Windows pipe non-blocking: there writes may wait."""
    with contextlib.suppress(AttributeError, OSError):
        os.set_blocking(fd, blocking)


class SenderError(PortError):
    """The sender process could not start; the message says why."""


# -- the daemon's side ------------------------------------------------------------------------
class SenderProcess:
    """Starts the sender process and drives it; the same interface as :class:`Scheduler`
    (``schedule_note``, ``panic``, ``start``, ``stop``, ``stats``, ``realtime``); tempo maps
    come from the clock as it makes them (:meth:`push_tempo`)."""

    def __init__(
        self,
        tempo_map: Callable[[], TempoMap | None],
        backend: str,
        out_port: str | None = None,
        client_name: str = "ostinato",
        latency_ms: float = 0.0,
        rt_priority: int = 0,
        program_channels: dict[int, int] | None = None,
        late_tolerance_ms: float = 10.0,
        keep_lateness: int = 100_000,
    ) -> None:
        self._tempo_map = tempo_map
        self.program_channels = {**default_program_channels(), **(program_channels or {})}
        self.keep_lateness = keep_lateness
        self.stats = SchedulerStats()
        self.on_note_sent: Callable[[float, float, int, int, int, int], None] | None = None
        self.on_note_dropped: Callable[[float, float, int, bool], None] | None = None
        self.realtime: bool | None = None
        self.lost_reports = 0
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._last_map: TempoMap | None = None
        self._closed = False
        command = [
            sys.executable, "-m", "ostinato.daemon.sender", "--backend", backend,
            "--client-name", client_name, "--latency-ms", repr(float(latency_ms)),
            "--rt-priority", str(int(rt_priority)), "--late-ms", repr(float(late_tolerance_ms)),
            "--log-level", str(logging.getLogger().getEffectiveLevel()),
        ]  # fmt: skip
        if out_port is not None:
            command += ["--out", out_port]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      bufsize=0)  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in = self._proc.stdin.fileno()
        self._reports = self._proc.stdout
        self._wait_ready()
        # From here on the daemon never waits for the sender: a pipe the sender no longer
        # drains (it is stuck) makes a write fail at once, and the sender is stopped.
        _set_blocking(self._in, False)
        self._reader = threading.Thread(target=self._read_reports, name="ostinato-reports",
                                        daemon=True)  # fmt: skip
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def _wait_ready(self) -> None:
        # A JACK or ALSA client can take seconds to open on a loaded machine; give up after
        # START_TIMEOUT_S, with the sender's own words when it said any.
        timer = threading.Timer(START_TIMEOUT_S, self._proc.kill)
        timer.start()
        try:
            record = self._read_record()
            if record is None:
                code = self._proc.wait()
                raise SenderError(f"the note sender did not start (status {code}; after "
                                  f"{START_TIMEOUT_S:g} s it is stopped)")  # fmt: skip
            kind, flag, _, _, length, *_ = record
            if kind == ERROR:
                message = self._reports.read(length).decode("utf-8", "replace")
                self._proc.wait()
                raise SenderError(message)
            if kind != READY:
                raise SenderError(f"the note sender said {kind} instead of ready")
            self.realtime = bool(flag)
        finally:
            timer.cancel()

    def _read_record(self) -> tuple | None:
        data = b""
        while len(data) < RECORD.size:
            chunk = self._reports.read(RECORD.size - len(data))
            if not chunk:
                return None
            data += chunk
        return RECORD.unpack(data)

    def _read_reports(self) -> None:
        """Reports thread: every note sent or dropped, until the sender exits."""
        while True:
            record = self._read_record()
            if record is None:
                break
            kind, channel, pitch, velocity, note_id, a, b, _ = record
            if kind == SENT:
                self.stats.sent_notes += 1
                if len(self.stats.lateness_ms) < self.keep_lateness:
                    self.stats.lateness_ms.append((b - a) * 1000.0)
                if self.on_note_sent is not None:
                    self.on_note_sent(a, b, channel, pitch, velocity, note_id)
            elif kind == DROPPED:
                late = bool(channel)
                if late:
                    self.stats.deadline_misses += 1
                else:
                    self.stats.late_wakeups += 1
                if self.on_note_dropped is not None:
                    self.on_note_dropped(a, b, note_id, late)
            elif kind == DONE:
                self.lost_reports = note_id
        if not self._closed:
            try:
                code = self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                code = None
            log.error("the note sender exited (status %s): no notes go out", code)

    def _send(self, kind: int, channel=0, pitch=0, velocity=0, note_id=0, a=0.0, b=0.0,
              c=0.0) -> None:  # fmt: skip
        try:
            with self._write_lock:
                os.write(self._in, RECORD.pack(kind, channel, pitch, velocity, note_id, a, b, c))
        except BlockingIOError:  # 2,048 records not read: the sender is stuck
            if self.alive:
                log.error("the note sender stopped reading its commands: stopping it")
                self._proc.kill()
        except OSError:  # the sender is gone; the reports thread says so once
            pass

    # -- the Scheduler interface ----------------------------------------------------------------
    def channel_for(self, program: int) -> int:
        return self.program_channels.get(program, 0)

    def push_tempo(self, tempo: TempoMap | None) -> None:
        """Give the sender a new beat ↔ time map. A listener of the clock: called under its
        lock for every change, so the sender sees the maps in the order they were made."""
        if tempo is None or tempo is self._last_map:
            return
        self._last_map = tempo
        self._send(TEMPO, a=tempo.anchor_time, b=tempo.anchor_beat, c=tempo.seconds_per_beat)

    def schedule_note(
        self, start_beats: float, duration_beats: float, program: int, pitch: int, velocity: int
    ) -> int:
        note_id, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        end = start_beats + max(duration_beats, 1 / 64)
        self._send(NOTE, self.channel_for(program), pitch, velocity, note_id, start_beats, end,
                   time.perf_counter())  # fmt: skip
        return note_id

    def panic(self) -> None:
        self._send(PANIC)

    def start(self) -> None:
        """The map the clock has before it had a listener (if any)."""
        self.push_tempo(self._tempo_map())

    def stop(self, timeout: float = 5.0) -> None:
        """Release every sounding note and end the sender; its last reports are counted."""
        self._closed = True
        self._send(QUIT)
        with contextlib.suppress(OSError):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the note sender did not stop: killed")
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)


# -- the sender's side ------------------------------------------------------------------------
class _Reports:
    """Writes reports to the daemon without ever blocking: a full pipe drops them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lost = 0
        _set_blocking(fd, False)

    def write(self, kind: int, channel=0, pitch=0, velocity=0, note_id=0, a=0.0, b=0.0,
              c=0.0) -> None:  # fmt: skip
        try:
            os.write(self.fd, RECORD.pack(kind, channel, pitch, velocity, note_id, a, b, c))
        except BlockingIOError:
            self.lost += 1
        except OSError:  # the daemon is gone: the pipe's end tells the reader too
            self.lost += 1

    def error(self, message: str) -> None:
        data = message.encode("utf-8")
        _set_blocking(self.fd, True)
        os.write(self.fd, RECORD.pack(ERROR, 0, 0, 0, len(data), 0.0, 0.0, 0.0) + data)


def _watchdog() -> None:
    """Re-arms a timer ten times a second; the timer runs without the interpreter lock. When
    this thread cannot run for WEDGED_AFTER_S, the sender is stuck holding the lock (the one
    known case: python-rtmidi's JACK output spinning on a full buffer after the JACK server
    went away): it exits with status 1 and every thread's traceback on stderr, and the
    daemon, seeing its sender gone, exits too for a service manager to restart it."""
    while True:
        faulthandler.dump_traceback_later(WEDGED_AFTER_S, exit=True)
        time.sleep(0.1)


def _serve(args: argparse.Namespace, reports: _Reports) -> int:
    try:
        ports = MidiPorts(args.backend, out_port=args.out, client_name=args.client_name,
                          with_input=False)  # fmt: skip
    except PortError as exc:
        reports.error(str(exc))
        return 2
    tempo: list[TempoMap | None] = [None]
    scheduler = Scheduler(ports.send, lambda: tempo[0], latency_ms=args.latency_ms,
                          late_tolerance_ms=args.late_ms, keep_lateness=0,
                          rt_priority=args.rt_priority)  # fmt: skip
    scheduler.on_note_sent = lambda due, sent, ch, pitch, vel, nid: reports.write(
        SENT, ch, pitch, vel, nid, due, sent
    )
    scheduler.on_note_dropped = lambda due, now, nid, late: reports.write(
        DROPPED, int(late), 0, 0, nid, due, now
    )
    # Everything loaded so far lives as long as the process: the collector never walks it.
    gc.collect()
    gc.freeze()
    threading.Thread(target=_watchdog, name="ostinato-sender-watchdog", daemon=True).start()
    scheduler.start()
    while scheduler.realtime is None:
        time.sleep(0.001)
    reports.write(READY, int(scheduler.realtime))
    commands = sys.stdin.buffer.fileno()
    pending = b""
    try:
        while True:
            chunk = os.read(commands, 64 * RECORD.size)
            if not chunk:
                break  # the daemon closed the pipe or died: release everything
            pending += chunk
            whole = len(pending) - len(pending) % RECORD.size
            for offset in range(0, whole, RECORD.size):
                kind, channel, pitch, velocity, note_id, a, b, c = RECORD.unpack_from(
                    pending, offset
                )
                if kind == NOTE:
                    scheduler.schedule(a, b, channel, pitch, velocity, note_id, handed_over=c)
                elif kind == TEMPO:
                    tempo[0] = TempoMap(a, b, c)
                    scheduler.retime()
                elif kind == PANIC:
                    scheduler.panic()
                elif kind == QUIT:
                    return 0
            pending = pending[whole:]
    finally:
        scheduler.stop()  # all notes off, CC 123 on every channel used
        ports.close()
        reports.write(DONE, note_id=reports.lost)
    return 0


def main(argv: list[str] | None = None) -> int:
    # Reports get the pipe on fd 1 to themselves: whatever else prints to standard output
    # (libjack's info messages do) goes to standard error instead of into the records.
    reports_fd = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop

    def on_term(signum, frame) -> None:
        raise SystemExit(0)  # unwinds through _serve's finally: notes released

    signal.signal(signal.SIGTERM, on_term)
    parser = argparse.ArgumentParser(prog="ostinato-sender")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--out")
    parser.add_argument("--client-name", default="ostinato")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--late-ms", type=float, default=10.0)
    parser.add_argument("--rt-priority", type=int, default=0)
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")  # fmt: skip
    # The reader thread parses a record and goes back to waiting on the pipe; should the
    # sender wake while it runs, it gets the interpreter lock within half a millisecond.
    sys.setswitchinterval(0.0005)
    reports = _Reports(reports_fd)
    return _serve(args, reports)


if __name__ == "__main__":
    sys.exit(main())
