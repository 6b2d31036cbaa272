"""The clock follower and the transport, driven with simulated clock streams (fake time).

The streams are what the daemon sees from real setups: exact frame stamps (JACK), stamps that
come a JACK cycle at a time (large periods), tempo steps and ramps, stray 0xF8 bytes, and the
ways DAWs signal loop jumps. End-to-end checks of the same through a real JACK server live in
the JACK tests."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.daemon.clock import PPQN, Clock, TempoMap, TransportEvent, validate_bpm

RATE = 48000


def tick_times(segments: list[tuple[int, float, float]], t0: float = 0.01) -> np.ndarray:
    """Exact tick times for segments of (ticks, bpm at start, bpm at end): a ramp when the
    two differ."""
    times, t = [], t0
    for count, bpm_from, bpm_to in segments:
        for i in range(count):
            times.append(t)
            bpm = bpm_from + (bpm_to - bpm_from) * i / max(1, count)
            t += 60.0 / bpm / PPQN
    return np.array(times)


def per_cycle(times: np.ndarray, period_frames: int) -> np.ndarray:
    """Stamps as a backend that stamps once per cycle gives them: every tick of a cycle gets
    the time that cycle was processed (the end of the cycle it fell in)."""
    cycle = period_frames / RATE
    return (np.floor(times / cycle) + 1) * cycle


def feed(clock: Clock, stamps) -> None:
    for t in stamps:
        clock.on_tick(float(t))


def started(exact: bool = True) -> tuple[Clock, list[TransportEvent]]:
    clock = Clock(exact_stamps=exact)
    events: list[TransportEvent] = []
    clock.listeners.append(events.append)
    clock.on_start(0.0)
    return clock, events


def beat_error_ticks(clock: Clock, true_time: float, true_beat: float) -> float:
    return (clock.map.beat_at(true_time) - true_beat) * PPQN


@pytest.mark.parametrize("period", [64, 256, 1024, 2048])
@pytest.mark.parametrize("bpm", [60, 120, 174, 300])
def test_count_and_tempo_exact_at_any_period(period: int, bpm: float) -> None:
    """64 beats of ticks, stamped exactly (JACK frames) or a cycle at a time: the count is
    exact, the beat within a tick, the tempo within 0.1 BPM (0.15 with stamps 43 ms coarse)."""
    beats = 64
    true = tick_times([(beats * PPQN + 1, bpm, bpm)])
    for exact, stamps in ((True, true), (False, per_cycle(true, period))):
        clock, _ = started(exact)
        feed(clock, stamps)
        assert clock.rejected_ticks == 0
        # stamps a cycle late: the line through the earliest ticks, a little less sure
        assert clock.map.bpm == pytest.approx(bpm, abs=0.1 if exact else 0.15)
        last = true[-1]
        assert abs(beat_error_ticks(clock, last, beats)) < (0.05 if exact else 1.0)


@pytest.mark.parametrize(
    "segments",
    [
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 60, 60)],
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 240, 240)],
        [(4 * PPQN, 140, 140), (4 * PPQN, 90, 90), (8 * PPQN + 1, 60, 60)],
        [(4 * PPQN, 100, 100), (8 * PPQN, 100, 160), (4 * PPQN + 1, 160, 160)],
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 300, 300)],
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 150, 150)],
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 160, 160)],
        [(4 * PPQN, 120, 120), (8 * PPQN + 1, 90, 90)],
    ],
    ids=[
        "120-60",
        "120-240",
        "140-90-60",
        "ramp-100-160",
        "120-300",
        "120-150",
        "120-160",
        "120-90",
    ],
)
def test_tempo_steps_and_ramps_are_followed_without_a_miscount(segments) -> None:
    true = tick_times(segments)
    clock, _ = started(exact=True)
    bpm_final = segments[-1][2]
    step_at = sum(c for c, _, _ in segments[:-1])
    worst_after_a_beat = 0.0
    for i, t in enumerate(true):
        clock.on_tick(float(t))
        if i >= step_at + PPQN and i + 1 < len(true):  # one beat after the last change
            # the next tick's time predicted by the map, against the truth
            predicted = clock.map.time_at((i + 1) / PPQN)
            worst_after_a_beat = max(worst_after_a_beat, abs(predicted - true[i + 1]))
    assert clock.rejected_ticks == 0
    assert clock.map.anchor_beat == pytest.approx((len(true) - 1) / PPQN, abs=1e-9)
    assert clock.map.bpm == pytest.approx(bpm_final, abs=0.1)
    assert worst_after_a_beat < 0.0005, f"{worst_after_a_beat * 1e3:.3f} ms"


def test_stray_clock_bytes_are_rejected_and_the_grid_holds() -> None:
    """Bursts of stray 0xF8 (random times, sometimes several in one tick, sometimes close to
    a real tick) never move the count; a beat after the burst the grid is exact again."""
    rng = np.random.default_rng(11)
    true = tick_times([(32 * PPQN + 1, 120, 120)])
    period = true[1] - true[0]
    arrivals = list(true)
    strays = 0
    for burst_at in (200, 380, 600):
        for _ in range(4):
            arrivals.append(true[burst_at] + rng.uniform(0.02, 0.98) * period * rng.integers(1, 4))
            strays += 1
    arrivals.append(true[450] + 0.0002)  # a second clock byte 0.2 ms after a tick
    arrivals.append(true[500])  # and one in the same frame as a tick
    strays += 2
    clock, _ = started(exact=True)
    feed(clock, sorted(arrivals))
    assert clock.rejected_ticks == strays
    assert clock.map.anchor_beat == pytest.approx(32.0)
    assert abs(clock.map.time_at(32.5) - (true[-1] + PPQN / 2 * period)) < 0.0002


def test_jittery_clock_within_a_tenth_of_a_tick_is_counted_exactly() -> None:
    """A clock whose ticks wander ±10 % of a tick (jack_midi_clock -J 10)."""
    rng = np.random.default_rng(2)
    true = tick_times([(16 * PPQN + 1, 120, 120)])
    period = true[1] - true[0]
    stamps = true + rng.uniform(-0.1, 0.1, len(true)) * period
    clock, _ = started(exact=True)
    feed(clock, stamps)
    assert clock.rejected_ticks == 0
    assert clock.map.anchor_beat == pytest.approx(16.0)
    assert clock.map.bpm == pytest.approx(120, abs=0.5)


def test_late_deliveries_do_not_move_the_grid() -> None:
    """Ticks arrive late (a process cycle that ran late), never early: the grid stays within
    0.5 ms of the true one after every tick."""
    rng = np.random.default_rng(3)
    clock, _ = started(exact=False)
    spt = 0.5 / PPQN  # 120 BPM
    worst = 0.0
    for i in range(16 * PPQN):
        late = rng.uniform(0.002, 0.008) if rng.random() < 0.2 or (i % 97) < 3 else 0.0
        clock.on_tick(0.01 + i * spt + late)
        if i >= PPQN:
            worst = max(worst, abs(clock.map.time_at(i / PPQN + 0.5) - (0.01 + i * spt + 0.25)))
    assert clock.map.anchor_beat == pytest.approx((16 * PPQN - 1) / PPQN)
    assert worst < 0.0005, f"grid moved {worst * 1e3:.2f} ms"


def test_a_lost_tick_counts_only_when_the_backend_reports_it() -> None:
    clock, _ = started(exact=True)
    true = tick_times([(4 * PPQN + 1, 120, 120)])
    feed(clock, true[:50])
    clock.on_input_lost(true[49])
    feed(clock, true[52:])  # ticks 50 and 51 were lost with the overflow
    assert clock.map.anchor_beat == pytest.approx(4.0)


def test_loop_jump_stop_then_start_one_tick_later_keeps_the_line() -> None:
    """Ardour loops from bar 1: Stop, then Start one tick after the last tick, the tick
    spacing unchanged. That is a jump back to 0, not a stop: one line, a new epoch."""
    clock, events = started(exact=True)
    true = tick_times([(3 * 16 * PPQN, 120, 120)])
    loop = 4 * 4 * PPQN  # 4 bars of 4/4
    feed(clock, true[:loop])
    t_jump = true[loop]
    clock.on_stop(t_jump)
    clock.on_start(t_jump + 0.0001)
    jump = events[-1]
    assert [e.kind for e in events] == ["start", "stop", "jump"]
    assert jump.from_beat == pytest.approx(16.0) and jump.beat == 0.0
    # before the next tick, the map is the old line moved back by the loop
    assert clock.map.time_at(0.0) == pytest.approx(t_jump, abs=1e-6)
    feed(clock, true[loop : 2 * loop])
    clock.on_stop(true[2 * loop])
    clock.on_start(true[2 * loop])
    assert clock.loop == (0.0, 16.0) and clock.loop_passes == 2
    feed(clock, true[2 * loop : 2 * loop + PPQN + 1])
    assert clock.map.anchor_beat == pytest.approx(1.0)
    assert clock.map.time_at(1.0) == pytest.approx(true[2 * loop + PPQN], abs=1e-6)


def test_loop_jump_stop_spp_continue_and_spp_while_running() -> None:
    clock, events = started(exact=True)
    true = tick_times([(40 * PPQN, 120, 120)])
    feed(clock, true[: 8 * PPQN])  # to beat 8
    clock.on_stop(true[8 * PPQN])
    clock.on_song_position(true[8 * PPQN], 16)  # bar 2
    clock.on_continue(true[8 * PPQN])
    assert events[-1].kind == "jump" and events[-1].from_beat == 8.0 and events[-1].beat == 4.0
    feed(clock, true[8 * PPQN : 12 * PPQN])  # beats 4..8 again
    assert clock.map.anchor_beat == pytest.approx(8.0 - 1 / PPQN)
    # a Song Position Pointer between two ticks while running: the next tick is there
    clock.on_song_position(true[12 * PPQN] - 0.001, 16)
    assert events[-1].kind == "jump" and events[-1].from_beat == 8.0
    feed(clock, true[12 * PPQN : 12 * PPQN + 1])
    assert clock.map.anchor_beat == pytest.approx(4.0)
    assert clock.loop == (4.0, 8.0) and clock.loop_passes == 2
    # a Start without a Stop: a jump to 0
    feed(clock, true[12 * PPQN + 1 : 14 * PPQN])
    clock.on_start(true[14 * PPQN] - 0.001)
    assert events[-1].kind == "jump" and events[-1].beat == 0.0
    assert len({e.epoch for e in events}) == len(events)  # every event its own epoch


@pytest.mark.parametrize("reported", ["after the Continue", "before it"])
def test_the_first_tick_after_a_continue_lost_in_an_xrun_is_counted(reported: str) -> None:
    """An xrun swallows the first tick after Stop, SPP, Continue (a DAW's loop jump): the
    epoch's song position starts at that lost tick, not at the next one (every note of the
    pass a tick late, as seen through JACK on a loaded machine). The backend's report of the
    lost frames may come before or after the Continue is handled."""
    clock, events = started(exact=True)
    true = tick_times([(40 * PPQN, 120, 120)])
    feed(clock, true[: 8 * PPQN])
    clock.on_stop(true[8 * PPQN])
    clock.on_song_position(true[8 * PPQN], 16)
    xrun = (true[8 * PPQN] + 0.0001, true[8 * PPQN] + 0.003)
    if reported == "before it":
        clock.on_input_lost(*xrun)
    clock.on_continue(true[8 * PPQN])
    if reported == "after the Continue":
        clock.on_input_lost(*xrun)
    feed(clock, true[8 * PPQN + 1 : 12 * PPQN])
    assert events[-1].kind == "jump" and events[-1].beat == 4.0
    assert clock.map.anchor_beat == pytest.approx(8.0 - 1 / PPQN)


@pytest.mark.parametrize(("before", "after"), [(300, 60), (60, 300), (None, 300), (None, 60)])
def test_an_xrun_at_a_start_counts_the_ticks_of_the_new_tempo(before, after) -> None:
    """A DAW changes its tempo while stopped (``before`` → ``after`` BPM; None: no clock before
    the Start, a cold start), sends Start half a tick before its first tick, and an xrun of
    64-frame cycles falls just after the Start. The ticks it held are counted with the new
    tempo's tick, measured at the epoch's second arrival, not the old one's: the old tempo's
    tick put lost ticks where the new tempo had none (every note 1-2 ticks early) or none
    where it had one (late). An xrun between the epoch's first and second arrivals is counted
    again at the third, whose interval from the second is the new tempo's tick (with the old
    one, or none on a cold start, the ticks it held were not counted: 1-2 ticks late)."""
    cycle = 64 / RATE
    wrong = []
    for offset in np.arange(0.25, 12.0, 0.5):  # cycles after the Start
        for cycles in (1, 2, 3, 5, 8, 16):
            clock = Clock(exact_stamps=True)
            old = tick_times([(48, before, before)], t0=1.0) if before else np.array([])
            new_tick = 60 / after / PPQN
            start = (old[-1] + 60 / before / PPQN if before else 1.0) + 0.5 * new_tick
            ticks = start + 0.5 * new_tick + new_tick * np.arange(4 * PPQN)
            since, until = start + offset * cycle, start + (offset + cycles) * cycle
            lost = (ticks >= since) & (ticks < until)
            feed(clock, old)
            clock.on_start(float(start))
            reported = False
            for t in ticks[~lost]:
                if not reported and t >= until:
                    clock.on_input_lost(float(since), float(until))
                    reported = True
                clock.on_tick(float(t))
            error = beat_error_ticks(clock, ticks[60], 60 / PPQN)
            if abs(error) > 0.1:
                wrong.append((float(offset), cycles, round(error, 2)))
    assert not wrong


def test_the_first_ticks_after_a_later_continue_lost_in_an_xrun_are_counted() -> None:
    """The same after a pause (a new line): the ticks the lost frames held, each a tick's
    period back from the first that came, count from the Continue's position; a loss that
    held no tick place counts nothing."""
    for lost_ms, ticks in ((3.0, 1), (25.0, 2), (0.0, 0)):
        clock, _ = started(exact=True)
        feed(clock, tick_times([(8 * PPQN, 120, 120)]))
        clock.on_stop(2.0)
        clock.on_song_position(3.0, 16)
        later = tick_times([(8 * PPQN, 120, 120)], t0=5.0)
        clock.on_continue(later[0] - 0.002)
        if lost_ms:
            clock.on_input_lost(later[0] - 0.0005, later[0] + lost_ms / 1000)
        feed(clock, later[ticks:])
        assert clock.map.anchor_beat == pytest.approx(4.0 + (8 * PPQN - 1) / PPQN), lost_ms


def test_a_real_stop_and_a_later_start() -> None:
    clock, events = started(exact=True)
    true = tick_times([(8 * PPQN, 120, 120)])
    feed(clock, true[: 4 * PPQN])
    clock.on_stop(true[4 * PPQN])
    assert not clock.running and clock.beat_now(true[4 * PPQN]) is None
    later = tick_times([(4 * PPQN, 90, 90)], t0=5.0)
    clock.on_start(later[0] - 0.002)
    feed(clock, later)
    assert [e.kind for e in events] == ["start", "stop", "start"]
    assert clock.map.anchor_beat == pytest.approx((4 * PPQN - 1) / PPQN)
    assert clock.map.bpm == pytest.approx(90, abs=0.1)


def test_clock_without_start_gives_the_tempo_but_no_bar_lines() -> None:
    clock = Clock(exact_stamps=True)
    true = tick_times([(8 * PPQN, 132, 132)])
    feed(clock, true[: 2 * PPQN])
    assert clock.bpm == pytest.approx(132, abs=0.1)
    assert not clock.position_known and clock.map is None and clock.beat_now(true[47]) is None
    clock.on_song_position(true[2 * PPQN] - 0.001, 32)  # bar 3
    assert clock.running and clock.position_known
    feed(clock, true[2 * PPQN : 3 * PPQN + 1])
    assert clock.map.anchor_beat == pytest.approx(9.0)


def test_internal_clock() -> None:
    clock = Clock(bpm=90)
    clock.start_internal(10.0)
    assert clock.source == "internal"
    assert clock.beat_now(10.0 + 2.0) == pytest.approx(3.0)


def test_tempo_map_round_trip() -> None:
    m = TempoMap(5.0, 8.0, 0.5)
    assert m.time_at(m.beat_at(7.3)) == pytest.approx(7.3)
    with pytest.raises(ValueError, match="tempo"):
        validate_bpm(1000)


def test_a_stray_waiting_at_a_loop_stop_does_not_move_the_next_pass() -> None:
    clock, events = started(exact=True)
    true = tick_times([(32 * PPQN + 1, 120, 120)])
    loop = 16 * PPQN
    feed(clock, true[:loop])
    clock.on_tick(true[loop - 1] + 0.3 * (true[1] - true[0]))  # a stray, still undecided
    clock.on_stop(true[loop])
    clock.on_start(true[loop])
    feed(clock, true[loop : 2 * loop + 1])
    assert events[-1].kind == "jump" and events[-1].from_beat == 16.0
    assert clock.map.anchor_beat == pytest.approx(16.0) and clock.rejected_ticks == 1


def test_input_lost_while_stopped_is_no_gap_after_a_slower_start() -> None:
    clock, _ = started(exact=True)
    feed(clock, tick_times([(4 * PPQN, 180, 180)]))
    clock.on_stop(2.0)
    clock.on_input_lost(2.5)  # an xrun while nothing plays
    later = tick_times([(4 * PPQN + 1, 90, 90)], t0=5.0)
    clock.on_start(later[0] - 0.002)
    feed(clock, later)
    assert clock.map.anchor_beat == pytest.approx(4.0)


def test_strays_half_way_between_several_ticks_in_a_row_are_not_a_faster_clock() -> None:
    """A burst of garbage can put a stray 0xF8 half-way between several ticks in a row: for a
    moment that looks like a clock twice as fast. It is believed only when it goes on."""
    clock, _ = started(exact=True)
    true = tick_times([(16 * PPQN + 1, 120, 120)])
    half = (true[1] - true[0]) / 2
    strays = [true[k] + half for k in (200, 201, 202, 204, 205, 209)]
    feed(clock, sorted([*true, *strays]))
    assert clock.rejected_ticks == len(strays)
    assert clock.map.anchor_beat == pytest.approx(16.0)
    assert clock.map.bpm == pytest.approx(120, abs=0.01)


def test_an_xrun_counts_only_the_ticks_that_fell_in_its_frames() -> None:
    """JACK skipped the sender for a cycle: a tick due in that cycle is gone and is counted;
    one that was not due there is not, even when a tempo drop right after it makes the next
    gap long."""
    true = tick_times([(4 * PPQN, 120, 120), (4 * PPQN + 1, 80, 80)])
    period = true[1] - true[0]
    clock, _ = started(exact=True)
    feed(clock, true[:60])
    clock.on_input_lost(true[60] - 0.002, true[60] + 0.002)  # tick 60 was in the skipped cycle
    feed(clock, true[61 : 4 * PPQN])
    clock.on_input_lost(true[4 * PPQN - 1] + 0.3 * period, true[4 * PPQN - 1] + 0.5 * period)
    feed(clock, true[4 * PPQN :])  # 80 BPM from here: a gap of 1.5 ticks, nothing lost
    assert clock.map.anchor_beat == pytest.approx(8.0)


# -- gaps in the ticks: suspend, resume, time out -------------------------------------------
def watch(clock: Clock, since: float, until: float, every: float = 0.01) -> None:
    """The daemon's clock watch: check_silence every ``every`` seconds through a gap."""
    for now in np.arange(since, until, every):
        clock.check_silence(float(now))


