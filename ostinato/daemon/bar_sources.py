"""What the bar planner plays from: whether a bar is Ostinato's, and what it varies.

* :meth:`BarSources.wants_bar`: jam and loop play every bar; continue mode answers the
  musician's phrase (``bars`` bars, when the phrase has lasted ``phrase_bars`` bars or a bar
  passed in silence after it).
* :meth:`BarSources._references`: the bars a new bar varies through the copy prior (the loop's
  previous pass at its place, the musician's pass in loop mode, the phrase's bar for an
  answer; in jam mode before a loop is known, Ostinato's bar before).
* :meth:`BarSources._sampling`: the sampler's settings for a bar (jam mode's parts enter
  cooler).
* :meth:`BarSources._fallback_source`: what a bar that cannot be generated in time plays.
* :meth:`BarSources._harmony_coming`: the pitch classes a looped progression says come next.

A part of :class:`~ostinato.daemon.planner.BarPlanner` (its state, its lock).
"""

from __future__ import annotations

import logging

import numpy as np

from ostinato.daemon.loop import PlayedBar
from ostinato.daemon.planner_state import PlannerState
from ostinato.daemon.recorder import HUMAN, RecordedNote
from ostinato.engine.accompany import (
    ENTER_BARS,
    HARMONY_BARS,
    entering_sampling,
    expected_harmony,
)
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import (
    DRUM_PROGRAM,
)

log = logging.getLogger(__name__)

AUTO_ANSWER_MAX = 16  # bars auto: a phrase this long is answered without waiting for silence


