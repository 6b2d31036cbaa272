"""Take actions on the bars the planner prepared: regenerate, keep, undo.

Takes (:mod:`ostinato.daemon.takes`). Every bar prepared is a take: its notes' ids in the
scheduler, kept by where it plays. :meth:`TakeDesk.regenerate` throws the next bar's take away
(its notes not yet started are taken back, the recorder and the pass memory forget it) and
prepares the bar again at once (``_urgent_bar``) when there is time, else makes the next pass
at that place a new take; :meth:`TakeDesk.keep` freezes the bar playing now at its place in
the loop (a kept place plays it again, note for note, without the model) or, in continue mode,
the answer; :meth:`TakeDesk.undo` goes back one of them. Each action and each bar heard from a
take of its own is told to the hooks in ``markers`` as ``(beat, text)``.

A part of :class:`~ostinato.daemon.planner.BarPlanner` (its state, its lock): the planner
opens and finishes a take for every bar it prepares; the musician's actions arrive here from
the control thread.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from ostinato.daemon.clock import TempoMap
from ostinato.daemon.loop import PlayedBar
from ostinato.daemon.planner_state import PlannerState
from ostinato.daemon.scheduling import FALLBACK_MARGIN_S
from ostinato.daemon.takes import (
    Kept,
    Take,
    TakeAction,
    TakeError,
    loop_key,
)

log = logging.getLogger(__name__)

TAKES_KEPT = 64  # bars whose takes are remembered (a whole answer)


class TakeDesk(PlannerState):
    """Regenerate, keep and undo (see the module docstring): a part of the bar planner."""

    takes: int  # take actions done (regenerate, keep, undo)
    last_take: str  # the last one, in words
    _history: deque[TakeAction]  # the last actions, for undo (the newest last)
    _retake_places: dict[int, TakeAction]  # loop places whose next pass is a new take

    def _open_take(self, bar: int, epoch: int) -> Take | None:
        """The take ``bar`` is prepared as (lock held): a new take when a regenerate asked for
        it, the kept bar played again where one is kept, else a take as usual. None: an undo
        brought a take back into that bar already."""
        existing = self._takes.get(bar)
        if existing is not None and existing.kind == "back" and not existing.abandoned:
            return None
        take = Take(bar, (bar, epoch))
        mode, loop = self.settings.mode, self.loop
        if loop is not None and mode != "continue":
            take.place = loop.index(bar)
        if mode == "continue" and self._answer is not None:
            take.answer = self._answer[0]
        for stale in [b for b in self._retake_bars if b < bar]:
            del self._retake_bars[stale]
        action = self._retake_bars.pop(bar, None)
        if action is None and take.place is not None and loop is not None:
            asked = self._retake_places.get(take.place)
            if asked is not None and asked.loop == loop_key(loop):
                action = self._retake_places.pop(take.place)
        kept = self.kept
        if action is not None:
            take.kind, take.action = "retake", action
            action.new.append(take)
        elif mode != "continue":
            take.source = kept.at(loop, bar)
        elif kept.answer and take.answer is not None and take.answer != kept.answer_first:
            take.source = kept.answer[(bar - take.answer) % len(kept.answer)]
        if take.source is not None:
            take.kind = "kept"
        self._takes[bar] = take
        for old in [b for b in self._takes if b < bar - TAKES_KEPT]:
            del self._takes[old]
        return take

    def _finish(self, take: Take, bar: int, epoch: int, played: PlayedBar) -> None:
        """``take`` is complete as ``played``: the pass memory holds it (unless it was thrown
        away meanwhile); a kept answer still being played takes it in."""
        with self.lock:
            if take.abandoned:
                return
            take.played = played
            self.passes.played(bar, epoch, played)
            kept = self.kept
            if (kept.answer is not None and take.answer is not None
                    and take.answer == kept.answer_first and take.kind != "kept"):  # fmt: skip
                kept.answer.append(played)
            if take.kind != "new":
                where = f"bar {take.bar + 1}"
                if take.kind == "retake":
                    text = f"{where}: new take"
                elif take.kind == "back":
                    text = f"{where}: the take before is back"
                elif take.place is not None:
                    text = f"{where}: kept take (loop place {take.place + 1})"
                else:
                    text = f"{where}: kept answer"
                self._mark(take.bar * self.beats_per_bar, text)

    def _abandon(self, take: Take) -> None:
        """Throw ``take`` away (lock held): its notes not yet started are taken back (one
        already sounding ends at its time), the recorder and the pass memory forget it, and
        its generation, if still going, stops at its next note."""
        take.abandoned = True
        if take.ids:
            self.scheduler.cancel(take.ids)
            self.recorder.forget_generated(frozenset(take.ids))
        self.passes.forget(*take.memory)
        if self._takes.get(take.bar) is take:
            del self._takes[take.bar]

    def _requeue(self, old: Take, bar: int) -> Take:
        """Queue ``old``'s notes again in ``bar`` (lock held), those still in time, as a take
        brought back."""
        take = Take(bar, (bar, self._epoch), kind="back", place=old.place, answer=old.answer)
        bar_start = bar * self.beats_per_bar
        tempo = self.clock.snapshot()
        margin = FALLBACK_MARGIN_S + self.latency_s
        for off, duration, program, pitch, velocity in old.notes:
            start = bar_start + off
            if tempo is None or self.now() > tempo.time_at(start) - margin:
                continue
            self._schedule(take, start, 0.0, bar_start, duration, program, pitch, velocity, [])
        self._takes[bar] = take
        self._prepared_bar = max(self._prepared_bar, bar)
        played = self._take_bar(old)
        if played is not None:
            self._finish(take, bar, self._epoch, played)
        return take

    def _take_bar(self, take: Take) -> PlayedBar | None:
        """``take`` as a bar to keep or bring back: complete, or as far as it was queued."""
        if take.played is not None:
            return take.played
        if take.source is not None:
            return take.source
        if not take.notes:
            return None
        return self._played_from(take.notes)

    def _done(self, action: TakeAction, beat: float, reply: str) -> str:
        """An action is done (lock held): counted, remembered, marked, logged."""
        self.takes += 1
        self.last_take = action.text
        self._mark(beat, action.text)
        log.info("take: %s", reply)
        return reply

    def regenerate(self) -> str:
        """Throw away the take queued for the next bar (continue mode: and the rest of the
        answer) and generate it again (see :mod:`ostinato.daemon.takes`). Returns what was
        done, in words; TakeError when there is nothing to regenerate."""
        now = self._playing()
        if now is None:
            raise TakeError("the transport is stopped: no bar is coming to regenerate")
        tempo, beat = now
        target = math.floor(beat / self.beats_per_bar + 1e-9) + 1
        with self.lock:
            mode, loop = self.settings.mode, self.loop
            take = self._takes.get(target)
            if take is not None and take.abandoned:
                take = None
            in_time = not self._begun(tempo, target) and (
                tempo.time_at(target * self.beats_per_bar) - self.now()
                >= self._time_to_generate_s()
            )
            rest: list[int] = []  # continue mode: the answer's bars after the next one
            if mode == "continue":
                until = self.answering_until
                if until < 0 or until < target - 1:
                    raise TakeError("no answer is playing: in continue mode regenerate throws "
                                    "away the rest of an answer")  # fmt: skip
                if until < target:
                    raise TakeError(f"bar {target}, under way, is the answer's last: nothing of "
                                    "the answer is left to regenerate")  # fmt: skip
                if take is not None and not in_time and until == target:
                    raise TakeError(f"bar {target + 1}, the answer's last, begins too soon to be "
                                    "generated again")  # fmt: skip
                rest = list(range(target + 1, until + 1))
            action = TakeAction("regenerate", f"regenerate bar {target + 1}", self.kept.copy())
            # a new take is asked for: the bar kept there (or the kept answer) is let go
            if mode == "continue":
                self.kept.answer = self.kept.answer_first = None
            elif self.kept.at(loop, target) is not None and loop is not None:
                del self.kept.places[loop.index(target)]
            marks: list[int] = []
            if take is not None and in_time:
                self._abandon(take)
                action.old, action.bar = take, target
                marks = [target, *rest]
                self._prepared_bar = min(self._prepared_bar, target - 1)
                self._urgent_bar = target
                reply = f"bar {target + 1}: its take is thrown away and generated again now"
            elif take is not None:
                action.old = take
                late = f"bar {target + 1} begins too soon and plays as prepared"
                if mode == "continue":
                    marks = rest
                    later = (f"bar {rest[0] + 1} is a new take" if len(rest) == 1
                             else f"bars {rest[0] + 1}-{rest[-1] + 1} are new takes")  # fmt: skip
                    reply = f"{late}; {later}"
                elif loop is not None:
                    place = loop.index(target)
                    self._retake_places[place] = action
                    action.loop = loop_key(loop)
                    reply = f"{late}; the next pass at loop place {place + 1} is a new take"
                else:
                    marks = [target + 1]
                    reply = f"{late}; bar {target + 2} is a new take"
            else:
                marks = [target, *rest]
                reply = f"bar {target + 1} will be a new take (nothing was prepared for it yet)"
            for bar in marks:
                self._retake_bars[bar] = action
            self._history.append(action)
            self._done(action, beat, f"regenerate: {reply}")
        self._wake.set()
        self._flush_marks()
        return reply

    def keep(self, on: bool = True) -> str:
        """``on``: freeze the bar playing now at its place in the loop (continue mode: the
        current answer); off: release every kept bar. TakeError when there is nothing."""
        if not on:
            beat = self._beat_or_stop()
            with self.lock:
                if not self.kept:
                    raise TakeError("nothing is kept")
                action = TakeAction("release", "release the kept bars", self.kept)
                self.kept = Kept()
                self._history.append(action)
                reply = "every kept bar is released: each pass varies again"
                self._done(action, beat, f"keep 0: {reply}")
            self._flush_marks()
            return reply
        now = self._playing()
        if now is None:
            raise TakeError("the transport is stopped: no bar is playing to keep")
        _, beat = now
        current = math.floor(beat / self.beats_per_bar + 1e-9)
        with self.lock:
            if self.settings.mode == "continue":
                first = self._answer[0] if self._answer is not None else None
                takes = sorted((t for t in self._takes.values()
                                if first is not None and t.answer == first and not t.abandoned),
                               key=lambda t: t.bar)  # fmt: skip
                if first is None or not takes:
                    raise TakeError("no answer has played yet to keep")
                action = TakeAction("keep", "keep the answer", self.kept.copy())
                bars = [t.played for t in takes if t.played is not None]
                self.kept.answer, self.kept.answer_first = bars, first
                reply = (f"the answer from bar {first + 1} is kept: the next answers play it "
                         "again")  # fmt: skip
            else:
                loop = self.loop
                if loop is None:
                    raise TakeError("no loop is known (set loop_bars, or loop in the DAW): "
                                    "keep freezes the bar playing now at its place in the "
                                    "loop")  # fmt: skip
                take = self._takes.get(current)
                played = None if take is None or take.abandoned else self._take_bar(take)
                if played is None:
                    raise TakeError(f"Ostinato plays nothing in bar {current + 1} to keep")
                place = loop.index(current)
                action = TakeAction("keep", f"keep loop place {place + 1}", self.kept.copy())
                if self.kept.loop != loop_key(loop):
                    self.kept.places, self.kept.loop = {}, loop_key(loop)
                self.kept.places[place] = played
                # a new take asked for at that place is not wanted any more
                self._retake_places.pop(place, None)
                for bar in [b for b in self._retake_bars if loop.index(b) == place]:
                    del self._retake_bars[bar]
                reply = (f"bar {current + 1} is kept at loop place {place + 1}: it plays again "
                         "each pass")  # fmt: skip
            self._history.append(action)
            self._done(action, beat, f"keep: {reply}")
        self._flush_marks()
        return reply

    def undo(self) -> str:
        """Go back one take action: a keep is released, a release kept again, a regenerate's
        take thrown away brought back. TakeError when there is nothing to undo."""
        now = self._playing()
        with self.lock:
            if not self._history:
                raise TakeError("nothing to undo")
            action = self._history.pop()
            if action.kind == "regenerate":
                what = self._undo_regenerate(action, None if now is None else now[0])
            else:
                self.kept = action.kept
                what = "released" if action.kind == "keep" else "kept again"
            text = f"undo {action.text}"
            undone = TakeAction("undo", text, self.kept)
            reply = f"{text}: {what}"
            self._done(undone, self._stopped_beat if now is None else now[1], reply)
        self._wake.set()
        self._flush_marks()
        return reply

    def _undo_regenerate(self, action: TakeAction, tempo: TempoMap | None) -> str:
        """Bring back what ``action`` threw away (lock held); what was done, in words."""
        self.kept = action.kept  # a keep it let go holds again
        for bar in [b for b, a in self._retake_bars.items() if a is action]:
            del self._retake_bars[bar]
        for place in [p for p, a in self._retake_places.items() if a is action]:
            del self._retake_places[place]
        new = next((t for t in action.new if not t.abandoned), None)
        old = action.old
        if old is None:  # nothing had been prepared: the bar as it would have been
            if new is None:
                return "the new take is not asked for any more"
            if self._begun(tempo, new.bar):
                return f"bar {new.bar + 1} has begun: its new take stays"
            self._abandon(new)
            self._prepared_bar = min(self._prepared_bar, new.bar - 1)
            self._urgent_bar = new.bar
            return f"bar {new.bar + 1} is generated again as it would have been"
        if new is not None:
            bar = new.bar
        elif action.bar >= 0:  # to be prepared again at once, and not begun
            bar = action.bar
            if self._urgent_bar == bar:
                self._urgent_bar = None
        else:
            return "the new take at the next pass is not asked for any more"
        if not self._begun(tempo, bar):
            if new is not None:
                self._abandon(new)
            self._requeue(old, bar)
            return f"the take thrown away is back in bar {bar + 1}"
        loop, played = self.loop, self._take_bar(old)
        if self.settings.mode != "continue" and loop is not None and played is not None:
            place = loop.index(bar)
            if self.kept.loop != loop_key(loop):
                self.kept.places, self.kept.loop = {}, loop_key(loop)
            self.kept.places[place] = played
            return (f"bar {bar + 1} has begun: the take thrown away is kept at loop place "
                    f"{place + 1} from the next pass on")  # fmt: skip
        return f"bar {bar + 1} has begun: too late to bring the take thrown away back"

    def _beat_or_stop(self) -> float:
        """The beat now, or where the transport stopped (not with the lock held)."""
        now = self._playing()
        return self._stopped_beat if now is None else now[1]
