"""What was played, in beats: the musician's notes from the input and Ostinato's own.

Note-on/off pairing per (channel, pitch): a velocity-0 note-on is a note-off, a second
note-on of a sounding pitch closes the first, an unmatched note-off is ignored. Notes still
held are reported as lasting until "now", so a chord held across a bar line is heard.
Pure logic; the session calls it from one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from ostinato.model.tokens import DRUM_PROGRAM

HUMAN, OSTINATO = "human", "ostinato"
#: A note this close before a bar line belongs to the next bar (players push the downbeat).
EARLY_BEATS = 1 / 8


@dataclass(frozen=True)
class RecordedNote:
    start_beats: float
    duration_beats: float
    pitch: int
    velocity: int
    program: int
    source: str


def default_channel_programs() -> dict[int, int]:
    """Input channel (0-based) → program: channel 10 is drums, the others a piano."""
    programs = {ch: 0 for ch in range(16)}
    programs[9] = DRUM_PROGRAM
    return programs


class Recorder:
    def __init__(
        self,
        channel_programs: dict[int, int] | None = None,
        beats_per_bar: float = 4.0,
        keep_bars: int = 16,
    ) -> None:
        self.channel_programs = channel_programs or default_channel_programs()
        self.beats_per_bar = beats_per_bar
        self.keep_bars = keep_bars
        self.notes: list[RecordedNote] = []
        self._open: dict[tuple[int, int], tuple[float, int]] = {}  # (ch, pitch) → (beat, vel)
        self.last_human_beat: float | None = None

    def clear(self) -> None:
        self.notes.clear()
        self._open.clear()
        self.last_human_beat = None

    def note_on(self, beat: float, channel: int, pitch: int, velocity: int) -> None:
        if velocity == 0:
            self.note_off(beat, channel, pitch)
            return
        if (channel, pitch) in self._open:  # retrigger: close the sounding one first
            self.note_off(beat, channel, pitch)
        self._open[(channel, pitch)] = (beat, velocity)
        self.last_human_beat = beat

    def note_off(self, beat: float, channel: int, pitch: int) -> None:
        opened = self._open.pop((channel, pitch), None)
        if opened is None:
            return
        start, velocity = opened
        program = self.channel_programs.get(channel, 0)
        self.notes.append(
            RecordedNote(start, max(beat - start, 1 / 32), pitch, velocity, program, HUMAN)
        )

    def add_generated(self, start_beats: float, duration_beats: float, pitch: int,
                      velocity: int, program: int) -> None:  # fmt: skip
        self.notes.append(
            RecordedNote(start_beats, duration_beats, pitch, velocity, program, OSTINATO)
        )

    def bar_notes(self, bar: int, now_beat: float | None = None) -> list[RecordedNote]:
        """Notes that start in ``bar`` (0-based), held ones lasting until ``now_beat``."""
        lo, hi = self._bounds(bar)
        out = [n for n in self.notes if lo <= n.start_beats < hi]
        if now_beat is not None:
            for (channel, pitch), (start, velocity) in self._open.items():
                if lo <= start < hi:
                    program = self.channel_programs.get(channel, 0)
                    out.append(
                        RecordedNote(start, max(now_beat - start, 1 / 32), pitch, velocity,
                                     program, HUMAN)
                    )  # fmt: skip
        return sorted(out, key=lambda n: (n.start_beats, n.program, n.pitch))

    def _bounds(self, bar: int) -> tuple[float, float]:
        return bar * self.beats_per_bar - EARLY_BEATS, (bar + 1) * self.beats_per_bar - EARLY_BEATS

    def human_played_in(self, bar: int) -> bool:
        lo, hi = self._bounds(bar)
        if any(lo <= start < hi for start, _ in self._open.values()):
            return True
        return any(n.source == HUMAN and lo <= n.start_beats < hi for n in self.notes)

    def prune(self, current_bar: int) -> None:
        """Forget notes older than ``keep_bars`` bars."""
        oldest = (current_bar - self.keep_bars) * self.beats_per_bar
        if self.notes and self.notes[0].start_beats < oldest:
            self.notes = [n for n in self.notes if n.start_beats >= oldest]
