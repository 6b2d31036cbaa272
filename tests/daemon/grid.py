"""The reference grid from the DAW stand-in's log (tests.daemon.daw): where every note the
daemon played fell on the song's timeline, judged against the frames the stand-in put its own
clock ticks on.

The log holds every tick sent (frame, the ideal frame it was planned at, song tick, epoch),
every transport message, every pass (epoch) with the frames where it began and ended, and every
MIDI event received with its JACK frame. A pass's timeline is exact: song tick ``q`` of the
pass is at the ideal frame of its tick ``q`` (with jitter on, the ticks went out up to 20% of a
tick off those frames; the grid a DAW means is the ideal one). The timeline current at a frame
is the pass that began last at or before it, unless that pass has ended by then (stopped, or
between a Stop and the Continue that follows).

Nothing here needs JACK: tests and the benchmark read the log after the fact.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

PPQN = 24


@dataclass
class Pass:
    """One epoch: the ticks it sent, on consecutive song ticks."""

    epoch: int
    begin: int  # frame of the message that opened it (Start, Continue, SPP) or its first tick
    end: int  # frame of the message that ended it (Stop, SPP, Start) or after its last tick
    positions: np.ndarray  # song ticks
    frames: np.ndarray  # their ideal frames

    def tick_at(self, frame: float) -> float:
        """Song tick (fractional) at ``frame``; extrapolated with the first or last interval
        before the pass's first tick and after its last."""
        p, f = self.positions, self.frames
        if len(p) == 1:
            return float(p[0])
        if frame < f[0]:
            return p[0] - (f[0] - frame) / (f[1] - f[0])
        if frame > f[-1]:
            return p[-1] + (frame - f[-1]) / (f[-1] - f[-2])
        return float(np.interp(frame, f, p))

    def frame_of(self, tick: float) -> float:
        """Frame of song tick ``tick`` on this pass (extrapolated like :meth:`tick_at`)."""
        p, f = self.positions, self.frames
        if len(p) == 1:
            return float(f[0])
        if tick < p[0]:
            return f[0] - (p[0] - tick) * (f[1] - f[0])
        if tick > p[-1]:
            return f[-1] + (tick - p[-1]) * (f[-1] - f[-2])
        return float(np.interp(tick, p, f))

    @property
    def first_beat(self) -> float:
        return float(self.positions[0]) / PPQN

    @property
    def last_beat(self) -> float:
        """The beat just after the pass's last tick (where a loop's jump goes back from)."""
        return float(self.positions[-1] + 1) / PPQN


@dataclass
class Onset:
    """A note-on the daemon played, placed on the timeline current at its frame."""

    frame: int
    channel: int
    pitch: int
    velocity: int
    epoch: int | None  # None: no timeline was running (stopped, or between Stop and Continue)
    beat: float = float("nan")  # song beat
    grid_beat: float = float("nan")  # the nearest 1/8 beat
    grid_frame: float = float("nan")  # its frame on this pass
    error_ms: float = float("nan")  # frame − grid_frame, in ms (late > 0)
    tick_frame: float = float("nan")  # the nearest 1/24 beat's (a tick's) frame
    error24_ms: float = float("nan")  # frame − tick_frame, in ms
    near_gap: bool = False  # played or due near a cycle the stand-in missed: not judged


@dataclass
class Note:
    on: int
    off: int | None  # frame of its note-off (or All Notes Off on its channel); None: never
    channel: int
    pitch: int
    epoch: int | None
    deadline: int | None  # where its pass ended
    end_lost: bool = False  # sounding at a cycle the stand-in missed: its end may be lost there


