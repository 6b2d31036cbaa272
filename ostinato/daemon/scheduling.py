"""The one interface of a note scheduler, and what its implementations share.

:class:`NoteScheduler` is what the session and the daemon ask of whatever sends the notes:
queue a note (:meth:`~NoteScheduler.schedule_note`), take back notes not yet started
(:meth:`~NoteScheduler.cancel`: a take thrown away), follow the transport (``hold``, ``jump``),
``panic``, take the clock's maps (``push_tempo``), read the time line (``now``) and count
(:class:`SchedulerStats`). It holds the instrument → channel map (:mod:`ostinato.channels`)
and sends each instrument's Program Change when asked (``program_change``), the counts and the
``on_note_sent`` / ``on_note_dropped`` callbacks, the same for both implementations:

- :class:`~ostinato.daemon.scheduler.Scheduler`: the rtmidi sender thread, which plays a
  :class:`~ostinato.daemon.note_queue.NoteQueue` itself (in the sender process; in tests, in
  the test's own process);
- :class:`~ostinato.daemon.sender.SenderProcess`: the daemon's side of the sender process,
  which hands every call to that process over a pipe and counts what it reports back.

Positions are in beats; times are on the scheduler's time line, :meth:`NoteScheduler.now`.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ostinato.channels import ChannelMap
from ostinato.daemon.clock import TempoMap

MIN_DURATION_BEATS = 1 / 64  # a note-off never comes before its note-on

# (due, sent, channel, pitch, velocity, note id) for every note-on sent; what it returns is
# ignored
NoteSent = Callable[[float, float, int, int, int, int], object]
# (due, when, note id, handed over late) for every note-on dropped
NoteDropped = Callable[[float, float, int, bool], object]


FALLBACK_MARGIN_S = 0.005  # a note due sooner than this cannot reach the sender in time


@dataclass
class SchedulerStats:
    sent_notes: int = 0
    deadline_misses: int = 0  # note-ons dropped: handed over after their time
    late_wakeups: int = 0  # note-ons dropped: queued in time, the sender ran too late
    lateness_ms: list[float] = field(default_factory=list)  # actual send − ideal, note-ons
    # what only the sender process knows (0 for the in-process scheduler):
    skipped_frames: int = 0  # JACK frames the sender was not run for (xruns)
    input_lost: int = 0  # input messages the sender could not hand over (JACK)
    lost_reports: int = 0  # reports the daemon read too late to get (counted at the end)


class NoteScheduler(ABC):
    """Sends notes at their beats, on the clock's current map. See the module's docstring."""

    def __init__(
        self, program_channels: dict[int, int] | None = None, keep_lateness: int = 100_000
    ) -> None:
        self.channels = ChannelMap()
        self.program_channels = dict(program_channels or {})  # program → channel, over the map
        self.send_programs = False  # Bank Select + Program Change before an instrument plays
        self._program_on = [-2] * 16  # the program last sent on each channel (−2: none)
        self.keep_lateness = keep_lateness  # lateness_ms keeps at most this many
        self.stats = SchedulerStats()
        self.realtime: bool | None = None  # SCHED_FIFO granted; None until known
        self.on_note_sent: NoteSent | None = None
        self.on_note_dropped: NoteDropped | None = None
        # (note id, start beats, end beats, program): what a note is, for the recording
        self.on_note_queued: Callable[[int, float, float, int], None] | None = None

    def channel_for(self, program: int) -> int:
        """The 0-based output channel of ``program``."""
        channel = self.program_channels.get(program)
        return self.channels.channel_for(program) if channel is None else channel

    def set_channels(self, channels: ChannelMap, send_programs: bool) -> None:
        """A new map (the session thread reads it per note: replaced whole)."""
        if send_programs and not self.send_programs:
            self._program_on = [-2] * 16  # say every instrument again
        self.channels, self.send_programs = channels, send_programs

    @abstractmethod
    def program_change(self, channel: int, program: int) -> None:
        """Bank Select 0 and Program Change ``program`` on ``channel`` (0-based), now."""

    def now(self) -> float:
        """The current time on the scheduler's time line: ``time.perf_counter()``."""
        return time.perf_counter()

    @property
    def pid(self) -> int:
        """The process that sends the notes."""
        return os.getpid()

    @property
    @abstractmethod
    def alive(self) -> bool:
        """False once the sender is gone: nothing it is given plays."""

    # -- producer side (the session) -------------------------------------------------------
    def schedule_note(
        self, start_beats: float, duration_beats: float, program: int, pitch: int, velocity: int,
        handed_over: float | None = None,
    ) -> int:  # fmt: skip
        """Queue a note on its program's channel; returns its id. ``handed_over``: when
        generation delivered it (default: :meth:`now`)."""
        end = start_beats + max(duration_beats, MIN_DURATION_BEATS)
        channel = self.channel_for(program)
        if self.send_programs and program >= 0 and self._program_on[channel] != program:
            self._program_on[channel] = program  # before the note: it is queued ahead
            self.program_change(channel, program)
        note_id = self.schedule(start_beats, end, channel, pitch, velocity,
                                handed_over=handed_over)  # fmt: skip
        if self.on_note_queued is not None:
            self.on_note_queued(note_id, start_beats, end, program)
        return note_id

    @abstractmethod
    def schedule(
        self, start_beats: float, end_beats: float, channel: int, pitch: int, velocity: int,
        note_id: int | None = None, handed_over: float | None = None,
    ) -> int:  # fmt: skip
        """Queue a note-on at ``start_beats`` and its note-off at ``end_beats``; returns the
        note's id (``note_id``, or a new one)."""

    @abstractmethod
    def cancel(self, note_ids: Iterable[int]) -> None:
        """Take back the notes ``note_ids`` (ids :meth:`schedule` returned) whose note-on has
        not gone out; a note already sounding ends at its time, as queued."""

    @abstractmethod
    def push_tempo(self, tempo: TempoMap | None) -> None:
        """The clock made a new map (a listener of ``Clock.map_listeners``)."""

    # -- transport -------------------------------------------------------------------------
    @abstractmethod
    def panic(self) -> None:
        """Drop the queue, release every sounding note, All Notes Off on every used channel."""

    @abstractmethod
    def hold(self, keep_from: float = math.inf) -> None:
        """The transport stopped: release every sounding note (but those started at or after
        ``keep_from``), keep the queue, play nothing until :meth:`jump`."""

    @abstractmethod
    def jump(self, from_beat: float, to_beat: float, shift: bool) -> None:
        """A transport jump: release every sounding note; with ``shift`` the queue moves by
        (to_beat − from_beat), without it the queue is dropped. Ends a hold (see
        :meth:`NoteQueue.jump <ostinato.daemon.note_queue.NoteQueue.jump>`)."""

    # -- life cycle ------------------------------------------------------------------------
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, timeout: float = 2.0) -> None:
        """Stop sending and release every sounding note."""

    # -- counting (the sender's thread, or the reports thread) -----------------------------
    def _count_sent(
        self, due: float, sent: float, channel: int, pitch: int, velocity: int, note_id: int
    ) -> None:
        self.stats.sent_notes += 1
        if len(self.stats.lateness_ms) < self.keep_lateness:
            self.stats.lateness_ms.append((sent - due) * 1000.0)
        if self.on_note_sent is not None:
            self.on_note_sent(due, sent, channel, pitch, velocity, note_id)

    def _count_dropped(self, due: float, when: float, note_id: int, handed_over_late: bool) -> None:
        if handed_over_late:
            self.stats.deadline_misses += 1
        else:
            self.stats.late_wakeups += 1
        if self.on_note_dropped is not None:
            self.on_note_dropped(due, when, note_id, handed_over_late)
