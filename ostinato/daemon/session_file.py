"""Every session recorded: a multitrack Standard MIDI File written while the music plays.

What is kept, on the session's own time line (the time the music was heard, not the song
position: a loop played ten times is ten passes in the file):

* the musician's notes, one track per input channel (named for the instrument the model
  hears on it), and Ostinato's notes, one track per output channel, as they were sent;
* the tempo map, from the clock (a tempo event when the tempo moves by more than 0.01 BPM);
* markers: transport (start, stop, continue), loop jumps, answers and takes, from the session.

Notes are written as whole notes (symusic pairs them), so the file has no hanging note by
construction; a note still held when the file is written lasts until then. The file is
rewritten whole every ``FLUSH_S`` seconds by symusic (a few milliseconds for an hour of
music), to a temporary file renamed over the old one: after a crash or a SIGKILL the file is
the last complete one, at most ``FLUSH_S`` seconds short. A folder that cannot be written (a
full disk, no permission) is a warning in the log, said once, and the music goes on; writing
is tried again later.

Times come in seconds on the daemon's time line (JACK frame time or ``perf_counter``), the
same line as the clock's tempo maps, from the input thread, the sender's reports thread and
the session thread; a lock keeps the lists whole. Nothing here runs on the real-time path.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from symusic import Note, Score, Tempo, TextMeta, TimeSignature, Track

from ostinato.model.tokens import DRUM_PROGRAM

log = logging.getLogger(__name__)

TPQ = 480
FLUSH_S = 2.0
RETRY_S = 30.0  # after a failed write
TEMPO_STEP_BPM = 0.01
SUFFIX = ".mid"


def session_path(folder: Path, started: datetime | None = None) -> Path:
    """A new file name in ``folder``: the start time, unique."""
    stamp = (started or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    path = folder / f"{stamp}{SUFFIX}"
    n = 2
    while path.exists():
        path = folder / f"{stamp}_{n}{SUFFIX}"
        n += 1
    return path


@dataclass
class _Part:
    name: str
    program: int  # -1: drums
    notes: list[tuple[float, float, int, int]] = field(default_factory=list)
    # (start s, end s, pitch, velocity)


class SessionFile:
    """The recording of one run. ``flush()`` writes it; ``start()`` does so every FLUSH_S."""

    def __init__(
        self,
        path: Path,
        channel_programs: Callable[[int], int],
        beats_per_bar: float = 4.0,
        bpm: float = 120.0,
        t0: float | None = None,
    ) -> None:
        self.path = path
        self.program_of_input = channel_programs  # input channel → the instrument heard
        self.beats_per_bar = beats_per_bar
        self._lock = threading.Lock()
        # tempo segments: start times, the beat there, the BPM from there
        self._tempo_t = [0.0 if t0 is None else t0]
        self._begun = t0 is not None  # else the first event's time is the file's start
        self._tempo_beat = [0.0]
        self._tempo_bpm = [bpm]
        self._inputs: dict[int, _Part] = {}
        self._outputs: dict[tuple[int, int], _Part] = {}  # (channel, program)
        self._held: dict[tuple[int, int], tuple[float, int]] = {}  # (ch, pitch) → (t, vel)
        self._queued: dict[int, tuple[int, float]] = {}  # note id → (program, beats)
        self._markers: list[tuple[float, str]] = []
        self._last_t = self._tempo_t[0]
        self._dirty = False
        self._failed_at: float | None = None
        self.writes = 0
        self.write_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what happens (any thread) --------------------------------------------------------
    def tempo(self, t: float, bpm: float) -> None:
        """The clock's tempo from time ``t`` on."""
        with self._lock:
            self._begin(t)
            if abs(bpm - self._tempo_bpm[-1]) <= TEMPO_STEP_BPM or t < self._tempo_t[-1]:
                return
            self._tempo_beat.append(self._beat(t))
            self._tempo_t.append(t)
            self._tempo_bpm.append(bpm)
            self._dirty = True

    def heard(self, t: float, data: list[int]) -> None:
        """A note-on or note-off from the musician (any channel)."""
        if len(data) != 3 or data[0] & 0xF0 not in (0x80, 0x90):
            return
        channel, pitch, velocity = data[0] & 0x0F, data[1], data[2]
        with self._lock:
            self._begin(t)
            self._last_t = max(self._last_t, t)
            key = (channel, pitch)
            opened = self._held.pop(key, None)
            if opened is not None:  # a note-off, or a retrigger: the sounding one ends
                part = self._input_part(channel)
                part.notes.append((opened[0], max(t, opened[0]), pitch, opened[1]))
                self._dirty = True
            if data[0] & 0xF0 == 0x90 and velocity:
                self._held[key] = (t, velocity)

    def all_notes_off(self, t: float, channel: int) -> None:
        """CC 123/120 on ``channel``: its held notes end."""
        with self._lock:
            keys = [k for k in self._held if k[0] == channel]
        for ch, pitch in keys:
            self.heard(t, [0x80 | ch, pitch, 0])

    def queued(self, note_id: int, start_beats: float, end_beats: float, program: int) -> None:
        """Ostinato queued a note (its length in beats and its instrument, by id)."""
        with self._lock:
            self._queued[note_id] = (program, end_beats - start_beats)
            if len(self._queued) > 65536:  # notes never sent (dropped, cancelled)
                for old in list(self._queued)[:16384]:
                    del self._queued[old]

    def played(self, due: float, channel: int, pitch: int, velocity: int, note_id: int) -> None:
        """The sender played a note at ``due`` (seconds)."""
        with self._lock:
            self._begin(due)
            program, beats = self._queued.pop(note_id, (-2, 0.5))
            seconds = beats * 60.0 / self._bpm_at(due)
            key = (channel, program)
            part = self._outputs.get(key)
            if part is None:
                if program == -2:  # not known: the channel's drums or an instrument
                    program = DRUM_PROGRAM if channel == 9 else 0
                what = "drums" if program == DRUM_PROGRAM else f"program {program}"
                part = _Part(f"Ostinato ch{channel + 1} {what}", program)
                self._outputs[key] = part
            part.notes.append((due, due + seconds, pitch, velocity))
            self._last_t = max(self._last_t, due + seconds)
            self._dirty = True

    def stopped(self, t: float) -> None:
        """The transport stopped at ``t``: Ostinato's notes sounding then were cut there."""
        with self._lock:
            for part in self._outputs.values():
                part.notes = [(s, min(e, t) if s <= t else e, p, v) for s, e, p, v in part.notes]

    def marker(self, t: float, text: str) -> None:
        with self._lock:
            self._begin(t)
            self._markers.append((t, text))
            self._last_t = max(self._last_t, t)
            self._dirty = True

    # -- time -------------------------------------------------------------------------------
    def _begin(self, t: float) -> None:
        if not self._begun:
            self._begun = True
            self._tempo_t[0] = self._last_t = t

    def _segment(self, t: float) -> int:
        return max(0, bisect.bisect_right(self._tempo_t, t) - 1)

    def _bpm_at(self, t: float) -> float:
        return self._tempo_bpm[self._segment(t)]

    def _beat(self, t: float) -> float:
        i = self._segment(t)
        return self._tempo_beat[i] + (t - self._tempo_t[i]) * self._tempo_bpm[i] / 60.0

    def _tick(self, t: float) -> int:
        return max(0, round(self._beat(t) * TPQ))

    def _input_part(self, channel: int) -> _Part:
        part = self._inputs.get(channel)
        if part is None:
            program = self.program_of_input(channel)
            what = "drums" if program == DRUM_PROGRAM else f"program {program}"
            part = _Part(f"In ch{channel + 1} {what}", program)
            self._inputs[channel] = part
        return part

    # -- writing ----------------------------------------------------------------------------
    def score(self, now: float | None = None) -> Score:
        """The session so far as a symusic Score (held notes last until ``now``)."""
        with self._lock:
            now = self._last_t if now is None else max(now, self._last_t)
            score = Score(TPQ)
            num = round(self.beats_per_bar * 2)
            score.time_signatures.append(
                TimeSignature(0, num, 8) if num % 2 else TimeSignature(0, num // 2, 4)
            )
            for beat, bpm in zip(self._tempo_beat, self._tempo_bpm, strict=True):
                score.tempos.append(Tempo(max(0, round(beat * TPQ)), qpm=float(bpm)))
            held: dict[int, list[tuple[float, float, int, int]]] = {}
            for (channel, pitch), (start, velocity) in self._held.items():
                held.setdefault(channel, []).append((start, now, pitch, velocity))
            for channel in sorted(set(self._inputs) | set(held)):
                part = self._input_part(channel)
                score.tracks.append(self._track(part, [*part.notes, *held.get(channel, [])]))
            for key in sorted(self._outputs):
                part = self._outputs[key]
                score.tracks.append(self._track(part, part.notes))
            for t, text in sorted(self._markers):
                score.markers.append(TextMeta(self._tick(t), text))
            self._dirty = False
        return score

    def _track(self, part: _Part, notes) -> Track:
        track = Track(name=part.name, program=max(0, part.program),
                      is_drum=part.program == DRUM_PROGRAM)  # fmt: skip
        # A note-on of a pitch still sounding on the channel retriggers it (the sender does
        # the same): the one before ends there, so every note-on has its own note-off.
        spans: list[list[int]] = []
        last: dict[int, list[int]] = {}
        for start, end, pitch, velocity in sorted(notes):
            on = self._tick(start)
            span = [on, max(on + 1, self._tick(end)), pitch, velocity]
            before = last.get(pitch)
            if before is not None and before[0] == on:  # the same note twice: one, the longer
                before[1] = max(before[1], span[1])
                continue
            if before is not None and before[1] > on:
                before[1] = on
            last[pitch] = span
            spans.append(span)
        for on, off, pitch, velocity in spans:
            track.notes.append(Note(on, off - on, pitch, velocity))
        return track

    def flush(self, now: float | None = None) -> bool:
        """Write the file (atomically). False when it could not be written (said once)."""
        score = self.score(now)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            score.dump_midi(str(tmp))
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as exc:  # symusic raises RuntimeError on I/O too
            self.write_errors += 1
            if self._failed_at is None:
                log.warning("cannot write the session recording %s (%s); the music goes on, "
                            "writing is tried again every %.0f s", self.path, exc,
                            RETRY_S)  # fmt: skip
            self._failed_at = time.monotonic()
            self._dirty = True
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        if self._failed_at is not None:
            log.info("the session recording %s is written again", self.path)
        self._failed_at = None
        self.writes += 1
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ostinato-session-file",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            if not self._dirty:
                continue
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_S:
                continue
            self.flush()

    def close(self, now: float | None = None) -> None:
        """Stop the writer and write the file one last time (if anything was recorded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._dirty or self.writes:
            self.flush(now)
        log.info("session recorded in %s", self.path)


# -- ``ostinato sessions`` -----------------------------------------------------------------------
def list_sessions(folder: Path) -> list[dict]:
    """The session files in ``folder``, newest first: name, size, length, notes per source."""
    rows = []
    for path in sorted(folder.glob(f"*{SUFFIX}"), reverse=True):
        row: dict = {"file": path.name, "bytes": path.stat().st_size}
        try:
            score = Score(str(path), ttype="second")
        except Exception as exc:  # symusic raises its own kinds on a damaged file
            row["error"] = str(exc)
            rows.append(row)
            continue
        row["seconds"] = round(float(score.end()), 1)
        row["tracks"] = len(score.tracks)
        row["input_notes"] = sum(len(t.notes) for t in score.tracks if t.name.startswith("In "))
        row["ostinato_notes"] = sum(
            len(t.notes) for t in score.tracks if t.name.startswith("Ostinato ")
        )
        row["markers"] = len(score.markers)
        rows.append(row)
    return rows
