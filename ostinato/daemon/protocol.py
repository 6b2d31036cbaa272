"""The records the daemon and its note sender process exchange (see :mod:`.sender`).

Every record is 32 bytes, ``RECORD`` = kind, channel, pitch, velocity, note id (uint32) and
three doubles a, b, c: one ``write()`` of a record is atomic on a pipe. Times are seconds on
the sender's time line: ``time.perf_counter()`` for the rtmidi backends, JACK frame time
(frames / sample rate, counted on past 2**32) for the JACK backend.

daemon → sender
    ``TEMPO``  a = anchor time, b = anchor beat, c = seconds per beat (a :class:`TempoMap`)
    ``NOTE``   channel, pitch, velocity, note id; a = start beat, b = end beat,
               c = when generation handed it over
    ``PANIC``  drop the queue, release every sounding note, All Notes Off on used channels
    ``HOLD``   the transport stopped: release every sounding note but those started at or
               after beat a (inf: all of them), keep the queue, play nothing until ``JUMP``
    ``JUMP``   a = from beat, b = to beat, channel = 1 to shift the queue by (b − a), 0 to
               drop it; releases every sounding note and ends a hold
               (JACK with input: the sender stopped at the Stop's own frame already, and
               played on from a Start within 1.5 ticks of it; the ``HOLD`` then stops
               nothing, and a ``JUMP`` from before that Stop does not start the queue: see
               :mod:`.jack_io`)
    ``CANCEL`` note id: take that note back if its note-on has not gone out (a take thrown
               away); a note already sounding ends at its time, as queued
    ``PROGRAM``  channel, pitch = program: Bank Select 0 and Program Change on that channel,
               now (before the notes queued after it)
    ``QUIT``   release everything and exit

sender → daemon
    ``READY``  channel = 1 when the sender runs at real-time priority (JACK: the server's),
               note id = JACK period in frames, a = JACK sample rate (0 for rtmidi)
    ``SENT``   a note-on went out: channel, pitch, velocity, note id; a = due, b = sent
    ``DROPPED``  a note-on was too late and dropped with its note-off: note id; channel = 1
               when it was handed over after its time; a = due, b = when it was dropped
    ``ERROR``  note id = length of a UTF-8 message that follows the record
    ``DONE``   the sender is exiting; note id = reports it could not deliver
    ``INPUT``  a MIDI message on "Ostinato In" (JACK only): channel = status byte, pitch =
               data 1, velocity = data 2, note id = the message's length (longer than 3:
               SysEx, of which only the status byte is kept); a = its time
    ``SYNC``   a = JACK time line (seconds), b = ``time.perf_counter()`` at the same moment
    ``INPUT_LOST``  note id = input messages lost so far (a full ring or a full pipe)
    ``SKIPPED``  JACK did not run the sender for some cycles (an xrun: the input of those
               cycles is gone, in order with the input around it): note id = frames
               skipped, a = the time of the first skipped frame
"""

from __future__ import annotations

import struct

RECORD = struct.Struct("<BBBBIddd")  # 32 bytes: one write is atomic on a pipe
# daemon → sender
TEMPO, NOTE, PANIC, QUIT, HOLD, JUMP, CANCEL, PROGRAM = 1, 2, 3, 4, 5, 6, 7, 8
# sender → daemon
READY, SENT, DROPPED, ERROR, DONE, INPUT, SYNC, INPUT_LOST, SKIPPED = (
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
)


def message_of(status: int, data1: int, data2: int, length: int) -> list[int]:
    """The bytes of an ``INPUT`` record's message (a SysEx keeps only its status byte)."""
    if length == 3:
        return [status, data1, data2]
    if length == 2:
        return [status, data1]
    return [status]
