"""The session's MIDI file, encoded as the night goes on: each event becomes bytes once, when
nothing still to come can change it, so writing the file costs a join and a write however long
the session has run.

Settling. The session file hands this class what happened, in the order it happened, every
couple of seconds. Stamps come late by at most a cycle or a report batch, so whatever lies more
than ``SETTLE_S`` before the latest stamp of something heard or played is complete: every note
that starts there is known, every Stop that cuts a note there is known, and the tempo map there
is final. Those events are encoded for good as the stamps move on (``_Track.head``); the
notes still sounding or after that point wait, and are encoded again at each write
(``_Track.tail``), a few seconds of notes. An event that comes stamped before that point all
the same (later than any delivery seen in practice) is written at the point.

Notes are whole notes with a note-on and a note-off, so the file has no hanging note by
construction; a note still held when the file is written lasts until then. A note-on of a pitch
still sounding in its track retriggers it (the sender does the same): the note before ends
there, and two notes on the same tick are one, the longer.

Pure logic, one thread: only the session file's writer (its thread, or ``close`` after it)
calls this class; the listeners never touch it.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from ostinato.model.tokens import DRUM_PROGRAM

TPQ = 480
TEMPO_STEP_BPM = 0.01
#: What lies this long before the latest stamp heard or played can no longer change.
SETTLE_S = 4.0
SETTLE_STEP_S = 1.0  # settled as the stamps move on, so the notes waiting stay a few seconds'
QUEUED_NOTES = 65536  # notes queued but never reported played (dropped, cancelled) are forgotten
DRUM_CHANNEL = 9
END_OF_TRACK = b"\x00\xff\x2f\x00"
# At one tick: note-offs, then the tempo map and markers, then note-ons.
_OFF, _TEMPO, _MARKER, _ON = 0, 1, 2, 3


def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _meta(kind: int, payload: bytes) -> bytes:
    return bytes((0xFF, kind)) + _vlq(len(payload)) + payload


class TempoLine:
    """Seconds on the daemon's time line → beats → ticks, through the tempo segments."""

    def __init__(self, t0: float | None, bpm: float) -> None:
        self.times = [0.0 if t0 is None else t0]  # where each segment starts (s)
        self.beats = [0.0]  # the beat there
        self.bpms = [bpm]  # the tempo from there
        self.begun = t0 is not None  # else the first event's time is the file's start

    def begin(self, t: float) -> None:
        if not self.begun:
            self.begun = True
            self.times[0] = t

    def change(self, t: float, bpm: float) -> None:
        """The tempo from ``t`` on (a move within TEMPO_STEP_BPM, or back in time, is none)."""
        if abs(bpm - self.bpms[-1]) <= TEMPO_STEP_BPM or t < self.times[-1]:
            return
        if t == self.times[-1]:
            self.bpms[-1] = bpm
            return
        self.beats.append(self.beat(t))
        self.times.append(t)
        self.bpms.append(bpm)

    def _segment(self, t: float) -> int:
        return max(0, bisect.bisect_right(self.times, t) - 1)

    def bpm_at(self, t: float) -> float:
        return self.bpms[self._segment(t)]

    def beat(self, t: float) -> float:
        i = self._segment(t)
        return self.beats[i] + (t - self.times[i]) * self.bpms[i] / 60.0

    def tick(self, t: float) -> int:
        return max(0, round(self.beat(t) * TPQ))


@dataclass(slots=True)
class _Span:
    start: float  # s
    end: float  # s; math.inf while the musician holds it
    pitch: int
    velocity: int
    on: int = -1  # the tick of its note-on, once written


def _encode(events: list[tuple], tick: int) -> tuple[bytes, int]:
    """``(tick, order, …, bytes)`` events, sorted, as delta-timed bytes from ``tick``."""
    out = bytearray()
    for event in sorted(events):
        at = max(event[0], tick)
        out += _vlq(at - tick)
        out += event[-1]
        tick = at
    return bytes(out), tick


