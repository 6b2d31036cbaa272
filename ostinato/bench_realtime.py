"""``ostinato bench --realtime``: the daemon through a real JACK server, in jam mode, for many
bars at 120 and 180 BPM, driven by jack_midi_clock. Reports deadline misses, the scheduler's
lateness (actual send − ideal time), the bar-ready margin (bar start − the moment the whole
bar was generated), and the daemon's CPU use; writes a JSON report and a histogram PNG.

Needs Debian's jackd2 and jack-midi-clock; it starts a private JACK server (dummy driver,
real-time at its default priority 10 where allowed, as musicians run it).

The machine's own floor: where ``cyclictest`` (Debian's rt-tests) is installed, it runs
alongside each tempo at the sender's priority, waking every millisecond and measuring how
late the OS woke it. No program at that priority can be woken more precisely than that, so
the sender's lateness is reported next to it, measured over the same minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = ("jackd", "jack_lsp", "jack_connect", "jack_midi_clock", "jack_transport")
SENDER_PRIORITY = 5  # the daemon's default --rt-priority


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


def run_one(env: dict, model_dir: Path, bpm: int, bars: int, programs: str, work: Path) -> dict:
    stats_path = work / f"stats-{bpm}.json"
    lsp = lambda: subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True).stdout  # noqa: E731
    log_path = work / f"daemon-{bpm}.log"
    log = log_path.open("w")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ostinato", "run", "--backend", "jack", "--mode", "jam",
         "--programs", programs, "--model", str(model_dir), "--stats-json", str(stats_path),
         "--seed", "0", "--no-osc"],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    clock = transport = floor = None
    try:
        _wait(lambda: "ostinato:Ostinato In" in lsp(), 60, "the daemon's ports")
        clock = subprocess.Popen(["jack_midi_clock"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        _wait(lambda: "jack_midi_clock:mclk_out" in lsp(), 10, "jack_midi_clock")
        subprocess.run(["jack_connect", "jack_midi_clock:mclk_out", "ostinato:Ostinato In"],
                       env=env, check=True)  # fmt: skip
        transport = subprocess.Popen(["jack_transport"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        assert transport.stdin is not None
        for command in ("master", f"tempo {bpm}", "locate 0", "play"):
            transport.stdin.write(command + "\n")
        transport.stdin.flush()
        cpu0, t0 = _cpu_seconds(daemon.pid), time.monotonic()
        seconds = bars * 4 * 60 / bpm + 1.0
        floor = start_cyclictest(seconds - 1.0)
        time.sleep(seconds)
        cpu = (_cpu_seconds(daemon.pid) - cpu0) / (time.monotonic() - t0)
        floor_text = floor.communicate(timeout=30)[0] if floor is not None else ""
        transport.stdin.write("stop\n")
        transport.stdin.flush()
        time.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(20)
        if code != 0:
            raise RuntimeError(f"the daemon exited with {code}: {log_path.read_text()[-2000:]}")
    finally:
        for proc in (floor, transport, clock, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(5)
        log.close()
        if os.environ.get("OSTINATO_BENCH_LOG"):
            print(log_path.read_text())
    stats = json.loads(stats_path.read_text())
    lateness = [n["sent"] - n["due"] for n in stats["notes"]]
    lateness_ms = [x * 1000 for x in lateness]
    return {
        "bpm": bpm,
        "bars_asked": bars,
        "bars_generated": stats["bars_generated"],
        "notes_sent": stats["notes_sent"],
        "deadline_misses": stats["deadline_misses"],
        "late_wakeups": stats.get("late_wakeups", 0),
        "sender_realtime": stats.get("sender_realtime"),
        "lateness_ms": {
            **_percentiles(lateness_ms, 50, 99),
            "max": round(max(lateness_ms), 3) if lateness_ms else None,
        },
        "bar_ready_margin_ms": _percentiles(stats["bar_margin_ms"], 50, 1),
        "bar_generation_ms": _percentiles(stats["bar_ms"], 50, 99),
        "lookahead_ms": round(stats["lookahead_ms"], 1),
        "cpu_percent_of_one_core": round(100 * cpu, 1),
        "os_floor": parse_cyclictest(floor_text),
        "late_bars": [b for b in stats.get("bars", []) if b["margin_ms"] < 0],
        "dropped": [  # how late each would have gone out, and why
            {
                "beat": round(d["beat"], 3),
                "late_ms": round((d["at"] - d["due"]) * 1000, 2),
                "generation": d["handed_over_late"],
            }
            for d in stats.get("dropped", [])
        ],
        "_lateness_ms": lateness_ms,
    }


def run_realtime_bench(
    model_dir: str | Path, bars: int = 200, tempos=(120, 180), programs: str = "drums,33,4",
    png: str | Path | None = None,
) -> dict:  # fmt: skip
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not found: install Debian's jackd2 and jack-midi-clock"
        )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for bpm in tempos:  # a fresh server per tempo: no transport state carried over
            name = f"ostinato-bench-{os.getpid()}-{bpm}"
            env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
            jackd = subprocess.Popen(
                ["jackd", "--realtime", "-n", name, "-d", "dummy", "-r", "48000", "-p", "64"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            try:
                _wait(lambda env=env: subprocess.run(["jack_lsp"], env=env,
                      capture_output=True).returncode == 0, 10, "jackd")  # fmt: skip
                runs.append(run_one(env, Path(model_dir), bpm, bars, programs, Path(tmp)))
            finally:
                jackd.terminate()
                jackd.wait(5)
    report = {
        "model": str(model_dir),
        "programs": programs,
        "jack_period_frames": 64,
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
        ax.hist(r["_lateness_ms"], bins=60, alpha=0.6, label=f"{r['bpm']} BPM")
    ax.set_xlabel("scheduler lateness: actual send − ideal time (ms)")
    ax.set_ylabel("notes")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def format_realtime(report: dict) -> str:
    lines = [f"real-time through JACK ({report['programs']}, jam mode):"]
    for r in report["runs"]:
        lines.append(
            f"  {r['bpm']} BPM: {r['bars_generated']} bars, {r['notes_sent']} notes, "
            f"{r['deadline_misses']} deadline misses (generation late), "
            f"{r.get('late_wakeups', 0)} late wake-ups (sender woken >10 ms late); "
            f"lateness p50 {r['lateness_ms']['p50']} ms, "
            f"p99 {r['lateness_ms']['p99']} ms, max {r['lateness_ms']['max']} ms; bar ready "
            f"{r['bar_ready_margin_ms']['p50']} ms before it starts (p1 "
            f"{r['bar_ready_margin_ms']['p1']} ms); CPU {r['cpu_percent_of_one_core']}% of a core; "
            f"sender {'SCHED_FIFO' if r.get('sender_realtime') else 'normal priority'}"
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
