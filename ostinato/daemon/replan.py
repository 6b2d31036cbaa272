"""Follow the musician within the bar: commit a few beats at a time, re-plan the rest.

A bar is planned whole before it begins (:meth:`~ostinato.daemon.planner.BarPlanner.run_cycle`):
from the bars before it, so a chord the musician changes to on the downbeat is heard a bar
late. With the ``commit`` setting at N beats the bar is cut at *commit points* every N beats
from its bar line. At each one, the notes due before the next are final — they were queued
already and are never taken back — and the rest of the bar is planned again
(:meth:`~ostinato.daemon.planner.BarPlanner.replan`) from the context as it stands then: every
bar before, the musician's notes already played in this bar and Ostinato's final ones, in
token order (:meth:`~ostinato.engine.engine.Engine.complete_bar` extends the cache from the
bar's start: nothing before it is computed again). The new notes replace the provisional ones
not yet final (the scheduler takes those back) only if the re-plan is done before the next
commit point; otherwise the plan before stays: never late, never silent.

A re-plan runs only where it can change something: with nothing new from the musician since
the bar's notes were planned (the same onsets heard), it would sample what the plan did from
the same context, so the plan stands (counted ``unchanged``; a musician who holds a chord or
rests costs no CPU). It plans the rest of the bar where its time estimate (that share of the
recent bars' plan time, :data:`SAFETY` × it) fits before its commit point; where only the
next commit span fits (fast tempi, a busy machine), it plans up to the commit point after
next and leaves the notes beyond as planned before, marked stale: the next commit point
re-plans them even with nothing new heard. Where not even that fits, none runs (``skipped``).

A re-plan starts :data:`GRACE_BEATS` after its commit point, so a chord struck on the beat (a
human's a little late) is in what it hears, and it covers the bar from the *next* commit point
on: with ``commit 1`` a chord struck on beat 1 is in the bass from beat 2. In jam mode with key
lock on, the bass of a re-plan keeps to the harmony sounding then
(:func:`~ostinato.engine.accompany.sounding_harmony`), as it keeps to the harmony coming in the
bar's first plan.

The re-plan follows the plan's own rules (:class:`Plan`: its grammar — instruments, header,
floors and budgets —, its references and variation; a copy prior resumes at the reference's
first onset from the commit point on), so loop mode still varies its pass and a kept bar, an
undo's take brought back and a bar played from its fallback are never re-planned.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.planner_state import PlannerState
from ostinato.daemon.recorder import HUMAN, RecordedNote
from ostinato.daemon.takes import (
    RESEED,
)
from ostinato.engine.accompany import (
    GRACE_BEATS,
    commit_points,
    sounding_harmony,
)
from ostinato.engine.copy import CopyPrior
from ostinato.model.key import key_lock_classes
from ostinato.model.tokens import (
    name_in_header,
)

log = logging.getLogger(__name__)

Heard = frozenset[tuple[float, int, int]]  # the musician's onsets in a bar: (beat, program, pitch)


SAFETY = 1.5  # a re-plan starts only with this × its recent median time left before its point
# a re-plan's notes reach the sender (another process) at least this long before the first of
# them is due, or the plan before stays: a hand-over this close is at the mercy of the load
LEAD_S = 0.03


@dataclass
class Replans:
    """Which re-plans of which bar ran, and what they cost (for ``ostinato bench`` and the
    status)."""

    done: set[tuple[int, int, float]] = field(default_factory=set)  # (epoch, bar, point)
    applied: int = 0  # re-plans whose notes replaced the plan before
    late: int = 0  # re-plans not ready at their commit point (the plan before stayed)
    skipped: int = 0  # commit points passed with no time left to re-plan
    unchanged: int = 0  # commit points with nothing new to follow: the plan stands as it is
    partial: int = 0  # re-plans that, short of time, planned only up to the next commit point
    ms: deque[float] = field(default_factory=lambda: deque(maxlen=1024))  # time per re-plan

    def due(
        self, epoch: int, bar: int, beat_in_bar: float, commit: float | None, beats_per_bar: float
    ) -> float | None:
        """The commit point (beats into ``bar``) whose re-plan is due at ``beat_in_bar``, the
        newest not run yet; None when none is. Older ones passed over are counted skipped."""
        due = [p for p in commit_points(commit, beats_per_bar)
               if p + GRACE_BEATS <= beat_in_bar and (epoch, bar, p) not in self.done]  # fmt: skip
        if not due:
            return None
        for p in due:
            self.done.add((epoch, bar, p))
        self.skipped += len(due) - 1
        if len(self.done) > 4096:
            self.done = {k for k in self.done if k[0] == epoch and k[1] >= bar - 1}
        return due[-1]

    def typical_s(self) -> float:
        """The recent median time of a re-plan, seconds (0 before any ran)."""
        recent = list(self.ms)[-64:]
        return float(np.median(recent)) / 1000.0 if recent else 0.0


class Replanning(PlannerState):
    """Re-plans of the bar under way (see the module docstring): a part of the bar planner."""

    replans: Replans  # re-plans within the bar (the commit setting)

    def _onsets_heard(self, bar: int, notes: list[RecordedNote] | None = None) -> Heard:
        """The musician's onsets in ``bar`` known now (``notes``: the bar's notes, when read
        already): what a plan of the bar heard, to tell whether a re-plan has anything new."""
        if notes is None:
            tempo = self.clock.snapshot()
            now_beat = None if tempo is None else tempo.beat_at(self.now())
            notes = self.recorder.bar_notes(bar, now_beat)
        return frozenset((round(n.start_beats, 4), n.program, n.pitch)
                         for n in notes if n.source == HUMAN)  # fmt: skip

    def replan(self, bar: int, point: float, epoch: int, until: float | None = None) -> int | None:
        """Plan ``bar`` again from the commit point after ``point`` (beats into the bar) on,
        from what was played in it so far, to its end or, with ``until`` (beats into the bar),
        up to there (the notes from there on stay as planned before, to be re-planned at the
        next commit point). Returns how many notes replaced the plan's; None when nothing was
        replaced (nothing to re-plan, nothing new heard, or not ready by that commit point)."""
        commit = self.settings.commit
        if commit is None:
            return None
        bar_start = bar * self.beats_per_bar
        boundary = point + commit
        if until is not None and until >= self.beats_per_bar - 1e-6:
            until = None
        t0 = self.now()
        with self.lock:
            take = self._takes.get(bar)
            tempo = self.clock.snapshot()
            if (epoch != self._epoch or tempo is None or take is None or take.abandoned
                    or take.plan is None or take.played is None):  # fmt: skip
                return None
            plan = take.plan
            now_beat = tempo.beat_at(t0)
            notes = self.recorder.bar_notes(bar, now_beat)
            onsets = self._onsets_heard(bar, notes)
            if onsets == take.heard and take.stale_from is None:
                self.replans.unchanged += 1  # it would sample what the plan did, from the same
                return None
            complete = self._complete_bars(bar, epoch)
        engine = self.engine
        cut = bar_start + boundary - 1e-6
        known = [n for n in notes if n.start_beats < (now_beat if n.source == HUMAN else cut)]
        partial = name_in_header(engine.vocab, self.bar_tokens(known, bar),
                                 plan.grammar.header or ())  # fmt: skip
        self._feed(complete, partial)
        grammar = plan.grammar
        if grammar.scale_pitch_classes is not None:  # the key lock hears the bar so far too
            scale = key_lock_classes(engine.vocab, engine.context_tokens())
            grammar = dataclasses.replace(grammar, scale_pitch_classes=scale)
        if self.settings.mode == "jam" and self.settings.key_lock:
            heard = [(n.start_beats - bar_start, n.duration_beats, n.program, n.pitch)
                     for n in known if n.source == HUMAN]  # fmt: skip
            chord = sounding_harmony(heard, now_beat - bar_start)
            if chord is not None:  # the harmony the bass keeps to: the one sounding now
                grammar = dataclasses.replace(grammar, bass_pitch_classes=chord)
        seed = None if plan.seed is None else plan.seed + RESEED * round(8 * boundary)
        refs = [list(plan.references)]
        prior = (CopyPrior(engine.vocab, refs, plan.variation, free_pitches=plan.free_pitches)
                 if plan.references else None)  # fmt: skip
        per_position = engine.grammar(grammar).quarters_per_position
        position = math.ceil(boundary / per_position - 1e-6)
        last = None if until is None else math.ceil(until / per_position - 1e-6)
        sampler = engine.sampler(plan.sampling or self.settings.sampling, seed)
        new = list(engine.complete_bar(sampler, grammar, position, None, prior, last))
        self.replans.ms.append((self.now() - t0) * 1000.0)
        margin = LEAD_S + self.latency_s + self.cycle_s  # taken back and handed over in time
        with self.lock:
            if self._epoch != epoch or take.abandoned or self._takes.get(bar) is not take:
                return None
            tempo = self.clock.snapshot()
            if tempo is None or self.now() > tempo.time_at(bar_start + boundary) - margin:
                self.replans.late += 1  # the plan before stays
                return None
            end = math.inf if until is None else until - 1e-6
            # one pass, under the lock: kept are the final notes and those past the re-plan
            is_final = [not boundary - 1e-6 <= n[0] < end for n in take.notes]
            ids = [i for i, keep in zip(take.ids, is_final, strict=True) if not keep]
            self.scheduler.cancel(ids)
            self.recorder.forget_generated(frozenset(ids))
            take.ids = [i for i, keep in zip(take.ids, is_final, strict=True) if keep]
            take.notes = [n for n, keep in zip(take.notes, is_final, strict=True) if keep]
            for n in new:
                self._schedule(take, bar_start + n.start_beats, 0.0, bar_start, n.duration_beats,
                               n.program, n.pitch, n.velocity, [])  # fmt: skip
            self.replans.applied += 1
            self.replans.partial += until is not None
            take.heard, take.stale_from = onsets, until
            queued = sorted(take.notes)
        played = self._played_from(queued)
        with self.lock:
            if not take.abandoned:
                take.played = played
                self.passes.played(*take.memory, played)
        return len(new)

    def _replan_estimate_s(self, rest: float) -> float:
        """How long re-planning ``rest`` of a bar (a share) should take: that share of the
        recent median of a whole bar's plan (measured every bar, so the estimate follows the
        machine's load either way), or the recent re-plans' own median before any bar was
        planned."""
        bars = list(self._model_bar_ms)
        if bars:
            return rest * float(np.median(bars)) / 1000.0
        return self.replans.typical_s()

    def _replan_due(
        self, tempo: TempoMap, beat: float, epoch: int
    ) -> tuple[int, float, float | None] | None:
        """(bar, commit point, until) of the re-plan to run now, if one is due, has something
        new to follow and there is time for it before the commit point after it: the rest of
        the bar where that fits, else the next commit span only (``until`` its end), else none
        (see :class:`Replans`)."""
        commit = self.settings.commit
        if commit is None:
            return None
        bar = math.floor(beat / self.beats_per_bar)
        point = self.replans.due(epoch, bar, beat - bar * self.beats_per_bar, commit,
                                 self.beats_per_bar)  # fmt: skip
        if point is None:
            return None
        with self.lock:
            take = self._takes.get(bar)
            if take is None or take.plan is None or take.abandoned or epoch != self._epoch:
                return None
            if take.stale_from is None and self._onsets_heard(bar) == take.heard:
                self.replans.unchanged += 1
                return None
        left = tempo.time_at(bar * self.beats_per_bar + point + commit) - self.now()
        margin = LEAD_S + self.latency_s + self.cycle_s
        rest = (self.beats_per_bar - point - commit) / self.beats_per_bar
        if left >= SAFETY * self._replan_estimate_s(rest) + margin:
            return bar, point, None
        span = min(rest, commit / self.beats_per_bar)
        if span < rest and left >= SAFETY * self._replan_estimate_s(span) + margin:
            return bar, point, point + 2 * commit
        self.replans.skipped += 1
        return None
