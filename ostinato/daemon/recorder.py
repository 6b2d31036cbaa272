"""What was played, in beats: the musician's notes from the input and Ostinato's own.

Note-on/off pairing per (channel, pitch): a velocity-0 note-on is a note-off, a second
note-on of a sounding pitch closes the first, an unmatched note-off is ignored; All Notes Off
(CC 123, and CC 120) closes a channel's held notes. Notes still held are reported as lasting
until "now", so a chord held across a bar line is heard.

A musician's note a hair before a bar line belongs to the next bar (players push the
downbeat); Ostinato's notes are on time and belong to the bar they are in.

Notes are kept by position in the song *and* by transport epoch (:attr:`Recorder.epoch`, set
on every start, continue and jump): a loop pass does not stack on the last one, it is read as
a pass of its own. At a jump, the notes at or after the jump point (what was prepared for the
bar after it, a note the DAW played a hair early) move with the jump into the new epoch, and
notes held across it end there. Ostinato's notes keep the scheduler's id, so a take thrown
away before it played is forgotten (:meth:`Recorder.forget_generated`).

The recorder keeps :data:`KEEP_BARS` bars behind the bar being played, from the largest
``phrase_bars`` the settings allow, so a phrase of any length they allow is answered; notes
are looked up through an index by (epoch, bar), so that memory costs nothing per lookup. Pure
logic; callers hold the session's lock.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from ostinato.channels import ChannelMap
from ostinato.settings import SETTINGS

HUMAN, OSTINATO = "human", "ostinato"
#: A note this close before a bar line belongs to the next bar (players push the downbeat).
EARLY_BEATS = 1 / 8
#: Bars kept behind the bar being played: the longest phrase continue mode answers (a phrase
#: of ``phrase_bars`` at their most, or one that ended in a bar of silence: it looks as far
#: back), and the bar before it, where a note pushed ahead of its first downbeat lies.
KEEP_BARS = int(SETTINGS["phrase_bars"].hi or 64) + 1


@dataclass(frozen=True)
class RecordedNote:
    start_beats: float
    duration_beats: float
    pitch: int
    velocity: int
    program: int
    source: str
    epoch: int = 0
    note_id: int = -1  # Ostinato's: the scheduler's id of the note (a take may take it back)


def default_channel_programs() -> dict[int, int]:
    """Input channel (0-based) → program: the default input map of :mod:`ostinato.channels`
    (1 keys, 2 bass, 3 pad, 4 lead, 5 guitar, 6 other, 10 drums, the rest keys)."""
    return ChannelMap().input_programs()


class Recorder:
    def __init__(
        self,
        channel_programs: dict[int, int] | None = None,
        beats_per_bar: float = 4.0,
        keep_bars: int = KEEP_BARS,
    ) -> None:
        self.channel_programs = channel_programs or default_channel_programs()
        self.beats_per_bar = beats_per_bar
        self.keep_bars = keep_bars
        self.notes: list[RecordedNote] = []  # replaced whole, appended only through _add
        self._open: dict[tuple[int, int], tuple[float, int]] = {}  # (ch, pitch) → (beat, vel)
        self.epoch = 0
        # (epoch, bar) → the notes starting there; None: built again at the next lookup
        self._index: dict[tuple[int, int], list[RecordedNote]] | None = None
        self._index_list: list[RecordedNote] | None = None  # the notes list it was built on
        self._index_bpb = beats_per_bar

    def clear(self) -> None:
        self.notes = []
        self._open.clear()

    def _add(self, note: RecordedNote) -> None:
        self.notes.append(note)
        if self._index is not None and self._index_list is self.notes:
            self._index.setdefault((note.epoch, self._bar_of(note)), []).append(note)

    def _bar_of(self, note: RecordedNote) -> int:
        """The bar ``note`` is indexed under: the musician's a hair early belongs to the next
        bar, ours are on time (:meth:`bar_notes` reads this bar and its neighbours)."""
        early = EARLY_BEATS if note.source == HUMAN else 1e-6
        return math.floor((note.start_beats + early) / self.beats_per_bar)

    def _near(self, epoch: int, bar: int) -> list[RecordedNote]:
        """The notes of ``epoch`` indexed under ``bar`` and the bars either side."""
        if (self._index is None or self._index_list is not self.notes
                or self._index_bpb != self.beats_per_bar):  # fmt: skip
            self._index, self._index_list = {}, self.notes
            self._index_bpb = self.beats_per_bar
            for note in self.notes:
                self._index.setdefault((note.epoch, self._bar_of(note)), []).append(note)
        index = self._index
        return [*index.get((epoch, bar - 1), ()), *index.get((epoch, bar), ()),
                *index.get((epoch, bar + 1), ())]  # fmt: skip

    def jump(self, from_beat: float, to_beat: float, epoch: int, keep_prepared: bool) -> None:
        """The transport jumped from ``from_beat`` to ``to_beat``, opening ``epoch``. With
        ``keep_prepared`` Ostinato's notes after the jump point move with it (they will be
        played there); without, they are forgotten (they will not be played)."""
        for channel, pitch in list(self._open):
            self.note_off(from_beat, channel, pitch)
        shift = to_beat - from_beat
        moved = []
        for n in self.notes:
            early = EARLY_BEATS if n.source == HUMAN else 1e-6  # ours were played on time
            if n.epoch == self.epoch and n.start_beats >= from_beat - early:
                if n.source == OSTINATO and not keep_prepared:
                    continue
                n = RecordedNote(max(to_beat, n.start_beats + shift), n.duration_beats, n.pitch,
                                 n.velocity, n.program, n.source, epoch, n.note_id)  # fmt: skip
            moved.append(n)
        self.notes = moved
        self.epoch = epoch

    def all_notes_off(self, beat: float, channel: int) -> None:
        for ch, pitch in [key for key in self._open if key[0] == channel]:
            self.note_off(beat, ch, pitch)

    def note_on(self, beat: float, channel: int, pitch: int, velocity: int) -> None:
        if velocity == 0:
            self.note_off(beat, channel, pitch)
            return
        if (channel, pitch) in self._open:  # retrigger: close the sounding one first
            self.note_off(beat, channel, pitch)
        self._open[(channel, pitch)] = (beat, velocity)

    def note_off(self, beat: float, channel: int, pitch: int) -> None:
        opened = self._open.pop((channel, pitch), None)
        if opened is None:
            return
        start, velocity = opened
        program = self.channel_programs.get(channel, 0)
        self._add(
            RecordedNote(
                start, max(beat - start, 1 / 32), pitch, velocity, program, HUMAN, self.epoch
            )
        )

    def add_generated(self, start_beats: float, duration_beats: float, pitch: int,
                      velocity: int, program: int, note_id: int = -1) -> None:  # fmt: skip
        self._add(RecordedNote(start_beats, duration_beats, pitch, velocity, program,
                               OSTINATO, self.epoch, note_id))  # fmt: skip

    def forget_generated(self, note_ids: Collection[int]) -> None:
        """Ostinato's notes ``note_ids`` were taken back before they played (a take thrown
        away): they were never heard."""
        if note_ids:
            self.notes = [n for n in self.notes
                          if n.source != OSTINATO or n.note_id not in note_ids]  # fmt: skip

    def bar_notes(
        self, bar: int, now_beat: float | None = None, epoch: int | None = None
    ) -> list[RecordedNote]:
        """Notes that start in ``bar`` (0-based) in ``epoch`` (default: the current one),
        held ones lasting until ``now_beat``."""
        lo, hi = self._bounds(bar)
        epoch = self.epoch if epoch is None else epoch
        exact_lo, exact_hi = lo + EARLY_BEATS - 1e-6, hi + EARLY_BEATS - 1e-6  # ours: on time
        out = [
            n for n in self._near(epoch, bar)
            if (lo <= n.start_beats < hi if n.source == HUMAN
                else exact_lo <= n.start_beats < exact_hi)
        ]  # fmt: skip
        if now_beat is not None and epoch == self.epoch:
            for (channel, pitch), (start, velocity) in self._open.items():
                if lo <= start < hi:
                    program = self.channel_programs.get(channel, 0)
                    out.append(
                        RecordedNote(start, max(now_beat - start, 1 / 32), pitch, velocity,
                                     program, HUMAN, epoch)
                    )  # fmt: skip
        return sorted(out, key=lambda n: (n.start_beats, n.program, n.pitch))

    def _bounds(self, bar: int) -> tuple[float, float]:
        return bar * self.beats_per_bar - EARLY_BEATS, (bar + 1) * self.beats_per_bar - EARLY_BEATS

    def human_played_in(self, bar: int) -> bool:
        lo, hi = self._bounds(bar)
        if any(lo <= start < hi for start, _ in self._open.values()):
            return True
        return any(
            n.source == HUMAN and lo <= n.start_beats < hi for n in self._near(self.epoch, bar)
        )

    def prune(self, current_bar: int, keep_epochs: int = 4) -> None:
        """Forget notes older than ``keep_bars`` bars and passes older than ``keep_epochs``."""
        oldest = (current_bar - self.keep_bars) * self.beats_per_bar
        first_epoch = self.epoch - keep_epochs
        kept = [
            n for n in self.notes
            if n.epoch > first_epoch and (n.epoch != self.epoch or n.start_beats >= oldest)
        ]  # fmt: skip
        if len(kept) != len(self.notes):  # else the same list: its index still holds
            self.notes = kept
