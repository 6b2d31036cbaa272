"""How the bar planner follows the DAW's transport: stops, starts, loop jumps, relocates.

Every start, continue and jump is an epoch (:class:`~ostinato.daemon.clock.TransportEvent`).
The context is what was heard in time order, bar by bar, whatever the song positions (a loop's
last bar, then its first bar again). A Stop holds the sender (sounding notes end, the queue
waits); a jump by whole bars from a bar line (a loop, a relocate by bars) keeps what was
prepared for the bar after the jump point and plays it at the new position — the queued
notes, the generation in flight and the recording all move with it, so the pass after a loop
jump is never silent. Any other jump, and a start after a real stop, drops the queue and
prepares the bar at the new position (at once, when the jump lands on a bar line).

A part of :class:`~ostinato.daemon.planner.BarPlanner`; called on the input thread, before the
clock publishes the new position's map.
"""

from __future__ import annotations

import logging
import math

from ostinato.daemon.clock import PPQN, TransportEvent
from ostinato.daemon.planner_state import PlannerState

log = logging.getLogger(__name__)


class FollowsTransport(PlannerState):
    """Stops, starts and jumps (see the module docstring): a part of the bar planner."""

    jumps_followed: int  # jumps whose prepared bar moved with them
    _release_held_at: float | None  # when notes kept at a Stop must end

    def _on_transport(self, event: TransportEvent) -> None:
        """Called on the input thread, before the clock publishes the new position's map."""
        with self.lock:
            if event.kind == "stop":
                self._hold(event)
                return
            self._release_held_at = None
            if event.kind == "jump" and event.from_beat is not None:
                self._jump(event.from_beat, event.beat, event.epoch)
            else:  # a start or continue after a real stop: the old queue is not wanted
                self.scheduler.jump(event.beat, event.beat, False)
                self._takes, self._retake_bars = {}, {}
                if event.kind == "start":
                    self.recorder.clear()
                self.recorder.epoch = self._epoch = self._broken_epoch = event.epoch
                self.answering_until = -1
                self._urgent_bar = None
                # the bar it starts in is under way: the first one prepared is the next
                self._prepared_bar = math.floor(event.beat / self.beats_per_bar + 1e-9)
                self._landing_bar = self._prepared_bar
                self._restart = True
            log.debug("transport %s at beat %.3f (epoch %d)", event.kind, event.beat, event.epoch)
        self._wake.set()

    def _hold(self, event: TransportEvent) -> None:
        """A Stop (lock held): sounding notes end, the queue waits for what comes. At a bar
        line the bar after it may already have begun (its downbeat went out in the cycle the
        Stop came in): if a loop jump follows within a tick it goes on at the loop's start;
        if not, it is released a few ticks later (see _run)."""
        bpb = self.beats_per_bar
        self._stopped_beat = event.beat
        bar_line = round(event.beat / bpb) * bpb
        tempo = self.clock.snapshot()
        tick_s = (tempo.seconds_per_beat if tempo else 0.5) / PPQN
        if abs(event.beat - bar_line) <= 1.5 / PPQN:
            self.scheduler.hold(bar_line)
            self._release_held_at = event.time + 3 * tick_s
        else:
            self.scheduler.hold()

    def _jump(self, from_beat: float, to_beat: float, epoch: int) -> None:
        """A loop jump or relocate while playing (lock held)."""
        bpb = self.beats_per_bar
        tick = 1.5 / PPQN
        bars = round((to_beat - from_beat) / bpb)
        aligned = (
            abs(to_beat - from_beat - bars * bpb) <= tick
            and abs(from_beat - round(from_beat / bpb) * bpb) <= tick
        )
        if aligned:  # bar line to bar line: the prepared bar plays at the new position
            from_beat = round(from_beat / bpb) * bpb
            to_beat = from_beat + bars * bpb
        self.scheduler.jump(from_beat, to_beat, aligned)
        # the bars heard up to the jump point belong to the old pass, even if no cycle ran
        # after the last of them began (a late jump): they are committed before the new ones
        self._hear(math.ceil(from_beat / bpb - tick / bpb) - 1, self._epoch)
        self.recorder.jump(from_beat, to_beat, epoch, keep_prepared=aligned)
        self._epoch = epoch
        to_bar = math.floor(to_beat / bpb + tick / bpb)
        on_bar_line = abs(to_beat - to_bar * bpb) <= tick
        self._landing_bar = to_bar
        self._move_takes(math.floor(from_beat / bpb + tick / bpb), bars if aligned else None)
        if aligned:
            self._offset_beats += to_beat - from_beat
            self._prepared_bar += bars
            if self.answering_until >= 0:
                self.answering_until += bars
            self.jumps_followed += 1
        else:
            self._broken_epoch = epoch
            self._prepared_bar = to_bar - 1 if on_bar_line else to_bar  # a partial bar: skip it
            self.answering_until = -1
        if self._prepared_bar < to_bar and on_bar_line:
            self._urgent_bar = to_bar  # nothing prepared for the bar that starts now

    def _move_takes(self, from_bar: int, bars: int | None) -> None:
        """A jump (lock held): the takes of the bars from ``from_bar`` on (those prepared for
        after the jump point) and the new takes asked for there move by ``bars``; the rest are
        past. Without ``bars`` (the queue was dropped) none stays."""
        if bars is None:
            self._takes, self._retake_bars = {}, {}
            return
        self._takes = {b + bars: t for b, t in self._takes.items() if b >= from_bar}
        for bar, take in self._takes.items():
            take.bar = bar
        self._retake_bars = {b + bars: a for b, a in self._retake_bars.items() if b >= from_bar}

    def _release_if_stopped(self) -> None:
        """A Stop at a bar line that was not a loop jump after all: what it kept ends now."""
        if self._release_held_at is None or self.now() < self._release_held_at:
            return
        with self.lock:
            if self._release_held_at is not None and not self.clock.running:
                self.scheduler.hold()
            self._release_held_at = None