@pytest.mark.parametrize("stamps", ["exact", "per-cycle-256"])
def test_a_gap_suspends_and_ticks_back_on_the_grid_resume(stamps: str) -> None:
    """4 beats of ticks, none for 200 ms (no Stop), then 8 beats on the same grid: every note
    is released at the gap (the "suspend" event, the epoch kept), and the clock runs again
    from the first tick back at the position the grid gives it, the gap counted in whole
    ticks."""
    exact = stamps == "exact"
    true = tick_times([(20 * PPQN, 120, 120)])
    period = true[1] - true[0]
    last = 4 * PPQN - 1  # the last tick before the gap (song tick 95)
    back = last + 1 + int(np.ceil(0.2 / period))  # the first tick after 200 ms without one
    stamped = true if exact else per_cycle(true, 256)
    clock, events = started(exact)
    gaps: list[TransportEvent] = []
    clock.gap_listeners.append(gaps.append)
    feed(clock, stamped[: last + 1])
    epoch = clock.epoch
    watch(clock, stamped[last], stamped[back])
    assert [g.kind for g in gaps] == ["suspend"] and gaps[0].epoch == epoch
    assert gaps[0].beat == pytest.approx((last + 1) / PPQN)
    assert clock.suspended and clock.running and clock.epoch == epoch
    feed(clock, stamped[back : back + 8 * PPQN])
    assert [g.kind for g in gaps] == ["suspend", "resume"]
    assert gaps[1].beat == pytest.approx(back / PPQN) and gaps[1].epoch == epoch
    assert not clock.suspended and clock.running and clock.epoch == epoch
    assert [e.kind for e in events] == ["start"] and clock.rejected_ticks == 0
    newest = back + 8 * PPQN - 1
    if exact:
        assert clock.map.anchor_beat == pytest.approx(newest / PPQN)
        assert clock.map.time_at(newest / PPQN + 1) == pytest.approx(true[newest + PPQN], abs=1e-6)
        assert clock.map.bpm == pytest.approx(120, abs=0.01)
    else:  # stamps a cycle late: the beat within a tick, the count exact
        assert abs(beat_error_ticks(clock, true[newest], newest / PPQN)) < 1.0
        assert clock.follower.count == newest + 1
    assert clock.gaps == 1 and clock.timeouts == 0


