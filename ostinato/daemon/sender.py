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
records (:mod:`ostinato.daemon.protocol` lists them), all times on the sender's time line:
``time.perf_counter()``'s clock for the rtmidi backends (CLOCK_MONOTONIC on Linux,
QueryPerformanceCounter on Windows, mach_absolute_time on macOS: the same for every process),
JACK frame time for the JACK backend, where the sender is a JACK client with a process
callback of its own (:mod:`ostinato.daemon.jack_io`) that writes every note at its frame and
can own the input port too, stamping each event with its frame; its SYNC reports let the
daemon read the current time on that line (:meth:`SenderProcess.now`). Reports never block
the sender: when the daemon does not read them, they are dropped and counted.

Run as ``python -m ostinato.daemon.sender --backend B [--out NAME] ...``; the daemon starts it.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.note_queue import reanchored
from ostinato.daemon.ports import MidiPorts, PortError
from ostinato.daemon.protocol import (
    CANCEL,
    DONE,
    DROPPED,
    ERROR,
    HOLD,
    INPUT,
    INPUT_LOST,
    JUMP,
    NOTE,
    PANIC,
    PROGRAM,
    QUIT,
    READY,
    RECORD,
    SENT,
    SKIPPED,
    SYNC,
    TEMPO,
    message_of,
)
from ostinato.daemon.scheduler import Scheduler, input_priority, realtime_thread
from ostinato.daemon.scheduling import NoteScheduler

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
WEDGED_AFTER_S = 5.0  # the sender's own watchdog (see _watchdog)
TERM_GRACE_S = 1.0  # a stuck sender gets this long after SIGTERM before SIGKILL
# The daemon's estimate of JACK time − perf_counter() follows the SYNC reports (every 10 ms)
# with an α-β filter (the offset and its drift). JACK's frames drift from perf_counter by
# parts per million on a sound card. On a loaded machine's dummy driver JACK's own frame-time
# estimate (its DLL) runs off by up to 1.7 % for a second or more whenever it locks again,
# decaying over about a second (measured in the Link test's runs: 17 ms over 2 s). A plain
# average lags any drift; this filter with a SYNC every 50 ms lagged such a stretch by up to
# 1.05 ms, and with a drift bound of 1 % kept 0.1–0.2 ms behind its peak. Every 10 ms, with
# the bound at 5 %: within 0.28 ms at the stretch's start, 0.02 ms (p99) otherwise, and
# 20 µs of jitter in the SYNCs still gives 35 µs (p99), as before.
SYNC_GAIN, SYNC_DRIFT_GAIN = 0.5, 0.1
SYNC_RESET_S = 0.005  # a SYNC this far from the estimate: the line jumped (an xrun): start again
SYNC_MAX_DRIFT = 0.05  # at most 5 % (the drift is ppm; this only bounds a wild estimate)
SYNC_HOLD_S = 0.5  # the drift is extrapolated this long after the last SYNC at most


def _set_blocking(fd: int, blocking: bool) -> None:
    """Python before 3.12 cannot make a Windows pipe non-blocking: there writes may wait."""
    with contextlib.suppress(AttributeError, OSError):
        os.set_blocking(fd, blocking)


class SenderError(PortError):
    """The sender process could not start; the message says why."""


# -- the daemon's side -------------------------------------------------------------------------
class SyncedTimeLine:
    """``perf_counter()`` → the sender's time line, from the (JACK time, perf_counter())
    pairs of its SYNC reports; the identity until the first one (rtmidi backends)."""

    def __init__(self) -> None:
        # (perf_counter() of the last SYNC, JACK time − perf_counter() then, its drift per
        # second): one tuple, written by the reports thread, read without a lock by at()
        self._sync: tuple[float, float, float] | None = None

    def at(self, perf: float) -> float:
        sync = self._sync
        if sync is None:
            return perf
        at, offset, drift = sync
        return perf + offset + drift * min(perf - at, SYNC_HOLD_S)

    def sync(self, jack_s: float, perf_s: float) -> None:
        offset = jack_s - perf_s
        sync = self._sync
        if sync is None:
            self._sync = (perf_s, offset, 0.0)
            return
        at, estimate, drift = sync
        dt = perf_s - at
        if dt <= 0.0:
            return
        predicted = estimate + drift * min(dt, SYNC_HOLD_S)
        residual = offset - predicted
        if abs(residual) > SYNC_RESET_S:
            self._sync = (perf_s, offset, 0.0)
            return
        # JACK's estimate of the current frame jitters a little: part of each step is taken
        drift = min(SYNC_MAX_DRIFT, max(-SYNC_MAX_DRIFT, drift + SYNC_DRIFT_GAIN * residual / dt))
        self._sync = (perf_s, predicted + SYNC_GAIN * residual, drift)


