"""``ostinato bench --soak MINUTES``: a long night, compressed, judged as it goes.

The daemon as a musician runs it for hours — jam mode on drums, bass and keys, recording on,
re-planning within the bar (its default commit) — under a keyboard player who changes chords
on beats 1 and 3, through a private JACK server (period 256 frames) with jack_midi_clock as
the DAW at a fast tempo (240 BPM: an hour holds 3,600 bars, over 100,000 notes recorded).

Reported: the daemon's (and its sender's) resident memory and CPU every 10 s, and the growth
of the memory after the first 10 minutes; bars late or finished from their fallback, and
when; the longest the clock's map listeners took on one tick (a lock held elsewhere shows
here); the session file's longest rewrite; how often the positions were renumbered, and
whether ever inside a bar; the notes' error on the DAW's grid; the OS's own wake-up floor
over the same minutes (``cyclictest`` where installed) to tell the machine's load from the
daemon's. A JSON report and a PNG of memory, CPU and the bar-ready margin over time.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from ostinato.bench_realtime import private_server, run_one
from ostinato.settings import GenerationSettings, format_commit

SOAK_BPM = 240
SOAK_PERIOD = 256
SOAK_PROGRAMS = "drums,33,4"
#: the figures of a run (:func:`ostinato.bench_realtime.run_one`) the soak reports
SOAK_FIGURES = (
    "notes_sent", "deadline_misses", "fallbacks", "silent_bars", "silent_bars_by_time",
    "bars_generated", "grid_error_ms", "bar_ready_margin_ms", "bar_generation_ms", "replans",
    "os_floor", "clock_listener_ms_max", "clock_listener_max_at_s", "clock_listener_max_split",
    "recording", "renumbered",
    "skipped_frames", "ticks_sent", "ticks_counted", "sender_realtime", "input_realtime", "gc",
)  # fmt: skip
SETTLED_S = 600.0  # memory growth is judged from here on (start-up, caches and logs filled)


def run_soak(model_dir: str | Path, minutes: float, bpm: int = SOAK_BPM,
             period: int = SOAK_PERIOD, png: str | Path | None = None) -> dict:  # fmt: skip
    bars = max(2, round(minutes * bpm / 4))
    samples: list[dict] = []
    commit = format_commit(GenerationSettings().commit)
    print(f"soak: {bars} bars at {bpm} BPM ({minutes:g} min), period {period}, commit {commit}",
          file=sys.stderr, flush=True)  # fmt: skip
    with (
        tempfile.TemporaryDirectory() as tmp,
        private_server(f"ostinato-soak-{os.getpid()}", period) as env,
    ):
        run = run_one(env, Path(model_dir), bpm, bars, SOAK_PROGRAMS, Path(tmp), period, commit,
                      keys=True, samples=samples, logs=False)  # fmt: skip
    settled = [s for s in samples if s["s"] >= SETTLED_S] or samples[-1:]
    bar_s = 4 * 60 / bpm
    report = {
        "model": str(model_dir),
        "minutes": minutes,
        "bpm": bpm,
        "jack_period_frames": period,
        "programs": SOAK_PROGRAMS,
        "commit": commit,
        "bars": bars,
        "memory": {
            "rss_mib_first": samples[0]["rss_mib"] if samples else None,
            "rss_mib_settled": settled[0]["rss_mib"] if settled else None,
            "rss_mib_last": samples[-1]["rss_mib"] if samples else None,
            "rss_mib_max": max((s["rss_mib"] for s in samples), default=None),
            # (last − at 10 min) / at 10 min
            "growth_after_settled": round(settled[-1]["rss_mib"] / settled[0]["rss_mib"] - 1, 4)
            if settled
            else None,
        },
        "cpu_percent_mean": round(sum(s["cpu_percent"] for s in samples) / len(samples), 1)
        if samples
        else None,
        "late_bars": [{**b, "minute": round(b["bar"] * bar_s / 60, 2)} for b in run["late_bars"]],
        **{k: run[k] for k in SOAK_FIGURES},
        "samples": samples,
    }
    if png:
        write_soak_plot(report, run["_bar_margin_ms"], bar_s, Path(png))
        report["plot"] = str(png)
    return report


def write_soak_plot(report: dict, margins: list[float], bar_s: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    minutes = [s["s"] / 60 for s in samples]
    fig, (mem, cpu, ready) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    mem.plot(minutes, [s["rss_mib"] for s in samples])
    mem.set_ylabel("resident MiB")
    cpu.plot(minutes, [s["cpu_percent"] for s in samples])
    cpu.set_ylabel("CPU % of a core")
    start = report["bars"] - len(margins)  # the margins kept are the newest bars'
    ready.plot([(start + i) * bar_s / 60 for i in range(len(margins))], margins, ",")
    ready.axhline(0, color="red", linewidth=0.8)
    ready.set_ylabel("bar ready before it\nbegins (ms)")
    ready.set_xlabel("minutes")
    for ax in (mem, cpu, ready):
        ax.grid(alpha=0.3)
    fig.suptitle(f"soak: {report['bpm']} BPM, {report['programs']}, recording, "
                 f"a keyboard player")  # fmt: skip
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def gc_text(pauses: dict | None) -> str:
    """The collector's pauses, per generation: how many, the longest."""
    if not pauses:
        return "not measured"
    text = ", ".join(
        f"generation {g}: {n} collections, longest {ms:.2f} ms"
        for g, (n, ms) in enumerate(zip(pauses["collections"], pauses["longest_ms"], strict=True))
    )
    if "idle_full_collections" in pauses:
        text += (f"; while stopped {pauses['idle_full_collections']} full collections, longest "
                 f"{pauses['idle_full_ms_max']:.1f} ms")  # fmt: skip
    return text