class _Track:
    """One track of the file: ``head`` holds its events written for good, up to ``head_tick``;
    ``waiting`` the notes whose note-on is not written yet, ``sounding`` those whose note-off
    is not, ``last`` the sounding note of each pitch (a note-on of it retriggers it)."""

    def __init__(self, preamble: bytes, channel: int) -> None:
        self.preamble = preamble  # delta-timed events at tick 0: name, program
        self.channel = channel
        self.head = bytearray()
        self.head_tick = 0
        self.waiting: list[_Span] = []
        self.sounding: list[_Span] = []
        self.last: dict[int, _Span] = {}

    @classmethod
    def for_notes(cls, name: str, program: int, channel: int) -> _Track:
        channel = DRUM_CHANNEL if program == DRUM_PROGRAM else channel
        preamble = (b"\x00" + _meta(0x03, name.encode())
                    + bytes((0, 0xC0 | channel, max(0, program))))  # fmt: skip
        return cls(preamble, channel)

    def cut(self, t: float) -> None:
        """A Stop at ``t``: the notes sounding then end there."""
        for span in (*self.waiting, *self.sounding):
            if span.start <= t < span.end:
                span.end = t

    def write(self, events: list[tuple]) -> None:
        data, self.head_tick = _encode(events, self.head_tick)
        self.head += data

    def settle(self, line: TempoLine, limit: float, now: float | None = None) -> None:
        """Write for good every note-on and note-off before tick ``limit`` (a note still
        held lasts until ``now``, or waits without one)."""
        ready: list[_Span] = []
        waiting: list[_Span] = []
        for span in self.waiting:
            (ready if line.tick(span.start) < limit else waiting).append(span)
        self.waiting = waiting
        events: list[tuple] = []
        for span in sorted(ready, key=lambda s: (s.start, s.end, s.pitch, s.velocity)):
            span.on = line.tick(span.start)
            before = self.last.get(span.pitch)
            if before is not None:
                if before.on == span.on:  # the same note twice: one, the longer
                    before.end = max(before.end, span.end)
                    continue
                if self._off(before, line, now) > span.on:  # retriggered: it ends here
                    before.end = span.start
            self.last[span.pitch] = span
            self.sounding.append(span)
            events.append((span.on, _ON, span.pitch, bytes((0x90 | self.channel, span.pitch,
                                                            span.velocity))))  # fmt: skip
        sounding = []
        for span in self.sounding:
            off = self._off(span, line, now)
            if off < limit:
                events.append((off, _OFF, span.pitch, bytes((0x80 | self.channel, span.pitch, 0))))
                if self.last.get(span.pitch) is span:
                    del self.last[span.pitch]
            else:
                sounding.append(span)
        self.sounding = sounding
        self.write(events)

    @staticmethod
    def _off(span: _Span, line: TempoLine, now: float | None) -> float:
        end = span.end if span.end != math.inf or now is None else now
        return math.inf if end == math.inf else max(span.on + 1, line.tick(end))

    def tail(self, line: TempoLine, now: float) -> bytes:
        """The notes not written for good yet, as they stand at ``now`` (nothing changes)."""
        copies = {id(s): replace(s) for s in (*self.waiting, *self.sounding)}
        draft = _Track(b"", self.channel)
        draft.head_tick = self.head_tick
        draft.waiting = [copies[id(s)] for s in self.waiting]
        draft.sounding = [copies[id(s)] for s in self.sounding]
        draft.last = {pitch: copies[id(s)] for pitch, s in self.last.items()}
        draft.settle(line, math.inf, now)
        return bytes(draft.head)

    def chunk(self, tail: bytes) -> bytes:
        body = b"".join((self.preamble, self.head, tail, END_OF_TRACK))
        return b"MTrk" + len(body).to_bytes(4, "big") + body


