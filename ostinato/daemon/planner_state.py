"""The state the bar planner's parts share, and the small primitives they all use.

:class:`~ostinato.daemon.planner.BarPlanner` is one object made of parts, each in a module of
its own: the per-bar cycle (:mod:`ostinato.daemon.planner`), which bars are played and from what
(:mod:`ostinato.daemon.bar_sources`), re-planning within the bar (:mod:`ostinato.daemon.replan`),
the musician's take actions (:mod:`ostinato.daemon.take_actions`) and following the transport
(:mod:`ostinato.daemon.transport_follow`). They all work on the same state under the same lock.
:class:`PlannerState`, the base of every part, declares that state (``BarPlanner.__init__``
sets it; what only one part uses is declared by that part) and holds what the parts call
across modules: a bar's tokens from recorded notes, queueing one note of a take, the marker
hooks and where the transport is. The planner's context — the bars heard, fed and committed to
the engine — stays the planner's own: it is only declared here.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import numpy as np
from symusic import Note, Score, Track

from ostinato.daemon.clock import Clock, TempoMap
from ostinato.daemon.loop import LoopInfo, PassMemory, PlayedBar
from ostinato.daemon.recorder import OSTINATO, RecordedNote, Recorder
from ostinato.daemon.scheduling import FALLBACK_MARGIN_S, NoteScheduler
from ostinato.daemon.takes import Kept, Notes, Take, TakeAction
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM, Meter, score_to_ids, set_meter
from ostinato.settings import GenerationSettings

log = logging.getLogger(__name__)

TPQ = 480
# (beat, text): a take action ("regenerate bar 5") or the take a bar is heard from
Marker = Callable[[float, str], object]


class PlannerState:
    """The bar planner's shared state and primitives (see the module docstring): the base of
    each of its parts."""

    # -- what it plays with --
    engine: Engine
    clock: Clock
    scheduler: NoteScheduler
    recorder: Recorder
    settings: GenerationSettings  # replaced whole when the musician changes one
    beats_per_bar: float
    meter: Meter  # the bar's meter (n, d): bars carry its TimeSig token where the model has them
    _time_sig: int | None  # the meter's TimeSig token; None: a legacy vocabulary
    now: Callable[[], float]  # the time line of the clock's map (JACK frame time or perf_counter)
    lock: threading.RLock  # guards the recorder and the session state
    _wake: threading.Event  # wakes the planner's thread early (a transport event, a take action)

    # -- timing --
    lookahead_s: float  # a bar's cycle starts this long (and latency_s) before it: adapted
    min_lookahead_s: float
    latency_s: float  # notes go out this much earlier: so must bars
    # the sender's output cycle (JACK's period; 0 for the rtmidi backends): a note due in a
    # cycle is written when the cycle begins, so it can be taken back only before that
    cycle_s: float
    _model_bar_ms: deque[float]  # cycles that ran the model

    # -- the transport --
    _epoch: int  # the transport epoch the session plays in
    _offset_beats: float  # sum of the whole-bar shifts of the jumps so far
    _broken_epoch: int  # the last epoch whose queued notes were dropped
    _urgent_bar: int | None  # a bar to prepare at once (after a jump)
    _landing_bar: int  # the bar the last jump or start landed in
    _prepared_bar: int  # last bar the cycle ran for
    _stopped_beat: float  # where the transport last stopped
    _restart: bool  # the engine's context is reset before the next cycle

    # -- what plays --
    answering_until: int  # last bar of the current answer (continue mode)
    _answer: tuple[int, list[PlayedBar]] | None  # first bar, the phrase's bars
    loop: LoopInfo | None  # the loop played over (see ostinato.daemon.loop)
    passes: PassMemory
    kept: Kept  # what the musician kept (see ostinato.daemon.takes)
    _takes: dict[int, Take]  # the last bars prepared, by bar on the timeline
    _retake_bars: dict[int, TakeAction]  # bars to be new takes, and who asked
    markers: list[Marker]  # called with (beat, text), see ostinato.daemon.take_actions
    _marks: deque[tuple[float, str]]  # for the hooks, outside the lock

    # -- the planner's context (its own: see ostinato.daemon.planner) ---------------------
    def _hear(self, bar: int, epoch: int) -> None:
        """``bar`` of ``epoch`` is being heard now: the bars before it are complete."""
        raise NotImplementedError

    def _complete_bars(
        self, current: int, epoch: int, landed: bool = False
    ) -> list[tuple[list[RecordedNote], int, int]]:
        """(lock held) The notes of the bars heard before ``current``, not fed yet — (notes,
        bar, epoch) — taken off the list."""
        raise NotImplementedError

    def _feed(
        self, complete: list[tuple[list[RecordedNote], int, int]], partial: np.ndarray | None
    ) -> None:
        """Feed the complete bars to the engine and commit them, then feed ``partial``."""
        raise NotImplementedError

    # -- bars and notes --------------------------------------------------------------------
    def bar_tokens(self, notes: list[RecordedNote], bar: int) -> np.ndarray:
        """Tokens of one bar (starting with its Bar token, then its TimeSig token where the
        model has them) from recorded notes."""
        vocab = self.engine.vocab
        if not notes:
            head = [vocab.bar_id] if self._time_sig is None else [vocab.bar_id, self._time_sig]
            return np.array(head, dtype=np.int64)
        bar_ticks = round(self.beats_per_bar * TPQ)
        latest = bar_ticks - TPQ // 16  # keep onsets off the next bar line after rounding
        score = Score(TPQ)
        if self._time_sig is not None:
            set_meter(score, self.meter)
        tracks: dict[int, Track] = {}
        for n in notes:
            track = tracks.get(n.program)
            if track is None:
                is_drum = n.program == DRUM_PROGRAM
                track = Track(program=max(0, n.program), is_drum=is_drum)
                tracks[n.program] = track
            tick = min(latest, max(0, round((n.start_beats - bar * self.beats_per_bar) * TPQ)))
            track.notes.append(Note(tick, max(1, round(n.duration_beats * TPQ)), n.pitch,
                                    n.velocity))  # fmt: skip
        score.tracks.extend(tracks.values())
        ids = score_to_ids(self.engine.tokenizer, score).astype(np.int64)
        bars = np.flatnonzero(ids == vocab.bar_id)
        return ids[: bars[1]] if len(bars) > 1 else ids

    def _played_from(self, notes: Notes) -> PlayedBar:
        recorded = [RecordedNote(off, duration, pitch, velocity, program, OSTINATO)
                    for off, duration, program, pitch, velocity in notes]  # fmt: skip
        return PlayedBar(self.bar_tokens(recorded, 0), list(notes))

    def _schedule(self, take: Take | None, start: float, shift: float, bar_start: float,
                  duration: float, program: int, pitch: int, velocity: int,
                  played: list[RecordedNote]) -> None:  # fmt: skip
        """Queue one note of ``take`` (lock held): the scheduler, the recorder (with the note's
        id, so a take thrown away can be forgotten), the bar as played, the take."""
        note_id = self.scheduler.schedule_note(start, duration, program, pitch, velocity)
        self.recorder.add_generated(start, duration, pitch, velocity, program, note_id)
        played.append(RecordedNote(start - shift, duration, pitch, velocity, program, OSTINATO))
        if take is not None:
            take.ids.append(note_id)
            take.notes.append((start - shift - bar_start, duration, program, pitch, velocity))

    # -- markers -----------------------------------------------------------------------
    def _mark(self, beat: float, text: str) -> None:
        self._marks.append((beat, text))

    def _flush_marks(self) -> None:
        """Tell the marker hooks (outside the lock: a hook may take locks of its own)."""
        while self._marks:
            try:
                beat, text = self._marks.popleft()
            except IndexError:  # another thread took the last one
                return
            for hook in list(self.markers):
                try:
                    hook(beat, text)
                except Exception:  # a hook must not stop the music
                    log.exception("marker hook failed on %r", text)

    # -- time --------------------------------------------------------------------------
    def _playing(self) -> tuple[TempoMap, float] | None:
        """The map and the beat now, while the transport runs (never with the lock held: the
        clock calls the session under its own lock)."""
        tempo, _, running = self.clock.state()
        if tempo is None or not running:
            return None
        return tempo, tempo.beat_at(self.now())

    def _begun(self, tempo: TempoMap | None, bar: int) -> bool:
        """Whether ``bar``'s first notes are already on their way (or the transport stopped)."""
        if tempo is None:
            return True
        start = tempo.time_at(bar * self.beats_per_bar)
        return self.now() >= start - self.latency_s - FALLBACK_MARGIN_S

    def _time_to_generate_s(self) -> float:
        """How long before a bar begins it can still be generated again: 1.5 × the recent
        median of a whole cycle that ran the model (the lookahead before any was measured)."""
        recent = list(self._model_bar_ms)
        typical = float(np.median(recent)) / 1000.0 if recent else self.lookahead_s
        return max(self.min_lookahead_s, 1.5 * typical) + self.latency_s + FALLBACK_MARGIN_S
