"""``ostinato bench --realtime``: the daemon through a real JACK server, in jam mode, for many
bars at 120 and 180 BPM and at JACK periods of 64 and 1024 frames (PipeWire's default),
driven by jack_midi_clock as the DAW.

Judged as a DAW hears it: a JACK client of the bench's own records jack_midi_clock's ticks
and the daemon's notes, each stamped with its JACK frame. Every note the daemon plays is on a
clock tick (its positions are 1/8 beats, three ticks), so its error is its frame minus the
frame of the nearest tick the DAW sent: the DAW's grid, not the daemon's estimate of it. The
daemon's own count of ticks is checked against the ticks the DAW sent. Also reported:
deadline misses, the bar-ready margin (bar start − the moment the whole bar was generated),
cycles JACK did not run the sender for (xruns) and the daemon's CPU use; a JSON report and a
histogram PNG. Progress is printed while it runs.

Needs Debian's jackd2 and jack-midi-clock; it starts a private JACK server (dummy driver,
real-time at its default priority 10 where allowed, as musicians run it), after clearing what
servers killed without their clean exit left in JACK's registry (:mod:`ostinato.jack_shm`).

The machine's own floor: where ``cyclictest`` (Debian's rt-tests) is installed, it runs
alongside each tempo at the sender's priority, waking every millisecond and measuring how
late the OS woke it. No program at that priority can be woken more precisely than that, so
the sender's lateness is reported next to it, measured over the same minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ostinato import jack_shm
from ostinato.bench_keys import KEYS_OUT, KeysPlayer, changing_chords
from ostinato.jack_timebase import TransportProcess

TOOLS = ("jackd", "jack_lsp", "jack_connect", "jack_midi_clock")
SENDER_PRIORITY = 5  # the daemon's default --rt-priority
PERIODS = (64, 1024)
DAEMON_IN, DAEMON_OUT = "ostinato:Ostinato In", "ostinato:Ostinato Out"
CLOCK_OUT = "jack_midi_clock:mclk_out"


class FrameRecorder:
    """A JACK client that keeps every MIDI event it receives with its frame (the cycle's first
    frame + the event's offset): how a DAW records. Its process callback only appends to a
    list (the bench process does nothing else meanwhile)."""

    def __init__(self, name: str = "ostinato-bench-ear") -> None:
        import jack

        self.client = jack.Client(name, no_start_server=True)
        self.rate = self.client.samplerate
        self.port = self.client.midi_inports.register("in")
        self.events: list[tuple[int, bytes]] = []
        self.lock = threading.Lock()
        self.skipped_frames = 0  # cycles JACK did not run this client for: what it missed
        self._next = -1
        self.client.set_process_callback(self._process)
        self.client.activate()
        self.name = f"{self.client.name}:in"

    def _process(self, frames: int) -> None:
        first = self.client.last_frame_time
        if self._next >= 0 and first > self._next:
            self.skipped_frames += first - self._next
        self._next = first + frames
        got = [(first + offset, bytes(data)) for offset, data in self.port.incoming_midi_events()]
        if got:
            with self.lock:
                self.events.extend(got)

    def snapshot(self) -> list[tuple[int, bytes]]:
        with self.lock:
            return list(self.events)

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def grid_errors(events: list[tuple[int, bytes]], rate: int) -> dict:
    """Note-on frame − the nearest clock tick's frame (ms), and the ticks since the Start."""
    starts = [i for i, (_, m) in enumerate(events) if m[:1] == b"\xfa"]
    events = events[starts[-1] :] if starts else events
    ticks = np.array([f for f, m in events if m == b"\xf8"], dtype=np.int64)
    ons = np.array([f for f, m in events if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2]],
                   dtype=np.int64)  # fmt: skip
    if len(ticks) < 2 or not len(ons):
        return {"ticks": len(ticks), "notes": len(ons), "error_ms": []}
    i = np.clip(np.searchsorted(ticks, ons), 1, len(ticks) - 1)
    nearest = np.where(ons - ticks[i - 1] <= ticks[i] - ons, ticks[i - 1], ticks[i])
    return {"ticks": len(ticks), "notes": len(ons),
            "error_ms": ((ons - nearest) * 1000.0 / rate).tolist()}  # fmt: skip