class SenderProcess(NoteScheduler):
    """Starts the sender process and drives it through the :class:`NoteScheduler` interface;
    tempo maps come from the clock as it makes them (:meth:`push_tempo`).

    Every time given or reported is on the sender's time line, which :meth:`now` reads:
    ``time.perf_counter()`` for the rtmidi backends, JACK frame time in seconds for JACK
    (``samplerate`` is then the server's rate, None otherwise). ``with_input`` (JACK only):
    the sender also owns "Ostinato In" (``in_port``: connected to the JACK port of that
    name); each message comes to ``on_input(t, bytes)`` on the reports thread, stamped with
    its frame (a SysEx as its status byte alone), and ``stats.input_lost`` counts what could
    not be delivered."""

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
        in_port: str | None = None,
        with_input: bool = False,
        on_input: Callable[[float, list[int]], None] | None = None,
    ) -> None:
        if with_input and backend != "jack":
            raise ValueError("only the JACK sender can own the input port")
        super().__init__(program_channels, keep_lateness)
        self._tempo_map = tempo_map
        self.on_input = on_input  # reports thread; given here, it misses no early input
        self.samplerate: float | None = None  # JACK's; None for rtmidi (perf_counter time)
        self.blocksize: int | None = None  # JACK's period in frames
        # called (reports thread) when input may be missing from time t on: an xrun
        self.on_input_gap: Callable[[float, float | None], None] | None = None
        # called (reports thread) at each SYNC with its JACK time: all input stamped before
        # it has been handed to on_input (the sender's pump writes SYNC after the input)
        self.on_input_read: Callable[[float], None] | None = None
        self.last_error: str | None = None  # the sender's last words after it started
        self._time_line = SyncedTimeLine()  # perf_counter() → JACK time, from the SYNCs
        self._input_priority = input_priority(rt_priority)  # the reports thread's
        self.input_realtime: bool | None = None  # SCHED_FIFO granted to it; None until known
        self._next_id = 0
        # One record is one write of 32 bytes, atomic on a POSIX pipe (≤ PIPE_BUF): threads
        # may write at once without a lock, so the clock's thread (a tick's new map) never
        # waits for the planner's. Windows' pipes promise no such thing: a lock there.
        self._write_lock: contextlib.AbstractContextManager = (
            contextlib.nullcontext() if os.name == "posix" else threading.Lock()
        )
        self._last_map: TempoMap | None = None
        self._closed = False
        self._terminating = False
        command = [
            sys.executable, "-m", "ostinato.daemon.sender", "--backend", backend,
            "--client-name", client_name, "--latency-ms", repr(float(latency_ms)),
            "--rt-priority", str(int(rt_priority)), "--late-ms", repr(float(late_tolerance_ms)),
            "--log-level", str(logging.getLogger().getEffectiveLevel()),
        ]  # fmt: skip
        if out_port is not None:
            command += ["--out", out_port]
        if with_input:
            command += ["--with-input"]
            if in_port is not None:
                command += ["--in", in_port]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      bufsize=0)  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._commands = self._proc.stdin
        self._in = self._commands.fileno()
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

    def now(self) -> float:
        """The current time on the sender's time line (see the class's docstring)."""
        return self._time_line.at(time.perf_counter())

    def _wait_ready(self) -> None:
        # A JACK or ALSA client can take seconds to open on a loaded machine; give up after
        # START_TIMEOUT_S, with the sender's own words when it said any.
        timer = threading.Timer(START_TIMEOUT_S, self._proc.kill)
        timer.start()
        try:
            while True:
                record = self._read_record()
                if record is None:
                    code = self._proc.wait()
                    raise SenderError(f"the note sender did not start (status {code}; after "
                                      f"{START_TIMEOUT_S:g} s it is stopped)")  # fmt: skip
                kind, flag, _, _, number, a, b, _ = record
                if kind == SYNC:
                    self._on_sync(a, b)
                    continue
                if kind in (INPUT, SKIPPED, INPUT_LOST):
                    continue  # input before the daemon listens: not heard, as if earlier
                if kind == ERROR:
                    message = self._reports.read(number).decode("utf-8", "replace")
                    self._proc.wait()
                    raise SenderError(message)
                if kind != READY:
                    raise SenderError(f"the note sender said {kind} instead of ready")
                self.realtime = bool(flag)
                if a > 0:
                    self.samplerate, self.blocksize = a, number
                return
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

    def _on_sync(self, jack_s: float, perf_s: float) -> None:
        self._time_line.sync(jack_s, perf_s)

    def _read_reports(self) -> None:
        """Reports thread: every note sent or dropped, every input message, until the
        sender exits."""
        self.input_realtime = realtime_thread(self._input_priority, "the clock input")
        stats = self.stats
        while True:
            record = self._read_record()
            if record is None:
                break
            kind, channel, pitch, velocity, note_id, a, b, _ = record
            if kind == INPUT:
                if self.on_input is not None:
                    try:
                        self.on_input(a, message_of(channel, pitch, velocity, note_id))
                    except Exception:  # the reports must go on (notes sent, SYNC)
                        log.exception("error handling MIDI input")
            elif kind == SENT:
                self._count_sent(a, b, channel, pitch, velocity, note_id)
            elif kind == SYNC:
                self._on_sync(a, b)
                if self.on_input_read is not None:
                    self.on_input_read(a)
            elif kind == DROPPED:
                self._count_dropped(a, b, note_id, bool(channel))
            elif kind == SKIPPED:
                stats.skipped_frames += note_id
                if self.on_input_gap is not None and self.samplerate:
                    self.on_input_gap(a, a + note_id / self.samplerate)
            elif kind == INPUT_LOST:
                if note_id > stats.input_lost:
                    log.warning("%d MIDI input messages lost (the daemon read too slowly)",
                                note_id - stats.input_lost)  # fmt: skip
                    if self.on_input_gap is not None:  # clock ticks may be among them
                        self.on_input_gap(self.now(), None)
                stats.input_lost = note_id
            elif kind == ERROR:
                self.last_error = self._reports.read(note_id).decode("utf-8", "replace")
                log.error("the note sender: %s", self.last_error)
            elif kind == DONE:
                stats.lost_reports = note_id
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
            self._stop_stuck()
        except OSError:  # the sender is gone; the reports thread says so once
            pass

    def _stop_stuck(self) -> None:
        """SIGTERM first (the sender still releases its notes on the way out), SIGKILL when
        it has not exited within TERM_GRACE_S. Never waits: the caller is the session."""
        if self._terminating or not self.alive:
            return
        self._terminating = True
        log.error("the note sender stopped reading its commands: stopping it")
        self._proc.terminate()

        def kill_if_alive() -> None:
            if self.alive:
                log.error("the note sender did not exit on SIGTERM: killed")
                self._proc.kill()

        timer = threading.Timer(TERM_GRACE_S, kill_if_alive)
        timer.daemon = True
        timer.start()

    # -- the NoteScheduler interface -----------------------------------------------------------
    def push_tempo(self, tempo: TempoMap | None) -> None:
        """Give the sender a new beat ↔ time map (on its time line). A listener of the
        clock: called under its lock for every change, so the sender sees the maps in the
        order they were made."""
        if tempo is None or tempo is self._last_map:
            return
        self._last_map = tempo
        self._send(TEMPO, a=tempo.anchor_time, b=tempo.anchor_beat, c=tempo.seconds_per_beat)

    def schedule(
        self, start_beats: float, end_beats: float, channel: int, pitch: int, velocity: int,
        note_id: int | None = None, handed_over: float | None = None,
    ) -> int:  # fmt: skip
        if note_id is None:
            note_id, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        if handed_over is None:
            handed_over = self.now()
        self._send(NOTE, channel, pitch, velocity, note_id, start_beats, end_beats,
                   handed_over)  # fmt: skip
        return note_id

    def cancel(self, note_ids: Iterable[int]) -> None:
        """One ``CANCEL`` record per note (the sender takes those read together back in one
        pass over its queue)."""
        for note_id in note_ids:
            self._send(CANCEL, note_id=note_id & 0xFFFFFFFF)

    def panic(self) -> None:
        self._send(PANIC)

    def program_change(self, channel: int, program: int) -> None:
        self._send(PROGRAM, channel, program)

    def hold(self, keep_from: float = math.inf) -> None:
        self._send(HOLD, a=keep_from)

    def jump(self, from_beat: float, to_beat: float, shift: bool) -> None:
        """A transport jump: release every sounding note; with ``shift`` the queue moves by
        (to_beat − from_beat) and the sender's map with it (the shifted notes keep their times
        until the next map), without it the queue is dropped. Ends a hold."""
        self._send(JUMP, int(bool(shift)), a=from_beat, b=to_beat)

    def start(self) -> None:
        """The map the clock has before it had a listener (if any)."""
        self.push_tempo(self._tempo_map())

    def stop(self, timeout: float = 5.0) -> None:
        """Release every sounding note and end the sender; its last reports are counted."""
        self._closed = True
        self._send(QUIT)
        with contextlib.suppress(OSError):
            self._commands.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the note sender did not stop: killed")
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)