def test_a_stray_in_a_gap_is_rejected_and_the_ticks_resume() -> None:
    clock, _ = started(exact=True)
    gaps: list[TransportEvent] = []
    clock.gap_listeners.append(gaps.append)
    true = tick_times([(12 * PPQN, 120, 120)])
    period = true[1] - true[0]
    feed(clock, true[: 4 * PPQN])
    watch(clock, true[4 * PPQN - 1], true[4 * PPQN + 12])
    clock.on_tick(true[4 * PPQN + 11] + 0.5 * period)  # a stray half-way between two ticks
    feed(clock, true[4 * PPQN + 13 : 8 * PPQN])
    assert [g.kind for g in gaps] == ["suspend", "resume"] and clock.running
    assert clock.rejected_ticks == 1
    assert clock.map.anchor_beat == pytest.approx((8 * PPQN - 1) / PPQN)


def test_ticks_back_on_another_line_end_the_epoch() -> None:
    """The DAW moved while its clock was silent (relocated without a Song Position, or a new
    tempo): two arrivals off the line end the epoch where the ticks stopped; nothing plays
    until the DAW says where the song is."""
    clock, events = started(exact=True)
    true = tick_times([(4 * PPQN, 120, 120)])
    feed(clock, true)
    watch(clock, true[-1], true[-1] + 0.3)
    moved = tick_times([(2 * PPQN, 100, 100)], t0=true[-1] + 14.5 * (true[1] - true[0]))
    clock.on_tick(moved[0])
    assert clock.running and clock.suspended  # one alone may be a stray
    feed(clock, moved[1:])
    assert not clock.running and events[-1].kind == "stop"
    assert events[-1].beat == pytest.approx(4.0, abs=0.01)
    assert clock.bpm == pytest.approx(100, abs=0.5)  # the new line's tempo
    clock.on_song_position(moved[-1] + 0.001, 32)  # the DAW says where: bar 3
    clock.on_continue(moved[-1] + 0.002)
    assert clock.running and events[-1].kind == "continue" and events[-1].beat == 8.0