class Timeline:
    def __init__(self, log: dict) -> None:
        self.log = log
        self.rate = int(log["rate"])
        by_epoch: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for _frame, ideal, pos, epoch in log["ticks"]:
            if epoch is not None:
                by_epoch[epoch].append((pos, ideal))
        self.passes: list[Pass] = []
        for epoch, begin, end in log["epochs"]:
            run = by_epoch.get(epoch)
            if not run:
                continue  # opened and closed between two ticks: nothing to place a note on
            self.passes.append(
                Pass(
                    epoch, int(begin), int(end),
                    np.array([p for p, _ in run], dtype=np.float64),
                    np.array([f for _, f in run], dtype=np.float64),
                )
            )  # fmt: skip
        self.passes.sort(key=lambda p: p.begin)
        self._begins = np.array([p.begin for p in self.passes])
        self.by_epoch = {p.epoch: p for p in self.passes}
        self.period = int(log.get("period", 0))
        self.gaps = [(int(a), int(b)) for a, b in log.get("gaps", [])]

    def near_gap(self, *frames: float) -> bool:
        """Within a period of a cycle the stand-in was not run for (the server went on
        without it: an xrun on a loaded machine). What went out or came in there is not the
        daemon's doing alone, so the checks leave it out (and say how much they left out)."""
        return any(a - self.period <= f < b + self.period for a, b in self.gaps for f in frames)

    # -- where things are --------------------------------------------------------------------
    def ms(self, frames: float) -> float:
        return frames * 1000.0 / self.rate

    def pass_at(self, frame: float) -> Pass | None:
        i = int(np.searchsorted(self._begins, frame, side="right")) - 1
        if i < 0:
            return None
        p = self.passes[i]
        return p if frame < p.end else None

    def pass_before(self, frame: float) -> Pass | None:
        """The pass that began last at or before ``frame``, ended or not (a note played while
        stopped belongs to the pass that stopped)."""
        i = int(np.searchsorted(self._begins, frame, side="right")) - 1
        return self.passes[i] if i >= 0 else None

    def where(self, frame: float) -> tuple[int, float] | None:
        """(epoch, song beat) at ``frame``, or None while no pass is running."""
        p = self.pass_at(frame)
        return None if p is None else (p.epoch, p.tick_at(frame) / PPQN)

    # -- what was received -------------------------------------------------------------------
    def received(self) -> list[tuple[int, list[int]]]:
        return sorted((int(f), list(m)) for f, m in self.log.get("received", []))

    def onsets(self, grid: int = 8) -> list[Onset]:
        """Every note-on received, placed on its timeline, with its distance to the nearest
        ``1/grid`` beat and to the nearest tick."""
        out = []
        for frame, m in self.received():
            if len(m) != 3 or m[0] & 0xF0 != 0x90 or m[2] == 0:
                continue
            p = self.pass_at(frame)
            onset = Onset(frame, m[0] & 0x0F, m[1], m[2], None if p is None else p.epoch)
            if p is not None:
                tick = p.tick_at(frame)
                step = PPQN / grid
                grid_tick = round(tick / step) * step
                onset.beat = tick / PPQN
                onset.grid_beat = grid_tick / PPQN
                onset.grid_frame = p.frame_of(grid_tick)
                onset.error_ms = self.ms(frame - onset.grid_frame)
                onset.tick_frame = p.frame_of(round(tick))
                onset.error24_ms = self.ms(frame - onset.tick_frame)
            onset.near_gap = self.near_gap(frame, onset.grid_frame if p else frame)
            out.append(onset)
        return out

    def notes(self) -> list[Note]:
        """Received notes paired with their ends: a note-off (or a velocity-0 note-on) ends
        the oldest sounding note of its key; CC 123 / CC 120 ends every note of its channel.

        The daemon never strikes a key again before it released it, so a note-on of a key
        that still sounds, where a cycle the stand-in missed (an xrun) fell while it sounded,
        means that its note-off was in that cycle, which the recorder never heard: the older
        note is closed unpaired (``end_lost``, ``off`` None). Paired on, the lost note-off
        would shift every later pair of its key by one: each note ended by the next one's
        note-off, and the last of each later pass seemingly hanging until the first note-off
        of its key after it, seconds later. A note never ended that sounded through such a
        cycle is ``end_lost`` too."""
        sounding: dict[tuple[int, int], list[Note]] = defaultdict(list)
        notes: list[Note] = []
        gaps = sorted(self.gaps)

        def through_gap(on: int, until: int) -> bool:
            return any(start < until and end > on for start, end in gaps)

        for frame, m in self.received():
            if not m:
                continue
            kind, ch = m[0] & 0xF0, m[0] & 0x0F
            if kind == 0x90 and len(m) == 3 and m[2] > 0:
                p = self.pass_at(frame)
                note = Note(frame, None, ch, m[1], None if p is None else p.epoch,
                            None if p is None else p.end)  # fmt: skip
                notes.append(note)
                open_notes = sounding[(ch, m[1])]
                for older in open_notes:
                    older.end_lost = through_gap(older.on, frame)
                open_notes[:] = [older for older in open_notes if not older.end_lost]
                open_notes.append(note)
            elif (kind == 0x80 or kind == 0x90) and len(m) == 3:
                open_notes = sounding.get((ch, m[1]))
                if open_notes:
                    open_notes.pop(0).off = frame
            elif kind == 0xB0 and len(m) == 3 and m[1] in (120, 123):
                for (c, _), open_notes in sounding.items():
                    if c == ch:
                        for note in open_notes:
                            note.off = frame
                        open_notes.clear()
        for open_notes in sounding.values():  # never ended: lost in a gap it sounded through?
            for note in open_notes:
                note.end_lost = through_gap(note.on, 1 << 62)
        return notes

    def hanging(self, slack_ms: float = 10.0) -> list[Note]:
        """Notes not ended by the end of their pass (the next jump or Stop) + ``slack_ms``,
        and notes that never ended at all (but those whose end was due near a gap, or may
        have been lost in one)."""
        slack = slack_ms * self.rate / 1000.0
        out = []
        for n in self.notes():
            if n.end_lost:
                continue
            limit = (n.deadline if n.deadline is not None else n.on) + slack
            if self.near_gap(limit) or (n.off is not None and self.near_gap(n.off)):
                continue
            if n.off is None or n.off > limit:
                out.append(n)
        return out

    def bar_counts(self, beats_per_bar: float = 4.0) -> dict[int, dict[int, int]]:
        """Note-ons per bar of every pass: {epoch: {bar (0-based, of the song): count}}, for
        the bars the pass covered whole."""
        counts: dict[int, dict[int, int]] = {}
        for p in self.passes:
            first = int(np.ceil(p.first_beat / beats_per_bar - 1e-9))
            last = int(np.floor(p.last_beat / beats_per_bar + 1e-9))  # bars end before it
            counts[p.epoch] = {bar: 0 for bar in range(first, last)}
        for o in self.onsets():
            if o.epoch is None:
                continue
            bar = int(np.floor(o.beat / beats_per_bar + 1e-9))
            if bar in counts[o.epoch]:
                counts[o.epoch][bar] += 1
        return counts


