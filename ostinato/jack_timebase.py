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
DAW's MIDI clock or Ableton Link, not JACK's transport. libjack is loaded when a master is
made, not on import (a bench without JACK says what is missing). The timebase callback runs in
the Python process that made the master and takes its GIL each cycle (a few microseconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

TICKS_PER_BEAT = 1920.0
BEATS_PER_BAR = 4


class TimebaseMaster:
    """A JACK client rolling the transport at ``bpm`` in 4/4; :meth:`close` before the server
    goes (a client outliving its server crashes in libjack)."""

    def __init__(self, bpm: float, name: str = "transport", servername: str | None = None) -> None:
        import jack  # here, not on import: libjack is needed only when a master is made

        self._states = {jack.ROLLING: "rolling", jack.STARTING: "starting",
                        jack.STOPPED: "stopped"}  # fmt: skip
        self._bbt = jack.POSITION_BBT
        self._bpm = float(bpm)
        self.client = jack.Client(name, no_start_server=True, servername=servername)
        self.rate = self.client.samplerate
        try:  # a client left open outlives its server and crashes in libjack
            self.client.set_timebase_callback(self._timebase, conditional=False)
            self.client.activate()
        except BaseException:
            self.client.close()
            raise
        self._open = True

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
        """``"rolling"``, ``"starting"``, ``"stopped"`` (or ``"other"``)."""
        return self._states.get(self.client.transport_state, "other")

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
        pos.valid = self._bbt
        pos.bar = bar + 1
        pos.beat = beat + 1
        pos.tick = tick
        pos.bar_start_tick = float(bar * BEATS_PER_BAR * TICKS_PER_BEAT)
        pos.beats_per_bar = float(BEATS_PER_BAR)
        pos.beat_type = 4.0
        pos.ticks_per_beat = TICKS_PER_BEAT
        pos.beats_per_minute = self._bpm


class TransportProcess:
    """A :class:`TimebaseMaster` in a process of its own (``python -m ostinato.jack_timebase``),
    for a bench whose own process records with a Python JACK client: two Python callbacks in
    one process wait on each other's interpreter lock, and a master late for its cycle holds up
    the whole JACK graph (every client, the daemon's sender too, misses the cycle). Commands go
    over its stdin once it has said it is ready, so none is lost while it starts."""

    def __init__(self, bpm: float, env: dict[str, str] | None = None, timeout: float = 10.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ostinato.jack_timebase", "--bpm", str(bpm)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, text=True,
        )  # fmt: skip
        out = self.proc.stdout
        assert out is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(out.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or ready[0].strip() != "ready":
            self.close()
            raise RuntimeError("the transport master did not start (is the JACK server up?)")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def roll(self) -> None:
        self.send("roll")

    def stop(self) -> None:
        self.send("stop")

    def tempo(self, bpm: float) -> None:
        self.send(f"tempo {bpm}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ostinato.jack_timebase",
        description="Roll the JACK transport as a DAW would: commands roll, stop, tempo BPM, "
        "exit on stdin, one a line.",
    )
    parser.add_argument("--bpm", type=float, required=True)
    parser.add_argument("--name", default="transport")
    args = parser.parse_args(argv)
    master = TimebaseMaster(args.bpm, args.name)
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            command, *rest = line.split() or [""]
            if command == "roll":
                master.roll()
            elif command == "stop":
                master.stop()
            elif command == "tempo" and rest:
                master.tempo(float(rest[0]))
            elif command == "exit":
                break
    finally:
        master.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
