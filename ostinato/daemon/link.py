"""Ableton Link as the clock (``clock = "link"``, and ``"auto"`` when a session exists).

:class:`LinkFollower` is one Link peer (aalink) in a thread of its own; aalink makes its Link
object only inside a running asyncio loop, so the thread makes it in a private one. Every
``POLL_S`` it reads the session and turns it into the daemon's time line, the one the
scheduler's ``now()`` reads (``time.perf_counter()`` for the rtmidi backends, JACK frame time
through :meth:`~ostinato.daemon.sender.SenderProcess.now` for JACK): ``now()`` right before and
right after reading ``link.beat``, the beat taken at the midpoint (a pair more than
``SAMPLE_MAX_S`` apart — the thread was preempted in between — is read again). Link's clock
is another one (CLOCK_MONOTONIC_RAW on Linux) and never crosses over: only the pair does.
The follower hands the session to :meth:`Clock.on_link <ostinato.daemon.clock.Clock.on_link>`
only when something changed: the tempo, the playing state, or the beat predicted from the
last map drifted by more than ``DRIFT_S``. The clock opens the epochs: start, stop, and a
jump when a peer moves the beat.

Bar lines. The quantum is the bar (``beats_per_bar``): Link keeps the phase within the bar
the same for every peer. At each start the follower asks Link for beat 0 at the session's
start time, as Link's own examples do (``request_beat_at_start_playing_time``): bar 1 begins
on the session's first bar line at or after the moment a peer started it, for every peer
that does the same, and the song position is Link's beat from there on (negative during the
lead-in). This only changes this peer's beat numbering, never the session.

Start and stop (``link_start_stop``, on by default): Ostinato plays while the session plays
(a peer's transport, with start/stop sync) and stops when it stops, up to one poll late
(aalink does not give the time of the change). Off: it plays from the session's next bar
line after the daemon starts until it exits, whatever the peers' transports do.

Tempo. The Link object is made with ``--bpm``: alone, the session Ostinato starts has that
tempo; joining a session it takes the session's (Link: the older timeline wins). Ostinato
never changes the tempo of a session.

Cost on the real-time path (measured on the shared 2-core test machine). One thread, woken
~195 times a second (``POLL_S`` plus the wake-up), takes the daemon's interpreter lock for
each poll: two ``now()``, three reads of the session state through aalink (a mutex and a
copy in C++, ~0.1 µs each), a comparison; 25–30 µs of CPU a poll with the wake-up, 0.5–0.6 %
of one core. (It makes the Link object in a private asyncio loop, which aalink requires, but
polls with a plain sleep: a round of the loop costs ~50 µs more a poll.) In the end-to-end
test, with the maps it publishes, ~1 % of a core. A pure-Python loop standing in for
generation does 2–3 % less work per CPU second while it polls: each poll makes it hand the
lock over (within the 0.5 ms switch interval) and take it back, with the cache it loses. A
new map (a pipe write to the sender, a tempo for the recording) goes out when the drift
passes ``DRIFT_S``: on ``perf_counter()`` almost never (its rate and Link's clock's differ by
well under a part per million here); on JACK time whenever a SYNC moves the estimate of it
by more than that, 3–30 a second on the test machine, whose dummy driver wanders against the
system clock. aalink's scheduler thread wakes every millisecond in C++ without the
interpreter lock, and Link's network threads never take it. The note sender, a process of
its own, only sees the maps.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ostinato.daemon.clock import Clock
from ostinato.daemon.ports import PortError

log = logging.getLogger(__name__)

POLL_S = 0.005  # the session is read this often while it drives the clock
IDLE_S = 0.05  # … and this often otherwise (clock = auto, not joined; MIDI clock won)
PEERS_S = 0.1  # the number of peers is read this often
DRIFT_S = 20e-6  # a beat this far (in time) from the last map's prediction: a new map
SAMPLE_MAX_S = 30e-6  # now() before and after reading the beat at most this far apart
SAMPLE_TRIES = 5
START_TIMEOUT_S = 5.0


class LinkError(PortError):
    """Link cannot be used (aalink missing, or it failed to start); the message says why."""


def available() -> bool:
    """aalink can be imported (without importing it)."""
    return importlib.util.find_spec("aalink") is not None


class LinkFollower:
    """One Link peer following the session for ``clock``. ``now``: the daemon's time line.
    ``engaged``: hands the session to the clock from the start (``clock = "link"``); else
    only after :meth:`engage` (``clock = "auto"``, once a session with peers is seen)."""

    def __init__(
        self,
        clock: Clock,
        now: Callable[[], float],
        beats_per_bar: float,
        bpm: float,
        start_stop: bool = True,
        engaged: bool = True,
    ) -> None:
        self.clock, self.now = clock, now
        self.beats_per_bar, self.bpm, self.start_stop = float(beats_per_bar), float(bpm), start_stop
        self.peers = 0
        self.polls = 0  # reads of the session while engaged
        self.published = 0  # calls to clock.on_link
        self.resampled = 0  # beat reads taken again (preempted between the two now())
        self.cpu_s = 0.0  # the poll thread's CPU time so far
        self._engaged = engaged
        self._last: tuple[float, float, float, bool] | None = None  # (t, beat, bpm, playing)
        self._started_at = 0.0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- control (main thread) -----------------------------------------------------------------
    @property
    def engaged(self) -> bool:
        return self._engaged

    def engage(self) -> None:
        """From the next poll on, the session drives the clock."""
        self._engaged = True

    def start(self) -> None:
        """Make the peer and join (the network sees it from now on); LinkError if it cannot."""
        if not available():
            raise LinkError(
                "Ableton Link needs the Python package aalink: "
                "pip install 'ostinato[link]' (aalink, GPL-licensed)"
            )
        self._thread = threading.Thread(target=self._run, name="ostinato-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise LinkError("Ableton Link did not start")
        if self._error is not None:
            raise LinkError(f"Ableton Link did not start: {self._error}") from self._error

    def close(self, timeout: float = 2.0) -> None:
        """Leave the session (Link disabled) and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict:
        elapsed = max(1e-9, time.monotonic() - self._started_at) if self._started_at else 0.0
        return {
            "peers": self.peers, "polls": self.polls, "published": self.published,
            "resampled": self.resampled, "cpu_s": self.cpu_s,
            "cpu_per_s": self.cpu_s / elapsed if elapsed else 0.0, "seconds": elapsed,
        }  # fmt: skip

    # -- the Link thread -----------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        link = None
        try:
            link = loop.run_until_complete(self._make())
            self._ready.set()
            self._follow(link)
        except BaseException as exc:  # said in the log; start() raises it if it was early
            self._error = exc
            if self._ready.is_set():
                log.exception("Ableton Link stopped: the clock no longer follows the session")
        finally:
            if link is not None:
                link.enabled = False
            del link
            loop.close()
            self._ready.set()

    async def _make(self) -> Any:
        import aalink  # only here: a daemon without Link never loads it

        link = aalink.Link(self.bpm)
        link.quantum = self.beats_per_bar
        link.start_stop_sync_enabled = self.start_stop
        link.enabled = True
        return link

    def _follow(self, link: Any) -> None:
        """Poll until closed. A plain timed sleep, not the asyncio loop (which aalink needs
        only to make the Link object, and for callbacks, not used): a round of the loop costs
        ~50 µs of interpreter time more per poll."""
        self._started_at = time.monotonic()
        cpu0 = time.thread_time()
        next_peers = 0.0
        while not self._stop.is_set():
            mono = time.monotonic()
            if mono >= next_peers:
                next_peers = mono + PEERS_S
                self._count_peers(link.num_peers)
            active = self._engaged and self.clock.source != "midi"
            if active:
                self._poll(link)
            else:
                self._last = None  # when it drives the clock again: a new start
            self.cpu_s = time.thread_time() - cpu0
            time.sleep(POLL_S if active else IDLE_S)

    def _count_peers(self, peers: int) -> None:
        if peers != self.peers:
            if peers and not self.peers:
                log.info("Ableton Link: joined a session with %d other peer%s", peers,
                         "" if peers == 1 else "s")  # fmt: skip
            elif not peers:
                log.info("Ableton Link: the other peers left; the session goes on alone")
            self.peers = peers

    def _sample(self, link: Any) -> tuple[float, float] | None:
        """(time on the daemon's line, Link's beat then), or None if always preempted."""
        now = self.now
        for _ in range(SAMPLE_TRIES):
            before = now()
            beat = link.beat
            after = now()
            if after - before <= SAMPLE_MAX_S:
                return 0.5 * (before + after), beat
            self.resampled += 1
        return None

    def _poll(self, link: Any) -> None:
        self.polls += 1
        playing = bool(link.playing) if self.start_stop else True
        last = self._last
        if playing and (last is None or not last[3]):
            # a start (or the first look): bar 1 on the session's first bar line at or after
            # the start (or, without start/stop sync, after now)
            if self.start_stop:
                link.request_beat_at_start_playing_time(0.0)
            else:
                link.request_beat(0.0)
        sample = self._sample(link)
        if sample is None:
            return  # again at the next poll (a start is requested again: the same answer)
        t, beat = sample
        bpm = float(link.tempo)
        if last is not None and last[2] == bpm and last[3] == playing:
            if not playing:
                return
            t0, beat0, _, _ = last
            if abs(beat - beat0 - (t - t0) * bpm / 60.0) * 60.0 / bpm <= DRIFT_S:
                return
        self._last = (t, beat, bpm, playing)
        self.published += 1
        self.clock.on_link(t, beat, bpm, playing)
