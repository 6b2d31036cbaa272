"""The DAW stand-in and its grid, checked on their own: the plan compiles to the bytes and
frames a DAW sends, and through a real JACK server one stand-in hears another at exactly the
frames it planned (so what the timing tests blame on the daemon is the daemon's)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from tests.daemon.daw import CLOCK, SPP, START, STOP, DawProcess, Plan, compile_plan, garbage
from tests.daemon.grid import Timeline, check_rig, error_stats
from tests.daemon.jack_rig import JackServer

RATE = 48000


def offline_log(plan: Plan, received: list | None = None) -> dict:
    c = compile_plan(plan, RATE)
    return {
        "rate": RATE,
        "ticks": c.ticks,
        "epochs": [[e, b, n] for e, (b, n) in c.epochs.items()],
        "received": received if received is not None else c.notes,
    }


def wire(plan: Plan) -> list[tuple[int, bytes]]:
    return [(f, d) for f, _, _, d, _, _ in compile_plan(plan, RATE).events]


@pytest.mark.parametrize("style", ["a", "b", "c"])
def test_loops_keep_the_tick_spacing_and_replay_the_track(style: str) -> None:
    plan = Plan(bpm=120).drum_phrase(range(1, 3))
    plan.loop(style, bars=2, passes=3, start_bar=1 if style == "b" else 0)
    c = compile_plan(plan, RATE)
    assert set(np.diff([t[0] for t in c.ticks])) == {1000}  # 120 BPM at 48 kHz: perfect
    bytes_ = [d for _, d in wire(plan) if d[0] in (START, STOP, SPP, 0xFB)]
    jump = {
        "a": [bytes([SPP, 0, 0])],
        "b": [bytes([STOP]), bytes([SPP, 16, 0]), bytes([0xFB])],
        "c": [bytes([STOP]), bytes([START])],
    }[style]
    first = [bytes([START])] if style != "b" else [bytes([SPP, 16, 0]), bytes([0xFB])]
    assert bytes_ == first + jump + jump + [bytes([STOP])]
    tl = Timeline(offline_log(plan))
    assert [p.epoch for p in tl.passes] == [1, 2, 3]
    start = 0 if style != "b" else 96
    for p in tl.passes:  # every pass from the loop start, over the loop's two bars
        assert (p.positions[0], p.positions[-1]) == (start, start + 191)
    # the phrase is in bars 2-3: a and c loop bars 1-2, b loops bars 2-3
    expected = {1: 12, 2: 12} if style == "b" else {0: 0, 1: 12}
    assert tl.bar_counts() == {1: expected, 2: expected, 3: expected}
    # the stand-in's own notes, heard back: exactly on the grid, none hanging
    onsets = tl.onsets()
    assert onsets and error_stats([o.error_ms for o in onsets])["max"] < 0.011
    assert tl.hanging() == []
    if style == "c":  # Ardour's track at the jump: CC 64 = 0 and CC 123 on every channel
        ccs = [d for _, d in wire(plan) if d[0] & 0xF0 == 0xB0]
        assert len(ccs) == 2 * 16 * 2


def test_tempo_steps_ramps_and_jitter() -> None:
    plan = Plan(bpm=140).start().bars(1).tempo(90).bars(1).ramp(60, 4).bars(2).stop()
    ticks = compile_plan(plan, RATE).ticks
    gaps = np.diff([t[1] for t in ticks])  # gaps[k]: from tick k to tick k + 1
    spt = [RATE * 60 / bpm / 24 for bpm in (140, 90, 60)]
    assert gaps[0] == pytest.approx(spt[0])
    # a tempo marker at bar 2: its downbeat (tick 96) still at 140, the intervals after at 90
    assert gaps[95] == pytest.approx(spt[0]) and gaps[96] == pytest.approx(spt[1])
    assert gaps[191] == pytest.approx(spt[1])  # the ramp starts at bar 3's downbeat
    assert np.all(np.diff(gaps[191:288]) > 0)  # slowing down all through it
    assert gaps[287] == pytest.approx(spt[2]) and gaps[-1] == pytest.approx(spt[2])
    jittered = compile_plan(Plan(bpm=120, jitter_pct=10).start().bars(2), RATE).ticks
    moved = np.array([t[0] - t[1] for t in jittered])
    assert 50 < np.abs(moved).max() <= 100 and np.abs(moved).mean() > 20  # ±10% of 1000


def test_join_and_jumps_open_epochs_where_the_grid_says() -> None:
    plan = Plan(bpm=120).join(beat=13).bars(1).spp(64).bars(1).start().bars(1).stop()
    tl = Timeline(offline_log(plan))
    assert [(p.epoch, p.positions[0]) for p in tl.passes] == [(1, 312), (2, 384), (3, 0)]
    assert not any(d[0] in (START, 0xFB) for _, d in wire(plan)[:100])  # the join is silent
    p = tl.passes[1]
    assert tl.where(p.frames[10]) == (2, pytest.approx((384 + 10) / 24))
    assert tl.where(tl.passes[-1].end + 1) is None  # stopped


def test_lost_ticks_keep_the_song_going_and_a_phase_moves_the_grid() -> None:
    """``lose``: the song's position goes on through ticks that never reach the wire (the
    grid keeps them); ``phase``: the first tick after a Start comes early, the Start between
    it and the last tick before, the spacing after it as before."""
    plan = Plan(bpm=120).start().bars(1).lose(10).bars(1).stop()
    c = compile_plan(plan, RATE)
    sent = [f for f, d in wire(plan) if d == bytes([CLOCK])]
    assert len(c.ticks) == 2 * 96 + 10 and len(sent) == 2 * 96
    assert sent[96] - sent[95] == 11 * 1000  # the gap on the wire
    (p,) = Timeline(offline_log(plan)).passes
    assert list(p.positions) == list(range(2 * 96 + 10))  # the song went on through it

    plan = Plan(bpm=120).ticks(24).phase(0.2).start().bars(1).stop()
    events = wire(plan)
    start = next(i for i, (_, d) in enumerate(events) if d == bytes([START]))
    last_old, start_frame, first_new = events[start - 1][0], events[start][0], events[start + 1][0]
    assert events[start - 1][1] == events[start + 1][1] == bytes([CLOCK])
    assert first_new - last_old == 200 and last_old < start_frame < first_new
    assert events[start + 2][0] - first_new == 1000
    (p,) = Timeline(offline_log(plan)).passes
    assert p.positions[0] == 0 and p.frames[0] == first_new


def test_grid_judges_a_late_note_and_a_hanging_one() -> None:
    plan = Plan(bpm=120).start().bars(2).stop()
    log = offline_log(plan, received=[])
    tl0 = Timeline(log)
    beat2 = tl0.passes[0].frame_of(2 * 24)
    log["received"] = [
        [round(beat2) + 48, [0x99, 36, 100]],  # 1 ms late
        [round(beat2) + 500, [0x89, 36, 0]],
        [round(beat2) + 960, [0x99, 38, 100]],  # 1/48 beat late: nearest 1/8 is beat 2
    ]  # and 38 never ends
    tl = Timeline(log)
    onsets = tl.onsets()
    assert [round(o.error_ms, 3) for o in onsets] == [1.0, 20.0]
    assert [o.grid_beat for o in onsets] == [2.0, 2.0]
    assert [n.pitch for n in tl.hanging()] == [38]


def test_grid_a_note_off_lost_in_a_missed_cycle_hangs_no_later_note() -> None:
    """A cycle the recorder missed (an xrun) can swallow a note-off. Paired oldest first, every
    later note of that key would end at the next one's note-off and the last of each pass
    would seem to hang until the first note-off of its key after it, seconds later (in the
    matrix: a hi-hat at the end of the 174 BPM pass "ended 1.5 s after its pass", the 300 BPM
    pass's 2.5 s, the jitter pass's 1.5 s, in one run). The note whose end may be lost is not
    judged; the rest keep their own ends; a note the daemon never ended is still found."""
    plan = Plan(bpm=120).start().bars(2).stop().rest(4).start().bars(2).stop()
    log = offline_log(plan, received=[])
    log["period"] = 256
    received, last = [], []
    for p in Timeline(log).passes:  # a closed hi-hat on every beat, an eighth long
        for beat in range(8):
            on = round(p.frame_of(beat * 24))
            received += [[on, [0x99, 42, 80]], [on + 12000, [0x89, 42, 0]]]
        last.append(on)
    lost = received.pop(3)  # the second note's note-off: in a cycle the recorder missed
    held = received[0][0]  # a pad held through that cycle, its note-off heard after it
    received += [[held, [0x90, 60, 70]], [lost[0] + 20000, [0x80, 60, 0]]]
    log["received"] = received
    log["gaps"] = [[lost[0] - 100, lost[0] + 156]]
    tl = Timeline(log)
    assert tl.hanging() == []
    ended = [n for n in tl.notes() if not n.end_lost and n.pitch == 42]
    assert len(ended) == 15 and all(n.off == n.on + 12000 for n in ended)
    (pad,) = [n for n in tl.notes() if n.pitch == 60]  # judged: its end was heard
    assert not pad.end_lost and pad.off == lost[0] + 20000
    received = received[:-2]
    del log["gaps"]  # the same recording without the gap: the note-off is the daemon's fault
    assert [n.on for n in Timeline(log).hanging()] == last  # the last of each pass
    log["gaps"] = [[lost[0] - 100, lost[0] + 156]]
    log["received"] = received[:-1]  # and the last note of the second pass never ends
    (hung,) = Timeline(log).hanging()
    assert hung.off is None and hung.on == last[-1]


def test_garbage_is_garbage() -> None:
    ticks = [1000.0 * k for k in range(100)]
    junk = garbage(7, 10_000, 34_000, ticks)
    assert 195 <= len(junk) <= 205
    assert sum(len(d) for _, d in junk if d[0] == 0xF0) == 65536  # whole 16 KiB messages
    strays = [f for f, d in junk if d == bytes([CLOCK])]
    assert len(strays) == 8 and all(f % 1000 == 500 for f in strays)  # half-way
    assert sum(1 for _, d in junk if CLOCK in d[1:]) >= 6  # inside other messages
    assert all(10_000 <= f < 34_000 for f, _ in junk)


def test_one_stand_in_hears_another_at_the_planned_frames(tmp_path) -> None:
    """Through a real JACK server (256 frames): every tick, transport message, note and piece
    of garbage arrives at its planned frame, each once; a 64 KiB SysEx cannot (JACK's limit)
    and goes as whole 16 KiB messages."""
    server = JackServer(f"ostinato-rig-{os.getpid()}", period=256)
    try:
        plan = Plan(bpm=174).drum_phrase(range(1))
        plan.loop("c", bars=1, passes=2).start().bars(1).burst(beats=0.5).beats(3).stop()
        source = DawProcess(server, plan, tmp_path, name="source")
        sink = DawProcess(server, Plan().rest(1), tmp_path, name="sink")
        server.connect(source.out_port, sink.in_port)
        source.go()
        sink.go()
        source.wait_done(60)
        sent, heard = source.quit(), sink.quit()
    finally:
        server.close()
    assert check_rig(sent) == [], sent["health"]
    received = Counter((f, bytes(m)) for f, m in heard["received"])
    start = sent["start_frame"]
    planned = Counter((f + start, d) for f, _, _, d, _, _ in compile_plan(plan, RATE).events)
    # every planned event at its planned frame, once (on a loaded machine the server may run a
    # cycle without one of the two clients: only what was due around such a cycle may differ)
    gaps = sent["gaps"] + heard["gaps"]

    def near_gap(frame: int) -> bool:
        return any(a - 256 <= frame < b + 256 for a, b in gaps)

    missing = [e for e in (planned - received).elements() if not near_gap(e[0])]
    assert missing == [], (missing[:10], gaps)
    extra = sorted(f for f, _ in (received - planned).elements() if not near_gap(f))
    junk = sorted(f for f, _ in sent["junk_sent"] if not near_gap(f))
    assert extra == junk  # the rest is the garbage, at the frames it went out
    sysex = [d for f, d in received if d[0] == 0xF0]
    assert sum(map(len, sysex)) == 65536 or gaps
