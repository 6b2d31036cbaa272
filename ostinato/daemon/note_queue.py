"""The notes waiting to be played, in beats, and the notes sounding: the queue both note
senders play from (the rtmidi sender thread, :mod:`ostinato.daemon.scheduler`, and JACK's
process callback, :mod:`ostinato.daemon.jack_io`).

Pure bookkeeping, no time, no threads, no port: events stay in beats and a sender turns them
into time only when they are due, with the clock's *current* map, so a tempo change re-times
everything still queued. Every sounding note is tracked: each note-on gets its note-off, a
pitch struck again while sounding is released first, a dropped note-on's note-off is skipped,
and panic releases everything and sends All Notes Off (CC 123) on every channel used;
:meth:`NoteQueue.cancel` takes back notes that have not started (a take thrown away), never
cutting one that sounds. The transport's own moves are :meth:`NoteQueue.hold` (Stop: silence,
keep the queue), :meth:`NoteQueue.jump` (a loop jump or relocate: silence, shift or drop the
queue) and :meth:`NoteQueue.resume` (a hold ended where it is).

Its arrays are allocated once, as JACK's thread must not grow a list; only the rtmidi sender
lets the heap grow when it fills.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container

from ostinato.daemon.clock import TempoMap

NOTE_ON, NOTE_OFF, CONTROL_CHANGE, PROGRAM_CHANGE = 0x90, 0x80, 0xB0, 0xC0
ALL_NOTES_OFF, BANK_MSB, BANK_LSB = 123, 0, 32
KEYS = 16 * 128  # (channel, pitch) pairs, as channel · 128 + pitch
JUMP_EPSILON_BEATS = 1e-6  # an event this close before a jump's from-beat still moves with it

# An event: (beat, order, kind, channel, pitch, velocity, note id, handed over, note's start
# beat). Ordered by beat, then by order (unique: a note's on and off get 2n and 2n + 1), so the
# tuples compare in C and never past the second field.
Event = tuple[float, int, int, int, int, int, int, float, float]
_EMPTY: Event = (math.inf, -1, 0, 0, 0, 0, -1, 0.0, 0.0)  # a heap slot past the last event
# write(status, data 1, data 2) → False when the port cannot take it now (a full JACK buffer):
# the queue keeps what was not written and tries again on the next call.
Write = Callable[[int, int, int], bool]


def note_events(
    start_beat: float, end_beat: float, channel: int, pitch: int, velocity: int, note_id: int,
    handed_over: float, order: int,
) -> tuple[Event, Event]:  # fmt: skip
    """A note's on and off events; ``order`` (even, increasing) breaks ties in beat."""
    return (
        (start_beat, order, NOTE_ON, channel, pitch, velocity, note_id, handed_over, start_beat),
        (end_beat, order + 1, NOTE_OFF, channel, pitch, 0, note_id, handed_over, start_beat),
    )


def reanchored(tempo: TempoMap, from_beat: float, to_beat: float) -> TempoMap:
    """The same map with its beats moved by a jump: what played at ``from_beat`` plays at
    ``to_beat`` at the same time (the queue shifted by a jump keeps its times)."""
    return TempoMap(tempo.anchor_time, tempo.anchor_beat + (to_beat - from_beat),
                    tempo.seconds_per_beat)  # fmt: skip


