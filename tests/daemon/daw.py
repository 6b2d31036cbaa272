"""A DAW stand-in of our own: JACK clients that send MIDI clock, transport and a track's
notes the way a DAW does, and record with exact frames what comes back.

Everything it sends is planned ahead (a :class:`Plan`: tempo steps and ramps, Start, Stop,
Continue, Song Position Pointer, loops, notes on the song's timeline, garbage bursts) and
compiled into JACK frames, then written by the process callback at its exact frame offset in
the cycle it falls in. Every event received on its input is stamped with its own frame (the
cycle's first frame plus the event's offset), by a second client (see :class:`Daw` for
why). The log it writes at the end (read by :class:`tests.daemon.grid.Timeline`) knows the
frame of every tick it sent, so the grid the daemon is judged against is exact: no estimate,
no scheduling jitter of its own.

It runs as a process of its own: a Python process callback inside pytest would wait for the
GIL behind pytest's and the test's threads. :class:`DawProcess` starts and drives it.

By hand, with a JACK server running and the daemon's ports up::

    python -m tests.daemon.daw --preset loop-c --bpm 120 --connect --auto --log /tmp/daw.json

and watch it with ``jack_midi_dump -a`` connected to ``daw:out`` (jack_midi_dump stops at the
first malformed message of a garbage burst: its own assertion). It sends on ``daw:out`` and
records on ``daw-rec:in``. Driven by a program::

    python -m tests.daemon.daw --plan plan.json --log out.json

prints ``ready <out port> <in port> <rate> <period>``, then reads one command a line on stdin:

- ``go``: play the plan from a little after now; prints ``started <frame>``, then
  ``mark <name> <frame>`` as each mark of the plan passes and ``done <frame>`` at its end;
- ``now``: prints ``now <frame> <song beat or -> <epoch or ->``;
- ``burst [seed]``: a garbage burst from now on (see :func:`garbage`);
- ``quit``: stops, writes the log, prints ``log <path>`` and exits.

Timing conventions (as the DESIGN's real-time section states them): MIDI clock is 24 ticks a
quarter note; after Start the next tick is song position 0; after a Song Position Pointer (in
16th notes) the next tick is at that position, whether it came while running or before a
Continue. Every jump (Start, Continue, SPP while running, or joining a DAW already playing)
opens a new *epoch*: one pass over a stretch of the song.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import itertools
import json
import os
import random
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PPQN = 24
TICKS_PER_16TH = PPQN // 4
MAX_JITTER_PCT = 20.0  # as jack_midi_clock -J: 0..20% of a tick
START, CONTINUE, STOP, SPP, CLOCK = 0xFA, 0xFB, 0xFC, 0xF2, 0xF8
IN_SUFFIX, OUT_SUFFIX = ":Ostinato In", ":Ostinato Out"
# The order of events that fall on one frame: a track's note-offs and controllers before the
# transport message they go with, the tick, then the note-ons of the new position.
PRIO = {"note_off": 0, "cc": 1, "transport": 2, "tick": 3, "note_on": 4}
RESERVE_PER_EVENT = 16  # bytes a small event takes in a JACK MIDI buffer (header included)
REPO = Path(__file__).resolve().parents[2]


# -- the plan: what the DAW does, in musical terms ---------------------------------------------
@dataclass
class Plan:
    """A session as a list of steps (JSON-able). Time runs in *slots*: each is one tick
    interval at the current tempo; ``ticks`` sends a clock byte in each, ``rest`` lets the
    time pass silently (a DAW that sends no clock while stopped), ``lose`` plays on with the
    clock bytes lost on the way (an xrun, a USB MIDI device re-enumerating), ``phase`` makes
    the next slot come early (a clock that starts a new grid at Start). Transport messages
    queue up and go out spread over the interval before the next slot, the tick spacing
    staying perfect.
    Notes are on the song's timeline (beats from song position 0) and are played whenever the
    running transport passes them, so every loop pass replays them."""

    bpm: float = 120.0
    beats_per_bar: int = 4
    jitter_pct: float = 0.0
    seed: int = 1
    lead_in_s: float = 0.3  # from ``go`` to the plan's frame 0
    tail_s: float = 0.5  # recording after the last planned event, before ``done``
    notes: list[list[float]] = field(default_factory=list)  # beat, beats, channel, pitch, vel
    steps: list[dict] = field(default_factory=list)

    def _add(self, op: str, **args) -> Plan:
        self.steps.append({"op": op, **args})
        return self

    # tempo
    def tempo(self, bpm: float) -> Plan:
        """A step change at the song position reached (a DAW's tempo marker there): the next
        tick, that position's, still comes at the old tempo, the intervals after it at
        ``bpm``. While stopped it applies at once."""
        return self._add("tempo", bpm=bpm)

    def jitter(self, pct: float) -> Plan:
        """Each following tick moved by a random ±``pct``% of a tick (jack_midi_clock -J)."""
        return self._add("jitter", pct=pct)

    def ramp(self, bpm: float, beats: float) -> Plan:
        """A linear ramp of the tempo from the song position reached (as :meth:`tempo`) to
        ``bpm`` over ``beats`` beats."""
        return self._add("ramp", bpm=bpm, ticks=round(beats * PPQN))

    # transport (queued, sent before the next slot)
    def start(self) -> Plan:
        return self._add("start")

    def stop(self) -> Plan:
        return self._add("stop")

    def cont(self) -> Plan:
        return self._add("continue")

    def spp(self, sixteenths: int) -> Plan:
        return self._add("spp", sixteenths=sixteenths)

    def join(self, beat: float = 0.0) -> Plan:
        """The DAW is already playing at ``beat`` (its Start was never heard): ticks carry
        song positions from the next slot on, but nothing says so on the wire."""
        return self._add("join", ticks=round(beat * PPQN))

    def panic(self) -> Plan:
        """CC 64 = 0 and CC 123 on all 16 channels with the next transport message (what
        Ardour's tracks send at a loop jump or a locate)."""
        return self._add("panic")

    # time
    def ticks(self, n: int) -> Plan:
        return self._add("ticks", n=int(n))

    def beats(self, n: float) -> Plan:
        return self.ticks(round(n * PPQN))

    def bars(self, n: float) -> Plan:
        return self.beats(n * self.beats_per_bar)

    def rest(self, beats: float) -> Plan:
        """Time passes with no clock sent."""
        return self._add("rest", n=round(beats * PPQN))

    def lose(self, ticks: int) -> Plan:
        """``ticks`` ticks lost on the way to the daemon: the song goes on (they are in the
        log's ticks, on the pass's timeline), no clock byte goes out for them."""
        return self._add("lose", n=int(ticks))

    def phase(self, fraction: float) -> Plan:
        """The next slot comes ``fraction`` (0 < fraction ≤ 1) of a tick interval after the
        last one, the intervals after it as before; transport queued for it goes out in that
        shorter interval (jack_midi_clock after a relocate: Start, and its grid starts anew
        from it, whatever the old one's phase)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"a phase is a fraction of a tick in (0, 1], not {fraction}")
        return self._add("phase", fraction=float(fraction))

    # markers and trouble
    def mark(self, name: str) -> Plan:
        """``mark <name> <frame>`` is printed once the last slot so far has passed."""
        return self._add("mark", name=name)

    def burst(self, seed: int = 7, beats: float = 1.0) -> Plan:
        """A garbage burst (:func:`garbage`) over the next ``beats`` beats."""
        return self._add("burst", seed=seed, beats=beats)

    # whole figures
    def loop(
        self, style: str, bars: int, passes: int, start_bar: int = 0, panic: bool | None = None
    ) -> Plan:
        """Play ``bars`` bars from ``start_bar`` (0-based) ``passes`` times, jumping back the
        way DAWs do, then Stop:

        - ``a``: Song Position Pointer while running, between the loop's last tick and the
          next one (which is then at the loop start);
        - ``b``: Stop, SPP, Continue (Ardour, when the loop starts later in the song);
        - ``c``: Stop, then Start one tick after the loop's last tick, the tick spacing
          staying perfect (Ardour 7 looping from bar 1), with CC 64 = 0 and CC 123 on every
          channel at the jump (``panic``, on by default for this style).
        """
        if style not in ("a", "b", "c"):
            raise ValueError(f"loop style is a, b or c, not {style!r}")
        if style == "c" and start_bar != 0:
            raise ValueError("style c (Stop, Start) loops from bar 1 only")
        panic = (style == "c") if panic is None else panic
        sixteenths = start_bar * self.beats_per_bar * 4
        self.locate(start_bar)
        for n in range(passes):
            self.mark(f"pass-{n}")
            self.bars(bars)
            if n == passes - 1:
                break
            if panic:
                self.panic()
            if style == "a":
                self.spp(sixteenths)
            elif style == "b":
                self.stop().spp(sixteenths).cont()
            else:
                self.stop().start()
        return self.stop()

    def locate(self, bar: int) -> Plan:
        """Start rolling at ``bar`` (0-based): Start from bar 1, SPP + Continue elsewhere."""
        if bar == 0:
            return self.start()
        return self.spp(bar * self.beats_per_bar * 4).cont()

    def drum_phrase(self, bars: range, velocity: int = 100) -> Plan:
        """Kick on every beat, closed hat on the 8ths, channel 10 (what a drum track plays)."""
        for bar in bars:
            for eighth in range(2 * self.beats_per_bar):
                beat = bar * self.beats_per_bar + eighth / 2
                if eighth % 2 == 0:
                    self.notes.append([beat, 0.2, 9, 36, velocity])
                self.notes.append([beat, 0.1, 9, 42, velocity * 3 // 4])
        return self

    def to_json(self) -> dict:
        return {
            "bpm": self.bpm, "beats_per_bar": self.beats_per_bar, "jitter_pct": self.jitter_pct,
            "seed": self.seed, "lead_in_s": self.lead_in_s, "tail_s": self.tail_s,
            "notes": self.notes, "steps": self.steps,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        return cls(**data)


# -- garbage --------------------------------------------------------------------------------
SYSEX_BYTES = 65536
SYSEX_PIECE = 16384  # a JACK MIDI buffer holds ~32 KiB a cycle: 64 KiB go as 4 whole messages


def garbage(seed: int, start: float, end: float, ticks: list[float]) -> list[tuple[float, bytes]]:
    """~200 messages a DAW port should never carry, at frames in [start, end):

    - 64 KiB of SysEx. JACK MIDI carries only whole messages and its buffers hold about
      32 KiB a cycle (``max_event_size`` is 32720 bytes at any period here), so no JACK
      client can send one 64 KiB message: they go as four whole 16 KiB ones, F0 … F7 each;
    - stray clock bytes: a lone 0xF8 half-way between two ticks (off the tempo line), and
      0xF8 inside other messages (a note-on, a controller, a pitch bend: the byte-stream
      interleaving JACK MIDI forbids);
    - a truncated Song Position Pointer (one data byte, and none);
    - random 1–3 byte messages that are neither well-formed channel messages (those are
      music) nor transport (Start, Stop, Continue, SPP, clock, reset move time: not garbage)
      nor an unterminated SysEx start.

    ``ticks``: frames of the clock ticks around the window (the strays go between them).
    """
    rng = random.Random(seed)
    span = max(1.0, end - start)
    out: list[tuple[float, bytes]] = []

    def anywhere() -> float:
        return start + rng.random() * span

    pieces = SYSEX_BYTES // SYSEX_PIECE
    size = SYSEX_PIECE - 2
    body = bytes(rng.randrange(0, 128) for _ in range(pieces * size))
    for i in range(pieces):
        out.append((anywhere(), bytes([0xF0]) + body[i * size : (i + 1) * size] + bytes([0xF7])))
    out.append((anywhere(), bytes([SPP, 0x10])))  # truncated Song Position Pointer
    out.append((anywhere(), bytes([SPP])))
    embedded = [
        [0x99, CLOCK, 0x24, 0x64],  # a note-on with a clock byte in it (a byte-stream merge)
        [0x99, 0x24, CLOCK, 0x64],
        [0x90, CLOCK, 0x40],
        [0x90, 0x3C, CLOCK],
        [0xB0, CLOCK, 0x00],
        [0xE0, 0x00, CLOCK],
        [0x42, CLOCK],  # a stray data byte and a clock byte
    ]
    out += [(anywhere(), bytes(m)) for m in embedded]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(ticks) if start <= a < end]
    for frame in rng.sample(mids, min(8, len(mids))):
        out.append((frame, bytes([CLOCK])))  # off the tempo line: half a tick from both
    out.append((anywhere(), bytes([0x89, 99, 0])))  # note-offs of notes never played
    out.append((anywhere(), bytes([0x80, 60, 0])))
    lengths = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}
    time_movers = {SPP, 0xF3, CLOCK, START, CONTINUE, STOP, 0xFF, 0xF0}
    while len(out) < 200:
        m = [rng.randrange(0, 256) for _ in range(rng.randrange(1, 4))]
        status = m[0]
        well_formed = (
            0x80 <= status < 0xF0
            and len(m) == lengths[status & 0xF0]
            and all(b < 0x80 for b in m[1:])
        )
        if status in time_movers or well_formed:
            continue
        out.append((anywhere(), bytes(m)))
    return out


# -- compiling a plan into frames --------------------------------------------------------------
@dataclass
class Compiled:
    """A plan in frames relative to its frame 0 (``go`` adds the real start frame)."""

    rate: int
    events: list[tuple[int, int, int, bytes, str, int]]  # frame, prio, seq, data, kind, ref
    junk: list[tuple[int, int, bytes]]  # frame, seq, data
    ticks: list[list]  # [frame, ideal frame, song tick or None, epoch or None]
    transport: list[list]  # [frame, kind, song tick or None, epoch or None]
    epochs: dict[int, list[int]]  # epoch → [begin frame, end frame]
    notes: list[list]  # [frame, bytes as a list]
    marks: list[tuple[int, str]]
    end: int  # frame of the last planned event


def compile_plan(plan: Plan, rate: int) -> Compiled:
    """The plan in frames: every tick, transport message, note and piece of garbage."""
    if not 0 <= plan.jitter_pct <= MAX_JITTER_PCT:
        raise ValueError(f"jitter is 0..{MAX_JITTER_PCT:g}% of a tick")
    jitter_rng = random.Random(plan.seed)
    jitter_pct = float(plan.jitter_pct)
    bpm = float(plan.bpm)
    ramp: list[float] | None = None  # from, to, slots, done
    prev = 0.0  # ideal frame of the last slot (a virtual one at frame 0)
    running, pos, epoch = False, 0, 0
    pending: list[dict] = []
    events: list[tuple[int, int, int, bytes, str, int]] = []
    ticks: list[list] = []
    transport: list[list] = []
    epochs: dict[int, list] = {}
    marks: list[tuple[int, str]] = []
    bursts: list[tuple[int, float, float]] = []
    last_sent = -1
    seq = 0

    def add(frame: float, kind: str, data: bytes, ref: int) -> None:
        nonlocal seq
        seq += 1
        events.append((round(frame), PRIO[kind], seq, data, kind, ref))

    def next_interval() -> float:
        nonlocal bpm, ramp
        if ramp is not None:
            ramp[3] += 1
            bpm = ramp[0] + (ramp[1] - ramp[0]) * ramp[3] / ramp[2]
            if ramp[3] >= ramp[2]:
                ramp = None
        return rate * 60.0 / (bpm * PPQN)

    def flush(interval: float) -> None:
        """Place the queued transport messages in the interval before the next slot."""
        spaced = [p for p in pending if p["data"] is not None]
        at = {id(p): prev + (i + 1) / (len(spaced) + 1) * interval for i, p in enumerate(spaced)}
        for p in pending:
            if p["kind"] == "panic":
                frame = at[id(spaced[0])] if spaced else prev + interval / 2
                for ch in range(16):
                    add(frame, "cc", bytes([0xB0 | ch, 64, 0]), -1)
                    add(frame, "cc", bytes([0xB0 | ch, 123, 0]), -1)
                continue
            frame = prev + interval if p["kind"] == "join" else at[id(p)]
            if p["closes"] is not None:
                epochs[p["closes"]][1] = frame
            if p["opens"] is not None:
                epochs[p["opens"]] = [frame, None]
            transport.append([round(frame), p["kind"], p["pos"], p["opens"] or p["closes"]])
            if p["data"] is not None:
                add(frame, "transport", p["data"], len(transport) - 1)
        pending.clear()

    def slot(send: bool, wire: bool = True) -> None:
        """One slot: a tick (``send``) that goes out on the wire or is lost on the way."""
        nonlocal prev, pos, last_sent, bpm, ramp, change, scale
        interval = next_interval() * scale
        scale = 1.0
        flush(interval)
        frame = prev + interval
        if send:
            jitter = jitter_rng.uniform(-1, 1) * jitter_pct / 100 * interval
            sent = max(last_sent + 1, round(frame + jitter))
            last_sent = sent
            ticks.append([sent, frame, pos if running else None, epoch if running else None])
            if wire:
                add(sent, "tick", bytes([CLOCK]), len(ticks) - 1)
            if running:
                pos += 1
        prev = frame
        if change is not None:  # a tempo marker at this tick: the intervals after it
            bpm, ramp = change
            change = None

    def queue(kind: str, data: bytes | None, at: int | None, opens=None, closes=None) -> None:
        pending.append({"kind": kind, "data": data, "pos": at, "opens": opens, "closes": closes})

    change: tuple[float, list[float] | None] | None = None  # at the next tick (see Plan.tempo)
    scale = 1.0  # the next slot's share of a tick interval (see Plan.phase)
    for step in plan.steps:
        op = step["op"]
        if change is not None and not running:
            bpm, ramp = change  # stopped: no song position to keep, at once
            change = None
        if op == "tempo":
            change = (float(step["bpm"]), None)
        elif op == "jitter":
            jitter_pct = float(step["pct"])
            if not 0 <= jitter_pct <= MAX_JITTER_PCT:
                raise ValueError(f"jitter is 0..{MAX_JITTER_PCT:g}% of a tick")
        elif op == "ramp":
            ramp_from = change[0] if change else bpm
            change = (ramp_from, [ramp_from, float(step["bpm"]), max(1, int(step["ticks"])), 0])
        elif op == "start":
            closes = epoch if running else None
            running, pos, epoch = True, 0, epoch + 1
            queue("start", bytes([START]), 0, epoch, closes)
        elif op == "continue":
            if running:
                queue("continue", bytes([CONTINUE]), pos)
            else:
                running, epoch = True, epoch + 1
                queue("continue", bytes([CONTINUE]), pos, epoch)
        elif op == "stop":
            queue("stop", bytes([STOP]), pos if running else None, None, epoch if running else None)
            running = False
        elif op == "spp":
            value = int(step["sixteenths"])
            closes = epoch if running else None
            pos = value * TICKS_PER_16TH
            if running:
                epoch += 1
            queue("spp", bytes([SPP, value & 0x7F, value >> 7]), pos,
                  epoch if running else None, closes)  # fmt: skip
        elif op == "join":
            closes = epoch if running else None
            running, pos, epoch = True, int(step["ticks"]), epoch + 1
            queue("join", None, pos, epoch, closes)
        elif op == "panic":
            queue("panic", None, None)
        elif op in ("ticks", "rest", "lose"):
            for _ in range(int(step["n"])):
                slot(op != "rest", wire=op != "lose")
        elif op == "phase":
            scale = float(step["fraction"])
        elif op == "mark":
            marks.append((round(prev), str(step["name"])))
        elif op == "burst":
            interval = rate * 60.0 / (bpm * PPQN)
            bursts.append((int(step["seed"]), prev + interval,
                           prev + interval + float(step["beats"]) * PPQN * interval))  # fmt: skip
        else:
            raise ValueError(f"unknown plan step {op!r}")
    if pending:
        slot(False)  # a trailing Stop goes out in the interval after the last tick
    last_interval = rate * 60.0 / (bpm * PPQN)
    for e in epochs.values():
        if e[1] is None:  # still rolling when the plan ends: the pass ends after its last tick
            e[1] = prev + last_interval

    # The track: notes at their song positions on each pass; a note still sounding when its
    # pass ends is released at the jump (before the transport message), as DAWs do.
    notes: list[list] = []
    by_epoch: dict[int, list[tuple[int, float]]] = {}
    for t in ticks:
        if t[3] is not None:
            by_epoch.setdefault(t[3], []).append((t[2], t[1]))
    for e, run in by_epoch.items():
        positions = [p for p, _ in run]
        frames = [f for _, f in run]
        end = epochs[e][1]
        for beat, beats, channel, pitch, velocity in plan.notes:
            q = beat * PPQN
            if not positions[0] <= q <= positions[-1]:
                continue
            on = _interp(q, positions, frames)
            q_off = q + beats * PPQN
            off = _interp(q_off, positions, frames) if q_off <= positions[-1] else end
            ch, key, vel = int(channel), int(pitch), int(velocity)
            notes.append([round(on), [0x90 | ch, key, vel]])
            add(on, "note_on", bytes(notes[-1][1]), len(notes) - 1)
            notes.append([max(round(on) + 1, round(off)), [0x80 | ch, key, 0]])
            add(notes[-1][0], "note_off", bytes(notes[-1][1]), len(notes) - 1)

    junk: list[tuple[int, int, bytes]] = []
    tick_frames = [t[0] for t in ticks]
    for seed, start, end in bursts:
        for frame, data in garbage(seed, start, end, tick_frames):
            seq += 1
            junk.append((round(frame), seq, data))
    events.sort()
    junk.sort()
    last = max([events[-1][0] if events else 0, junk[-1][0] if junk else 0, round(prev)])
    return Compiled(rate, events, junk, ticks, transport,
                    {e: [round(b), round(n)] for e, (b, n) in epochs.items()}, notes, marks,
                    last)  # fmt: skip


def _interp(q: float, positions: list[int], frames: list[float]) -> float:
    """Frame of song tick ``q`` inside one pass (its ticks are consecutive positions)."""
    if len(positions) < 2:
        return frames[0]
    i = min(max(0, int(q) - positions[0]), len(positions) - 2)
    return frames[i] + (q - positions[i]) * (frames[i + 1] - frames[i])


# -- the JACK client ---------------------------------------------------------------------------
class _Cycles:
    """Which cycles a client's process callback was run for."""

    def __init__(self) -> None:
        self.count = self.missed = self.repeated = 0
        self.gaps: list[tuple[int, int]] = []  # frames of cycles it was not run for
        self.last = -1

    def enter(self, first: int, frames: int) -> bool:
        """Count the cycle starting at ``first``; False when it is the same cycle again."""
        self.count += 1
        if first == self.last:
            self.repeated += 1  # the server ran this cycle again (a late, loaded server)
            return False
        if self.last >= 0 and first != self.last + frames:
            self.missed += 1  # the server went on without this client (an xrun)
            self.gaps.append((self.last + frames, first))
        self.last = first
        return True


class Daw:
    """Two JACK clients, as a DAW and what records it would be: ``<name>:out`` carries clock,
    transport and the track into the daemon; ``<name>-rec:in`` records what the daemon plays.
    Two, not one: a client that both feeds "Ostinato In" and hears "Ostinato Out" closes a
    loop in the graph, which JACK breaks by running one side a cycle later, so everything it
    heard would be exactly one period late (for any daemon). Both callbacks run in this
    process and stamp with the same JACK frame clock."""

    def __init__(self, name: str = "daw") -> None:
        import jack  # here: the controller side (DawProcess) needs no JACK client

        self.jack = jack
        self.client = jack.Client(name, no_start_server=True)
        self.recorder = jack.Client(f"{name}-rec", no_start_server=True)
        self.rate = self.client.samplerate
        self.out = self.client.midi_outports.register("out")
        self.inp = self.recorder.midi_inports.register("in")
        self.received: list[tuple[int, bytes]] = []
        self.sent: list[tuple[int, int]] = []  # actual frame, index into events
        self.junk_sent: list[tuple[int, int]] = []  # actual frame, size
        self.events: list[tuple[int, int, int, bytes, str, int]] = []
        self.junk: list[tuple[int, int, bytes]] = []  # a heap
        self.index = 0
        self.playing = False
        self.late = self.failed = self.junk_deferred = self.xruns = 0
        self.send_cycles, self.record_cycles = _Cycles(), _Cycles()
        self._seen: set[tuple[int, bytes]] = set()  # this cycle's input
        self.shut_down: list[str] = []  # JACK dropped a client (too late a cycle: a stalled host)
        self.client.set_xrun_callback(self._on_xrun)
        for c in (self.client, self.recorder):
            c.set_shutdown_callback(lambda status, reason, c=c: self.shut_down.append(
                f"{c.name}: {reason}"))  # fmt: skip
        self.client.set_process_callback(self._process)
        self.recorder.set_process_callback(self._record)
        self.recorder.activate()
        self.client.activate()
        self.period = self.client.blocksize

    def _on_xrun(self, delay: float) -> None:
        self.xruns += 1

    def _record(self, frames: int) -> None:
        first = self.recorder.last_frame_time
        if self.record_cycles.enter(first, frames):
            self._seen = set()
        for offset, data in self.inp.incoming_midi_events():
            event = (first + offset, bytes(data))
            if event not in self._seen:  # handed over twice: recorded once
                self._seen.add(event)
                self.received.append(event)

    def _process(self, frames: int) -> None:
        first = self.client.last_frame_time
        end = first + frames
        self.send_cycles.enter(first, frames)
        out = self.out
        out.clear_buffer()
        if not self.playing:
            return
        events, junk = self.events, self.junk
        i = j = self.index
        while j < len(events) and events[j][0] < end:
            j += 1
        last = 0  # JACK takes a cycle's events in frame order only
        junk_ok = True
        while True:
            if junk_ok and junk and junk[0][0] < end and (i >= j or junk[0][0] < events[i][0]):
                frame, _, data = junk[0]
                # never at the cost of a planned event: keep room for the rest of the cycle
                if len(data) + RESERVE_PER_EVENT * (j - i + 1) > out.max_event_size:
                    junk_ok = False  # the rest of the junk waits for the next cycle
                    self.junk_deferred += 1
                    continue
                offset = min(max(frame - first, last), frames - 1)
                try:
                    out.write_midi_event(offset, data)
                    self.junk_sent.append((first + offset, len(data)))
                except self.jack.JackError:
                    self.failed += 1
                heapq.heappop(junk)
                last = offset
                continue
            if i >= j:
                break
            offset = events[i][0] - first
            if offset < last:
                self.late += 1  # a cycle this client was not run for: as soon as it can
                offset = last
            try:
                out.write_midi_event(offset, events[i][3])
                self.sent.append((first + offset, i))
            except self.jack.JackError:
                self.failed += 1
            last = offset
            i += 1
        self.index = i

    def port_names(self) -> tuple[str, str]:
        return f"{self.client.name}:out", f"{self.recorder.name}:in"

    def close(self) -> None:
        for client in (self.client, self.recorder):
            client.deactivate()
            client.close()


def find_port(ports: list[str], suffix: str) -> str | None:
    """The port whose name ends with ``suffix`` (the daemon's JACK client name may change)."""
    found = [p for p in ports if p.endswith(suffix)]
    return found[0] if found else None


def jack_ports() -> list[str]:
    result = subprocess.run(["jack_lsp"], capture_output=True, text=True, timeout=30)
    return result.stdout.splitlines()


class Session:
    """A compiled plan playing on a :class:`Daw` (the stand-in process's main thread)."""

    def __init__(self, daw: Daw, plan: Plan) -> None:
        self.daw = daw
        self.plan = plan
        self.compiled = compile_plan(plan, daw.rate)
        self.start: int | None = None
        self.timeline = None
        self._marks: list[tuple[int, str]] = []
        self.done = False

    def go(self) -> int:
        from tests.daemon.grid import Timeline

        c = self.compiled
        start = self.daw.client.frame_time + round(self.plan.lead_in_s * self.daw.rate)
        self.start = start
        self.daw.events = [(f + start, p, s, d, k, r) for f, p, s, d, k, r in c.events]
        junk = [(f + start, s, d) for f, s, d in c.junk]
        heapq.heapify(junk)
        self.daw.junk = junk
        self._marks = sorted((f + start, name) for f, name in c.marks)
        self.timeline = Timeline(self.log(with_received=False))
        gc.freeze()  # (the collector is off; should anything turn it on, not this)
        self.daw.playing = True
        return start

    def burst(self, seed: int) -> None:
        now = self.daw.client.frame_time + round(0.05 * self.daw.rate)
        span = round(60 / self.plan.bpm * self.daw.rate)
        ticks = [t[0] + (self.start or 0) for t in self.compiled.ticks]
        for frame, data in garbage(seed, now, now + span, ticks):
            heapq.heappush(self.daw.junk, (round(frame), -1, data))

    def poll(self) -> list[str]:
        """Lines to print now: marks passed, the end of the plan."""
        if self.start is None:
            return []
        now = self.daw.client.frame_time
        lines = []
        while self._marks and self._marks[0][0] <= now:
            frame, name = self._marks.pop(0)
            lines.append(f"mark {name} {frame}")
        end = self.start + self.compiled.end + round(self.plan.tail_s * self.daw.rate)
        if not self.done and now >= end:
            self.done = True
            lines.append(f"done {now}")
        return lines

    def now(self) -> str:
        frame = self.daw.client.frame_time
        where = self.timeline.where(frame) if self.timeline is not None else None
        if where is None:
            return f"now {frame} - -"
        epoch, beat = where
        return f"now {frame} {beat:.4f} {epoch}"

    def log(self, with_received: bool = True) -> dict:
        """Everything sent (at the frames it went out) and received, in absolute frames."""
        c, s, daw = self.compiled, self.start or 0, self.daw
        ticks = [[f + s, i + s, p, e] for f, i, p, e in c.ticks]
        transport = [[f + s, k, p, e] for f, k, p, e in c.transport]
        notes = [[f + s, m] for f, m in c.notes]
        planned = {"tick": ticks, "transport": transport, "note_on": notes, "note_off": notes}
        moved = 0
        if with_received:
            for frame, index in daw.sent:
                kind, ref = daw.events[index][4], daw.events[index][5]
                if ref >= 0 and planned[kind][ref][0] != frame:
                    planned[kind][ref][0] = frame  # the frame it really went out at
                    moved += 1
        log = {
            "rate": daw.rate,
            "period": daw.period,
            "start_frame": s,
            "plan": self.plan.to_json(),
            "ticks": ticks,
            "transport": transport,
            "epochs": [[e, b + s, n + s] for e, (b, n) in sorted(c.epochs.items())],
            "notes_sent": sorted(notes),
            "marks": [[f + s, name] for f, name in c.marks],
            "end_frame": c.end + s,
        }
        if with_received:
            log.update(
                received=[[f, list(d)] for f, d in daw.received],
                junk_sent=[[f, n] for f, n in daw.junk_sent],
                junk_planned=len(c.junk),
                health={
                    "planned_events": len(c.events),
                    "events_sent": len(daw.sent),
                    "moved": moved,
                    "late": daw.late,
                    "failed": daw.failed,
                    "junk_deferred": daw.junk_deferred,
                    "cycles": daw.send_cycles.count,
                    "missed_cycles": daw.send_cycles.missed + daw.record_cycles.missed,
                    "repeated_cycles": daw.send_cycles.repeated + daw.record_cycles.repeated,
                    "xruns": daw.xruns,
                    "shut_down": list(daw.shut_down),
                },
                gaps=sorted(list(g) for g in daw.send_cycles.gaps + daw.record_cycles.gaps),
            )
        return log


def _connect(daw: Daw, timeout: float = 60.0) -> None:
    out, inp = daw.port_names()
    end = time.monotonic() + timeout
    while True:
        ports = jack_ports()
        daemon_in, daemon_out = find_port(ports, IN_SUFFIX), find_port(ports, OUT_SUFFIX)
        if daemon_in and daemon_out:
            break
        if time.monotonic() > end:
            raise SystemExit(f"no ports ending {IN_SUFFIX!r} and {OUT_SUFFIX!r}: {ports}")
        time.sleep(0.2)
    daw.client.connect(out, daemon_in)
    daw.client.connect(daemon_out, inp)


def preset(name: str, bpm: float, bars: int, passes: int, jitter: float) -> Plan:
    """Ready-made sessions for trying things by hand (tests build their own plans)."""
    plan = Plan(bpm=bpm, jitter_pct=jitter)
    plan.drum_phrase(range(2))
    if name == "steady":
        plan.start().bars(bars).stop()
    elif name == "steps":
        plan.tempo(140).start().bars(bars).tempo(90).bars(bars).tempo(60).bars(bars).stop()
    elif name == "ramp":
        plan.start().bars(bars).ramp(bpm / 2, bars * plan.beats_per_bar).bars(bars).bars(1).stop()
    elif name.startswith("loop-"):
        style = name[-1]
        plan.loop(style, bars, passes, start_bar=1 if style == "b" else 0)
    elif name == "start-while-running":
        plan.start().bars(bars).start().bars(bars).stop()
    elif name == "join":
        plan.join(8).bars(bars).spp(bars * plan.beats_per_bar * 4 + 32).bars(bars).stop()
    elif name == "burst":
        plan.start().bars(2).burst().bars(bars).stop()
    else:
        raise SystemExit(f"unknown preset {name!r}")
    return plan


PRESETS = ("steady", "steps", "ramp", "loop-a", "loop-b", "loop-c", "start-while-running",
           "join", "burst")  # fmt: skip


def command(session: Session, words: list[str], say) -> bool:
    """One command line; False for ``quit``."""
    if not words:
        return True
    if words[0] == "go":
        say(f"started {session.go()}")
    elif words[0] == "now":
        say(session.now())
    elif words[0] == "burst":
        session.burst(int(words[1]) if len(words) > 1 else 7)
        say("burst")
    elif words[0] == "quit":
        return False
    else:
        say(f"error unknown command {words[0]!r}")
    return True


def realtime_main_thread() -> None:
    """Keep the process callback from waiting on this thread. The callback (JACK's real-time
    thread) needs the GIL; if this thread held it when a busy machine preempted it, the
    callback would wait out the preemption and miss its cycle. So: a real-time priority below
    JACK's clients (where allowed), a short GIL switch interval, and no garbage collector (a
    full pass over the compiled plan holds the GIL for milliseconds; this process makes no
    reference cycles worth collecting)."""
    sys.setswitchinterval(0.0002)
    gc.disable()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.daemon.daw",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--plan", type=Path, help="a plan as JSON (Plan.to_json)")
    parser.add_argument("--preset", choices=PRESETS, help="a ready-made plan instead")
    parser.add_argument("--bpm", type=float, default=120.0)
    parser.add_argument("--bars", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--jitter", type=float, default=0.0, help="percent of a tick, 0..20")
    parser.add_argument("--log", type=Path, required=True, help="write the JSON log here")
    parser.add_argument("--name", default="daw", help="JACK client name")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="connect to the ports ending ':Ostinato In' and ':Ostinato Out'",
    )
    parser.add_argument("--auto", action="store_true", help="go at once, quit when done")
    args = parser.parse_args(argv)
    if (args.plan is None) == (args.preset is None):
        parser.error("give --plan or --preset")
    if args.plan is not None:
        plan = Plan.from_json(json.loads(args.plan.read_text()))
    else:
        plan = preset(args.preset, args.bpm, args.bars, args.passes, args.jitter)

    realtime_main_thread()
    daw = Daw(args.name)
    session = Session(daw, plan)
    if args.connect:
        _connect(daw)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say(f"ready {' '.join(daw.port_names())} {daw.rate} {daw.period}")
    if args.auto:
        say(f"started {session.go()}")
    stdin = sys.stdin.fileno()
    pending = b""
    stdin_open = True
    try:
        while True:
            for line in session.poll():
                say(line)
            if args.auto and session.done:
                break
            if not stdin_open:
                time.sleep(0.005)
                continue
            if not select.select([stdin], [], [], 0.005)[0]:
                continue
            chunk = os.read(stdin, 4096)
            if not chunk:
                stdin_open = False  # the controller went away: play on, quit when done
                if session.done or session.start is None:
                    break
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if not all(command(session, line.decode().split(), say) for line in lines):
                break
    finally:
        daw.playing = False
        time.sleep(0.05)
        daw.close()
        args.log.write_text(json.dumps(session.log()))
        say(f"log {args.log}")
    return 0


# -- the controller's side ------------------------------------------------------------------
class DawProcess:
    """Runs the stand-in as a process of its own on ``server`` (a jack_rig.JackServer) and
    drives it through its stdin/stdout."""

    def __init__(self, server, plan: Plan, workdir: Path, name: str = "daw") -> None:
        self.server = server
        self.workdir = Path(workdir)
        self.plan_path = self.workdir / f"{name}-plan.json"
        self.log_path = self.workdir / f"{name}-log.json"
        self.stderr_path = self.workdir / f"{name}-stderr.txt"
        self.plan_path.write_text(json.dumps(plan.to_json()))
        with self.stderr_path.open("w") as stderr:
            self.proc = server.spawn(
                [sys.executable, "-m", "tests.daemon.daw", "--plan", str(self.plan_path),
                 "--log", str(self.log_path), "--name", name],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                cwd=REPO,
            )  # fmt: skip
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        _, self.out_port, self.in_port, rate, period = self.wait_line("ready", 30).split()
        self.rate, self.period = int(rate), int(period)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("eof")
            self._cond.notify_all()

    def _exited(self) -> RuntimeError:
        return RuntimeError(f"the DAW stand-in exited: {self.lines[-5:]} "
                            f"{self.stderr_path.read_text()[-2000:]}")  # fmt: skip

    def wait_line(self, prefix: str, timeout: float, after: int = 0) -> str:
        """The first line from the stand-in (from line ``after`` on) whose first word is
        ``prefix``."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if line.split(" ", 1)[0] == prefix:
                        return line
                if "eof" in self.lines:
                    raise self._exited()
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {prefix!r} line from the DAW stand-in: {self.lines}")
                self._cond.wait(left)

    def wait_mark(self, name: str, timeout: float) -> int:
        """The frame of the plan's mark ``name``, once it has passed."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(f"mark {name} "):
                        return int(line.split()[2])
                if "eof" in self.lines:
                    raise self._exited()
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"mark {name} never passed: {self.lines[-5:]}")
                self._cond.wait(left)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def connect(self, timeout: float = 60.0) -> tuple[str, str]:
        """Connect to the daemon's ports, found by their suffix (jack_lsp)."""
        ports: list[str] = []

        def found() -> bool:
            nonlocal ports
            ports = self.server.ports()
            return bool(find_port(ports, IN_SUFFIX) and find_port(ports, OUT_SUFFIX))

        self.server.wait_for(found, timeout, "the daemon's ports never appeared")
        daemon_in, daemon_out = find_port(ports, IN_SUFFIX), find_port(ports, OUT_SUFFIX)
        assert daemon_in and daemon_out
        self.server.connect(self.out_port, daemon_in)
        self.server.connect(daemon_out, self.in_port)
        return daemon_in, daemon_out

    def go(self) -> int:
        n = len(self.lines)
        self.send("go")
        return int(self.wait_line("started", 10, after=n).split()[1])

    def now(self) -> tuple[int, float | None, int | None]:
        """(frame, song beat, epoch) of the stand-in now (None, None while stopped)."""
        n = len(self.lines)
        self.send("now")
        _, frame, beat, epoch = self.wait_line("now", 10, after=n).split()
        return (int(frame), None if beat == "-" else float(beat),
                None if epoch == "-" else int(epoch))  # fmt: skip

    def wait_done(self, timeout: float) -> None:
        self.wait_line("done", timeout)

    def quit(self, timeout: float = 30.0) -> dict:
        """Stop it; its log (see :class:`tests.daemon.grid.Timeline`)."""
        if self.proc.poll() is None:
            self.send("quit")
            self.wait_line("log", timeout)
            self.proc.wait(timeout)
        return json.loads(self.log_path.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
