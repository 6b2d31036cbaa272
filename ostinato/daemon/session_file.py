"""Every session recorded: a multitrack Standard MIDI File written while the music plays.

What is kept, on the session's own time line (the time the music was heard, not the song
position: a loop played ten times is ten passes in the file):

* the musician's notes, one track per input channel (named for the instrument the model
  hears on it), and Ostinato's notes, one track per output channel, as they were sent;
* the tempo map, from the clock (a tempo event when the tempo moves by more than 0.01 BPM);
* markers: transport (start, stop, continue), loop jumps, answers and takes, from the session.

Threads. The listeners run on the real-time side: the clock's map listener (every tick, under
the clock's lock), the scheduler (every queued note), the input thread and the sender's reports
thread (every note heard and played), the transport listener (Stop). Each only appends what
happened to an inbox under a short lock and returns: no listener ever waits on the writer.

The writer thread, every ``FLUSH_S`` seconds, swaps the inbox out under that lock (it takes no
other) and hands its events, in order, to :class:`~ostinato.daemon.session_tracks.SessionTracks`,
which encodes each event once, when it can no longer change: the file is rewritten as a join
of those bytes plus the last few seconds, to a temporary file renamed over the old one. A
rewrite costs the same at bar 10 and at bar 5,000, and a Stop touches only the notes still
sounding. After a crash or a SIGKILL the file is the last complete one, at most ``FLUSH_S``
seconds short. A folder that cannot be written (a full disk, no permission) is a warning in
the log, said once, and the music goes on; writing is tried again later.

Times come in seconds on the daemon's time line (JACK frame time or ``perf_counter``), the
same line as the clock's tempo maps. Nothing here runs on the real-time path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from symusic import Score

from ostinato.daemon.session_tracks import SessionTracks

log = logging.getLogger(__name__)

FLUSH_S = 2.0
RETRY_S = 30.0  # after a failed write
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
        # Guards ``_inbox`` alone: listeners append one event, the writer swaps the list out.
        self._lock = threading.Lock()
        self._inbox: list[tuple[Callable, tuple]] = []
        # The writer's own, never a listener's: flush against flush (the writer thread, and
        # ``close`` should the thread outlive its join).
        self._writing = threading.Lock()
        self._tracks = SessionTracks(channel_programs, beats_per_bar, bpm, t0)
        self._last_bpm: float | None = None  # the tempo last posted (the map listener's)
        self._unwritten = False  # a write failed: the next one is due even with no news
        self._failed_at: float | None = None
        self.writes = 0
        self.write_errors = 0
        self.write_ms = 0.0  # the last rewrite: encoding the news, joining, writing
        self.write_ms_max = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what happens (listeners: any thread, each only appends) ----------------------------
    def _post(self, action: Callable, *args) -> None:
        with self._lock:
            self._inbox.append((action, args))

    def tempo(self, t: float, bpm: float) -> None:
        """The clock's tempo from time ``t`` on (the clock's map listener, every tick)."""
        if bpm != self._last_bpm:  # the first always: it may begin the file
            self._last_bpm = bpm
            self._post(self._tracks.tempo, t, bpm)

    def heard(self, t: float, data: list[int]) -> None:
        """A note-on or note-off from the musician (any channel)."""
        if len(data) != 3 or data[0] & 0xF0 not in (0x80, 0x90):
            return
        velocity = data[2] if data[0] & 0xF0 == 0x90 else 0
        self._post(self._tracks.heard, t, data[0] & 0x0F, data[1], velocity)

    def all_notes_off(self, t: float, channel: int) -> None:
        """CC 123/120 on ``channel``: its held notes end."""
        self._post(self._tracks.all_notes_off, t, channel)

    def queued(self, note_id: int, start_beats: float, end_beats: float, program: int) -> None:
        """Ostinato queued a note (its length in beats and its instrument, by id)."""
        self._post(self._tracks.queued, note_id, end_beats - start_beats, program)

    def played(self, due: float, channel: int, pitch: int, velocity: int, note_id: int) -> None:
        """The sender played a note at ``due`` (seconds)."""
        self._post(self._tracks.played, due, channel, pitch, velocity, note_id)

    def stopped(self, t: float) -> None:
        """The transport stopped at ``t``: Ostinato's notes sounding then were cut there."""
        self._post(self._tracks.stopped, t)

    def marker(self, t: float, text: str) -> None:
        self._post(self._tracks.marker, t, text)

    # -- writing (the writer thread) --------------------------------------------------------
    def flush(self, now: float | None = None) -> bool:
        """Write the file (atomically). False when it could not be written (said once)."""
        with self._writing:
            started = time.perf_counter()
            with self._lock:
                events, self._inbox = self._inbox, []
            for action, args in events:
                action(*args)
            data = self._tracks.midi(now)
            written = self._write(data)
            self.write_ms = (time.perf_counter() - started) * 1e3
            self.write_ms_max = max(self.write_ms_max, self.write_ms)
            return written

    def _write(self, data: bytes) -> bool:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            self.write_errors += 1
            if self._failed_at is None:
                log.warning("cannot write the session recording %s (%s); the music goes on, "
                            "writing is tried again every %.0f s", self.path, exc,
                            RETRY_S)  # fmt: skip
            self._failed_at = time.monotonic()
            self._unwritten = True
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        if self._failed_at is not None:
            log.info("the session recording %s is written again", self.path)
        self._failed_at = None
        self._unwritten = False
        self.writes += 1
        return True

    def _pending(self) -> bool:
        return bool(self._inbox) or self._unwritten

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ostinato-session-file",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            if not self._pending():
                continue
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_S:
                continue
            self.flush()

    def close(self, now: float | None = None) -> None:
        """Stop the writer and write the file one last time (if anything was recorded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._pending() or self.writes:
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