def error_stats(errors_ms) -> dict[str, float]:
    """p50, p99 and max of the absolute errors (ms), and their count."""
    e = np.abs(np.asarray(errors_ms, dtype=np.float64))
    e = e[np.isfinite(e)]
    if len(e) == 0:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "n": len(e),
        "p50": float(np.percentile(e, 50)),
        "p99": float(np.percentile(e, 99)),
        "max": float(e.max()),
    }


def describe(onsets: list[Onset], limit: int = 40) -> str:
    """The onsets as text, for an assertion's message."""
    rows = [
        f"e{o.epoch} beat {o.beat:8.3f} → {o.grid_beat:7.3f}: {o.error_ms:+7.2f} ms"
        f" (tick {o.error24_ms:+6.2f})"
        for o in onsets[:limit]
    ]
    more = f"\n… {len(onsets) - limit} more" if len(onsets) > limit else ""
    return "\n".join(rows) + more


def check_rig(log: dict) -> list[str]:
    """What went wrong on the stand-in's side (nothing, for a run whose numbers count): every
    planned event out, none refused, all the garbage out, and at most a few late (see
    below)."""
    h = log.get("health", {})
    problems = []
    if h.get("events_sent") != h.get("planned_events"):
        problems.append(f"sent {h.get('events_sent')} of {h.get('planned_events')} events")
    if h.get("failed"):
        problems.append(f"failed: {h['failed']}")
    if h.get("shut_down"):
        problems.append(f"JACK shut the stand-in down: {h['shut_down']}")
    # An event can go out late only after a cycle the server ran without the stand-in (an
    # xrun): those few are left out of the checks (Timeline.near_gap), more are a broken run.
    planned = len(log.get("ticks", [])) + 2 * len(log.get("notes_sent", []))
    if h.get("late", 0) > max(2, planned // 500) or (h.get("late") and not log.get("gaps")):
        problems.append(f"{h['late']} events out late (cycles missed: {log.get('gaps')})")
    if len(log.get("junk_sent", [])) != log.get("junk_planned", 0):
        problems.append(f"garbage sent {len(log.get('junk_sent', []))} of {log['junk_planned']}")
    return problems