def _at(seconds: float | None) -> str:
    return "" if seconds is None else f" at {seconds / 60:.1f} min"


def _split(split: dict | None) -> str:
    if not split:
        return ""
    return (f" ({split['on_cpu_ms']:.2f} on a CPU, {split['runnable_ms']:.2f} runnable without "
            f"one, {split['asleep_ms']:.2f} asleep on a lock)")  # fmt: skip


def format_soak(report: dict) -> str:
    m, rec, ren = report["memory"], report["recording"] or {}, report["renumbered"] or {}
    g = report["grid_error_ms"]
    return "\n".join([
        f"soak: {report['minutes']:g} min at {report['bpm']} BPM ({report['bars_generated']} "
        f"bars, {report['notes_sent']} notes sent), period {report['jack_period_frames']}, "
        f"commit {report['commit']}",
        f"  memory: {m['rss_mib_first']} MiB at first, {m['rss_mib_settled']} after 10 min, "
        f"{m['rss_mib_last']} at the end (growth after 10 min "
        f"{100 * (m['growth_after_settled'] or 0):.1f}%); CPU {report['cpu_percent_mean']}% of "
        f"a core",
        f"  bars: {len(report['late_bars'])} ready late, {report['fallbacks']} finished from "
        f"their fallback, {report['silent_bars_by_time']} silent for lack of time, "
        f"{report['deadline_misses']} deadline misses; off the DAW's grid max {g['max_abs']} ms",
        f"  clock listeners' longest: {report['clock_listener_ms_max']:.3f} ms"
        f"{_at(report.get('clock_listener_max_at_s'))}"
        f"{_split(report.get('clock_listener_max_split'))} (input thread "
        f"{'SCHED_FIFO' if report.get('input_realtime') else 'normal priority'}); session file: "
        f"{rec.get('writes')} writes, longest {rec.get('write_ms_max', 0):.1f} ms; positions "
        f"renumbered {ren.get('renumbered')} times ({ren.get('renumbered_inside_bar')} inside "
        f"a bar)",
        f"  garbage collector: {gc_text(report.get('gc'))}",
    ])  # fmt: skip
