"""Reading cyclictest's histogram: the OS wake-up floor the real-time bench reports."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ostinato.bench_realtime import parse_cyclictest


def histogram(counts: dict[int, int], maximum: int, overflows: int = 0) -> str:
    lines = ["# /dev/cpu_dma_latency set to 0us"]
    lines += [f"{us:06d} {counts.get(us, 0):06d}" for us in range(0, 12001)]
    lines += ["# Total: 000001000", "# Min Latencies: 00005", "# Avg Latencies: 00020",
              f"# Max Latencies: {maximum:05d}", f"# Histogram Overflows: {overflows:05d}",
              "# Histogram Overflow at cycle number:", "# Thread 0:"]  # fmt: skip
    return "\n".join(lines)


def test_percentiles_maximum_and_counts_over_the_marks() -> None:
    counts = {15: 900, 40: 95, 2500: 2, 4000: 2, 11000: 1}
    floor = parse_cyclictest(histogram(counts, 11000))
    assert floor == {
        "wakeups": 1000, "p50_ms": 0.015, "p99_ms": 0.04, "max_ms": 11.0,
        "over_1ms": 5, "over_3ms": 3, "over_10ms": 1,
    }  # fmt: skip


def test_wakeups_past_the_histogram_count_as_over_every_mark() -> None:
    floor = parse_cyclictest(histogram({20: 99}, 45000, overflows=1))
    assert floor is not None and floor["max_ms"] == 45.0
    assert floor["over_1ms"] == floor["over_3ms"] == floor["over_10ms"] == 1


def test_no_histogram_is_no_floor() -> None:
    assert parse_cyclictest("") is None
    assert parse_cyclictest("Unable to change scheduling policy!\n") is None


def test_a_real_cyclictest_run_parses() -> None:
    if shutil.which("cyclictest") is None:
        pytest.fail("cyclictest not found: install Debian's rt-tests (.ci/run does)")
    command = ["cyclictest", "-q", "-t", "1", "-i", "1000", "-h", "30000", "-D", "1"]
    text = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    floor = parse_cyclictest(text)
    assert floor is not None and 500 <= floor["wakeups"] <= 1100, text[-500:]
    assert 0 <= floor["p50_ms"] <= floor["p99_ms"] <= floor["max_ms"]


def test_grid_errors_measure_notes_against_the_clock_ticks_since_the_start() -> None:
    """Note frame − the nearest tick frame the DAW sent, in ms; ticks before the last Start
    are not the grid."""
    from ostinato.bench_realtime import grid_errors

    rate, tick = 48000, 1000
    events = [(0, b"\xf8"), (500, b"\xfa")]
    events += [(1000 + k * tick, b"\xf8") for k in range(10)]
    events += [(1000 + 3 * tick + 48, bytes([0x99, 36, 100]))]  # 1 ms late
    events += [(1000 + 6 * tick - 24, bytes([0x90, 60, 90]))]  # 0.5 ms early
    events += [(1000 + 6 * tick, bytes([0x90, 60, 0]))]  # a note-off: not judged
    got = grid_errors(sorted(events), rate)
    assert got["ticks"] == 10 and got["notes"] == 2
    assert got["error_ms"] == pytest.approx([1.0, -0.5])


def test_silent_bars_are_counted_on_the_clock_ticks() -> None:
    """A bar (96 ticks in 4/4 since the last Start) with no note-on is silent; the first bar
    (Ostinato cannot prepare it) and an unfinished last bar are not judged."""
    from ostinato.bench_realtime import silent_bars

    tick = 100
    events = [(0, b"\xfa")] + [(10 + k * tick, b"\xf8") for k in range(96 * 5 + 10)]
    bar = lambda b: 10 + b * 96 * tick  # noqa: E731
    events += [(bar(1) + 5, bytes([0x90, 36, 100])), (bar(3), bytes([0x99, 42, 80]))]
    events += [(bar(2) + 50, bytes([0x90, 36, 0]))]  # a note-off is not a note
    events += [(bar(5) + 10, bytes([0x90, 36, 100]))]
    assert silent_bars(sorted(events)) == [2, 4]