def test_input_read_late_is_no_gap() -> None:
    """A process starved of CPU reads its input late: the silence is measured up to where
    the input was read, not up to now."""
    clock, _ = started(exact=True)
    gaps: list[TransportEvent] = []
    clock.gap_listeners.append(gaps.append)
    true = tick_times([(2 * PPQN, 120, 120)])
    feed(clock, true)
    clock.input_read_until(true[-1] + 0.05)  # the reports reading is 450 ms behind
    assert not clock.check_silence(true[-1] + 0.5) and not gaps
    clock.input_read_until(true[-1] + 0.2)  # read that far, and still no tick: a gap
    assert clock.check_silence(true[-1] + 0.5) and [g.kind for g in gaps] == ["suspend"]


def test_no_tick_for_the_timeout_stops() -> None:
    """An xrun can eat the DAW's Stop: ticks that stop coming suspend the clock at once and
    stop it after ``timeout_s``; the stop is where the ticks stopped."""
    clock = Clock(exact_stamps=True, timeout_s=1.0)
    events: list[TransportEvent] = []
    clock.listeners.append(events.append)
    clock.on_start(0.0)
    true = tick_times([(2 * PPQN, 120, 120)])
    feed(clock, true)
    period = true[1] - true[0]
    assert not clock.check_silence(true[-1] + 3 * period)  # a pause that is no gap
    assert clock.check_silence(true[-1] + 0.16)
    assert clock.running and clock.suspended and events[-1].kind == "start"
    assert not clock.check_silence(true[-1] + 0.9)
    assert clock.check_silence(true[-1] + 1.01)
    assert not clock.running and not clock.suspended and events[-1].kind == "stop"
    assert events[-1].beat == pytest.approx(2.0, abs=0.01)
    assert not clock.check_silence(true[-1] + 5.0)  # said once
    assert (clock.gaps, clock.timeouts) == (1, 1)
    with pytest.raises(ValueError, match="timeout"):
        Clock(timeout_s=0.0)