# -- the sender's side -------------------------------------------------------------------------
class _Reports:
    """Writes reports to the daemon without ever blocking: a full pipe drops them."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lost = 0
        _set_blocking(fd, False)

    def write(self, kind: int, channel=0, pitch=0, velocity=0, note_id=0, a=0.0, b=0.0,
              c=0.0) -> bool:  # fmt: skip
        try:
            os.write(self.fd, RECORD.pack(kind, channel, pitch, velocity, note_id, a, b, c))
        except OSError:  # full (BlockingIOError), or the daemon is gone: the pipe's end
            self.lost += 1  # tells the reader too
            return False
        return True

    def error(self, message: str, block: bool = True) -> None:
        """ERROR and its message in one write (atomic up to the pipe's 4 KiB)."""
        data = message.encode("utf-8")[:3000]
        if block:
            _set_blocking(self.fd, True)
        with contextlib.suppress(OSError):
            os.write(self.fd, RECORD.pack(ERROR, 0, 0, 0, len(data), 0.0, 0.0, 0.0) + data)


def _watchdog(priority: int = 0) -> None:
    """Re-arms a timer ten times a second; the timer runs without the interpreter lock. When
    this thread cannot run for WEDGED_AFTER_S, the sender is stuck holding the lock (the one
    known case: python-rtmidi's JACK output spinning on a full buffer after the JACK server
    went away): it exits with status 1 and every thread's traceback on stderr, and the
    daemon, seeing its sender gone, exits too for a service manager to restart it.
    ``priority``: SCHED_FIFO for this thread too (JACK: see jack_io's pump)."""
    realtime_thread(priority)
    while True:
        faulthandler.dump_traceback_later(WEDGED_AFTER_S, exit=True)
        time.sleep(0.1)


class _Cancels:
    """The CANCEL records read together, taken back by ``cancel(ids)`` in one pass over the
    queue, in order with the other records: before any record that follows them."""

    def __init__(self, cancel: Callable[[frozenset[int]], None]) -> None:
        self._cancel = cancel
        self._ids: list[int] = []

    def add(self, note_id: int) -> None:
        self._ids.append(note_id)

    def flush(self) -> None:
        if self._ids:
            self._cancel(frozenset(self._ids))
            self._ids.clear()


def _read_commands(
    handle: Callable[[tuple], None],
    failed: Callable[[], bool] | None,
    read_all: Callable[[], None] | None = None,
) -> bool:
    """Read the daemon's records and ``handle`` each until QUIT (True) or the pipe's end
    (False: the daemon closed it or died). With ``failed``, wait at most 0.1 s at a time and
    stop (False) as soon as it says so. ``read_all``: called once the records read together
    are handled (and before QUIT's)."""
    commands = sys.stdin.buffer.fileno()
    pending = b""
    while True:
        if failed is not None:
            while not select.select([commands], [], [], 0.1)[0]:
                if failed():
                    return False
        chunk = os.read(commands, 64 * RECORD.size)
        if not chunk:
            return False
        pending += chunk
        whole = len(pending) - len(pending) % RECORD.size
        for offset in range(0, whole, RECORD.size):
            record = RECORD.unpack_from(pending, offset)
            if record[0] == QUIT:
                if read_all is not None:
                    read_all()
                return True
            handle(record)
        if read_all is not None:
            read_all()
        pending = pending[whole:]


def _freeze_heap(disable: bool) -> None:
    """Everything loaded so far lives as long as the process: the collector never walks it."""
    gc.collect()
    gc.freeze()
    if disable:
        gc.disable()


def _block_term(block: bool) -> None:
    if hasattr(signal, "pthread_sigmask"):  # not on Windows
        signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK,
                               {signal.SIGTERM})  # fmt: skip


