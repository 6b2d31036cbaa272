"""Properties of the clock follower over generated clock streams (hypothesis, derandomized: the
same examples every run, so a red run is a change in the code, not a new draw): whatever the
tempo, the stamping period, the jitter and where single strays fall, every real tick is
counted once, the tempo and the beat are where the DAW's are."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostinato.daemon.clock import PPQN, Clock
from tests.daemon.test_clock import RATE, per_cycle, tick_times

BEATS = 24


def _run(stamps) -> Clock:
    clock = Clock(exact_stamps=True)
    clock.on_start(0.0)
    for t in stamps:
        clock.on_tick(float(t))
    return clock


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(bpm=st.floats(30.0, 300.0), offset=st.floats(0.0, 0.05))
def test_any_steady_tempo_is_counted_exactly(bpm: float, offset: float) -> None:
    true = tick_times([(BEATS * PPQN + 1, bpm, bpm)], t0=0.01 + offset)
    clock = _run(true)
    assert clock.rejected_ticks == 0
    assert clock.follower.count == len(true)
    assert abs(clock.map.bpm - bpm) < 0.05
    assert abs(clock.map.beat_at(true[-1]) - BEATS) * PPQN < 0.05  # within 1/20 of a tick


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(bpm=st.floats(40.0, 240.0), period=st.sampled_from([64, 128, 256, 512, 1024, 2048]))
def test_stamps_a_cycle_at_a_time_keep_the_count_and_the_beat(bpm: float, period: int) -> None:
    """A tick close to a whole number of cycles (233 BPM at 512 frames: 1.006 cycles) steps
    by whole cycles for a hundred ticks and more: only the rare wraps tell the tempo, so the
    line needs a few of them — 64 beats here (at 24 it read 234.4)."""
    beats = 64
    true = tick_times([(beats * PPQN + 1, bpm, bpm)])
    clock = Clock(exact_stamps=False)
    clock.on_start(0.0)
    for t in per_cycle(true, period):
        clock.on_tick(float(t))
    assert clock.rejected_ticks == 0
    assert clock.follower.count == len(true)
    # a cycle of 2048 frames is 43 ms, three or four ticks at 205 BPM: only where the ticks
    # fall in their cycles tells the tempo, and 8 beats of them read it within 0.3%; a tick of
    # about two cycles (117 BPM at 512) locks the line to the cycles for long stretches
    # A tick within 1% of a whole number of cycles (58.25 BPM at 2048 frames: 1.0055 cycles)
    # steps by whole cycles for ~180 ticks, longer than the 8 beats fitted: the line takes the
    # cycles' tempo (58.59) until more wraps come in — a known limit, within 0.6%, the beat
    # still within a tick.
    ratio = 60.0 / bpm / PPQN / (period / RATE)
    aliased = abs(ratio - round(ratio)) < 0.01 * ratio
    assert abs(clock.map.bpm - bpm) < max(0.15, (0.006 if aliased else 0.003) * bpm)
    assert abs(clock.map.beat_at(true[-1]) - beats) * PPQN < 1.0


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    bpm=st.floats(60.0, 200.0),
    jitter=st.floats(0.0, 0.10),
    seed=st.integers(0, 2**16),
)
def test_jitter_up_to_a_tenth_of_a_tick_never_miscounts(bpm: float, jitter: float,
                                                         seed: int) -> None:  # fmt: skip
    true = tick_times([(BEATS * PPQN + 1, bpm, bpm)])
    tick = 60.0 / bpm / PPQN
    rng = np.random.default_rng(seed)
    stamps = true + rng.uniform(-jitter, jitter, len(true)) * tick
    clock = _run(np.sort(stamps))
    assert clock.rejected_ticks == 0
    assert clock.follower.count == len(true)
    # the tempo of a jittery clock, fitted over 8 beats: within 0.4% (the map is re-anchored
    # at every tick, so the beat stays on the grid: see the DAW-timing jitter case)
    assert abs(clock.map.bpm - bpm) < 0.004 * bpm


@settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    bpm=st.floats(60.0, 200.0),
    # a stray waits until the pulse shows it is one: leave a beat of ticks after the last
    strays=st.lists(
        st.tuples(st.integers(PPQN, (BEATS - 1) * PPQN), st.floats(0.2, 0.8)),
        min_size=1,
        max_size=6,
        unique_by=lambda s: s[0] // 8,
    ),
)
def test_single_strays_are_rejected_and_the_grid_holds(bpm: float, strays) -> None:
    """A stray byte between two ticks (at most one in 8 ticks): rejected, counted as such,
    and the beat stays on the DAW's grid."""
    true = tick_times([(BEATS * PPQN + 1, bpm, bpm)])
    tick = 60.0 / bpm / PPQN
    extra = [true[i] + frac * tick for i, frac in strays]
    clock = _run(sorted([*true, *extra]))
    assert clock.rejected_ticks == len(extra)
    assert clock.follower.count == len(true)
    assert abs(clock.map.beat_at(true[-1]) - BEATS) * PPQN < 0.1
    assert RATE  # the same sample rate as the hand-written cases