# -- the first tick after Start, Continue or Song Position ----------------------------------
@pytest.mark.parametrize("before", ["ticking-while-stopped", "running"])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.75, 0.8, 0.95])
def test_start_is_tick_zero_whatever_the_old_grid(before: str, fraction: float) -> None:
    """A clock that ticks while stopped (or runs: jack_midi_clock after a relocate), then
    Start and the new grid's first tick ``fraction`` of a tick after the last old one: that
    tick is song position 0, never a stray, and every beat after it is exact."""
    clock, events = started(exact=True)
    old = tick_times([(4 * PPQN, 120, 120)])
    period = old[1] - old[0]
    if before == "running":
        feed(clock, old)
    else:
        feed(clock, old[: 2 * PPQN])
        clock.on_stop(old[2 * PPQN] - 0.25 * period)
        feed(clock, old[2 * PPQN :])  # the clock goes on while stopped
    first = old[-1] + fraction * period
    clock.on_start(old[-1] + fraction * period / 2)
    new = tick_times([(8 * PPQN + 1, 120, 120)], t0=first)
    feed(clock, new)
    assert events[-1].kind == ("jump" if before == "running" else "start")
    assert events[-1].beat == 0.0
    assert clock.rejected_ticks == 0
    assert clock.map.anchor_beat == pytest.approx(8.0)
    for beat in (0.0, 7.0, 7.5, 8.0):
        assert clock.map.time_at(beat) == pytest.approx(new[round(beat * PPQN)], abs=1e-6)


def test_an_arrival_waiting_at_a_start_belongs_to_the_old_epoch() -> None:
    """An early arrival still undecided when Start comes (no Stop before it) is not counted
    in the new epoch, even when the new grid's ticks would make it one: the first tick after
    the Start is song position 0."""
    clock, events = started(exact=True)
    old = tick_times([(4 * PPQN, 120, 120)])
    period = old[1] - old[0]
    feed(clock, old)
    clock.on_tick(old[-1] + 0.5 * period)  # early: waits for what comes next
    clock.on_start(old[-1] + 0.7 * period)
    new = tick_times([(8 * PPQN + 1, 120, 120)], t0=old[-1] + 1.5 * period)
    feed(clock, new)
    assert events[-1].kind == "jump" and events[-1].beat == 0.0
    assert clock.map.anchor_beat == pytest.approx(8.0)
    assert clock.map.time_at(8.0) == pytest.approx(new[-1], abs=1e-6)
    assert clock.rejected_ticks == 1
