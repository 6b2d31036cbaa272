"""The keyboard player of the benches: chords struck on beats 1 and 3 on the DAW's clock, a
JACK client of the bench's own (``ostinato bench --accompany`` and ``--realtime --keys``), and
the chords that never loop it can play."""

from __future__ import annotations

import random

PPQN = 24  # the MIDI clock's ticks per beat
HALF_BAR_TICKS = 2 * PPQN  # the keyboard player strikes on beats 1 and 3
KEYS_OUT = "ostinato-bench-keys:out"

Chord = tuple[int, ...]  # MIDI pitches
#: Keys the changing chords are drawn from (tonic pitch classes, major): C, Eb, E, A.
CHANGING_KEYS = (0, 3, 4, 9)
#: The diatonic triads drawn in a key: semitones above the tonic, minor or not (I ii iii IV V
#: vi; the diminished vii is left out).
DEGREES = ((0, False), (2, True), (4, True), (5, False), (7, False), (9, True))
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def triad(root: int, minor: bool) -> tuple[str, Chord]:
    """Name and close voicing (every tone in F#3–F4) of a major or minor triad."""
    pcs = (root, root + (3 if minor else 4), root + 7)
    voicing = tuple(sorted(54 + (pc - 54) % 12 for pc in pcs))
    return NOTE_NAMES[root % 12] + ("m" if minor else ""), voicing


def changing_chords(n: int, seed: int, chords_per_key: int = 4) -> list[tuple[str, Chord]]:
    """``n`` chords that do not loop: the diatonic triads of a key from :data:`CHANGING_KEYS`,
    drawn by a seeded generator, each different from the two before it; every
    ``chords_per_key`` chords the key moves to another one."""
    rng = random.Random(seed)
    key = rng.choice(CHANGING_KEYS)
    chords: list[tuple[str, Chord]] = []
    for k in range(n):
        if k and k % chords_per_key == 0:
            key = rng.choice([other for other in CHANGING_KEYS if other != key])
        recent = [name for name, _ in chords[-2:]]
        options = [triad(key + step, minor) for step, minor in DEGREES]
        chords.append(rng.choice([c for c in options if c[0] not in recent]))
    return chords


class KeysPlayer:
    """A JACK client that plays chords on the DAW's clock: on every 48th tick (beats 1 and 3)
    the previous chord's note-offs, then the half bar's chord (``chords`` has one per half bar,
    looped), at the tick's own frame. Its process callback, on JACK's process thread, only
    reads the clock and writes the few events due in the cycle: no lock, no I/O."""

    def __init__(self, chords: list[Chord], velocity: int = 80) -> None:
        import jack

        self.chords, self.velocity = chords, velocity
        self.client = jack.Client("ostinato-bench-keys", no_start_server=True)
        self.clock_in = self.client.midi_inports.register("clock")
        self.out = self.client.midi_outports.register("out")
        self.tick = -1  # -1: before the DAW's Start
        self.sounding: tuple[int, ...] = ()
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.name_in = f"{self.client.name}:clock"

    def _process(self, frames: int) -> None:
        self.out.clear_buffer()
        for offset, data in self.clock_in.incoming_midi_events():
            status = bytes(data)[0]
            if status in (0xFA, 0xFB):  # Start / Continue: the next tick is the bar line
                self.tick = 0
            elif status == 0xFC:
                self._release(offset)
                self.tick = -1
            elif status == 0xF8 and self.tick >= 0:
                if self.tick % HALF_BAR_TICKS == 0:
                    self._release(offset)
                    chord = self.chords[(self.tick // HALF_BAR_TICKS) % len(self.chords)]
                    for pitch in chord:
                        self.out.write_midi_event(offset, (0x90, pitch, self.velocity))
                    self.sounding = chord
                self.tick += 1

    def _release(self, offset: int) -> None:
        for pitch in self.sounding:
            self.out.write_midi_event(offset, (0x80, pitch, 0))
        self.sounding = ()

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