class SessionTracks:
    """What was heard and played, the tempo and the markers, as a type-1 MIDI file: a
    conductor track (time signature, tempo map, markers), then one track per input channel
    and one per output channel and instrument, each on its own channel (drums on 10)."""

    def __init__(
        self,
        channel_programs: Callable[[int], int],
        beats_per_bar: float = 4.0,
        bpm: float = 120.0,
        t0: float | None = None,
    ) -> None:
        self.program_of_input = channel_programs  # input channel → the instrument heard
        self.line = TempoLine(t0, bpm)
        num = round(beats_per_bar * 2)
        numerator, log2_denominator = (num, 3) if num % 2 else (num // 2, 2)
        self._conductor = _Track(b"\x00" + _meta(0x58, bytes((numerator, log2_denominator,
                                                              24, 8))), 0)  # fmt: skip
        self._tempos_written = 0  # tempo segments in the conductor's head
        self._markers: list[tuple[float, str]] = []  # not written for good yet
        self._inputs: dict[int, _Track] = {}
        self._outputs: dict[tuple[int, int], _Track] = {}  # (channel, program)
        self._held: dict[tuple[int, int], _Span] = {}  # (channel, pitch) → the musician's
        self._queued: OrderedDict[int, tuple[int, float]] = OrderedDict()  # id → program, beats
        self.settled_t = -math.inf  # everything before is written for good
        self.stamp_t = -math.inf  # the latest stamp of something heard or played
        self.last_t = self.line.times[0]  # the latest time anything reaches

    # -- what happened, in order -----------------------------------------------------------
    def _at(self, t: float) -> float:
        """The file's start is the first event's; nothing lands before what is written."""
        if not self.line.begun:
            self.line.begin(t)
            self.last_t = t
        return max(t, self.settled_t)

    def tempo(self, t: float, bpm: float) -> None:
        self.line.change(self._at(t), bpm)

    def heard(self, t: float, channel: int, pitch: int, velocity: int) -> None:
        """The musician's note-on (``velocity`` > 0) or note-off on ``channel``."""
        t = self._at(t)
        self._stamp(t)
        self.last_t = max(self.last_t, t)
        held = self._held.pop((channel, pitch), None)
        if held is not None:  # a note-off, or a retrigger: the sounding one ends
            held.end = max(t, held.start)
        if velocity:
            span = _Span(t, math.inf, pitch, velocity)
            self._held[(channel, pitch)] = span
            self._input_track(channel).waiting.append(span)

    def all_notes_off(self, t: float, channel: int) -> None:
        for ch, pitch in [key for key in self._held if key[0] == channel]:
            self.heard(t, ch, pitch, 0)

    def queued(self, note_id: int, beats: float, program: int) -> None:
        self._queued[note_id] = (program, beats)
        while len(self._queued) > QUEUED_NOTES:
            self._queued.popitem(last=False)

    def played(self, due: float, channel: int, pitch: int, velocity: int, note_id: int) -> None:
        due = self._at(due)
        program, beats = self._queued.pop(note_id, (-2, 0.5))
        seconds = beats * 60.0 / self.line.bpm_at(due)
        key = (channel, program)
        track = self._outputs.get(key)
        if track is None:
            if program == -2:  # not known: the channel's drums or an instrument
                program = DRUM_PROGRAM if channel == DRUM_CHANNEL else 0
            what = "drums" if program == DRUM_PROGRAM else f"program {program}"
            track = _Track.for_notes(f"Ostinato ch{channel + 1} {what}", program, channel)
            self._outputs[key] = track
        track.waiting.append(_Span(due, due + seconds, pitch, velocity))
        self._stamp(due)
        self.last_t = max(self.last_t, due + seconds)

    def stopped(self, t: float) -> None:
        """Ostinato's notes sounding at ``t`` end there (only those not written for good)."""
        t = max(t, self.settled_t)
        self._stamp(t)
        for track in self._outputs.values():
            track.cut(t)

    def marker(self, t: float, text: str) -> None:
        t = self._at(t)
        self._markers.append((t, text))
        self.last_t = max(self.last_t, t)

    def _stamp(self, t: float) -> None:
        """Something heard or played at ``t``: what lies SETTLE_S before is complete."""
        if t > self.stamp_t:
            self.stamp_t = t
            if t - SETTLE_S >= self.settled_t + SETTLE_STEP_S:
                self.settle()

    def _input_track(self, channel: int) -> _Track:
        track = self._inputs.get(channel)
        if track is None:
            program = self.program_of_input(channel)
            what = "drums" if program == DRUM_PROGRAM else f"program {program}"
            track = _Track.for_notes(f"In ch{channel + 1} {what}", program, channel)
            self._inputs[channel] = track
        return track

    # -- the file ----------------------------------------------------------------------------
    def _conductor_events(self, limit: float) -> tuple[list[tuple], int, list]:
        """The tempo changes and markers before tick ``limit``: the events, how many tempo
        segments they reach, the markers left after them."""
        line = self.line
        events: list[tuple] = []
        tempos = self._tempos_written
        while tempos < len(line.times) and line.tick(line.times[tempos]) < limit:
            mspq = round(60_000_000 / line.bpms[tempos])
            events.append((line.tick(line.times[tempos]), _TEMPO, 0.0,
                           _meta(0x51, mspq.to_bytes(3, "big"))))  # fmt: skip
            tempos += 1
        left = []
        for t, text in self._markers:
            tick = line.tick(t)
            if tick < limit:
                events.append((tick, _MARKER, t, _meta(0x06, text.encode())))
            else:
                left.append((t, text))
        return events, tempos, left

    def settle(self) -> None:
        """Write for good what lies ``SETTLE_S`` before the latest stamp."""
        settle_t = self.stamp_t - SETTLE_S
        if not self.line.begun or settle_t <= self.settled_t:
            return
        limit = self.line.tick(settle_t)
        events, self._tempos_written, self._markers = self._conductor_events(limit)
        self._conductor.write(events)
        for track in (*self._inputs.values(), *self._outputs.values()):
            track.settle(self.line, limit)
        self.settled_t = settle_t

    def midi(self, now: float | None = None) -> bytes:
        """The Standard MIDI File of the session so far (held notes last until ``now``)."""
        self.settle()
        now = self.last_t if now is None else max(now, self.last_t)
        events, _, _ = self._conductor_events(math.inf)
        tail, _ = _encode(events, self._conductor.head_tick)
        chunks = [self._conductor.chunk(tail)]
        for track in (*(self._inputs[ch] for ch in sorted(self._inputs)),
                      *(self._outputs[key] for key in sorted(self._outputs))):  # fmt: skip
            chunks.append(track.chunk(track.tail(self.line, now)))
        header = b"MThd" + (6).to_bytes(4, "big") + b"\x00\x01" + len(chunks).to_bytes(2, "big")
        return b"".join((header, TPQ.to_bytes(2, "big"), *chunks))
