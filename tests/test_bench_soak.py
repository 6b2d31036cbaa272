"""``ostinato bench --soak``: a short one through a real JACK server, with the bundled model,
and the memory and CPU readings it samples."""

from __future__ import annotations

import os
import subprocess
import sys

from ostinato.bench_realtime import usage
from ostinato.bench_soak import format_soak, run_soak
from ostinato.config import default_model_dir


def test_usage_counts_the_process_and_its_children() -> None:
    alone, _ = usage(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200 << 20); input()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        for _ in range(100):  # until the child holds its 200 MiB
            family, cpu = usage(os.getpid())
            if family > alone + 150:
                break
            subprocess.run(["sleep", "0.05"])
        assert family > alone + 150 and cpu > 0
    finally:
        child.kill()
        child.wait()


def test_a_short_soak_reports_what_a_long_night_is_watched_by(tmp_path) -> None:
    report = run_soak(str(default_model_dir()), minutes=0.4, png=tmp_path / "soak.png")
    assert report["bars"] == 24 and report["bars_generated"] >= 20
    assert report["notes_sent"] > 100
    assert report["samples"] and all(s["rss_mib"] > 50 for s in report["samples"])
    assert report["memory"]["growth_after_settled"] is not None
    assert report["recording"]["writes"] >= 1
    assert report["clock_listener_ms_max"] > 0
    assert 0 <= report["clock_listener_max_at_s"] <= 0.4 * 60 + 5  # when, in the run
    # the daemon's side of the sender reads the clock at SCHED_FIFO where the OS allows it
    assert report["input_realtime"] in (True, False)
    assert report["input_realtime"] == report["sender_realtime"]  # both asked, same allowance
    # the collector's pauses while playing: young collections happen (how many depends on how
    # much the planner allocates, which a leaner bar lowers) and each one is timed
    pauses = report["gc"]
    assert pauses["collections"][0] >= 1 and pauses["longest_ms"][0] > 0
    assert pauses["collections"][2] == 0  # never the oldest generation while playing
    assert report["renumbered"]["renumbered_inside_bar"] == 0
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    text = format_soak(report)
    assert "growth after 10 min" in text and "inside a bar" in text
    assert "garbage collector: generation 0:" in text