class BarSources(PlannerState):
    """Which bars are played and from what (see the module docstring): a part of the bar
    planner."""

    def wants_bar(self, bar: int) -> bool:
        """Whether Ostinato plays in ``bar`` (0-based), decided just before it starts."""
        mode = self.settings.mode
        if mode in ("jam", "loop"):
            return True
        if bar <= self.answering_until:
            return True
        with self.lock:
            played = [self.recorder.human_played_in(b) for b in range(max(0, bar - 64), bar)]
        if not any(played):
            return False
        last = len(played) - 1 - played[::-1].index(True)  # the phrase's last bar, in played
        run = 0
        while run <= last and played[last - run]:
            run += 1
        first_bar = bar - len(played) + last - run + 1
        auto = self.settings.bars is None
        phrase_ended = last == len(played) - 2  # a bar in silence after it
        long_enough = last == len(played) - 1 and run >= (
            AUTO_ANSWER_MAX if auto else self.settings.phrase_bars
        )
        if not (phrase_ended or long_enough):
            return False
        kept = self.kept.answer
        # a kept answer is played again whole; bars None: auto, as long as the phrase
        length = len(kept) if kept else (self.settings.bars or run)
        self.answering_until = bar + length - 1
        with self.lock:
            phrase = [self.recorder.bar_notes(b, bar * self.beats_per_bar) for b in
                      range(first_bar, first_bar + run)]  # fmt: skip
        self._answer = (bar, [self._played_bar([n for n in notes if n.source == HUMAN], b)
                              for notes, b in zip(phrase, range(first_bar, first_bar + run),
                                                  strict=True)])  # fmt: skip
        log.info("answering bars %d-%d (a phrase of %d bars from bar %d)", bar + 1,
                 self.answering_until + 1, run, first_bar + 1)  # fmt: skip
        self._mark(bar * self.beats_per_bar,
                   f"answer bars {bar + 1}-{self.answering_until + 1}")  # fmt: skip
        return True

    def _played_bar(self, notes: list[RecordedNote], bar: int) -> PlayedBar:
        start = bar * self.beats_per_bar
        return PlayedBar(self.bar_tokens(notes, bar), [
            (n.start_beats - start, n.duration_beats, n.program, n.pitch, n.velocity)
            for n in notes
        ])  # fmt: skip

    def _references(
        self, bar: int, besides: PlayedBar | None = None
    ) -> tuple[list[np.ndarray], float]:
        """The bars ``bar`` varies (best first) and its variation (see engine/copy.py);
        ``besides``: a take thrown away, not to be varied again. Continue mode: the phrase's
        bar; loop mode: Ostinato's bar a pass before, then the musician's; jam mode: its bar a
        pass before, or, before a loop is known, its bar before this one — the groove goes on
        bar to bar (the pitches are the model's: it hears the harmony in the context), rather
        than each bar drawn anew until the musician has played a loop twice."""
        settings, loop = self.settings, self.loop
        variation = settings.variation
        if settings.mode == "continue":
            if self._answer is None or not self._answer[1]:
                return [], variation
            first, phrase = self._answer
            return [phrase[(bar - first) % len(phrase)].tokens], variation
        if loop is None:
            if settings.mode == "jam":  # no loop known yet: the groove goes on bar to bar
                before = self.passes.own.get((bar - 1, self._epoch))
                if before is not None and before is not besides:
                    return [before.tokens], variation
            return [], variation
        if settings.fill and loop.is_last(bar):
            variation = 1.0
        refs = []
        own = self.passes.at(loop, bar, besides=besides)
        if own is not None:
            refs.append(own.tokens)
        if settings.mode == "loop":
            human = self.passes.at(loop, bar, human=True)
            if human is not None:
                refs.append(human.tokens)
        return refs, variation

    def _followed(self) -> set[int] | None:
        """The instruments whose presence in a bar the references decide (see
        :func:`bar_header`): in continue mode those the answer's phrase plays; None: all."""
        if self.settings.mode != "continue" or self._answer is None:
            return None
        return {n[2] for played in self._answer[1] for n in played.notes}

    def _entering(self, bar: int) -> bool:
        """Whether Ostinato's parts are entering at ``bar``: the rule of :func:`entering`,
        read from the recorder bar by bar under the lock, stopping at the first bar without a
        note of Ostinato's (the lock is the sender's too: it is held as briefly as it can)."""
        if bar < ENTER_BARS:
            return True  # it has just started
        with self.lock:
            return any(all(n.source == HUMAN for n in self.recorder.bar_notes(b))
                       for b in range(bar - ENTER_BARS, bar))  # fmt: skip

    def _sampling(self, bar: int, references: list[np.ndarray]) -> SamplingSettings:
        """The sampler's settings for ``bar``: the musician's, but cooler in jam mode where
        the parts enter with nothing of their own to vary (see
        :func:`~ostinato.engine.accompany.entering_sampling`)."""
        sampling = self.settings.sampling
        if self.settings.mode != "jam" or references or not self._entering(bar):
            return sampling
        return entering_sampling(sampling)

    def _harmony_coming(self, bar: int) -> frozenset[int] | None:
        """The pitch classes the musician will most likely sound in ``bar``: a period back in
        the progression they loop (see :func:`expected_harmony`); None before one shows."""
        with self.lock:
            heard = [frozenset(n.pitch % 12 for n in self.recorder.bar_notes(b)
                               if n.source == HUMAN and n.program != DRUM_PROGRAM)
                     for b in range(max(0, bar - HARMONY_BARS), bar)]  # fmt: skip
        return expected_harmony(heard)

    def _fallback_source(self, bar: int) -> PlayedBar | None:
        """What a bar that cannot be generated in time plays: the previous pass's bar there,
        the musician's (loop mode), the answer's phrase bar, or the last bar played."""
        loop = self.loop
        if loop is not None and self.settings.mode != "continue":
            found = self.kept.at(loop, bar) or self.passes.at(loop, bar)
            if found is None and self.settings.mode == "loop":
                found = self.passes.at(loop, bar, human=True)
            if found is not None:
                return found
        last = self.passes.last_own()
        if last is None and self._answer is not None and self._answer[1]:
            first, phrase = self._answer
            return phrase[(bar - first) % len(phrase)]
        return last
