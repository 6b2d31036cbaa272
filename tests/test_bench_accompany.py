"""``bench --accompany``'s reading of what the daemon played: notes placed on the DAW's tick
grid, and the figures against the chord of each bar (looped) or half bar (changing); the
keyboard player's callback on a stand-in port, and what the bench passes the daemon."""

from __future__ import annotations

import contextlib

import pytest

from ostinato import bench_accompany
from ostinato.bench_accompany import (
    PROGRESSIONS,
    changing_scenarios,
    follow_beats_of,
    format_accompany,
    halves_of,
    on_grid,
    run_accompany_bench,
    score,
    score_changing,
)
from ostinato.bench_keys import NOTE_NAMES, KeysPlayer, changing_chords
from ostinato.cli import build_parser, main

CHORDS = [voicing for _, voicing in PROGRESSIONS["Am-F-C-G"]]  # Am F C G


def test_notes_land_on_the_nearest_tick_after_the_start():
    ticks = [(0, b"\xf8"), (100, b"\xfa"), *((200 + 1000 * k, b"\xf8") for k in range(200))]
    notes_played = [
        (200 + 1000 * 96 + 30, bytes((0x91, 45, 90))),  # bar 1, beat 1: bass
        (200 + 1000 * 48 - 400, bytes((0x99, 36, 100))),  # bar 0, beat 3: kick
        (200 + 1000 * 5, bytes((0x91, 45, 0))),  # a note-off: not a note
    ]
    events = [*ticks, *notes_played]
    notes, n = on_grid(sorted(events))
    assert n == 200  # the tick before the Start is not counted
    assert sorted(notes) == [(48, 9, 36), (96, 1, 45)]


def test_a_tick_the_recorder_lost_is_put_back_and_later_notes_keep_their_beat():
    ticks = [(100, b"\xfa"), *((200 + 1000 * k, b"\xf8") for k in range(200) if k not in (50, 51))]
    notes_played = [
        (200 + 1000 * 96 + 30, bytes((0x99, 36, 90))),  # bar 1, beat 1, after two lost ticks
        (200 + 1000 * 49 - 20, bytes((0x91, 45, 90))),  # just before the gap: tick 49
    ]
    notes, n = on_grid(sorted([*ticks, *notes_played]))
    assert n == 200
    assert sorted(notes) == [(49, 1, 45), (96, 9, 36)]


def _bass_line(pitch_of_bar, bars=12, beats=(0, 48)):
    return [(b * 96 + t, 1, pitch_of_bar(b)) for b in range(1, bars) for t in beats]


def test_a_bass_on_the_roots_scores_every_chord_tone():
    roots = [45, 41, 36, 43]  # A F C G
    notes = _bass_line(lambda b: roots[b % 4]) + [(b * 96, 9, 36) for b in range(1, 12)]
    result = score(notes, 12 * 96, CHORDS)
    assert result["bass_bars"] == result["drum_bars"] == result["kick_on_one_bars"] == 11
    assert result["bass_chord_tones_passes_2_3"] == 1.0
    assert result["bass_chord_tones_beats_1_3"] == 1.0


def test_a_bass_a_bar_late_misses_and_an_absent_part_counts():
    roots = [45, 41, 36, 43]
    late = _bass_line(lambda b: roots[(b - 1) % 4] + 1)  # the last chord's root, a semitone up
    result = score(late, 12 * 96, CHORDS)
    assert result["bass_chord_tones_passes_2_3"] == 0.0
    assert result["drum_bars"] == 0 and result["kick_on_one_bars"] == 0


# The changing scenario: chords that do not loop, a chord per half bar.

#: Triads whose roots rise by a whole tone: no chord holds the root of the one before it.
WHOLE_TONE = [(60, 64, 67), (62, 66, 69), (64, 68, 71), (66, 70, 73), (68, 72, 75), (70, 74, 77)]


def _chords_of(bars, per_half=False):
    """A chord a bar (each struck on beats 1 and 3) or a chord a half bar, from WHOLE_TONE."""
    n = 2 * bars if per_half else bars
    chords = [WHOLE_TONE[k % len(WHOLE_TONE)] for k in range(n)]
    return chords if per_half else halves_of(chords)


def _root(halves, h):
    return halves[h % len(halves)][0] - 24


def test_the_changing_chords_never_loop_and_are_the_same_every_run():
    for bars in (12, 24):
        runs = changing_scenarios(bars)
        assert runs == changing_scenarios(bars)  # seeded: every run plays the same chords
        per_bar = [name for name, _ in runs["a chord a bar"][::2]]
        per_half = [name for name, _ in runs["two chords a bar"]]
        assert len(per_bar) == bars and len(per_half) == 2 * bars
        assert runs["a chord a bar"][::2] == runs["a chord a bar"][1::2]  # struck twice a bar
        for names in (per_bar, per_half):
            assert all(names[k] != names[k + 1] for k in range(len(names) - 1))  # new each time
            assert all(names[k] != names[k + 2] for k in range(len(names) - 2))  # no back-and-forth
            for period in (1, 2, 4, 8):  # bars; in half bars for the second run
                step = period * (2 if names is per_half else 1)
                assert any(names[k] != names[k + step] for k in range(len(names) - step))
    for name, voicing in changing_chords(40, seed=3):
        assert all(54 <= p <= 65 for p in voicing) and len(set(p % 12 for p in voicing)) == 3
        root = voicing[[p % 12 for p in voicing].index(NOTE_NAMES.index(name.rstrip("m")))]
        assert (root + (3 if name.endswith("m") else 4)) % 12 in {p % 12 for p in voicing}