class NoteQueue:
    """Notes waiting in beats and notes sounding; no time, no threads, no port.

    Not thread-safe: one thread owns it (the rtmidi sender under its condition, JACK's process
    callback alone). A sender asks :meth:`peek` for the next event, decides when it is due,
    then :meth:`play_next` (writes it) or :meth:`drop_next` (a late note-on). Releases asked for
    by :meth:`panic`, :meth:`hold` and :meth:`jump` wait in the queue until :meth:`flush` writes
    them, which the sender does before anything else.
    """

    def __init__(self, capacity: int = 4096, growable: bool = True) -> None:
        self.growable = growable
        self.refused = 0  # notes not queued: the heap was full and may not grow
        self.held = False  # the transport stopped: nothing plays until jump() or resume()
        self._heap: list[Event] = [_EMPTY] * capacity  # a binary min-heap of _size events
        self._size = 0
        self._order = 0
        self._note_of = [-1] * KEYS  # key → id of the note sounding on it, or −1
        self._start_of = [0.0] * KEYS  # key → the start beat of the note sounding on it
        self._keys = [0] * KEYS  # the sounding keys, packed in _keys[:_sounding]
        self._where = [0] * KEYS  # a sounding key's index in _keys
        self._sounding = 0
        self._releasing = [0] * KEYS  # keys whose note-off is still to be written
        self._release_head = self._release_tail = 0
        self._all_off = [False] * 16  # channels whose CC 123 is still to be written
        self._all_off_count = 0
        self._panicked = [0] * KEYS  # the keys the last panic released (said again on quit)
        self._panicked_count = 0
        self._used = [False] * 16  # channels a note-on went out on
        self._program = [-1] * 16  # a Program Change still to be written, per channel (−1: none)
        self._program_count = 0

    # -- reading -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Events queued (note-ons and note-offs)."""
        return self._size

    @property
    def sounding(self) -> int:
        return self._sounding

    @property
    def releasing(self) -> int:
        """Messages of a release still to be written (note-offs and CC 123)."""
        return self._release_tail - self._release_head + self._all_off_count

    def program(self, channel: int, program: int) -> None:
        """Bank Select 0 and Program Change ``program`` on ``channel``, at the next
        :meth:`flush` (written before anything else plays)."""
        if self._program[channel] < 0:
            self._program_count += 1
        self._program[channel] = program

    def channels_used(self) -> list[int]:
        return [channel for channel in range(16) if self._used[channel]]

    def peek(self) -> Event | None:
        """The next event to play; None when there is none or the transport is held."""
        if self.held or self._size == 0:
            return None
        return self._heap[0]

    # -- queueing ------------------------------------------------------------------------------
    def schedule(
        self, start_beat: float, end_beat: float, channel: int, pitch: int, velocity: int,
        note_id: int, handed_over: float,
    ) -> bool:  # fmt: skip
        """Queue a note; False when the heap is full and may not grow (counted in refused)."""
        self._order += 2
        on, off = note_events(start_beat, end_beat, channel, pitch, velocity, note_id,
                              handed_over, self._order)  # fmt: skip
        return self.push(on, off)

    def push(self, on: Event, off: Event) -> bool:
        """Queue a note's two events made by :func:`note_events` (by another thread, so the
        thread that owns the queue need not build them)."""
        if self._size + 2 > len(self._heap):
            if not self.growable:
                self.refused += 1
                return False
            self._heap.extend([_EMPTY] * len(self._heap))
        self._sift_in(on)
        self._sift_in(off)
        return True

    def cancel(self, note_ids: Container[int]) -> int:
        """Take the notes ``note_ids`` off the queue if their note-on has not gone out; a
        note already sounding keeps its note-off and ends at its time (never a hanging note,
        never a note cut short). Returns the note-ons taken off. One pass over the queue, no
        allocation: JACK's thread calls it."""
        heap, kept, cancelled = self._heap, 0, 0
        for i in range(self._size):
            event = heap[i]
            heap[i] = _EMPTY
            if event[6] in note_ids:
                if event[2] == NOTE_ON:
                    cancelled += 1
                    continue
                if self._note_of[event[3] << 7 | event[4]] != event[6]:
                    continue  # its note never sounded (or was struck again): nothing to end
            heap[kept] = event
            kept += 1
        self._size = kept
        self._heapify()
        return cancelled

    # -- playing -------------------------------------------------------------------------------
    def play_next(self, write: Write) -> bool:
        """Write the next event (the one :meth:`peek` returned) and take it off the queue.
        A note-on whose pitch still sounds releases it first; a note-off is written only when
        its own note is the one sounding (a retrigger took it over, or its note-on was
        dropped: nothing to release). False when ``write`` refused: the event stays."""
        event = self._heap[0]
        channel, pitch, note_id = event[3], event[4], event[6]
        key = channel << 7 | pitch
        if event[2] == NOTE_ON:
            if self._note_of[key] >= 0:  # same pitch struck again: release it first
                if not write(NOTE_OFF | channel, pitch, 0):
                    return False
                self._unsound(key)
            if not write(NOTE_ON | channel, pitch, event[5]):
                return False
            self._sound(key, note_id, channel, event[8])
        elif self._note_of[key] == note_id:
            if not write(NOTE_OFF | channel, pitch, 0):
                return False
            self._unsound(key)
        self._pop()
        return True

    def drop_next(self) -> None:
        """Take the next event off without playing it (a note-on too late to play: its note
        has nothing sounding, so its note-off will be skipped)."""
        self._pop()

    def flush(self, write: Write) -> bool:
        """Write the releases asked for by panic, hold and jump: note-offs, then CC 123; then
        the Program Changes asked for (a Program Change is written as two bytes: ``write``
        gets 0 for the third and must leave it out).
        False when ``write`` refused one: the rest wait for the next call."""
        while self._release_head < self._release_tail:
            key = self._releasing[self._release_head]
            if not write(NOTE_OFF | key >> 7, key & 0x7F, 0):
                return False
            self._release_head += 1
        self._release_head = self._release_tail = 0
        if self._all_off_count:
            for channel in range(16):
                if self._all_off[channel]:
                    if not write(CONTROL_CHANGE | channel, ALL_NOTES_OFF, 0):
                        return False
                    self._all_off[channel] = False
                    self._all_off_count -= 1
        if self._program_count:
            for channel in range(16):
                program = self._program[channel]
                if program < 0:
                    continue
                if not (write(CONTROL_CHANGE | channel, BANK_MSB, 0)
                        and write(CONTROL_CHANGE | channel, BANK_LSB, 0)
                        and write(PROGRAM_CHANGE | channel, program, 0)):  # fmt: skip
                    return False  # (written again whole: harmless)
                self._program[channel] = -1
                self._program_count -= 1
        return True

    # -- transport and panic -------------------------------------------------------------------
    def panic(self) -> None:
        """Drop the queue, release every sounding note, All Notes Off on every channel used
        (the hold, if any, stays: only a jump ends it)."""
        self._clear()
        for i in range(self._sounding):
            self._panicked[i] = self._keys[i]
        self._panicked_count = self._sounding
        self._all_off_used()
        self._release_sounding()

    def repeat_panic(self) -> None:
        """Say the last panic's releases again: its note-offs and CC 123 on every channel
        used. Harmless to a receiver (nothing it still sounds is struck again), and a reader
        that missed the cycle of the first ones still ends its notes. Only once the releases
        before are written (the slots are the panic's own)."""
        if self._release_tail != self._release_head:
            return
        self._release_head = 0
        for i in range(self._panicked_count):
            self._releasing[i] = self._panicked[i]
        self._release_tail = self._panicked_count
        self._all_off_used()

    def _all_off_used(self) -> None:
        for channel in range(16):
            if self._used[channel] and not self._all_off[channel]:
                self._all_off[channel] = True
                self._all_off_count += 1

    def hold(self, keep_from: float = math.inf) -> None:
        """The transport stopped: release every sounding note (no CC 123), keep the queue
        (less the note-offs of the notes released now), play nothing until :meth:`jump`.
        Notes that started at or after ``keep_from`` keep sounding: a loop's downbeat may
        already have gone out in the cycle the DAW's Stop came in, and the jump that follows
        a tick later moves it. A second hold (with the default) releases them too."""
        keep = keep_from - JUMP_EPSILON_BEATS
        heap, kept = self._heap, 0
        for i in range(self._size):
            event = heap[i]
            heap[i] = _EMPTY
            if self._released_now(event, keep):
                continue
            heap[kept] = event
            kept += 1
        self._size = kept
        self._heapify()
        self._release_sounding(keep)
        self.held = True

    def resume(self) -> None:
        """End a hold without a jump: the queue plays on, on the current map (the JACK sender
        stopped at a Stop's own frame and the Start a tick later made it a loop jump; the
        daemon's jump that follows moves what is left)."""
        self.held = False

    def jump(self, from_beat: float, to_beat: float, shift: bool) -> None:
        """A transport jump (loop, relocate): release every sounding note; with ``shift``,
        every note starting at or after ``from_beat`` moves by (to_beat − from_beat), its
        note-off too, and the rest (notes started before, the note-offs of notes released now)
        is dropped; without, the whole queue is dropped. Ends a hold."""
        lowest = from_beat - JUMP_EPSILON_BEATS if shift else math.inf
        if shift:
            moved = to_beat - from_beat
            heap, kept = self._heap, 0
            for i in range(self._size):
                event = heap[i]
                heap[i] = _EMPTY
                if self._released_now(event, lowest):
                    continue
                if event[8] >= lowest:
                    beat, order, kind, channel, pitch, velocity, note_id, handed, start = event
                    heap[kept] = (beat + moved, order, kind, channel, pitch, velocity, note_id,
                                  handed, start + moved)  # fmt: skip
                    kept += 1
            self._size = kept
            self._heapify()
        else:
            self._clear()
        self._release_sounding(lowest)
        if shift:
            for i in range(self._sounding):  # notes of the bar after the jump point sound on
                self._start_of[self._keys[i]] += moved
        self.held = False

    def _released_now(self, event: Event, keep_from: float) -> bool:
        """A note-off whose note sounds and is released now (it started before keep_from)."""
        key = event[3] << 7 | event[4]
        return (event[2] == NOTE_OFF and self._note_of[key] == event[6]
                and self._start_of[key] < keep_from)  # fmt: skip

    # -- the arrays ----------------------------------------------------------------------------
    def _sound(self, key: int, note_id: int, channel: int, start_beat: float) -> None:
        self._note_of[key] = note_id
        self._start_of[key] = start_beat
        self._where[key] = self._sounding
        self._keys[self._sounding] = key
        self._sounding += 1
        self._used[channel] = True

    def _unsound(self, key: int) -> None:
        self._sounding -= 1
        last = self._keys[self._sounding]
        index = self._where[key]
        self._keys[index] = last
        self._where[last] = index
        self._note_of[key] = -1

    def _release_sounding(self, keep_from: float = math.inf) -> None:
        """Release every sounding note that started before ``keep_from``."""
        # A key is released at most once before its note-off is written: nothing plays while
        # releases are pending, so the KEYS slots suffice once the written ones are gone.
        head, tail = self._release_head, self._release_tail
        if head:
            self._releasing[: tail - head] = self._releasing[head:tail]
            self._release_head, self._release_tail = 0, tail - head
        kept = 0
        for i in range(self._sounding):
            key = self._keys[i]
            if self._start_of[key] >= keep_from:
                self._keys[kept] = key
                self._where[key] = kept
                kept += 1
                continue
            self._note_of[key] = -1
            self._releasing[self._release_tail] = key
            self._release_tail += 1
        self._sounding = kept

    def _clear(self) -> None:
        heap = self._heap
        for i in range(self._size):
            heap[i] = _EMPTY
        self._size = 0

    def _sift_in(self, event: Event) -> None:
        heap, i = self._heap, self._size
        self._size = i + 1
        while i > 0:
            parent = (i - 1) >> 1
            above = heap[parent]
            if not event < above:
                break
            heap[i] = above
            i = parent
        heap[i] = event

    def _pop(self) -> None:
        heap = self._heap
        self._size -= 1
        last = heap[self._size]
        heap[self._size] = _EMPTY
        if self._size:
            self._sift_down(0, last)

    def _sift_down(self, i: int, event: Event) -> None:
        heap, size = self._heap, self._size
        while True:
            child = 2 * i + 1
            if child >= size:
                break
            right = child + 1
            if right < size and heap[right] < heap[child]:
                child = right
            if not heap[child] < event:
                break
            heap[i] = heap[child]
            i = child
        heap[i] = event

    def _heapify(self) -> None:
        for i in range((self._size >> 1) - 1, -1, -1):
            self._sift_down(i, self._heap[i])
