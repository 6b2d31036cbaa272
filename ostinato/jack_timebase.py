"""The JACK transport rolled as a DAW rolls it, for the benchmarks and the test rig.

:class:`TimebaseMaster` is a JACK client that is the transport's timebase master — bars of
4/4 at a tempo, so jack_midi_clock sends MIDI clock at it — and locates, starts and stops
the transport through libjack, in the caller's thread. Each cycle's bar, beat and tick are
computed from that cycle's frame alone.

Why not ``jack_transport`` (the example client, driven through its stdin): its timebase
callback adds each period to the ticks of the position it was handed. When it runs late on a
loaded machine, libjack can hand it a position just located (a frame, no bar or beat: zero
ticks per beat) as an ordinary cycle, and its loop carrying ticks into beats never ends. Its
process thread then spins for good; the transport waits for it in Starting (each new locate
restarts JACK's two-second sync timeout) and jack_midi_clock sends no Start and no tick. Seen
in 18 of 106 test servers on a loaded 2-core machine, with a debugger on the spinning thread.
A command read while it was still starting was lost, too.

Linux and macOS (wherever JACK-Client runs); never used by the daemon, which follows the
DAW's MIDI clock or Ableton Link, not JACK's transport.
"""

from __future__ import annotations

import jack

TICKS_PER_BEAT = 1920.0
BEATS_PER_BAR = 4


class TimebaseMaster:
    """A JACK client rolling the transport at ``bpm`` in 4/4; :meth:`close` before the server
    goes (a client outliving its server crashes in libjack)."""

    def __init__(self, bpm: float, name: str = "transport") -> None:
        self.client = jack.Client(name, no_start_server=True)
        self.rate = self.client.samplerate
        self._bpm = float(bpm)
        if not self.client.set_timebase_callback(self._timebase, conditional=False):
            self.client.close()
            raise RuntimeError("the JACK transport's timebase master could not be set")
        self.client.activate()
        self._open = True

    @property
    def bpm(self) -> float:
        return self._bpm

    def tempo(self, bpm: float) -> None:
        """A new tempo from the next cycle (bar and beat are counted at it from frame 0, as
        ``jack_transport``'s ``tempo`` did; jack_midi_clock's ticks go on from its last)."""
        if not bpm > 0:
            raise ValueError(f"tempo must be > 0 BPM, got {bpm}")
        self._bpm = float(bpm)

    def roll(self) -> None:
        """Bar 1, then play: a Start from jack_midi_clock (while rolling: a relocate, whose
        Start begins a new tick grid)."""
        self.client.transport_frame = 0
        self.client.transport_start()

    def stop(self) -> None:
        self.client.transport_stop()

    def state(self) -> str:
        """``"rolling"``, ``"starting"``, ``"stopped"`` …"""
        return str(self.client.transport_state).rsplit(".", 1)[-1].lower()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self.client.deactivate()
        self.client.close()

    def _timebase(self, state: int, blocksize: int, pos, new_pos: bool) -> None:
        rate = pos.frame_rate or self.rate
        ticks = int(pos.frame / (60.0 * rate) * self._bpm * TICKS_PER_BEAT)
        beats, tick = divmod(ticks, int(TICKS_PER_BEAT))
        bar, beat = divmod(beats, BEATS_PER_BAR)
        pos.valid = jack.POSITION_BBT
        pos.bar = bar + 1
        pos.beat = beat + 1
        pos.tick = tick
        pos.bar_start_tick = float(bar * BEATS_PER_BAR * TICKS_PER_BEAT)
        pos.beats_per_bar = float(BEATS_PER_BAR)
        pos.beat_type = 4.0
        pos.ticks_per_beat = TICKS_PER_BEAT
        pos.beats_per_minute = self._bpm
