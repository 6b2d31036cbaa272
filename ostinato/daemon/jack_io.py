"""The JACK backend of the note sender: one JACK client (``--client-name``, "ostinato") that
owns "Ostinato Out" and, when the sender takes the input too, "Ostinato In"; run by the sender
process (:mod:`ostinato.daemon.sender`) with ``--backend jack``.

Time line. Every time here is JACK frame time in seconds: a frame count (JACK's 32-bit
``last_frame_time``, counted on past 2**32) divided by the sample rate. An input event's time
is its own frame (the cycle's first frame plus the event's offset); a note goes out at the
frame ``round((tempo.time_at(beat) − latency) × rate)``, at its offset inside the cycle it
falls in, so a DAW recording the port hears it on that frame whatever the period (64 to 2048
frames). Every ~10 ms a ``SYNC`` report pairs JACK time with ``time.perf_counter()`` taken at
the same moment, so the daemon can say what time it is on this time line. (Where one client
both feeds "Ostinato In" and hears "Ostinato Out", the graph has a loop and JACK runs one of
the two a cycle later: that side's events are then exactly one period off, for any client.)

Who runs what.

- JACK's process thread runs :meth:`JackSender._process` once per cycle (the cycle's first
  frame from JACK, then :meth:`JackCycle.run`), and nothing else writes the ports. It takes
  the commands waiting in a ring (notes, tempo maps, cancels, panic, hold, jump, quit), reads
  the input events into a second ring, writes the releases a panic, hold or jump asked for at
  offset 0, then every queued note due in this cycle at its own offset. A note-on already more
  than the late tolerance behind the cycle's start is dropped with its note-off (a *deadline
  miss* when it was handed over after its time, else a *late wake-up*); one less late goes out
  at offset 0 and its lateness is reported. When the port's buffer is full (JACK2's holds
  ~2,700 short events, whatever the period), whatever did not fit (a note-off too) waits for
  the next cycle.
- The Stop reflex, on the same thread. The daemon hears the DAW's Stop from us and answers
  with ``HOLD`` a cycle or two later, but a DAW wants silence from its Stop's frame on; the
  input of a cycle is read before its output is written, so the cycle acts at once. A
  standalone Stop (0xFC, one event; one inside another message comes out as 0xFD and moves
  nothing) at frame f while playing: the notes due before f are written, none from f on, and
  every sounding note is released at f (after them: offsets never fall); the queue is kept,
  as ``HOLD`` keeps it. A Start or Continue within 1.5 ticks of it (the clock's own threshold,
  :mod:`ostinato.daemon.transport`; on the current map, in the same cycle or a later one) is a
  loop jump as DAWs send it: the queue plays on from its frame on the current map, as if
  nothing had stopped (a note-on due in between, less late than the tolerance, goes out at the
  Start's frame; a later one is skipped unreported), and the daemon's ``JUMP`` that follows
  moves the queue and the map by whole bars without moving any time. A later Start leaves it
  stopped until that ``JUMP``. The daemon's answers then keep what the reflex did: its
  ``HOLD`` for a Stop that turned into a loop jump here releases only what it would not keep
  and stops nothing; a ``JUMP`` from before the Stop (no Start since) moves the queue and
  leaves it stopped. A Stop the daemon has not answered within ``ANSWER_S`` (its clock is
  internal, not the DAW's) is let go: the queue plays on.
- The sender's main thread reads the daemon's records from the pipe, builds the note events
  and tempo maps there, and hands them to the process thread through the command ring.
- The pump thread (normal priority) drains the report ring into the pipe every millisecond,
  writes ``SYNC`` every 10 ms and reports lost input.
- JACK's shutdown callback (the server went away) only records why; the main thread sees it
  within 0.1 s, reports the error and exits.

What must not happen on JACK's thread: no system call (no pipe write, no sleep, no logging,
no print), no lock it could wait for (the rings are single-producer single-consumer: each
index is written by one thread only, and the interpreter lock makes each store atomic), no
list that grows (the note heap, the sounding notes, both rings and the cycle's transport
marks are allocated once; a full ring is counted, never waited on) and no garbage collection
(the collector is frozen and disabled in this process). Said honestly, that is as far as
Python goes: CPython still allocates small objects on that thread (floats, ints, tuples, the
generator over the input events) from its own pools, which ask the OS for memory only when
a pool runs out, and the callback must take the interpreter lock, which another thread of
this process may hold for up to the switch interval (0.5 ms; the threads here hold it for
microseconds at a time). And libjack itself prints a line from that thread when a port's
buffer overflows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import Protocol

from ostinato.daemon.clock import PPQN, TempoMap
from ostinato.daemon.note_queue import (
    NOTE_ON,
    PROGRAM_CHANGE,
    NoteQueue,
    note_events,
    reanchored,
)
from ostinato.daemon.ports import IN_NAME, OUT_NAME, PortError, _backend_error, _find
from ostinato.daemon.protocol import (
    CANCEL,
    DROPPED,
    HOLD,
    INPUT,
    INPUT_LOST,
    JUMP,
    NOTE,
    PANIC,
    PROGRAM,
    QUIT,
    SENT,
    SKIPPED,
    SYNC,
    TEMPO,
)
from ostinato.daemon.scheduler import realtime_thread
from ostinato.daemon.transport import is_loop_jump

log = logging.getLogger(__name__)

FRAMES_WRAP = 1 << 32  # JACK's frame counter is 32 bits: 24.8 hours at 48 kHz
RING_SLOTS = 4096  # commands waiting for the process thread; reports waiting for the pump
QUEUE_EVENTS = 16384  # note-ons and note-offs queued at most (8,192 notes)
SYNC_S = 0.01  # a SYNC report this often (see SyncedTimeLine in sender.py for why)
PUMP_S = 0.001  # the pump drains the report ring this often
START_S = 5.0  # the process callback must have run once within this
RELEASE_S = 0.5  # on quit, wait this long (at least 6 cycles) for the releases to go out
# On quit, the client stays connected this many cycles after the one that wrote the releases,
# and writes them again (note-offs and CC 123) in the first RELEASE_REPEATS of them: a reader
# downstream that runs its part of a cycle late still finds our port connected (deactivating
# switches JACK's graph at the next cycle), and one that JACK did not run for the cycle of the
# releases at all (a busy machine, a server that is not real-time) takes them in the next.
RELEASE_TAIL_CYCLES = 3
RELEASE_REPEATS = 2
ANSWER_S = 1.0  # a Stop acted on here that the daemon has not answered by then is let go
TRANSPORT_MARKS = 64  # Start, Continue and Stop messages acted on per cycle at most


UNTRUSTED = 0xFD  # an undefined status byte: what the daemon counts as a bad message
START, CONTINUE, STOP = 0xFA, 0xFB, 0xFC
TRANSPORT = frozenset((START, CONTINUE, STOP))
# The Stop reflex (see the module's docstring): nothing the daemon has to answer; stopped at a
# Stop; playing on after a Stop and a Start that make a loop jump.
PLAYING, STOPPED, LOOPED = 0, 1, 2


class Reports(Protocol):
    """Where reports go (the sender's non-blocking pipe writer)."""

    def write(
        self, kind: int, channel: int = ..., pitch: int = ..., velocity: int = ...,
        note_id: int = ..., a: float = ..., b: float = ..., c: float = ...,
    ) -> bool:  # fmt: skip
        """False when the pipe had no room (the report is lost)."""


class Ring:
    """Hands objects from one thread to another without a lock: a fixed list of slots, the
    write index stored only by the producer and the read index only by the consumer."""

    def __init__(self, slots: int = RING_SLOTS) -> None:
        assert slots & (slots - 1) == 0, "a power of two"
        self._slots: list[object] = [None] * slots
        self._mask = slots - 1
        self._write = 0
        self._read = 0

    def put(self, item: object) -> bool:
        """Producer: False when full (the item is not taken)."""
        w = self._write
        if w - self._read > self._mask:
            return False
        self._slots[w & self._mask] = item
        self._write = w + 1
        return True

    def get(self) -> object | None:
        """Consumer: the oldest item, or None."""
        r = self._read
        if r == self._write:
            return None
        index = r & self._mask
        item = self._slots[index]
        self._slots[index] = None
        self._read = r + 1
        return item


class ReportRing:
    """Like :class:`Ring`, but the slots are lists allocated once and overwritten in place:
    the process thread reports without building an object per report."""

    def __init__(self, slots: int = RING_SLOTS) -> None:
        assert slots & (slots - 1) == 0, "a power of two"
        self._slots = [[0, 0, 0, 0, 0, 0.0, 0.0] for _ in range(slots)]
        self._mask = slots - 1
        self._write = 0
        self._read = 0

    def push(self, kind: int, channel: int, pitch: int, velocity: int, note_id: int, a: float,
             b: float) -> bool:  # fmt: skip
        """Producer (the process thread): False when full."""
        w = self._write
        if w - self._read > self._mask:
            return False
        slot = self._slots[w & self._mask]
        slot[0] = kind
        slot[1] = channel
        slot[2] = pitch
        slot[3] = velocity
        slot[4] = note_id
        slot[5] = a
        slot[6] = b
        self._write = w + 1
        return True

    def pop(self) -> tuple | None:
        """Consumer: the oldest report as a tuple, or None."""
        r = self._read
        if r == self._write:
            return None
        report = tuple(self._slots[r & self._mask])
        self._read = r + 1
        return report


_PANIC, _QUIT = (PANIC,), (QUIT,)


class JackCycle:
    """What JACK's process thread does in a cycle, apart from asking JACK the time: kept on
    its own so that tests can drive it with a fake port. ``out`` has JACK-Client's
    ``clear_buffer()`` and ``write_midi_event(offset, data)``, which raises ``full_error``
    when the buffer is full; ``inp`` (or None) has ``incoming_midi_events()``. Commands come in
    through :attr:`commands`, reports go out through :attr:`reports`. A Start, Continue or
    Stop in the input acts in the cycle it comes in, at its frame (the Stop reflex)."""

    def __init__(self, out, inp, rate: int, latency_ms: float = 0.0,
                 late_tolerance_ms: float = 10.0,
                 full_error: type[Exception] = Exception) -> None:  # fmt: skip
        self.out, self.inp, self.rate = out, inp, rate
        self.full_error = full_error
        self.latency_s = latency_ms / 1000.0
        self.late_frames = round(late_tolerance_ms / 1000.0 * rate)
        self.commands = Ring()  # from the sender's main thread
        self.reports = ReportRing()  # to the pump
        # -- the process thread's own -------------------------------------------------------
        self.queue = NoteQueue(QUEUE_EVENTS, growable=False)
        self.tempo: TempoMap | None = None
        self._message = bytearray(3)  # the next message written, filled in place
        self._write_message = self._write  # bound once: not a new method object per message
        self._at = 0  # offset of the last message written in this cycle (offsets never fall)
        self._quitting = False
        self._taken: list[tuple[int, bytes]] = []  # input taken in this cycle (see run)
        # the standalone Start, Continue and Stop messages of this cycle, in order
        self._mark_frame = [0] * TRANSPORT_MARKS
        self._mark_status = [0] * TRANSPORT_MARKS
        self._marks = 0
        # the Stop reflex: what the transport did here that the daemon has not answered yet
        self._reflex = PLAYING
        self._stopped_at = 0  # the frame of the Stop acted on
        self._answered = False  # the daemon's HOLD for that Stop came
        self._started = False  # a Start or Continue too late for a loop jump came since
        self._answer_by = 0  # the frame by which the daemon answers, or the reflex is let go
        self._answer_frames = round(ANSWER_S * rate)
        # -- written by the process thread, read by others ---------------------------------
        self.released = False  # after quit: every release is out
        self.cycles_after_release = 0  # cycles run since the one that wrote the last release
        self.input_lost = 0  # input events the report ring had no room for
        self.reports_lost = 0  # SENT/DROPPED reports the report ring had no room for

    def run(self, first: int, frames: int, repeated: bool = False, skipped: int = 0) -> None:
        """The cycle of ``frames`` frames starting at frame ``first``: commands, input,
        releases, then the notes due, stopping and starting again at the frames of the
        transport messages in the input. ``repeated``: JACK runs the same cycle again (a late
        server); input already taken in it is not taken twice, input new to it is taken.
        ``skipped``: frames JACK did not run us for just before this cycle (an xrun): said in
        order with the input, so the daemon's clock knows the gap may hide ticks."""
        self.out.clear_buffer()
        self._at = 0
        self._marks = 0
        while True:
            command = self.commands.get()
            if command is None:
                break
            self._apply(command)  # type: ignore[arg-type]
        if self._reflex != PLAYING and first >= self._answer_by:
            self._let_go()
        if skipped and not self.reports.push(SKIPPED, 0, 0, 0, skipped, first - skipped, 0.0):
            self.input_lost += 1
        if self.inp is not None:
            taken = self._taken
            if not repeated:
                taken.clear()  # keeps its room: no new list per cycle
            for offset, data in self.inp.incoming_midi_events():
                event = (first + offset, bytes(data))
                if repeated and event in taken:
                    continue
                taken.append(event)
                self._take_input(*event)
        queue = self.queue
        # a full buffer: the rest of the releases, and the notes, wait for the next cycle
        full = not queue.flush(self._write_message)
        if self._quitting:
            if not full:
                if self.released:
                    self.cycles_after_release += 1
                    if self.cycles_after_release <= RELEASE_REPEATS:
                        queue.repeat_panic()
                        queue.flush(self._write_message)  # what does not fit is not needed
                self.released = True
            return
        tempo = self.tempo
        if tempo is None:
            return  # nothing has played yet: nothing to stop
        start = quiet = first  # notes due before start are late; skipped, from quiet on
        i = 0
        while i < self._marks:
            frame, status = self._mark_frame[i], self._mark_status[i]
            i += 1
            if not full:
                full = not self._play(tempo, first, frame, start, quiet)
            if status == STOP:
                if self._stop(frame) and not full:
                    if frame - first > self._at:
                        self._at = frame - first
                    full = not queue.flush(self._write_message)
            elif self._start(tempo, frame):
                start, quiet = frame, self._stopped_at
                if frame - first > self._at:
                    self._at = frame - first
        if not full:
            self._play(tempo, first, first + frames, start, quiet)

    def _play(self, tempo: TempoMap, first: int, limit: int, start: int, quiet: int) -> bool:
        """Write the notes due before frame ``limit``, each at its offset from ``first``. A
        note-on due more than the late tolerance before frame ``start`` is dropped: reported
        when due before frame ``quiet``, silently from there on (the transport was stopped
        then: it is skipped, not late). False when the buffer is full."""
        queue, rate, latency_s = self.queue, self.rate, self.latency_s
        while True:
            event = queue.peek()
            if event is None:
                return True
            due = tempo.time_at(event[0]) - latency_s
            frame = round(due * rate)
            if frame >= limit:
                return True
            if frame < start and event[2] == NOTE_ON and start - frame > self.late_frames:
                queue.drop_next()
                if frame < quiet and not self.reports.push(
                    DROPPED, int(event[7] >= due), 0, 0, event[6], due, start / rate
                ):
                    self.reports_lost += 1
                continue
            offset = frame - first
            if offset > self._at:
                self._at = offset
            if not queue.play_next(self._write_message):
                return False  # the buffer is full: the rest next cycle
            if event[2] == NOTE_ON and not self.reports.push(
                SENT, event[3], event[4], event[5], event[6], due, (first + self._at) / rate
            ):
                self.reports_lost += 1

    # -- the Stop reflex -----------------------------------------------------------------------
    def _stop(self, frame: int) -> bool:
        """A Stop at ``frame``: unless already stopped, every sounding note is released there
        (True: the caller writes the releases) and the queue is kept, as the daemon's HOLD
        keeps it; that HOLD, and a JUMP, follow a cycle or two later."""
        queue = self.queue
        if queue.held:  # stopped already (by the daemon, or here)
            if self._reflex == STOPPED:
                # stopped again after a late Start: the daemon's JUMP for that Start comes
                # before its HOLD for this Stop and must not start the queue
                self._started = False
            return False
        queue.hold()
        self._reflex, self._stopped_at = STOPPED, frame
        self._answered = self._started = False
        self._answer_by = frame + self._answer_frames
        return True

    def _start(self, tempo: TempoMap, frame: int) -> bool:
        """A Start or Continue at ``frame``: a loop jump as DAWs send it when it comes within
        the clock's own threshold (:func:`~ostinato.daemon.transport.is_loop_jump`) of the Stop
        acted on, and the queue plays on from this frame (True); the daemon's
        JUMP that follows moves the queue and the map by whole bars, not in time. Later: the
        transport stays stopped until the daemon's JUMP."""
        if self._reflex != STOPPED or not self.queue.held:
            return False
        rate = self.rate
        if is_loop_jump(self._stopped_at / rate, frame / rate, tempo.seconds_per_beat / PPQN):
            self.queue.resume()
            self._reflex = LOOPED
            self._answer_by = frame + self._answer_frames
            return True
        self._started = True
        return False

    def _let_go(self) -> None:
        """The daemon did not answer in time: its clock does not follow the DAW's transport
        (an internal clock), so a Stop it never answered stops nothing."""
        if self._reflex == STOPPED and not self._answered:
            self.queue.resume()
        self._reflex = PLAYING

    def _apply(self, command: tuple) -> None:
        kind = command[0]
        if kind == NOTE:
            if not self.queue.push(command[1], command[2]):
                on = command[1]
                if not self.reports.push(DROPPED, 0, 0, 0, on[6], on[7], on[7]):
                    self.reports_lost += 1
        elif kind == TEMPO:
            self.tempo = command[1]
        elif kind == PANIC:
            self.queue.panic()
        elif kind == CANCEL:
            self.queue.cancel(command[1])  # a frozenset made on the main thread
        elif kind == PROGRAM:
            self.queue.program(command[1], command[2])
        elif kind == HOLD:
            self.queue.hold(command[1])
            if self._reflex == LOOPED and not self._answered:
                # the Stop it answers was a loop jump, seen here: the transport runs again and
                # the JUMP follows; only the notes the daemon would not keep end
                self.queue.resume()
            self._answered = True
        elif kind == JUMP:
            self.queue.jump(command[1], command[2], command[3])
            if command[4] is not None:
                self.tempo = command[4]
            if self._reflex == STOPPED and not self._started:
                self.queue.hold()  # a jump from before the Stop acted on: still stopped
            else:
                self._reflex = PLAYING
        elif kind == QUIT:
            self.queue.panic()
            self._quitting = True

    def _write(self, status: int, data1: int, data2: int) -> bool:
        if status & 0xF0 == PROGRAM_CHANGE:  # two bytes (rare: a slice is fine here)
            message = self._message[:2]
            message[0] = status
            message[1] = data1
        else:
            message = self._message
            message[0] = status
            message[1] = data1
            message[2] = data2
        try:
            self.out.write_midi_event(self._at, message)
        except self.full_error:  # the port's buffer is full
            return False
        return True

    def _take_input(self, frame: int, data: bytes) -> None:
        """One input event: real-time bytes (0xF8–0xFF) found inside a longer event are
        messages of their own at the same frame, ahead of the message they interrupted."""
        length = len(data)
        if length == 0:
            return
        if length == 1 or max(data) < 0xF8:
            status = data[0]
            if length == 1 and status in TRANSPORT and self._marks < TRANSPORT_MARKS:
                self._mark_frame[self._marks] = frame
                self._mark_status[self._marks] = status
                self._marks += 1
            self._input(frame, status, data[1] if length > 1 else 0,
                        data[2] if length > 2 else 0, length)  # fmt: skip
            return
        status = data1 = data2 = length = 0
        for byte in data:
            if byte >= 0xF8:
                # a clock byte inside another message is a tick candidate like any other (the
                # daemon's clock rejects one off the tempo line); a Start, Continue, Stop or
                # Reset inside one is not trusted: a burst of garbage must not move the song
                self._input(frame, byte if byte in (0xF8, 0xFE) else UNTRUSTED, 0, 0, 1)
                continue
            if length == 0:
                status = byte
            elif length == 1:
                data1 = byte
            elif length == 2:
                data2 = byte
            length += 1
        if length:
            self._input(frame, status, data1, data2, length)

    def _input(self, frame: int, status: int, data1: int, data2: int, length: int) -> None:
        if not self.reports.push(INPUT, status, data1, data2, length, frame, 0.0):
            self.input_lost += 1


class JackSender:
    """The JACK client, its process callback and the pump thread. Made by the sender's main
    thread, which then calls :meth:`tempo`, :meth:`note`, :meth:`cancel`, :meth:`panic`,
    :meth:`hold`, :meth:`jump` for each command and :meth:`close` at the end."""

    def __init__(
        self,
        reports: Reports,
        client_name: str = "ostinato",
        in_port: str | None = None,
        out_port: str | None = None,
        with_input: bool = False,
        latency_ms: float = 0.0,
        late_tolerance_ms: float = 10.0,
        rt_priority: int = 0,
    ) -> None:
        self.rt_priority = rt_priority  # SCHED_FIFO for the pump (see _pump)
        try:
            import jack
        except OSError as exc:  # JACK-Client loads libjack when imported
            raise PortError(f"the JACK library is not available here ({exc})") from exc
        self._jack_error = jack.JackError
        try:
            self.client = jack.Client(client_name, no_start_server=True)
        except jack.JackError as exc:
            raise _backend_error("jack", exc) from exc
        self._reports = reports
        self.rate: int = self.client.samplerate
        self.blocksize: int = self.client.blocksize
        self.realtime = self.client.realtime
        # -- written by the process thread, read by others ---------------------------------
        self._cycle: tuple[int, int] | None = None  # (JACK's frame count, counted on) at start
        self._frames = 0  # the last cycle's length
        self.callback_error: BaseException | None = None  # the first one; the pump logs it
        self.callback_errors = 0
        # -- the main thread's -------------------------------------------------------------
        self.failed: str | None = None  # why JACK shut us down (set by the shutdown callback)
        self._order = 0
        self._mapped: TempoMap | None = None  # the map the process thread will have
        # -- the pump's --------------------------------------------------------------------
        self._pipe_input_lost = 0  # INPUT reports the pipe had no room for
        self._said_lost = 0
        self._said_refused = 0
        self._said_reports_lost = 0
        self._said_error = False
        self._stop_pump = threading.Event()
        self._pump_thread = threading.Thread(target=self._pump, name="ostinato-jack-pump",
                                             daemon=True)  # fmt: skip
        try:
            out = self.client.midi_outports.register(OUT_NAME)
            inp = self.client.midi_inports.register(IN_NAME) if with_input else None
            self.engine = JackCycle(out, inp, self.rate, latency_ms, late_tolerance_ms,
                                    full_error=jack.JackError)  # fmt: skip
            self.client.set_process_callback(self._process)
            self.client.set_shutdown_callback(self._on_shutdown)
            self.client.activate()
            if out_port is not None:
                self._connect(out, out_port, "output")
            if in_port is not None and inp is not None:
                self._connect(inp, in_port, "input")
            end = time.monotonic() + START_S
            while self._cycle is None and time.monotonic() < end:
                time.sleep(0.001)
            if self._cycle is None:
                raise PortError(f"the JACK server did not run {self.client.name!r} within "
                                f"{START_S:g} s")  # fmt: skip
        except BaseException:
            self._close_client()
            raise
        self._pump_thread.start()

    @property
    def name(self) -> str:
        return self.client.name

    def _connect(self, port, wanted: str, kind: str) -> None:
        """Connect our port to the existing JACK port named ``wanted`` (exactly, by its start
        or by a part of it): our output to a port that takes MIDI in, our input from one that
        gives MIDI out."""
        own = self.client.name + ":"
        if kind == "output":
            candidates = self.client.get_ports(is_midi=True, is_input=True)
        else:
            candidates = self.client.get_ports(is_midi=True, is_output=True)
        names = [p.name for p in candidates if not p.name.startswith(own)]
        index = _find(names, wanted)
        if index < 0:
            raise PortError(f"no MIDI {kind} port named {wanted!r}; ports now: "
                            + (", ".join(names) or "none"))  # fmt: skip
        try:
            if kind == "output":
                self.client.connect(port, names[index])
            else:
                self.client.connect(names[index], port)
        except self._jack_error as exc:
            raise PortError(f"cannot connect {port.name} and {names[index]}: {exc}") from exc

    # -- the main thread: commands -------------------------------------------------------------
    def tempo(self, anchor_time: float, anchor_beat: float, seconds_per_beat: float) -> None:
        self._mapped = TempoMap(anchor_time, anchor_beat, seconds_per_beat)
        self._submit((TEMPO, self._mapped))

    def note(self, start_beat: float, end_beat: float, channel: int, pitch: int, velocity: int,
             note_id: int, handed_over: float) -> None:  # fmt: skip
        self._order += 2
        on, off = note_events(start_beat, end_beat, channel, pitch, velocity, note_id,
                              handed_over, self._order)  # fmt: skip
        self._submit((NOTE, on, off))

    def cancel(self, note_ids: frozenset[int]) -> None:
        """Take back the notes not yet started (the set is made here, not on JACK's thread)."""
        self._submit((CANCEL, note_ids))

    def panic(self) -> None:
        self._submit(_PANIC)

    def program(self, channel: int, program: int) -> None:
        self._submit((PROGRAM, channel, program))

    def hold(self, keep_from: float = math.inf) -> None:
        self._submit((HOLD, keep_from))

    def jump(self, from_beat: float, to_beat: float, shift: bool) -> None:
        """The map is moved with a shifted queue (made here, not on JACK's thread): the
        shifted notes keep their times until the daemon's next TEMPO."""
        tempo = None
        if shift and self._mapped is not None:
            tempo = self._mapped = reanchored(self._mapped, from_beat, to_beat)
        self._submit((JUMP, from_beat, to_beat, shift, tempo))

    def _submit(self, command: tuple) -> None:
        # A full ring means the process thread has not run for ~4,000 commands: wait for it
        # (the daemon's pipe then fills, and the daemon notices); never drop a command.
        while not self.engine.commands.put(command):
            if self.failed is not None:
                return
            time.sleep(0.0005)

    def close(self) -> None:
        """Release every sounding note (All Notes Off on the channels used), wait until the
        process thread has written it all, close the client, send the last reports."""
        if self.failed is None:
            self._submit(_QUIT)
            wait_s = max(RELEASE_S, (RELEASE_TAIL_CYCLES + 3) * self.blocksize / self.rate)
            end = time.monotonic() + wait_s
            engine = self.engine
            while (
                not (engine.released and engine.cycles_after_release >= RELEASE_TAIL_CYCLES)
                and self.failed is None
                and time.monotonic() < end
            ):
                time.sleep(0.001)
            if not self.engine.released and self.failed is None:
                log.error("JACK did not run the sender for %.1f s: notes may be left sounding",
                          wait_s)  # fmt: skip
        self._stop_pump.set()  # first: the pump reads the client's clock for SYNC
        if self._pump_thread.is_alive():
            self._pump_thread.join(2.0)
        self._close_client()
        self._drain()  # what the last cycles reported
        self._say_losses()

    def _close_client(self) -> None:
        with contextlib.suppress(Exception):  # after a server shutdown these may complain
            self.client.deactivate()
        with contextlib.suppress(Exception):
            self.client.close()

    def _on_shutdown(self, status, reason: str) -> None:
        """JACK's thread, as if a signal handler: only records why."""
        self.failed = reason or "the JACK server shut down"

    # -- JACK's process thread -----------------------------------------------------------------
    def _process(self, frames: int) -> None:
        """JACK's real-time thread, once per cycle (see the module's docstring for what must
        not happen here). An exception is kept for the pump to log; it must not escape, or
        JACK would stop calling us."""
        try:
            raw = self.client.last_frame_time
            cycle = self._cycle
            repeated = cycle is not None and raw == cycle[0]  # a late server ran it again
            first = raw if cycle is None else cycle[1] + ((raw - cycle[0]) & (FRAMES_WRAP - 1))
            skipped = 0
            if cycle is not None and not repeated:
                skipped = max(0, first - (cycle[1] + self._frames))
            self._cycle, self._frames = (raw, first), frames
            self.engine.run(first, frames, repeated=repeated, skipped=skipped)
        except Exception as exc:
            self.callback_errors += 1
            if self.callback_error is None:
                self.callback_error = exc

    # -- the pump thread -----------------------------------------------------------------------
    def start_sync(self) -> None:
        """One SYNC now (before READY: the daemon knows the time line from the start)."""
        self._sync()

    def _pump(self) -> None:
        # Every thread of this process that takes the interpreter lock runs at SCHED_FIFO
        # (below JACK's): one preempted by an ordinary program while holding the lock would
        # keep JACK's thread waiting for it, and JACK would skip us for that cycle.
        realtime_thread(self.rt_priority)
        next_sync = time.perf_counter() + SYNC_S
        while True:
            stopping = self._stop_pump.is_set()
            self._drain()
            now = time.perf_counter()
            if now >= next_sync and self.failed is None:
                self._sync()
                next_sync = now + SYNC_S
            self._say_losses()
            if stopping:
                return
            self._stop_pump.wait(PUMP_S)

    def _drain(self) -> None:
        write, rate = self._reports.write, self.rate
        while True:
            report = self.engine.reports.pop()
            if report is None:
                return
            kind, channel, pitch, velocity, note_id, a, b = report
            if kind in (INPUT, SKIPPED):
                if not write(kind, channel, pitch, velocity, note_id, a / rate):
                    self._pipe_input_lost += 1
            else:
                write(kind, channel, pitch, velocity, note_id, a, b)

    def _sync(self) -> None:
        """SYNC: JACK's estimate of the current frame and perf_counter() around it (read
        again when this thread was interrupted in between)."""
        cycle = self._cycle
        if cycle is None:
            return
        for _ in range(5):
            before = time.perf_counter()
            raw = self.client.frame_time
            after = time.perf_counter()
            if after - before < 0.0002:
                break
        delta = (raw - cycle[0]) & (FRAMES_WRAP - 1)
        if delta >= FRAMES_WRAP // 2:  # a little before the cycle's start
            delta -= FRAMES_WRAP
        self._reports.write(SYNC, a=(cycle[1] + delta) / self.rate, b=(before + after) / 2)

    def _say_losses(self) -> None:
        engine = self.engine
        lost = engine.input_lost + self._pipe_input_lost
        said = lost == self._said_lost or self._reports.write(INPUT_LOST, note_id=lost & 0xFFFFFFFF)
        if said:  # else: again next round
            self._said_lost = lost
        if engine.queue.refused != self._said_refused:
            self._said_refused = engine.queue.refused
            log.warning("the note queue is full (%d events): %d notes dropped so far",
                        QUEUE_EVENTS, self._said_refused)  # fmt: skip
        if engine.reports_lost != self._said_reports_lost:
            self._said_reports_lost = engine.reports_lost
            log.warning("%d reports of notes sent or dropped lost (the report ring was full)",
                        self._said_reports_lost)  # fmt: skip
        if self.callback_error is not None and not self._said_error:
            self._said_error = True
            log.error("error in the JACK process callback (%d so far)", self.callback_errors,
                      exc_info=self.callback_error)  # fmt: skip