def _serve_rtmidi(args: argparse.Namespace, reports: _Reports) -> int:
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

    cancels = _Cancels(scheduler.cancel)

    def handle(record: tuple) -> None:
        kind, channel, pitch, velocity, note_id, a, b, c = record
        if kind == CANCEL:
            cancels.add(note_id)
            return
        cancels.flush()
        if kind == NOTE:
            scheduler.schedule(a, b, channel, pitch, velocity, note_id, handed_over=c)
        elif kind == TEMPO:
            tempo[0] = TempoMap(a, b, c)
            scheduler.push_tempo(tempo[0])
        elif kind == PANIC:
            scheduler.panic()
        elif kind == PROGRAM:
            scheduler.program_change(channel, pitch)
        elif kind == HOLD:
            scheduler.hold(a)
        elif kind == JUMP:
            if channel and tempo[0] is not None:  # the shifted notes keep their times
                tempo[0] = reanchored(tempo[0], a, b)
            scheduler.jump(a, b, bool(channel))

    _freeze_heap(disable=False)
    threading.Thread(target=_watchdog, name="ostinato-sender-watchdog", daemon=True).start()
    scheduler.start()
    while scheduler.realtime is None:
        time.sleep(0.001)
    reports.write(READY, int(scheduler.realtime))
    try:
        _read_commands(handle, None, cancels.flush)
    finally:
        scheduler.stop()  # all notes off, CC 123 on every channel used
        ports.close()
        reports.write(DONE, note_id=reports.lost)
    return 0