def silent_bars(events: list[tuple[int, bytes]], beats_per_bar: int = 4) -> list[int]:
    """Bars (0-based, counted by the clock's ticks since the Start) in which no note began,
    from the second bar (the first one Ostinato can prepare) to the last complete one."""
    starts = [i for i, (_, m) in enumerate(events) if m[:1] == b"\xfa"]
    events = events[starts[-1] :] if starts else events
    ticks = np.array([f for f, m in events if m == b"\xf8"], dtype=np.int64)
    ons = np.array([f for f, m in events if len(m) == 3 and m[0] & 0xF0 == 0x90 and m[2]],
                   dtype=np.int64)  # fmt: skip
    per_bar = 24 * beats_per_bar
    lines = ticks[::per_bar]
    silent = []
    for bar in range(1, len(lines) - 1):
        if not np.any((ons >= lines[bar]) & (ons < lines[bar + 1])):
            silent.append(bar)
    return silent


def start_cyclictest(seconds: float) -> subprocess.Popen | None:
    """cyclictest at the sender's priority for ``seconds`` (None where it is not installed)."""
    if shutil.which("cyclictest") is None:
        return None
    return subprocess.Popen(
        ["cyclictest", "-m", "-q", "-t", "1", "-p", str(SENDER_PRIORITY), "-i", "1000",
         "-h", "30000", "-D", str(max(1, round(seconds)))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def parse_cyclictest(text: str) -> dict | None:
    """Wake-up lateness from cyclictest's histogram (µs buckets): p50/p99/max in ms and how
    many wake-ups were over 1, 3 and 10 ms."""
    counts: dict[int, int] = {}
    maximum = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            if int(parts[1]):
                counts[int(parts[0])] = int(parts[1])
        elif line.startswith("# Max Latencies:") and len(parts) > 3:
            maximum = int(parts[3])
    total = sum(counts.values())
    if not total or maximum is None:
        return None
    us = np.array(sorted(counts))
    cumulative = np.cumsum([counts[u] for u in us]) / total
    overflow = sum(int(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("# Histogram Overflows:"))  # fmt: skip
    return {
        "wakeups": total,
        "p50_ms": round(float(us[np.searchsorted(cumulative, 0.5)]) / 1000, 3),
        "p99_ms": round(float(us[np.searchsorted(cumulative, 0.99)]) / 1000, 3),
        "max_ms": round(maximum / 1000, 3),
        "over_1ms": int(sum(c for u, c in counts.items() if u > 1000)) + overflow,
        "over_3ms": int(sum(c for u, c in counts.items() if u > 3000)) + overflow,
        "over_10ms": int(sum(c for u, c in counts.items() if u > 10000)) + overflow,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _family(pid: int) -> list[int]:
    """``pid`` and its children (the daemon and its sender process)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def usage(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds) of ``pid`` and its children, now."""
    rss_kib, cpu = 0, 0.0
    for p in _family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
            cpu += _cpu_seconds(p)
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return rss_kib / 1024, cpu


@contextlib.contextmanager
def private_server(name: str, period: int):
    """A private JACK server (dummy driver, 48 kHz, ``period`` frames, real-time where
    allowed) for one run: yields the environment its clients use."""
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    jack_shm.clear_stale()  # a killed run's servers would block this one's
    jackd = subprocess.Popen(
        ["jackd", "--realtime", "-n", name, "-d", "dummy", "-r", "48000", "-p", str(period)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True).returncode == 0,
              10, "jackd")  # fmt: skip
        yield env
    finally:
        jackd.terminate()
        jackd.wait(5)


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _percentiles(values: list[float], *qs: float) -> dict:
    if not values:
        return {f"p{q:g}": None for q in qs}
    arr = np.asarray(values)
    return {f"p{q:g}": round(float(np.percentile(arr, q)), 3) for q in qs}


def run_one(env: dict, model_dir: Path, bpm: int, bars: int, programs: str, work: Path,
            period: int = 64, commit: str = "bar", keys: bool = False,
            samples: list[dict] | None = None, logs: bool = True) -> dict:  # fmt: skip
    """One run of ``bars`` bars; ``samples``, when given, gets the daemon's memory and CPU
    every 10 s (``ostinato bench --soak``); ``logs`` False: the daemon keeps its totals only,
    not every note and tick (they would grow its memory over a long run)."""
    stats_path = work / f"stats-{bpm}-{period}-{commit}.json"
    lsp = lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout  # noqa: E731
    log_path = work / f"daemon-{bpm}-{period}-{commit}.log"
    log = log_path.open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ostinato", "run", "--backend", "jack", "--mode", "jam",
         "--programs", programs, "--model", str(model_dir), "--stats-json", str(stats_path),
         "--seed", "0", "--no-osc", "--record", str(work),  # recorded, as by default
         "--commit", commit, *(() if logs else ("--no-stats-logs",))],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    clock = transport = floor = ear = player = None
    try:
        _wait(lambda: DAEMON_IN in lsp(), 60, "the daemon's ports")
        clock = subprocess.Popen(["jack_midi_clock"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        _wait(lambda: CLOCK_OUT in lsp(), 10, "jack_midi_clock")
        os.environ["JACK_DEFAULT_SERVER"] = env["JACK_DEFAULT_SERVER"]  # the bench's own client
        ear = FrameRecorder()
        links = [(CLOCK_OUT, DAEMON_IN), (CLOCK_OUT, ear.name), (DAEMON_OUT, ear.name)]
        if keys:  # a keyboard player on the DAW's clock: something for re-plans to follow
            player = KeysPlayer([chord for _, chord in changing_chords(2 * bars, seed=2)])
            links += [(CLOCK_OUT, player.name_in), (KEYS_OUT, DAEMON_IN)]
        for a, b in links:
            subprocess.run(["jack_connect", a, b], env=env, check=True)
        transport = TransportProcess(bpm, env=env)
        transport.roll()
        cpu0, t0 = _cpu_seconds(daemon.pid), time.monotonic()
        seconds = bars * 4 * 60 / bpm + 1.0
        floor = start_cyclictest(seconds - 1.0)
        end = time.monotonic() + seconds
        last = (t0, usage(daemon.pid)[1])
        while time.monotonic() < end:
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            if samples is not None:
                now, (rss, cpu_s) = time.monotonic(), usage(daemon.pid)
                samples.append({"s": round(now - t0, 1), "rss_mib": round(rss, 1),
                                "cpu_percent": round(100 * (cpu_s - last[1]) / (now - last[0]),
                                                     1)})  # fmt: skip
                last = (now, cpu_s)
            heard = grid_errors(ear.snapshot(), ear.rate)
            late = np.abs(heard["error_ms"]) if heard["error_ms"] else np.zeros(1)
            print(f"  {bpm} BPM, {period} frames: {heard['ticks'] / 96:.0f} of {bars} bars, "
                  f"{heard['notes']} notes, worst {late.max():.2f} ms off the clock's grid",
                  file=sys.stderr, flush=True)  # fmt: skip
        cpu = (_cpu_seconds(daemon.pid) - cpu0) / (time.monotonic() - t0)
        floor_text = floor.communicate(timeout=30)[0] if floor is not None else ""
        transport.stop()
        time.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(20)
        if code != 0:
            raise RuntimeError(f"the daemon exited with {code}: {log_path.read_text()[-2000:]}")
        events = ear.snapshot()
        heard = grid_errors(events, ear.rate)
        heard["skipped_frames"] = ear.skipped_frames
        heard["silent_bars"] = silent_bars(events)
    finally:
        for client in (player, ear, transport):
            if client is not None:
                client.close()
        for proc in (floor, clock, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        log.close()
        if os.environ.get("OSTINATO_BENCH_LOG"):
            print(log_path.read_text())
    stats = json.loads(stats_path.read_text())
    generated_notes = {b["bar"]: b["notes"] for b in stats.get("bars", [])}
    lateness_ms = heard["error_ms"]  # against the DAW's grid
    own_ms = [(n["sent"] - n["due"]) * 1000 for n in stats["notes"]]
    replans = stats.get("replans", {})
    return {
        "bpm": bpm,
        "jack_period_frames": period,
        "commit": commit,
        "keys": keys,  # a keyboard player changing chords on beats 1 and 3
        # the daemon's CPU time per bar (all its threads), and what the re-plans cost
        "cpu_ms_per_bar": round(1000 * cpu * 4 * 60 / bpm, 1),
        "replans": {
            "applied": replans.get("applied", 0),
            "late": replans.get("late", 0),  # not ready at the commit point: the plan stayed
            "skipped": replans.get("skipped", 0),  # no time left to start one
            "unchanged": replans.get("unchanged", 0),  # nothing new heard: none needed
            "partial": replans.get("partial", 0),  # of those applied: the next span only
            "ms": _percentiles(replans.get("ms", []), 50, 99),
        },
        "ticks_sent": heard["ticks"],  # as heard: exact unless the bench's ear was skipped
        "ear_skipped_frames": heard["skipped_frames"],
        "ticks_counted": stats["clock"]["ticks_counted"],
        "clock_bpm": stats["clock"]["bpm"],
        "skipped_frames": stats.get("skipped_frames", 0),
        "bars_asked": bars,
        "bars_generated": stats["bars_generated"],
        "notes_sent": stats["notes_sent"],
        "deadline_misses": stats["deadline_misses"],
        "fallbacks": stats.get("fallbacks", 0),
        # bars with no note at the DAW; "by time": the session had notes for the bar (or
        # never ran for it), so the silence came from generation time, not the model's choice
        "silent_bars": len(heard["silent_bars"]),
        "silent_bars_by_time": len(
            [
                b
                for b in heard["silent_bars"]
                if generated_notes.get(b) is None or generated_notes[b] > 0
            ]
        ),
        "late_wakeups": stats.get("late_wakeups", 0),
        "sender_realtime": stats.get("sender_realtime"),
        "input_realtime": stats.get("input_realtime"),  # the thread reading the clock
        "grid_error_ms": {  # note frame − the DAW's tick frame
            **_percentiles(lateness_ms, 1, 50, 99),
            "abs_p99": _percentiles(np.abs(lateness_ms).tolist(), 99)["p99"],
            "max_abs": round(float(np.abs(lateness_ms).max()), 3) if lateness_ms else None,
            "within_1ms": round(float(np.mean(np.abs(lateness_ms) <= 1.0)), 4)
            if lateness_ms
            else None,
        },
        "sender_lateness_ms": {**_percentiles(own_ms, 50, 99)},  # against its own map
        "bar_ready_margin_ms": _percentiles(stats["bar_margin_ms"], 50, 1),
        "bar_generation_ms": _percentiles(stats["bar_ms"], 50, 99),
        "lookahead_ms": round(stats["lookahead_ms"], 1),
        "cpu_percent_of_one_core": round(100 * cpu, 1),
        "os_floor": parse_cyclictest(floor_text),
        "late_bars": [b for b in stats.get("bars", []) if b["margin_ms"] < 0],
        # what a long night is watched by (``--soak``)
        "clock_listener_ms_max": stats["clock"].get("listener_ms_max"),
        # when it was, in seconds from the transport's start (monotonic, shared by processes)
        "clock_listener_max_at_s": None
        if stats["clock"].get("listener_max_at") is None
        else round(stats["clock"]["listener_max_at"] - t0, 1),
        # its ms on a CPU, runnable without one (the machine's), asleep on a lock (the daemon's)
        "clock_listener_max_split": stats["clock"].get("listener_max_split"),
        "gc": stats.get("gc"),  # the collector's pauses (they hold every thread)
        "recording": stats.get("recording"),
        "renumbered": stats.get("engine", {}),
        "dropped": [  # how late each would have gone out, and why
            {
                "beat": round(d["beat"], 3),
                "late_ms": round((d["at"] - d["due"]) * 1000, 2),
                "generation": d["handed_over_late"],
            }
            for d in stats.get("dropped", [])
        ],
        "_lateness_ms": lateness_ms,
        "_bar_margin_ms": stats["bar_margin_ms"],
    }


def run_realtime_bench(
    model_dir: str | Path, bars: int = 200, tempos=(120, 180), programs: str = "drums,33,4",
    png: str | Path | None = None, periods=PERIODS, commits=("bar",), keys: bool = False,
) -> dict:  # fmt: skip
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found: install Debian's jackd2 and jack-midi-clock"
        )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for period, bpm, commit in ((p, b, c) for p in periods for b in tempos for c in commits):
            # a fresh server per run: no transport state carried over
            name = f"ostinato-bench-{os.getpid()}-{bpm}-{period}"
            print(f"{bpm} BPM at a JACK period of {period} frames, commit {commit}, {bars} bars …",
                  file=sys.stderr, flush=True)  # fmt: skip
            with private_server(name, period) as env:
                runs.append(
                    run_one(
                        env, Path(model_dir), bpm, bars, programs, Path(tmp), period, commit, keys
                    )
                )
    report = {
        "model": str(model_dir),
        "programs": programs,
        "keys": keys,
        "jack_periods_frames": list(periods),
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
    }
    if png:
        write_histogram(runs, Path(png))
        report["histogram"] = str(png)
    return report


def write_histogram(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        label = f"{r['bpm']} BPM, {r['jack_period_frames']} frames"
        ax.hist(r["_lateness_ms"], bins=60, alpha=0.6, label=label)
    ax.set_xlabel("note frame − the DAW's clock tick frame (ms)")
    ax.set_ylabel("notes")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def format_realtime(report: dict) -> str:
    player = ", a keyboard player changing chords on beats 1 and 3" if report.get("keys") else ""
    lines = [f"real-time through JACK ({report['programs']}, jam mode{player}), judged at the DAW:"]
    for r in report["runs"]:
        g = r["grid_error_ms"]
        lines.append(
            f"  {r['bpm']} BPM, period {r['jack_period_frames']}, commit {r.get('commit', 'bar')}: "
            f"{r['bars_generated']} bars, "
            f"{r['notes_sent']} notes, {r['deadline_misses']} deadline misses (generation "
            f"late), {r.get('fallbacks', 0)} bars finished from the previous one, "
            f"{r.get('silent_bars_by_time', 0)} silent for lack of time (of "
            f"{r.get('silent_bars', 0)} silent), {r.get('late_wakeups', 0)} late wake-ups; "
            f"ticks sent {r['ticks_sent']}, "
            f"counted {r['ticks_counted']} (the bench's ear skipped {r['ear_skipped_frames']} "
            f"frames), tempo {r['clock_bpm']:.3f} BPM; off the DAW's grid "
            f"p50 {g['p50']} ms, |p99| {g['abs_p99']} ms, max {g['max_abs']} ms "
            f"({100 * (g['within_1ms'] or 0):.1f}% within 1 ms); {r['skipped_frames']} frames "
            f"skipped by JACK; bar ready "
            f"{r['bar_ready_margin_ms']['p50']} ms before it starts (p1 "
            f"{r['bar_ready_margin_ms']['p1']} ms); CPU {r['cpu_percent_of_one_core']}% of a core; "
            f"sender {'SCHED_FIFO' if r.get('sender_realtime') else 'normal priority'}; "
            f"{r.get('cpu_ms_per_bar')} ms of CPU per bar"
        )
        replans = r.get("replans")
        if replans and r.get("commit", "bar") != "bar":
            lines.append(
                f"    re-plans: {replans['applied']} applied ({replans.get('partial', 0)} of "
                f"the next span only), {replans['late']} not ready at their commit point, "
                f"{replans['skipped']} skipped for time, {replans.get('unchanged', 0)} not "
                f"needed (nothing new heard); "
                f"{replans['ms']['p50']} ms each (p99 {replans['ms']['p99']} ms)"
            )
        floor = r.get("os_floor")
        if floor:
            lines.append(
                f"    OS floor (cyclictest, SCHED_FIFO {SENDER_PRIORITY}, 1 ms period, same "
                f"minutes): p50 {floor['p50_ms']} ms, p99 {floor['p99_ms']} ms, max "
                f"{floor['max_ms']} ms; {floor['over_3ms']} of {floor['wakeups']} wake-ups over "
                f"3 ms, {floor['over_10ms']} over 10 ms"
            )
    return "\n".join(lines)
