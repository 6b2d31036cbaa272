"""``ostinato bench --accompany``: does jam mode accompany a keyboard player through JACK?

The test a musician makes first: "I play the chords, you play bass and drums". A private JACK
server (dummy driver), jack_midi_clock and jack_transport as the DAW at ``bpm``, the daemon in
jam mode on ``programs`` (default drums and bass), and a keyboard player of the bench's own: a
JACK client that counts the DAW's clock ticks and strikes a close-voiced chord on beats 1 and
3 of every bar, written at the frame of the tick it falls on (how a DAW plays a MIDI clip),
looping a 4-bar progression. A second client records the clock and the daemon's notes with
their frames. Each of the daemon's notes is placed on the DAW's tick grid, and scored against
the chord sounding in its bar:

* bars where each asked-for part plays (bass and drums in every bar after the first);
* bass chord tones: the share of bass notes whose pitch class is in the chord, over the
  loop's 2nd and 3rd passes (bars 5–12), overall and on beats 1 and 3;
* kick on beat 1: bars whose downbeat has a bass drum (GM 35 or 36).

The progressions are the bench's own (:data:`PROGRESSIONS`); ``--progression`` plays others.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ostinato import jack_shm
from ostinato.bench_realtime import CLOCK_OUT, DAEMON_IN, DAEMON_OUT, TOOLS, FrameRecorder, _wait

TICKS_PER_BAR = 96  # 4/4 at 24 ppqn
#: Chord progressions, a chord a bar (root pitch class names and MIDI pitches of a close
#: voicing around middle C): minor pop, jazz ii–V, a major rock loop, a modal minor.
PROGRESSIONS: dict[str, list[tuple[str, tuple[int, ...]]]] = {
    "Am-F-C-G": [("Am", (57, 60, 64)), ("F", (57, 60, 65)), ("C", (55, 60, 64)),
                 ("G", (55, 59, 62))],
    "Dm7-G7-Cmaj7-A7": [("Dm7", (57, 60, 62, 65)), ("G7", (55, 59, 62, 65)),
                        ("Cmaj7", (55, 59, 60, 64)), ("A7", (55, 57, 61, 64))],
    "E-C#m-A-B": [("E", (56, 59, 64)), ("C#m", (56, 61, 64)), ("A", (57, 61, 64)),
                  ("B", (54, 59, 63))],
    "Gm-Eb-Bb-F": [("Gm", (55, 58, 62)), ("Eb", (55, 58, 63)), ("Bb", (53, 58, 62)),
                   ("F", (53, 57, 60))],
}  # fmt: skip
KEYS_OUT = "ostinato-bench-keys:out"


class KeysPlayer:
    """A JACK client that plays chords on the DAW's clock: on every 48th tick (beats 1 and 3)
    the previous chord's note-offs, then the bar's chord, at the tick's own frame. Its process
    callback only reads the clock and writes the few events due in the cycle."""

    def __init__(self, chords: list[tuple[int, ...]], velocity: int = 80) -> None:
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
                if self.tick % 48 == 0:
                    self._release(offset)
                    chord = self.chords[(self.tick // TICKS_PER_BAR) % len(self.chords)]
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


def on_grid(events: list[tuple[int, bytes]]) -> tuple[list[tuple[int, int, int]], int]:
    """The daemon's note-ons as (tick, channel, pitch), each placed on the nearest clock
    tick the DAW sent (ticks counted from the Start), and the ticks heard."""
    ticks: list[int] = []
    notes: list[tuple[int, int, int]] = []
    started = False
    for frame, data in events:
        if data[0] == 0xFA:
            started, ticks = True, []
        elif data[0] == 0xF8 and started:
            ticks.append(frame)
    import bisect

    for frame, data in events:
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0 and ticks:
            k = bisect.bisect_left(ticks, frame)
            if k == len(ticks) or (k > 0 and frame - ticks[k - 1] < ticks[k] - frame):
                k -= 1
            notes.append((k, data[0] & 0x0F, data[1]))
    return notes, len(ticks)


def score(
    notes: list[tuple[int, int, int]], ticks: int, chords: list[tuple[int, ...]],
    bass_channel: int = 1, drum_channel: int = 9,
) -> dict:  # fmt: skip
    """The figures of one run (see the module docstring)."""
    bars = ticks // TICKS_PER_BAR
    bass = [(t, p) for t, ch, p in notes if ch == bass_channel]
    drums = [(t, p) for t, ch, p in notes if ch == drum_channel]
    bass_bars = {t // TICKS_PER_BAR for t, _ in bass}
    drum_bars = {t // TICKS_PER_BAR for t, _ in drums}
    kick_bars = {t // TICKS_PER_BAR for t, p in drums if p in (35, 36) and t % TICKS_PER_BAR == 0}
    later = range(1, bars)

    def tones(sel) -> float | None:
        hits = [p % 12 in {q % 12 for q in chords[(t // TICKS_PER_BAR) % len(chords)]}
                for t, p in sel]  # fmt: skip
        return round(sum(hits) / len(hits), 3) if hits else None

    passes = [(t, p) for t, p in bass if len(chords) <= t // TICKS_PER_BAR < 3 * len(chords)]
    strong = [(t, p) for t, p in passes if t % 48 == 0]
    return {
        "bars": bars,
        "bass_bars": len([b for b in later if b in bass_bars]),
        "drum_bars": len([b for b in later if b in drum_bars]),
        "bars_after_first": len(later),
        "kick_on_one_bars": len([b for b in later if b in kick_bars]),
        "bass_notes": len(bass),
        "drum_notes": len(drums),
        "bass_chord_tones_passes_2_3": tones(passes),
        "bass_chord_tones_beats_1_3": tones(strong),
        "bass_notes_passes_2_3": len(passes),
    }


def run_accompany_bench(
    model_dir: str | Path, bpm: int = 120, bars: int = 12, programs: str = "drums,33",
    progressions: dict[str, list[tuple[str, tuple[int, ...]]]] | None = None,
    period: int = 256, extra_args: tuple[str, ...] = (),
) -> dict:  # fmt: skip
    """Each progression through a fresh private JACK server; a report of the figures."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found: install jackd2, jack-midi-clock")
    runs = []
    for k, (name, progression) in enumerate((progressions or PROGRESSIONS).items()):
        chords = [voicing for _, voicing in progression]
        server = f"ostinato-accompany-{os.getpid()}-{k}"  # a fresh name: no state carried
        env = {**os.environ, "JACK_DEFAULT_SERVER": server, "JACK_NO_AUDIO_RESERVATION": "1"}
        jack_shm.clear_stale()
        jackd = subprocess.Popen(
            ["jackd", "-n", server, "-d", "dummy", "-r", "48000", "-p", str(period)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            _wait(lambda env=env: subprocess.run(["jack_lsp"], env=env,
                  capture_output=True).returncode == 0, 10, "jackd")  # fmt: skip
            with tempfile.TemporaryDirectory() as tmp:
                result = _run_one(env, Path(model_dir), bpm, bars, programs, chords, Path(tmp),
                                  extra_args)  # fmt: skip
            result["progression"] = name
            runs.append(result)
            shown = {k: v for k, v in result.items() if not k.startswith("_")}
            print(f"  {name}: {shown}", file=sys.stderr, flush=True)
        finally:
            jackd.terminate()
            jackd.wait(5)
    total = {k: sum(r[k] for r in runs) for k in ("bass_bars", "drum_bars", "bars_after_first",
                                                   "kick_on_one_bars")}  # fmt: skip
    return {"model": str(model_dir), "bpm": bpm, "programs": programs, "runs": runs, **total,
            "bass_chord_tones_passes_2_3": _mean(runs, "bass_chord_tones_passes_2_3"),
            "bass_chord_tones_beats_1_3": _mean(runs, "bass_chord_tones_beats_1_3")}  # fmt: skip


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(sum(values) / len(values), 3) if values else None


def _run_one(env, model_dir, bpm, bars, programs, chords, work, extra_args) -> dict:
    lsp = lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout  # noqa: E731
    log = (work / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ostinato", "run", "--backend", "jack", "--mode", "jam",
         "--programs", programs, "--model", str(model_dir), "--no-osc", "--no-record",
         *extra_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    clock = transport = ear = keys = None
    try:
        _wait(lambda: DAEMON_IN in lsp(), 60, "the daemon's ports")
        clock = subprocess.Popen(["jack_midi_clock"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        _wait(lambda: CLOCK_OUT in lsp(), 10, "jack_midi_clock")
        os.environ["JACK_DEFAULT_SERVER"] = env["JACK_DEFAULT_SERVER"]
        ear = FrameRecorder()
        keys = KeysPlayer(chords)
        for a, b in ((CLOCK_OUT, DAEMON_IN), (CLOCK_OUT, ear.name), (DAEMON_OUT, ear.name),
                     (CLOCK_OUT, keys.name_in), (KEYS_OUT, DAEMON_IN)):  # fmt: skip
            subprocess.run(["jack_connect", a, b], env=env, check=True)
        transport = subprocess.Popen(["jack_transport"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        assert transport.stdin is not None
        for command in ("master", f"tempo {bpm}", "locate 0", "play"):
            transport.stdin.write(command + "\n")
        transport.stdin.flush()
        time.sleep(bars * 4 * 60 / bpm + 0.5)
        transport.stdin.write("stop\n")
        transport.stdin.flush()
        time.sleep(0.3)
        notes, ticks = on_grid(ear.snapshot())
    finally:
        for closer in (keys, ear):
            if closer is not None:
                closer.close()
        for proc in (transport, clock):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    result = score(notes, min(ticks, bars * TICKS_PER_BAR), chords)
    result["_notes"] = notes
    return result


def format_accompany(report: dict) -> str:
    lines = [f"jam mode on {report['programs']} under a keyboard player's chords, "
             f"{report['bpm']} BPM, through JACK ({report['model']})",
             "| progression | bass bars | drum bars | kick on 1 | bass chord tones (passes 2–3) "
             "| on beats 1 and 3 | bass notes |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["runs"]:
        n = r["bars_after_first"]
        lines.append(f"| {r['progression']} | {r['bass_bars']}/{n} | {r['drum_bars']}/{n} | "
                     f"{r['kick_on_one_bars']}/{n} | {r['bass_chord_tones_passes_2_3']} | "
                     f"{r['bass_chord_tones_beats_1_3']} | {r['bass_notes']} |")  # fmt: skip
    n = report["bars_after_first"]
    lines.append(f"| **all** | {report['bass_bars']}/{n} | {report['drum_bars']}/{n} | "
                 f"{report['kick_on_one_bars']}/{n} | {report['bass_chord_tones_passes_2_3']} | "
                 f"{report['bass_chord_tones_beats_1_3']} | |")  # fmt: skip
    return "\n".join(lines)