def _serve_jack(args: argparse.Namespace, reports: _Reports) -> int:
    from ostinato.daemon.jack_io import JackSender

    # SIGTERM goes to the main thread only: a libjack thread that takes it sees its read of the
    # server's socket fail (EINTR) and takes that for the server's end, and then no note would
    # be released. Threads started while it is blocked (libjack's, ours) keep it blocked.
    _block_term(True)
    try:
        sender = JackSender(reports, args.client_name, in_port=args.in_port,
                            out_port=args.out, with_input=args.with_input,
                            latency_ms=args.latency_ms, late_tolerance_ms=args.late_ms,
                            rt_priority=args.rt_priority)  # fmt: skip
    except PortError as exc:
        reports.error(str(exc))
        return 2

    cancels = _Cancels(sender.cancel)  # one command for JACK's thread: one pass over its queue

    def handle(record: tuple) -> None:
        kind, channel, pitch, velocity, note_id, a, b, c = record
        if kind == CANCEL:
            cancels.add(note_id)
            return
        cancels.flush()
        if kind == NOTE:
            sender.note(a, b, channel, pitch, velocity, note_id, c)
        elif kind == TEMPO:
            sender.tempo(a, b, c)
        elif kind == PANIC:
            sender.panic()
        elif kind == PROGRAM:
            sender.program(channel, pitch)
        elif kind == HOLD:
            sender.hold(a)
        elif kind == JUMP:
            sender.jump(a, b, bool(channel))

    # No collection may run on JACK's thread: none runs at all (this process makes no cycles).
    _freeze_heap(disable=True)
    threading.Thread(target=_watchdog, args=(args.rt_priority,), name="ostinato-sender-watchdog",
                     daemon=True).start()  # fmt: skip
    realtime_thread(args.rt_priority)  # this thread reads commands under the lock too
    sender.start_sync()
    reports.write(READY, int(sender.realtime), note_id=sender.blocksize, a=float(sender.rate))
    status = 0
    try:
        _block_term(False)  # a SIGTERM that came meanwhile is taken here
        _read_commands(handle, lambda: sender.failed is not None, cancels.flush)
        if sender.failed is not None:
            reports.error(f"the JACK server shut down ({sender.failed}): no notes go out",
                          block=False)  # fmt: skip
            status = 1
    finally:
        sender.close()  # all notes off, CC 123 on every channel used
        reports.write(DONE, note_id=reports.lost)
    return status


def main(argv: list[str] | None = None) -> int:
    # Reports get the pipe on fd 1 to themselves: whatever else prints to standard output
    # (libjack's info messages do) goes to standard error instead of into the records.
    reports_fd = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop

    def on_term(signum, frame) -> None:
        raise SystemExit(0)  # unwinds through the serve function's finally: notes released

    signal.signal(signal.SIGTERM, on_term)
    parser = argparse.ArgumentParser(prog="ostinato-sender")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--out")
    parser.add_argument("--in", dest="in_port")
    parser.add_argument("--with-input", action="store_true", help="JACK: own Ostinato In too")
    parser.add_argument("--client-name", default="ostinato")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--late-ms", type=float, default=10.0)
    parser.add_argument("--rt-priority", type=int, default=0)
    parser.add_argument("--log-level", type=int, default=logging.INFO)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")  # fmt: skip
    # The reader thread parses a record and goes back to waiting on the pipe; should the
    # sender (or JACK's thread) wake while it runs, it gets the interpreter lock within half
    # a millisecond.
    sys.setswitchinterval(0.0005)
    reports = _Reports(reports_fd)
    if args.backend == "jack":
        return _serve_jack(args, reports)
    return _serve_rtmidi(args, reports)


if __name__ == "__main__":
    sys.exit(main())
