"""The bar planner: the per-bar cycle (DESIGN §5) and the three modes.

At ``next bar start − lookahead`` the generation thread:

1. rolls the engine back to the last *committed* token (dropping the partial bar and the
   bar it generated speculatively last time),
2. feeds the bars that are now complete (the musician's notes and what Ostinato played) and
   commits them — complete bars stay in the KV cache from then on,
3. feeds the bar still being played as it stands,
4. if the mode wants it, generates the next bar and hands each note to the scheduler the
   moment its last token is sampled (the downbeat first).

The lookahead adapts to the measured time a whole bar takes (p99 × 1.2 + 20 ms, at most half
a bar), so the downbeat's notes are all ready when it comes. Notes that would still be late
are dropped by the scheduler and counted as deadline misses.

Modes: ``continue`` answers ``bars`` bars after the musician's phrase (when the phrase has
lasted ``phrase_bars`` bars, or when a bar passes in silence after playing); ``jam`` plays
along every bar on the enabled programs; ``loop`` plays along on the musician's own
instruments, varying the looping clip each pass.

:class:`BarPlanner` is the bar logic, and the one place that decides what plays next: the
thread (:meth:`BarPlanner._run`) runs each bar's plan and, with the ``commit`` setting, its
re-plans. Its other jobs have modules of their own, as parts of the same object (one lock, one
state): which bars are played and from what (:mod:`ostinato.daemon.bar_sources`), re-planning
within the bar (:mod:`ostinato.daemon.replan`), the musician's take actions
(:mod:`ostinato.daemon.take_actions`) and following the transport
(:mod:`ostinato.daemon.transport_follow`). The state they share and the primitives they all
call (a bar's tokens, queueing a note, the marker hooks, where the transport is) are in their
common base, :class:`~ostinato.daemon.planner_state.PlannerState`.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from ostinato.daemon.bar_sources import BarSources
from ostinato.daemon.clock import Clock
from ostinato.daemon.loop import LoopFollower, PassMemory, PlayedBar
from ostinato.daemon.recorder import HUMAN, RecordedNote, Recorder
from ostinato.daemon.replan import Replanning, Replans
from ostinato.daemon.scheduling import FALLBACK_MARGIN_S, NoteScheduler
from ostinato.daemon.take_actions import TakeDesk
from ostinato.daemon.takes import (
    HISTORY,
    RESEED,
    TAKE_VARIATION,
    Kept,
    Plan,
    Take,
)
from ostinato.daemon.transport_follow import FollowsTransport
from ostinato.engine.accompany import (
    bar_header,
    jam_parts,
)
from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine
from ostinato.model.grammar import (
    BUDGET_BARS,
    JAM_FLOOR,
    GrammarConfig,
    note_budget,
    note_floor,
    played_ranges,
)
from ostinato.model.key import key_lock_classes
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    Meter,
    meter_of_beats,
)
from ostinato.settings import GenerationSettings

log = logging.getLogger(__name__)

CONTEXT_BARS = 4  # bars fed after a reset
MAX_UNCOMMITTED = 16  # bars heard and not yet fed, kept at most (a cycle that fell behind)
# positions are renumbered between bars when this many more tokens (what a cycle feeds and
# generates at most) could take them past the engine's limit: never inside a bar
RENUMBER_HEADROOM = 4096
# spare time (a style or guidance prepared): used in slices of at most SPARE_SLICE_S, never
# closer than SPARE_MARGIN_S to the next bar's deadline, not at all with less than SPARE_MIN_S
SPARE_SLICE_S, SPARE_MARGIN_S, SPARE_MIN_S = 0.12, 0.02, 0.05


class BarPlanner(TakeDesk, FollowsTransport, BarSources, Replanning):
    """The bar logic: one place that decides what plays next (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        scheduler: NoteScheduler,
        recorder: Recorder,
        settings: GenerationSettings,
        beats_per_bar: float = 4.0,
        lookahead_ms: float = 250.0,
        latency_ms: float = 0.0,
        now: Callable[[], float] = time.perf_counter,
        meter: Meter | None = None,
    ) -> None:
        # What the parts share is declared, with what each is, in PlannerState; what one part
        # alone uses, in that part's class.
        self.engine, self.clock, self.scheduler, self.recorder = engine, clock, scheduler, recorder
        self.settings = settings
        self.beats_per_bar = beats_per_bar
        self.meter = meter or meter_of_beats(beats_per_bar)
        self._time_sig = engine.vocab.meter_token(self.meter)
        engine.set_style(settings.style)
        engine.set_guidance(settings.guidance)
        self.lookahead_s = lookahead_ms / 1000.0
        self.latency_s = latency_ms / 1000.0
        self.cycle_s = 0.0
        self.now = now
        self.min_lookahead_s = 0.03
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.bar_ms: deque[float] = deque(maxlen=1024)
        self._model_bar_ms = deque(maxlen=16)
        self.bar_margin_ms: deque[float] = deque(maxlen=4096)  # bar start − bar fully ready
        self.bar_log: deque[tuple[int, float, float, int, float, float]] = deque(maxlen=4096)
        self.answering_until = -1
        self.bars_generated = 0
        self.fallbacks = 0  # bars played from an earlier bar because generation was late
        self.loop = None
        self.loops = LoopFollower(beats_per_bar)
        self.passes = PassMemory()
        # the musician's recent bars that held notes: (instruments, notes), for the note budget
        self._human_bars: deque[tuple[frozenset[int], int]] = deque(maxlen=BUDGET_BARS)
        self._answer = None
        self.jumps_followed = 0
        self._epoch = recorder.epoch = clock.epoch
        self._offset_beats = 0.0
        self._broken_epoch = -1
        self._urgent_bar = None
        self._landing_bar = -1
        self._release_held_at = None
        self._prepared_bar = -1
        self._stopped_beat = 0.0
        # -- takes (see ostinato.daemon.takes) --
        self.markers = []
        self.takes = 0
        self.last_take = ""
        self.kept = Kept()
        self._takes = {}
        self._history = deque(maxlen=HISTORY)
        self._retake_bars = {}
        self._retake_places = {}
        self._retakes = 0  # new takes generated (each has a seed of its own)
        self._marks = deque()
        self.replans = Replans()
        self._reset_context()
        clock.listeners.append(self._on_transport)

    # -- context ---------------------------------------------------------------------------
    def _reset_context(self) -> None:
        self.engine.reset()
        self._committed_len = self.engine.context_length
        self._committed_dropped = self.engine.dropped_front
        self._heard: list[tuple[int, int]] = []  # (bar, epoch) heard, not committed, in order

    def _follow_style(self) -> None:
        """The style and guidance settings, to the engine, at a bar line. A new style (or
        guidance turned on) needs the whole context computed again (0.6 s for the bundled
        model): it is prepared in the planner's spare time (:meth:`spare_time`), the bars
        meanwhile planned as before, and takes over here at the first bar line after it is
        complete (the style token after BOS replaced: the context and what was committed
        stay)."""
        settings, engine = self.settings, self.engine
        engine.adopt_prepared()
        engine.prepare_style(settings.style)
        if settings.guidance != engine.guidance:
            engine.prepare_guidance(settings.guidance)

    def spare_time(self, budget_s: float) -> bool:
        """Use up to ``budget_s`` of time no bar needs (before the next bar's deadline) to
        prepare a new style or guidance. Returns whether any was used."""
        return self.engine.prepare_step(budget_s)

    def _programs(self) -> tuple[int, ...]:
        if self.settings.programs is not None and self.settings.mode != "loop":
            return self.settings.programs
        with self.lock:
            played = {n.program for n in self.recorder.notes if n.source == "human"}
        return tuple(sorted(played)) or (DRUM_PROGRAM,)

    def _note_budget(self, programs: tuple[int, ...]) -> int | None:
        """The most notes the next bar may hold: ``density`` × the musician's busiest recent
        bar (see :func:`note_budget`); None: no budget."""
        return note_budget(list(self._human_bars), programs, self.settings.density)

    def _note_floor(self, programs: tuple[int, ...]) -> int | None:
        """Jam mode: the fewest notes the next bar may hold, ``JAM_FLOOR`` × the musician's
        mean recent bar on the same instruments (see :func:`note_floor`), so a partner left
        alone does not fade out; None in the other modes (an answer may rest, a loop has its
        passes) and with ``density`` 0 (no limits at all)."""
        if self.settings.mode != "jam" or self.settings.density == 0:
            return None
        return note_floor(list(self._human_bars), programs, JAM_FLOOR)

    # -- the cycle -------------------------------------------------------------------------
    def run_cycle(self, next_bar: int, now_beat: float, epoch: int | None = None) -> int:
        """Prepare ``next_bar``: commit complete bars, feed the partial one, maybe generate.
        ``epoch``: the transport epoch ``next_bar`` was planned in (a jump since then: nothing
        is done, the caller plans again). Returns the number of notes scheduled."""
        t0 = self.now()
        current = next_bar - 1
        with self.lock:  # copy the notes; tokenize outside the lock (Stop must not wait)
            if epoch is not None and epoch != self._epoch:
                return 0
            epoch0, offset0 = self._epoch, self._offset_beats
            self._prepared_bar = next_bar  # a jump from now on moves it
            # a bar prepared at the moment of a jump has no bar of the new pass before it:
            # what was heard before the jump is all complete, nothing is partial
            landed = current < self._landing_bar
            complete_notes = self._complete_bars(current, epoch0, landed)
            partial_notes = None if landed else self.recorder.bar_notes(current, now_beat)
            self.recorder.prune(current)
        partial = None if partial_notes is None else self.bar_tokens(partial_notes, current)
        self._feed(complete_notes, partial)
        t_fed = self.now()
        if not self.wants_bar(next_bar):
            return 0
        with self.lock:
            take = self._open_take(next_bar, epoch0)
        if take is None:  # the take an undo brought back is queued there
            return 0
        bar_start = next_bar * self.beats_per_bar
        late_at: float | None = None
        t_first = t_fed
        if take.source is not None:  # a kept bar: played again as it was, no model
            played = self._play_from(take, next_bar, epoch0, offset0, 0.0, take.source, [])
            if played is not None:
                self._finish(take, next_bar, epoch0, take.source)
            count = played or 0
        else:
            count, late_at, t_first = self._generate(take, next_bar, epoch0, offset0, t_fed)
        done = self.now()
        self.bar_ms.append((done - t0) * 1000.0)
        if take.source is None:
            self._model_bar_ms.append((done - t0) * 1000.0)
        tempo = self.clock.snapshot()
        if tempo is not None:
            margin = (tempo.time_at(bar_start) - done) * 1000.0
            self.bar_margin_ms.append(margin)
            # bar, hand-over ms, generation ms, notes, margin ms (bar ready; first note
            # ready): what a late bar spent
            first_margin = (tempo.time_at(bar_start) - t_first) * 1000.0
            self.bar_log.append((next_bar, (t_fed - t0) * 1000.0, (done - t_fed) * 1000.0,
                                 count, margin, first_margin))  # fmt: skip
            if margin < 0 and late_at is None:
                log.info(
                    "bar %d was ready %.0f ms after it began (hand-over %.0f ms, %d notes in "
                    "%.0f ms, started %.0f ms ahead)",
                    next_bar + 1, -margin, (t_fed - t0) * 1000.0, count,
                    (done - t_fed) * 1000.0, (tempo.time_at(bar_start) - t0) * 1000.0,
                )  # fmt: skip
        self.bars_generated += 1
        self._adapt_lookahead()
        self._flush_marks()
        return count

    def _complete_bars(
        self, current: int, epoch: int, landed: bool = False
    ) -> list[tuple[list[RecordedNote], int, int]]:
        """(lock held) ``current`` is being heard: the notes of the bars heard before it, not
        fed yet — (notes, bar, epoch) — taken off the list (``landed``: ``current`` is not
        heard yet, everything before is complete)."""
        if not landed:
            self._hear(current, epoch)
        n_complete = len(self._heard) - (0 if landed else 1)
        complete = [(self.recorder.bar_notes(b, epoch=e), b, e)
                    for b, e in self._heard[:n_complete]]  # fmt: skip
        del self._heard[:n_complete]
        return complete

    def _feed(
        self, complete: list[tuple[list[RecordedNote], int, int]], partial: np.ndarray | None
    ) -> None:
        """Make the engine's context the committed tokens, then the complete bars (committed
        from here on), then ``partial`` (the bar under way as far as it is known). What the
        context already holds after the committed tokens is kept as far as it is the same (a
        re-plan's bar so far, Ostinato's notes as they were sampled): only the rest is fed, so
        that a re-plan late in a bar does not compute the whole bar again."""
        engine = self.engine
        complete_tokens = [self.bar_tokens(notes, b) for notes, b, _ in complete]
        # Where the committed tokens end now: the window may have slid since (dropping the
        # oldest bars from the front) while the last cycle fed and generated.
        committed = self._committed_len - (engine.dropped_front - self._committed_dropped)
        if committed < engine.prefix_length:  # the slide reached past them: restart
            engine.reset()
            committed = engine.context_length
        parts = [*complete_tokens, *(() if partial is None else (partial,))]
        wanted = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        held = engine.context_tokens()[committed:]
        n = min(len(held), len(wanted) - 1)  # the last one is fed again: its logits are needed
        differ = np.flatnonzero(held[:n] != wanted[:n]) if n > 0 else np.zeros(1, np.int64)
        same = int(differ[0]) if len(differ) else n
        engine.truncate(committed + same)
        engine.renumber_ahead(RENUMBER_HEADROOM)  # here, between bars, not inside one
        self._follow_style()
        n_complete = sum(len(t) for t in complete_tokens)
        if same < n_complete:
            engine.feed(wanted[same:n_complete])
            self._committed_len = engine.context_length
        else:
            self._committed_len = committed + n_complete
        self._committed_dropped = engine.dropped_front
        if len(wanted) > max(same, n_complete):
            engine.feed(wanted[max(same, n_complete) :])
        self._follow_loop(complete)

    def _generate(
        self, take: Take, next_bar: int, epoch0: int, offset0: float, t_fed: float
    ) -> tuple[int, float | None, float]:
        """Generate ``next_bar`` note by note into the queue (the rest from its fallback if
        generation falls behind). Returns the notes scheduled, where in the bar it fell
        behind (None: it did not) and when the first note was ready."""
        engine, settings = self.engine, self.settings
        context = engine.context_tokens()  # one copy for the key, the ranges and the parts
        scale = key_lock_classes(engine.vocab, context) if settings.key_lock else None
        programs = self._programs()
        seed = None if settings.seed is None else settings.seed + next_bar
        besides = None
        if take.kind == "retake":  # a new take: a seed of its own, never the one thrown away
            self._retakes += 1
            if seed is not None:
                seed += RESEED * self._retakes
            old = take.action.old if take.action is not None else None
            besides = old.played if old is not None else None
        refs, variation = self._references(next_bar, besides)
        sampling = self._sampling(next_bar, refs)
        sampler = engine.sampler(sampling, seed)
        jam = settings.mode == "jam" and settings.density != 0
        grammar = GrammarConfig(
            programs=programs, beats_per_bar=self.beats_per_bar, scale_pitch_classes=scale,
            pitch_ranges=played_ranges(engine.vocab, context), meter=self.meter,
            max_notes=self._note_budget(programs),
            min_notes=self._note_floor(programs),
            header=bar_header(engine.vocab, programs, refs if settings.mode != "jam" else (),
                              self._followed()),
            parts=jam_parts(engine.vocab, context, programs, settings.density)
            if jam else (),
            bass_pitch_classes=self._harmony_coming(next_bar)
            if settings.mode == "jam" and settings.key_lock else None,
        )  # fmt: skip
        if take.kind == "retake":
            variation = max(variation, TAKE_VARIATION)
        free = settings.mode == "jam"
        prior = CopyPrior(engine.vocab, [refs], variation, free_pitches=free) if refs else None
        take.plan = Plan(grammar, tuple(refs), variation, free, seed, sampling)
        take.heard, take.stale_from = self._onsets_heard(next_bar), None
        bar_start = next_bar * self.beats_per_bar
        count = 0
        t_first = t_fed
        tokens: list[int] = []
        played: list[RecordedNote] = []
        late_at: float | None = None  # where in the bar generation fell behind the playhead
        shift = 0.0
        margin = FALLBACK_MARGIN_S + self.latency_s
        fallback = self._fallback_source(next_bar)
        # the fallback's onsets, sorted once: per note only a bisect
        onsets = sorted(off for off, *_ in fallback.notes) if fallback is not None else []
        t_gen = self.now()
        notes = engine.generate(1, sampler, grammar, tokens, prior)
        for note in notes:
            start = bar_start + note.start_beats
            with self.lock:  # checked per note: a jump may come while the bar is generated
                if take.abandoned:
                    break  # thrown away (a regenerate, an undo): so is the rest of it
                if self._epoch != epoch0:
                    if self._broken_epoch > epoch0:
                        break  # the queue of the old timeline was dropped: so is the rest
                    shift = self._offset_beats - offset0  # moved with the jump
                    start += shift
                tempo = self.clock.snapshot()
                now = self.now()
                if tempo is not None and now > tempo.time_at(start) - margin:
                    late_at = note.start_beats  # it cannot be sent in time: fall back
                    break
                self._schedule(take, start, shift, bar_start, note.duration_beats, note.program,
                               note.pitch, note.velocity, played)  # fmt: skip
            if count == 0:
                t_first = now
            count += 1
            k = bisect.bisect_right(onsets, note.start_beats + 1e-9)
            if k < len(onsets) and tempo is not None:
                # falling behind: the fallback's next note would be missed at this pace
                per_note = 1.5 * (now - t_gen) / count
                if now + per_note > tempo.time_at(bar_start + onsets[k] + shift) - margin:
                    late_at = note.start_beats + 1e-6
                    break
        notes.close()
        if late_at is not None:
            count += self._fall_back(next_bar, epoch0, offset0, late_at, played, take)
        elif tokens and tokens[-1] == engine.vocab.bar_id:
            self._finish(take, next_bar, epoch0, PlayedBar(
                np.asarray([engine.vocab.bar_id, *tokens[:-1]], dtype=np.int64),
                [(n.start_beats - bar_start, n.duration_beats, n.program, n.pitch, n.velocity)
                 for n in played],
            ))  # fmt: skip
        return count, late_at, t_first

    # -- the loop ----------------------------------------------------------------------
    def _follow_loop(self, complete: list[tuple[list[RecordedNote], int, int]]) -> None:
        """Complete bars heard: the musician's part of each, and the loop they make."""
        looping = self.settings.mode == "loop"
        heard = []  # tokenized here, outside the lock (the input thread takes it per note)
        for notes, bar, epoch in complete:
            human = [n for n in notes if n.source == HUMAN]
            heard.append((bar, epoch, human, self._played_bar(human, bar) if looping else None))
        with self.lock:  # the take actions read the loop from the control thread
            for bar, epoch, human, played in heard:
                if human:
                    self._human_bars.append((frozenset(n.program for n in human), len(human)))
                self.loops.heard(bar, epoch, human)
                if played is not None:
                    self.passes.heard(bar, epoch, played)
            self._update_loop(log.info)

    def follow_loop_setting(self) -> None:
        """``loop_bars`` was changed: the loop is the one set from now on, not from the next
        bar heard (a keep pressed just after setting it counts places in the new loop). Logged
        at debug level: a knob turned through it changes it at every step."""
        with self.lock:
            self._update_loop(log.debug)

    def _update_loop(self, say: Callable[..., None]) -> None:
        """(lock held) The loop from the setting, the DAW's jumps or the repetition heard."""
        loop = self.loops.update(self.clock.loop, self.settings.loop_bars)
        if loop != self.loop:
            say("loop: %s", "none" if loop is None else
                f"{loop.bars} bars from bar {loop.start + 1} ({loop.source})")  # fmt: skip
        self.loop = loop

    def _fall_back(self, bar: int, epoch: int, offset: float, late_at: float,
                   played: list[RecordedNote], take: Take | None = None) -> int:  # fmt: skip
        """Generation of ``bar`` fell behind the playhead at ``late_at`` beats into the bar:
        the rest of it is played from :meth:`_fallback_source`. Returns the notes scheduled."""
        source = self._fallback_source(bar)
        if take is None:
            with self.lock:
                take = self._takes.get(bar)
                if take is None or take.memory != (bar, epoch) or take.abandoned:
                    take = self._takes[bar] = Take(bar, (bar, epoch))
        take.plan = None  # its rest is an earlier bar's: not re-planned
        count = self._play_from(take, bar, epoch, offset, late_at, source, played)
        if count is None:
            return 0
        with self.lock:
            self.fallbacks += 1
            self._mark(bar * self.beats_per_bar + late_at, f"fallback bar {bar + 1}")
        log.warning(
            "bar %d: generation fell behind %.2f beats into the bar; played the rest from %s "
            "(%d notes)", bar + 1, late_at,
            "an earlier bar" if source else "nothing (no bar played yet)", count,
        )  # fmt: skip
        self._finish(take, bar, epoch, self._played_bar(played, bar))
        return count

    def _play_from(self, take: Take | None, bar: int, epoch: int, offset: float, late_at: float,
                   source: PlayedBar | None, played: list[RecordedNote]) -> int | None:  # fmt: skip
        """Queue ``source``'s notes from ``late_at`` beats into ``bar`` on (those still in
        time) as ``take``'s. Returns the notes scheduled; None when the queue of ``epoch``'s
        timeline was dropped meanwhile."""
        bar_start = bar * self.beats_per_bar
        count = 0
        margin = FALLBACK_MARGIN_S + self.latency_s
        with self.lock:
            if self._epoch != epoch and self._broken_epoch > epoch:
                return None
            shift = self._offset_beats - offset
            tempo = self.clock.snapshot()
            for off, duration, program, pitch, velocity in source.notes if source else ():
                start = bar_start + off + shift
                if off < late_at - 1e-9 or tempo is None:
                    continue
                if self.now() > tempo.time_at(start) - margin:
                    continue  # already gone by
                if take is not None and take.abandoned:
                    break
                self._schedule(take, start, shift, bar_start, duration, program, pitch, velocity,
                               played)  # fmt: skip
                count += 1
        return count

    # -- time --------------------------------------------------------------------------
    def _adapt_lookahead(self) -> None:
        """Start early enough that the whole bar is usually generated before it begins
        (p99 of recent bar times × 1.2 + 20 ms), but never more than half a bar early."""
        if len(self.bar_ms) >= 4:
            p99 = float(np.percentile(list(self.bar_ms)[-64:], 99)) / 1000.0
            tempo = self.clock.snapshot()
            half_bar = 0.5 * self.beats_per_bar * (tempo.seconds_per_beat if tempo else 0.5)
            self.lookahead_s = min(half_bar, max(self.min_lookahead_s, 1.2 * p99 + 0.02))

    def warm_up(self) -> None:
        """Run tokenization and one generated bar once, so the first real bar does not pay
        for first calls (allocations, lazy imports); then start from a clean context."""
        notes = [RecordedNote(0.0, 0.5, 36, 100, DRUM_PROGRAM, "human")]
        self.engine.feed(self.bar_tokens(notes, 0))
        sampler = self.engine.sampler(self.settings.sampling, 0)
        grammar = GrammarConfig(programs=(DRUM_PROGRAM,), meter=self.meter)
        for _ in self.engine.generate(1, sampler, grammar):
            pass
        self.engine.feed(self.bar_tokens(notes, 1))  # and a bar completed from inside it
        position = self.engine.grammar(grammar).positions_per_bar // 2
        for _ in self.engine.complete_bar(sampler, grammar, position):
            pass
        self._reset_context()

    # -- thread ----------------------------------------------------------------------------
    def _hear(self, bar: int, epoch: int) -> None:
        """``bar`` of ``epoch`` is being heard now: the bars before it are complete."""
        heard = self._heard
        if not heard:
            first = max(0, bar - CONTEXT_BARS)  # after a reset: the last bars as context
            heard.extend((b, epoch) for b in range(first, bar))
        elif heard[-1][1] == epoch and heard[-1][0] < bar - 1:  # cycles that did not run
            heard.extend((b, epoch) for b in range(heard[-1][0] + 1, bar))
        if not heard or heard[-1] != (bar, epoch):
            heard.append((bar, epoch))
        del heard[:-MAX_UNCOMMITTED]

    def start(self) -> None:
        self._restart = True
        self._thread = threading.Thread(target=self._run, name="ostinato-session", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.clock.check_silence(self.now()):  # a Stop that never came
                continue
            tempo, epoch, running = self.clock.state()
            if tempo is None or not running:
                self._release_if_stopped()
                self._wake.wait(0.02)
                self._wake.clear()
                continue
            if self._restart:
                self._restart = False
                self._reset_context()
            now = self.now()
            beat = tempo.beat_at(now)
            with self.lock:
                urgent = self._urgent_bar if epoch == self._epoch else None
                offset = self._offset_beats
            under_way = math.floor(beat / self.beats_per_bar)
            if urgent is None and 0 <= self._prepared_bar < under_way and self.bars_generated:
                self._missed(under_way, beat, epoch, offset)  # the last cycle ran over it
            next_bar = math.floor(beat / self.beats_per_bar) + 1
            if urgent is not None and urgent > self._prepared_bar:
                next_bar = urgent
            elif next_bar <= self._prepared_bar:
                next_bar = self._prepared_bar + 1
            bar_start = tempo.time_at(next_bar * self.beats_per_bar)
            deadline = bar_start - self.lookahead_s - self.latency_s
            if now < deadline and next_bar != urgent:
                replan = self._replan_due(tempo, beat, epoch)
                if replan is not None:
                    try:
                        bar, point, until = replan
                        self.replan(bar, point, epoch, until)
                    except Exception:  # the plan before stays
                        log.exception("re-planning bar %d failed", replan[0] + 1)
                    continue
                spare = deadline - now - SPARE_MARGIN_S
                if spare > SPARE_MIN_S and self.spare_time(min(spare, SPARE_SLICE_S)):
                    continue
                self._wake.wait(min(deadline - now, 0.01))  # re-read the map: tempo may move
                self._wake.clear()
                continue
            if urgent is not None:
                with self.lock:
                    if self._urgent_bar == urgent:
                        self._urgent_bar = None
            try:
                self.run_cycle(next_bar, beat, epoch)
            except Exception:  # one bad bar must not stop the music
                log.exception("generation failed for bar %d", next_bar + 1)
                with self.lock:
                    if self._epoch != epoch:  # (a jump meanwhile has set it already)
                        continue
                    self._prepared_bar = next_bar
                self._fall_back(next_bar, epoch, offset, 0.0, [])

    def _missed(self, bar: int, beat: float, epoch: int, offset: float) -> None:
        """``bar`` began and no cycle prepared it (the one before ran over it): what is left
        of it plays from its fallback, not silence."""
        with self.lock:
            if self._epoch != epoch or self._prepared_bar >= bar:
                return
            self._prepared_bar = bar
        if self.wants_bar(bar):
            self._fall_back(bar, epoch, offset, beat - bar * self.beats_per_bar, [])