class _Port:
    """A JACK MIDI port's stand-in: the events of one cycle in, the events written out."""

    def __init__(self, events=()):
        self.events, self.written = list(events), []

    def incoming_midi_events(self):
        return self.events

    def clear_buffer(self):
        pass

    def write_midi_event(self, offset, data):
        self.written.append((offset, tuple(data)))


def _keys_on(chords, ticks):
    """KeysPlayer's process callback over one cycle of a Start and ``ticks`` clock ticks (tick
    k at offset k + 1); the chords struck as (tick, pitches)."""
    keys = KeysPlayer.__new__(KeysPlayer)  # the callback alone, no JACK client
    keys.chords, keys.velocity, keys.tick, keys.sounding = chords, 80, -1, ()
    keys.clock_in = _Port([(0, b"\xfa"), *((k + 1, b"\xf8") for k in range(ticks))])
    keys.out = _Port()
    keys._process(ticks + 1)
    struck: dict[int, list[int]] = {}
    for offset, (status, pitch, _) in keys.out.written:
        if status == 0x90:
            struck.setdefault(offset - 1, []).append(pitch)
    return {t: tuple(p) for t, p in struck.items()}, keys.out.written


def test_the_keyboard_player_strikes_a_chord_per_half_bar():
    struck, written = _keys_on(halves_of(CHORDS), 8 * 96)  # the looped case: as before
    assert sorted(struck) == list(range(0, 8 * 96, 48))
    assert all(struck[t] == CHORDS[(t // 96) % 4] for t in struck)  # beats 1 and 3, looped
    halves = _chords_of(2, per_half=True)
    struck, written = _keys_on(halves, 2 * 96)
    assert [struck[t] for t in (0, 48, 96, 144)] == halves
    # Before each chord, the previous one's note-offs, at the same tick.
    assert [d for o, d in written if o == 49] == [*((0x80, p, 0) for p in halves[0]),
                                                  *((0x90, p, 80) for p in halves[1])]  # fmt: skip


def test_a_bass_on_each_new_root_scores_every_chord_tone_and_follows():
    for per_half in (False, True):
        halves = _chords_of(12, per_half)
        bass = [(t, 1, _root(halves, t // 48)) for t in range(0, 12 * 96, 24)]
        result = score_changing(bass + [(b * 96, 9, 36) for b in range(12)], 12 * 96, halves)
        assert result["bass_chord_tones_beats_2_4"] == result["bass_chord_tones_beat_1"] == 1.0
        assert result["bass_follows_changes"] == 1.0
        assert result["chord_changes"] == result["chord_changes_judged"] == (20 if per_half else 10)
        assert result["bass_notes_beats_2_4"] == 10 * 3 and result["bass_notes_beat_1"] == 10
        assert result["bass_bars"] == result["drum_bars"] == result["kick_on_one_bars"] == 11


def test_a_bass_a_bar_late_scores_low_and_follows_nothing():
    halves = _chords_of(12)
    late = [(t, 1, _root(halves, t // 48 - 2)) for t in range(96, 12 * 96, 24)]
    result = score_changing(late, 12 * 96, halves)
    assert result["bass_chord_tones_beats_2_4"] == result["bass_chord_tones_beat_1"] == 0.0
    assert result["bass_follows_changes"] == 0.0 and result["chord_changes_judged"] == 10
    # The same against the bench's own chords (they share tones, so not all miss).
    real = changing_scenarios(12)["a chord a bar"]
    halves = [v for _, v in real]
    late = [(t, 1, _root(halves, t // 48 - 2)) for t in range(96, 12 * 96, 24)]
    on_time = [(t, 1, _root(halves, t // 48)) for t in range(96, 12 * 96, 24)]
    assert score_changing(late, 12 * 96, halves)["bass_chord_tones_beats_2_4"] < 0.5
    assert score_changing(on_time, 12 * 96, halves)["bass_chord_tones_beats_2_4"] == 1.0


def test_a_bass_that_switches_on_beat_2_follows_from_the_next_commit_point():
    halves = _chords_of(12)
    # The old chord's root on beat 1 (the bar was planned before the change), the new from 2.
    switch = [(t, 1, _root(halves, t // 48 - (2 if t % 96 == 0 else 0)))
              for t in range(96, 12 * 96, 24)]  # fmt: skip
    result = score_changing(switch, 12 * 96, halves, follow_beats=1)
    assert result["bass_chord_tones_beat_1"] == 0.0
    assert result["bass_chord_tones_beats_2_4"] == 1.0
    assert result["bass_follows_changes"] == 1.0 and result["chord_changes_judged"] == 10
    # A commit point a bar on is the next change: nothing is left to judge.
    whole = score_changing(switch, 12 * 96, halves, follow_beats=4)
    assert whole["bass_follows_changes"] is None and whole["chord_changes_judged"] == 0
    # Two chords a bar: a change on beat 3 is followed from beat 4 (commit 1 beat).
    halves = _chords_of(12, per_half=True)
    switch = [(t, 1, _root(halves, t // 48 - (t % 48 == 0))) for t in range(96, 12 * 96, 24)]
    result = score_changing(switch, 12 * 96, halves, follow_beats=1)
    assert result["bass_follows_changes"] == 1.0
    assert result["bass_chord_tones_beats_2_4"] == round(20 / 30, 3)  # beat 3 holds the old one
    # In eighths, the old chord through beat 3's first half: half a beat on is too soon.
    eighths = [(t, 1, _root(halves, t // 48 - (t % 48 < 24))) for t in range(96, 12 * 96, 12)]
    assert score_changing(eighths, 12 * 96, halves, follow_beats=0.5)["bass_follows_changes"] == 0
    assert score_changing(eighths, 12 * 96, halves, follow_beats=1)["bass_follows_changes"] == 1


def test_the_first_two_bars_are_not_scored():
    halves = _chords_of(12)
    wrong_start = [(t, 1, _root(halves, t // 48) + 1) for t in range(0, 2 * 96, 24)]
    right = [(t, 1, _root(halves, t // 48)) for t in range(2 * 96, 12 * 96, 24)]
    result = score_changing(wrong_start + right, 12 * 96, halves)
    assert result["bass_chord_tones_beats_2_4"] == result["bass_chord_tones_beat_1"] == 1.0
    assert result["bass_bars"] == 11 and result["drum_bars"] == 0


def test_the_follow_figure_waits_for_the_commit_step():
    assert [follow_beats_of(c) for c in (None, "bar", "2", "0.5")] == [1.0, 1.0, 2.0, 0.5]


def _fake_bench(monkeypatch, notes_of):
    """run_accompany_bench with its servers and daemon replaced: each run's daemon arguments and
    chords are kept, and ``notes_of(halves)`` is what the daemon played."""
    calls = []

    def run_one(env, model_dir, bpm, bars, programs, halves, work, daemon_args):
        calls.append((bars, halves, daemon_args))
        return notes_of(halves), bars * 96 + 3

    @contextlib.contextmanager
    def no_server(name, period):  # no jackd: the runs are stood in for
        yield {"JACK_DEFAULT_SERVER": name}

    monkeypatch.setattr(bench_accompany.shutil, "which", lambda tool: "/usr/bin/" + tool)
    monkeypatch.setattr(bench_accompany, "private_server", no_server)
    monkeypatch.setattr(bench_accompany, "_run_one", run_one)
    return calls


def test_the_bench_passes_commit_only_when_given_and_says_what_ran(monkeypatch):
    roots = lambda halves: [(t, 1, _root(halves, t // 48)) for t in range(0, 24 * 96, 24)]  # noqa: E731
    calls = _fake_bench(monkeypatch, roots)
    report = run_accompany_bench("model", changing=True)
    assert [c[2] for c in calls] == [(), ()]  # the daemon's own default
    assert [len(c[1]) for c in calls] == [48, 48] and calls[0][0] == 24
    # the report names the commit the daemon ran with: its own default (1 beat)
    assert report["scenario"] == "changing" and report["commit"] == "1"
    assert [r["progression"] for r in report["runs"]] == ["a chord a bar", "two chords a bar"]
    assert report["bass_chord_tones_beats_2_4"] == report["bass_follows_changes"] == 1.0
    assert report["runs"][1]["follow_beats"] == 1.0
    text = format_accompany(report)
    assert "(changing)" in text and "commit 1" in text and "| two chords a bar |" in text

    calls.clear()
    report = run_accompany_bench("model", bars=8, commit="2", extra_args=("--top-k", "8"))
    assert [c[2] for c in calls] == [("--commit", "2", "--top-k", "8")] * 4
    assert calls[0][1] == halves_of(CHORDS) and calls[0][0] == 8
    assert report["scenario"] == "loop" and report["daemon_args"] == ["--commit", "2", "--top-k",
                                                                      "8"]  # fmt: skip
    assert "commit 2" in format_accompany(report)


def test_the_cli_reads_scenario_and_commit():
    parser = build_parser()
    args = parser.parse_args(["bench", "--accompany", "--changing", "--commit", "0.5",
                              "--daemon-args=--top-k 8"])  # fmt: skip
    assert args.changing and args.commit == "0.5" and args.daemon_args == "--top-k 8"
    args = parser.parse_args(["bench", "--accompany"])
    assert not args.changing and args.commit is None and args.accompany_bars is None
    for wrong in ("0", "-1", "0.3", "17", "bars", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "--accompany", "--commit", wrong])
    assert main(["bench", "--changing"]) == 2  # a CommandError, told
