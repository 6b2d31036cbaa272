"""``ostinato bench --accompany``: does jam mode accompany a keyboard player through JACK?

The test a musician makes first: "I play the chords, you play bass and drums". A private JACK
server (dummy driver), jack_midi_clock and the transport's timebase master as the DAW at
``bpm``, the daemon in jam mode on ``programs`` (default drums and bass), and a keyboard
player of the bench's own: a JACK client that counts the DAW's clock ticks and strikes a
close-voiced chord on beats 1 and 3 of every bar (a chord per half bar), written at the frame
of the tick it falls on (how a DAW plays a MIDI clip). A second client records the clock and
the daemon's notes with their frames. Each of the daemon's notes is placed on the DAW's tick
grid and scored against the chord sounding. Two scenarios:

``loop`` (the default): a 4-bar progression looped, a chord a bar (:data:`PROGRESSIONS`;
:func:`run_accompany_bench`'s ``progressions`` plays others):

* bars where each asked-for part plays (bass and drums in every bar after the first);
* bass chord tones: the share of bass notes whose pitch class is in the chord, over the
  loop's 2nd and 3rd passes (bars 5–12), overall and on beats 1 and 3;
* kick on beat 1: bars whose downbeat has a bass drum (GM 35 or 36).

``changing`` (``--changing``): chords that never loop (:func:`changing_chords`, seeded, from a
few keys), a new chord each bar, then a new chord each half bar. The model cannot predict
them; the daemon can only follow them where it re-plans the bar (``ostinato run --commit``).
Scored over the bars after the first two (:func:`score_changing`):

* bass chord tones on beats 2–4 (onset 24 ticks or more into the bar), against the chord
  sounding at the onset, and on beat 1;
* follow: for each chord change, whether the first bass note at or after the first commit
  point after it (the next multiple of ``--commit`` beats in the bar strictly after the
  change, or the next bar line; with ``--commit bar``, 1 beat, so the figures compare) and
  before the next change is a tone of the new chord — the share over the changes with such a
  note;
* the bars and kick counts above.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from ostinato.bench_keys import HALF_BAR_TICKS, KEYS_OUT, PPQN, Chord, KeysPlayer, changing_chords
from ostinato.bench_realtime import (
    CLOCK_OUT,
    DAEMON_IN,
    DAEMON_OUT,
    TOOLS,
    FrameRecorder,
    _wait,
    private_server,
)
from ostinato.jack_timebase import TransportProcess
from ostinato.settings import GenerationSettings, format_commit

TICKS_PER_BAR = 4 * PPQN  # 4/4
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
#: How long the daemon may take to load its model and open its ports: a minute or more on a
#: small machine busy with other work.
DAEMON_START_S = 180


T = TypeVar("T")


def halves_of(bar_chords: list[T]) -> list[T]:
    """A chord a bar as the keyboard player plays it: a chord per half bar, struck twice."""
    return [chord for chord in bar_chords for _ in range(2)]


def changing_scenarios(bars: int) -> dict[str, list[tuple[str, Chord]]]:
    """The changing scenario's two runs, as chords per half bar over ``bars`` bars: a new
    chord each bar (struck on beats 1 and 3), and a new chord each half bar."""
    per_bar = changing_chords(bars, seed=1)
    return {"a chord a bar": halves_of(per_bar),
            "two chords a bar": changing_chords(2 * bars, seed=2)}  # fmt: skip


def on_grid(events: list[tuple[int, bytes]]) -> tuple[list[tuple[int, int, int]], int]:
    """The daemon's note-ons as (tick, channel, pitch), each placed on the nearest clock
    tick the DAW sent (ticks counted from the Start), and the ticks heard.

    A tick the recorder did not get (JACK drops the MIDI of a cycle a client was late for,
    and the recorder's ticks are the count every note is placed by) is put back where the
    steady clock had it: one lost tick would otherwise move every later note a tick late,
    the downbeat kicks and the bass on beats 1 and 3 off their beats for the rest of the
    run (seen: 3 of 11 kicks on 1 in a run whose notes were all on the bar line)."""
    ticks: list[int] = []
    notes: list[tuple[int, int, int]] = []
    started = False
    for frame, data in events:
        if data[0] == 0xFA:
            started, ticks = True, []
        elif data[0] == 0xF8 and started:
            ticks.append(frame)
    ticks = _with_lost_ticks(ticks)
    import bisect

    for frame, data in events:
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0 and ticks:
            k = bisect.bisect_left(ticks, frame)
            if k == len(ticks) or (k > 0 and frame - ticks[k - 1] < ticks[k] - frame):
                k -= 1
            notes.append((k, data[0] & 0x0F, data[1]))
    return notes, len(ticks)


def _with_lost_ticks(ticks: list[int]) -> list[int]:
    """``ticks`` (frames) with each gap of about ``k`` tick intervals (k ≥ 2, the interval the
    median of the gaps) filled with the ``k - 1`` ticks missing, evenly spaced."""
    if len(ticks) < 3:
        return ticks
    gaps = sorted(b - a for a, b in itertools.pairwise(ticks))
    step = gaps[len(gaps) // 2]
    if step <= 0:
        return ticks
    out = [ticks[0]]
    for a, b in itertools.pairwise(ticks):
        k = round((b - a) / step)
        out.extend(a + round(i * (b - a) / k) for i in range(1, k))
        out.append(b)
    return out


def _parts(notes: list[tuple[int, int, int]], ticks: int, bass_channel: int, drum_channel: int
           ) -> tuple[list[tuple[int, int]], dict]:  # fmt: skip
    """The bass notes as (tick, pitch), and the figures both scenarios report: bars where bass
    and drums play, and kick on beat 1, in the bars after the first."""
    bars = ticks // TICKS_PER_BAR
    bass = sorted((t, p) for t, ch, p in notes if ch == bass_channel)
    drums = [(t, p) for t, ch, p in notes if ch == drum_channel]
    bass_bars = {t // TICKS_PER_BAR for t, _ in bass}
    drum_bars = {t // TICKS_PER_BAR for t, _ in drums}
    kick_bars = {t // TICKS_PER_BAR for t, p in drums if p in (35, 36) and t % TICKS_PER_BAR == 0}
    later = range(1, bars)
    return bass, {
        "bars": bars,
        "bass_bars": len([b for b in later if b in bass_bars]),
        "drum_bars": len([b for b in later if b in drum_bars]),
        "bars_after_first": len(later),
        "kick_on_one_bars": len([b for b in later if b in kick_bars]),
        "bass_notes": len(bass),
        "drum_notes": len(drums),
    }


def _share(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 3) if hits else None


def score(
    notes: list[tuple[int, int, int]], ticks: int, chords: list[Chord],
    bass_channel: int = 1, drum_channel: int = 9,
) -> dict:  # fmt: skip
    """The figures of one looped run (``chords``: a chord a bar; see the module docstring)."""
    bass, figures = _parts(notes, ticks, bass_channel, drum_channel)

    def tones(sel) -> float | None:
        return _share([p % 12 in {q % 12 for q in chords[(t // TICKS_PER_BAR) % len(chords)]}
                       for t, p in sel])  # fmt: skip

    passes = [(t, p) for t, p in bass if len(chords) <= t // TICKS_PER_BAR < 3 * len(chords)]
    strong = [(t, p) for t, p in passes if t % HALF_BAR_TICKS == 0]
    return {
        **figures,
        "bass_chord_tones_passes_2_3": tones(passes),
        "bass_chord_tones_beats_1_3": tones(strong),
        "bass_notes_passes_2_3": len(passes),
    }


def score_changing(
    notes: list[tuple[int, int, int]], ticks: int, halves: list[Chord], follow_beats: float = 1,
    bass_channel: int = 1, drum_channel: int = 9, from_bar: int = 2,
) -> dict:  # fmt: skip
    """The figures of one run of chords that do not loop (``halves``: the chord of each half
    bar from the Start), over the bars from ``from_bar`` (the daemon's first bars hear the
    playing begin). ``follow_beats``: the commit step the follow figure waits for after each
    change (the daemon's ``--commit`` N; 1 for ``--commit bar``, so the two compare)."""
    bass, figures = _parts(notes, ticks, bass_channel, drum_channel)
    end = figures["bars"] * TICKS_PER_BAR
    pcs = [frozenset(q % 12 for q in chord) for chord in halves]

    def sounding(t: int) -> frozenset[int]:
        return pcs[(t // HALF_BAR_TICKS) % len(pcs)]

    scored = [(t, p) for t, p in bass if from_bar * TICKS_PER_BAR <= t < end]
    beats_2_4 = [p % 12 in sounding(t) for t, p in scored if t % TICKS_PER_BAR >= PPQN]
    beat_1 = [p % 12 in sounding(t) for t, p in scored if t % TICKS_PER_BAR < PPQN]
    # Chord changes: the half bars whose chord differs from the one before, in the bars scored.
    changes = [h * HALF_BAR_TICKS for h in range(1, end // HALF_BAR_TICKS)
               if h * HALF_BAR_TICKS >= from_bar * TICKS_PER_BAR and sounding(
                   h * HALF_BAR_TICKS) != sounding((h - 1) * HALF_BAR_TICKS)]  # fmt: skip
    step = max(1, round(follow_beats * PPQN))  # ticks
    followed = []
    for k, change in enumerate(changes):
        # Commit points: every ``step`` from each bar line, and the next bar line. A change on
        # a commit point is heard just after it (the epsilon): the next point follows it.
        bar_tick = change - change % TICKS_PER_BAR
        commit_tick = bar_tick + min((change % TICKS_PER_BAR // step + 1) * step, TICKS_PER_BAR)
        until = changes[k + 1] if k + 1 < len(changes) else end
        first = next((p for t, p in bass if commit_tick <= t < until), None)
        if first is not None:  # no bass note before the next change: nothing to judge
            followed.append(first % 12 in sounding(change))
    return {
        **figures,
        "bass_chord_tones_beats_2_4": _share(beats_2_4),
        "bass_chord_tones_beat_1": _share(beat_1),
        "bass_follows_changes": _share(followed),
        "bass_notes_beats_2_4": len(beats_2_4),
        "bass_notes_beat_1": len(beat_1),
        "chord_changes": len(changes),
        "chord_changes_judged": len(followed),
        "follow_beats": follow_beats,
    }


#: The figures averaged over a scenario's runs, and the counts summed.
LOOP_MEANS = ("bass_chord_tones_passes_2_3", "bass_chord_tones_beats_1_3")
CHANGING_MEANS = ("bass_chord_tones_beats_2_4", "bass_chord_tones_beat_1", "bass_follows_changes")
TOTALS = ("bass_bars", "drum_bars", "bars_after_first", "kick_on_one_bars")


def follow_beats_of(commit: str | None) -> float:
    """The follow figure's commit step in beats: ``--commit N`` → N; ``bar`` or none → 1."""
    return 1.0 if commit in (None, "bar") else float(commit)


def run_accompany_bench(
    model_dir: str | Path, bpm: int = 120, bars: int | None = None, programs: str = "drums,33",
    progressions: dict[str, list[tuple[str, Chord]]] | None = None, period: int = 256,
    changing: bool = False, commit: str | None = None, extra_args: tuple[str, ...] = (),
) -> dict:  # fmt: skip
    """Each progression through a fresh private JACK server; a report of the figures.

    ``changing``: the changing scenario (:func:`changing_scenarios`) instead of the looped
    ``progressions``; ``bars`` defaults to 12 looped (three passes), 24 changing. ``commit``
    (``bar`` or beats) is passed to the daemon as ``--commit`` only when given (None: the
    daemon's own default); ``extra_args`` go to the daemon after it."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found: install jackd2, jack-midi-clock")
    bars = bars or (24 if changing else 12)
    daemon_args = (*(("--commit", str(commit)) if commit is not None else ()), *extra_args)
    if changing:
        scenarios = changing_scenarios(bars)
        runs_in = {name: [v for _, v in chords] for name, chords in scenarios.items()}
    else:
        runs_in = {name: halves_of([v for _, v in progression])
                   for name, progression in (progressions or PROGRESSIONS).items()}  # fmt: skip
    runs = []
    for k, (name, halves) in enumerate(runs_in.items()):
        server = f"ostinato-accompany-{os.getpid()}-{k}"  # a fresh name: no state carried
        with private_server(server, period) as env, tempfile.TemporaryDirectory() as tmp:
            notes, ticks = _run_one(env, Path(model_dir), bpm, bars, programs, halves,
                                    Path(tmp), daemon_args)  # fmt: skip
        ticks = min(ticks, bars * TICKS_PER_BAR)
        if changing:
            result = score_changing(notes, ticks, halves, follow_beats_of(commit))
        else:
            result = score(notes, ticks, halves[::2])
        result["progression"] = name
        result["_notes"] = notes
        runs.append(result)
        shown = {k: v for k, v in result.items() if not k.startswith("_")}
        print(f"  {name}: {shown}", file=sys.stderr, flush=True)
    return {"model": str(model_dir), "bpm": bpm, "programs": programs,
            "scenario": "changing" if changing else "loop",
            "commit": commit or format_commit(GenerationSettings().commit),
            "daemon_args": list(daemon_args), "runs": runs,
            **{k: sum(r[k] for r in runs) for k in TOTALS},
            **{k: _mean(runs, k) for k in (CHANGING_MEANS if changing else LOOP_MEANS)},
            }  # fmt: skip


def _mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(sum(values) / len(values), 3) if values else None


def _run_one(env, model_dir, bpm, bars, programs, halves, work, daemon_args):
    """One run: the daemon, the DAW and the keyboard player on the private server ``env``
    names; the daemon's notes on the DAW's grid and the ticks heard."""
    lsp = lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout  # noqa: E731
    log_path = work / "daemon.log"
    log = log_path.open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ostinato", "run", "--backend", "jack", "--mode", "jam",
         "--programs", programs, "--model", str(model_dir), "--no-osc", "--no-record",
         *daemon_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    clock = transport = ear = keys = None
    try:
        ready = lambda: DAEMON_IN in lsp() or daemon.poll() is not None  # noqa: E731
        _wait(ready, DAEMON_START_S, "the daemon's ports")
        if daemon.poll() is not None:  # e.g. an argument this daemon does not know
            log.flush()
            tail = log_path.read_text().strip().splitlines()[-5:]
            raise RuntimeError(f"the daemon exited ({daemon.returncode}): " + " / ".join(tail))
        clock = subprocess.Popen(["jack_midi_clock"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        _wait(lambda: CLOCK_OUT in lsp(), 10, "jack_midi_clock")
        os.environ["JACK_DEFAULT_SERVER"] = env["JACK_DEFAULT_SERVER"]
        ear = FrameRecorder()
        keys = KeysPlayer(halves)
        for a, b in ((CLOCK_OUT, DAEMON_IN), (CLOCK_OUT, ear.name), (DAEMON_OUT, ear.name),
                     (CLOCK_OUT, keys.name_in), (KEYS_OUT, DAEMON_IN)):  # fmt: skip
            subprocess.run(["jack_connect", a, b], env=env, check=True)
        transport = TransportProcess(bpm, env=env)
        transport.roll()
        time.sleep(bars * 4 * 60 / bpm + 0.5)
        transport.stop()
        time.sleep(0.3)
        return on_grid(ear.snapshot())
    finally:
        for closer in (keys, ear, transport):
            if closer is not None:
                closer.close()
        if clock is not None and clock.poll() is None:
            clock.terminate()
            clock.wait(5)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        log.close()


def format_accompany(report: dict) -> str:
    commit = report.get("commit", "bar")
    extra = " ".join(report.get("daemon_args", [])) or "none"
    lines = [f"jam mode on {report['programs']} under a keyboard player's chords "
             f"({report.get('scenario', 'loop')}), {report['bpm']} BPM, commit {commit}, "
             f"through JACK ({report['model']}; daemon arguments: {extra})"]  # fmt: skip
    if report.get("scenario") == "changing":
        return "\n".join(lines + _changing_table(report))
    lines += ["| progression | bass bars | drum bars | kick on 1 | bass chord tones (passes 2–3) "
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


def _changing_table(report: dict) -> list[str]:
    step = follow_beats_of(report.get("commit"))
    lines = [f"chords that do not loop, from bar 3: bass chord tones on beats 2–4 and on beat 1; "
             f"follows a change: the first bass note from the first {step:g}-beat point after a "
             "change (the next commit point) on, before the next change, is a tone of the new "
             "chord",
             "| chords | bass bars | drum bars | kick on 1 | chord tones, beats 2–4 | on beat 1 "
             "| follows a change | bass notes |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["runs"]:
        n = r["bars_after_first"]
        judged = f"{r['chord_changes_judged']}/{r['chord_changes']}"
        lines.append(f"| {r['progression']} | {r['bass_bars']}/{n} | {r['drum_bars']}/{n} | "
                     f"{r['kick_on_one_bars']}/{n} | {r['bass_chord_tones_beats_2_4']} "
                     f"({r['bass_notes_beats_2_4']}) | {r['bass_chord_tones_beat_1']} "
                     f"({r['bass_notes_beat_1']}) | {r['bass_follows_changes']} ({judged}) "
                     f"| {r['bass_notes']} |")  # fmt: skip
    n = report["bars_after_first"]
    lines.append(f"| **all** | {report['bass_bars']}/{n} | {report['drum_bars']}/{n} | "
                 f"{report['kick_on_one_bars']}/{n} | {report['bass_chord_tones_beats_2_4']} | "
                 f"{report['bass_chord_tones_beat_1']} | {report['bass_follows_changes']} "
                 "| |")  # fmt: skip
    return lines
