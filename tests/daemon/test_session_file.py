"""Every session recorded: the file as mido reads it (tracks per source and instrument, the
tempo map, markers, every note-on paired with its note-off in order), held notes, an
unwritable folder, and a daemon killed with SIGKILL mid-session through a real JACK server."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import mido
import pytest
from symusic import Score

from ostinato.daemon import session_tracks
from ostinato.daemon.session_file import SessionFile, list_sessions
from tests.daemon.jack_rig import DAEMON_IN, REPO, JackServer, daemon_command

PROGRAMS = {9: -1, 1: 33}  # input channel → instrument: drums on 10, bass on 2


def pairing_problems(path) -> list[str]:
    """Each track's note-ons and note-offs, per channel and pitch, in order: on, off, on …"""
    problems = []
    for track in mido.MidiFile(str(path)).tracks:
        open_notes: dict[tuple[int, int], int] = {}
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type not in ("note_on", "note_off"):
                continue
            key = (msg.channel, msg.note)
            if msg.type == "note_on" and msg.velocity:
                if key in open_notes:
                    problems.append(f"{track.name}: {key} on again at {tick} while sounding")
                open_notes[key] = tick
            elif open_notes.pop(key, None) is None:
                problems.append(f"{track.name}: {key} off at {tick} without an on")
        problems += [f"{track.name}: {k} never ends" for k in open_notes]
    return problems


def recorded(tmp_path) -> SessionFile:
    rec = SessionFile(tmp_path / "s.mid", lambda ch: PROGRAMS.get(ch, 0), 4.0, 120.0, t0=10.0)
    rec.tempo(10.0, 120.0)
    for beat in range(8):  # two bars at 120 BPM: the musician's kick and bass
        t = 10.0 + beat * 0.5
        rec.heard(t, [0x99, 36, 100])
        rec.heard(t + 0.1, [0x89, 36, 0])
        rec.heard(t, [0x91, 40 + beat % 2, 90])
        rec.heard(t + 0.4, [0x91, 40 + beat % 2, 0])  # velocity 0: a note-off
    for i, beat in enumerate((4, 5, 6, 7)):  # Ostinato's keys in bar 2
        rec.queued(i, beat, beat + 0.5, 4)
        rec.played(10.0 + beat * 0.5, 0, 60 + i, 80, i)
    rec.marker(12.0, "jump to bar 1 (loop)")
    rec.tempo(14.0, 90.0)  # bar 3 at 90 BPM
    rec.heard(14.0, [0x91, 45, 90])  # held while the file is written
    return rec


def test_the_file_has_a_track_per_source_and_instrument(tmp_path) -> None:
    rec = recorded(tmp_path)
    assert rec.flush(now=14.0 + 4 / 1.5)  # a bar at 90 BPM later
    midi = mido.MidiFile(str(rec.path))
    assert midi.type == 1 and midi.ticks_per_beat == 480
    names = [t.name for t in midi.tracks]
    assert names == ["", "In ch2 program 33", "In ch10 drums", "Ostinato ch1 program 4"], names
    counts = [sum(m.type == "note_on" and m.velocity > 0 for m in t) for t in midi.tracks]
    assert counts == [0, 9, 8, 4]  # a conductor track first; the held bass note is in
    assert [m.channel for m in midi.tracks[2] if m.type == "note_on"] == [9] * 8  # drums
    assert not pairing_problems(rec.path)
    metas = [(m.type, m) for t in midi.tracks for m in t if m.is_meta]
    tempos = [m.tempo for kind, m in metas if kind == "set_tempo"]
    assert [round(mido.tempo2bpm(t), 3) for t in tempos] == [120.0, 90.0]
    ticks = {}
    for track in midi.tracks:
        tick = 0
        for m in track:
            tick += m.time
            if m.type in ("set_tempo", "marker"):
                ticks[getattr(m, "text", None) or f"tempo {round(mido.tempo2bpm(m.tempo))}"] = tick
    assert ticks["tempo 90"] == 8 * 480  # beat 8: two bars at 120 BPM
    assert ticks["jump to bar 1 (loop)"] == 4 * 480
    # the held note lasts until the writing: a bar at 90 BPM
    bass = midi.tracks[1]
    tick, on = 0, None
    for m in bass:
        tick += m.time
        if m.type == "note_on" and m.note == 45 and m.velocity:
            on = tick
        elif on is not None and m.note == 45:
            assert tick - on == 4 * 480
            break


def test_a_pitch_played_again_while_sounding_ends_the_note_before(tmp_path) -> None:
    """The model may start a pitch again before its last note ends (the sender retriggers):
    the file ends the first note there, so every note-on pairs with its own note-off."""
    rec = SessionFile(tmp_path / "s.mid", lambda ch: 0, t0=0.0)
    for i, (start, beats) in enumerate(((0.0, 4.0), (0.5, 1.0), (0.5, 0.5), (2.0, 0.5))):
        rec.queued(i, 0.0, beats, 0)
        rec.played(start, 0, 60, 90, i)  # 120 BPM: a beat is 0.5 s
    assert rec.flush(now=4.0)
    assert not pairing_problems(rec.path)
    (track,) = Score(str(rec.path)).tracks
    # the long note ends where the pitch comes again; the two notes on one onset are one
    assert [(n.time, n.duration) for n in track.notes] == [(0, 480), (480, 480), (1920, 240)]


def test_a_stop_cuts_the_notes_ostinato_was_playing(tmp_path) -> None:
    rec = SessionFile(tmp_path / "s.mid", lambda ch: 0, t0=0.0)
    rec.queued(1, 0.0, 4.0, 33)
    rec.played(0.0, 1, 40, 90, 1)  # a whole bar long at 120 BPM
    rec.stopped(0.5)
    assert rec.flush()
    (track,) = Score(str(rec.path)).tracks
    assert track.notes[0].duration == 480  # ends at the Stop, one beat in


def test_an_unwritable_folder_is_said_once_and_the_music_goes_on(tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    rec = SessionFile(blocker / "s.mid", lambda ch: 0, t0=0.0)
    rec.heard(0.0, [0x90, 60, 100])
    with caplog.at_level(logging.WARNING):
        assert not rec.flush()
        assert not rec.flush()
    warnings = [r for r in caplog.records if "cannot write the session recording" in r.message]
    assert len(warnings) == 1 and rec.write_errors == 2
    blocker.unlink()
    assert rec.flush()  # writable again: written
    assert rec.path.is_file()


def test_sessions_are_listed_newest_first(tmp_path) -> None:
    for name in ("2026-01-01_10-00-00.mid", "2026-01-02_10-00-00.mid"):
        rec = recorded(tmp_path)
        rec.path = tmp_path / name
        rec.flush(now=16.0)
    (tmp_path / "2026-01-03_10-00-00.mid").write_bytes(b"MThd broken")
    rows = list_sessions(tmp_path)
    assert [r["file"] for r in rows] == ["2026-01-03_10-00-00.mid", "2026-01-02_10-00-00.mid",
                                         "2026-01-01_10-00-00.mid"]  # fmt: skip
    assert "error" in rows[0]
    assert rows[1]["input_notes"] == 17 and rows[1]["ostinato_notes"] == 4
    assert rows[1]["markers"] == 1 and rows[1]["tracks"] == 3
    out = subprocess.run([sys.executable, "-m", "ostinato", "sessions", "--record",
                          str(tmp_path)], capture_output=True, text=True, timeout=60,
                         cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2026-01-02_10-00-00.mid" in out.stdout and "17 notes in, 4 out" in out.stdout
    assert "cannot be read" in out.stdout


def test_a_daemon_killed_mid_session_leaves_a_readable_file(tmp_path) -> None:
    """SIGKILL: no shutdown runs; the file on disk is the last one written (every 2 s)."""
    server = JackServer(f"ostinato-rec-{os.getpid()}")
    sessions = tmp_path / "sessions"
    try:
        with (tmp_path / "daemon.log").open("w") as log:
            daemon = server.spawn(
                daemon_command("--clock", "internal", "--bpm", "150", "--mode", "jam",
                               "--programs", "drums,33", "--no-osc", "--record",
                               str(sessions)),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        server.wait_for(lambda: DAEMON_IN in server.ports(), 60, "the daemon never started")

        def notes_written() -> int:
            files = list(sessions.glob("*.mid"))
            if not files:
                return 0
            try:
                return sum(m.type == "note_on" for t in mido.MidiFile(str(files[0])).tracks
                           for m in t)  # fmt: skip
            except (OSError, EOFError, ValueError):
                return 0

        server.wait_for(lambda: notes_written() >= 20, 60, "no notes recorded")
        time.sleep(2.5)  # mid-way between two writes, more or less
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        server.close()
    (path,) = sessions.glob("*.mid")
    assert not list(sessions.glob("*.tmp")) or path.is_file()
    midi = mido.MidiFile(str(path))
    assert not pairing_problems(path)
    tempos = [m.tempo for t in midi.tracks for m in t if m.type == "set_tempo"]
    assert tempos and round(mido.tempo2bpm(tempos[0])) == 150
    assert any(t.name.startswith("Ostinato ") for t in midi.tracks)
    assert midi.length > 2.0


def record_a_long_night(rec: SessionFile, notes: int) -> float:
    """``notes`` notes, half the musician's bass, half Ostinato's keys, 8 a bar at 240 BPM
    (a 32nd … a quarter long), the musician's a hair before the grid: the time it ends."""
    step_s = 0.125  # an eighth at 240 BPM
    rec.tempo(0.0, 240.0)
    for i in range(notes // 2):
        t = i * step_s
        rec.heard(t - 0.003, [0x91, 40 + i % 5, 90])
        rec.heard(t + 0.05, [0x81, 40 + i % 5, 0])
        rec.queued(i, i / 2, i / 2 + 0.25 * (1 + i % 4), 4)
        rec.played(t, 0, 60 + i % 7, 80, i)
    return notes // 2 * step_s


def test_no_listener_waits_on_the_writer_at_100k_notes(tmp_path) -> None:
    """A night's 100 k notes: while the file is rewritten over and over in another thread,
    the listeners (the clock's tempo map every tick, the scheduler's queued notes, the reports
    thread's played notes, the transport's Stop) each return at once, and the file written is
    a valid MIDI file with every note, each note-on paired with its note-off."""
    rec = SessionFile(tmp_path / "s.mid", lambda ch: 33, t0=0.0)
    end_s = record_a_long_night(rec, 100_000)
    assert rec.flush()  # the night so far, in the file
    stop = threading.Event()
    rewrites = []

    def rewrite() -> None:
        while not stop.is_set():
            rewrites.append(rec.flush())

    writer = threading.Thread(target=rewrite)
    writer.start()
    waits_s = []
    i = 100_000
    deadline = time.monotonic() + 5.0
    while i < 100_300 and time.monotonic() < deadline:  # a tick's calls every millisecond
        t = end_s + (i - 100_000) * 0.01
        calls = [(rec.tempo, (t, 240.0 + i % 2 * 0.5)), (rec.queued, (i, 0.0, 0.25, 4)),
                 (rec.played, (t, 0, 72, 80, i))]  # fmt: skip
        if i % 100 == 0:
            calls.append((rec.stopped, (t,)))
        for listener, args in calls:
            started = time.perf_counter()
            listener(*args)
            waits_s.append(time.perf_counter() - started)
        i += 1
        time.sleep(0.001)
    stop.set()
    writer.join()
    longest_ms = max(waits_s) * 1e3
    assert longest_ms < 20.0, f"a listener waited {longest_ms:.1f} ms on the writer"
    assert len(rewrites) >= 2 and all(rewrites)  # the calls ran while the file was rewritten
    rewrite_ms = []
    for _ in range(3):
        assert rec.flush()
        rewrite_ms.append(rec.write_ms)
    assert min(rewrite_ms) < 50.0  # the news of a moment, not the night: a join and a write
    score = Score(str(rec.path))
    assert sum(len(t.notes) for t in score.tracks) == i
    assert not pairing_problems(rec.path)


def play_a_session(rec: SessionFile, seed: int, flush_every_s: float | None) -> None:
    """A minute of everything at once, stamps a hair out of order as threads deliver them:
    chords and retriggers, a note twice on one onset, long notes cut by Stops, a pad held
    across the writes, tempo changes, All Notes Off, markers ahead of the music."""
    rng = random.Random(seed)
    t, note_id, next_flush = 0.0, 0, flush_every_s
    rec.tempo(0.0, 120.0)
    rec.heard(0.2, [0x92, 48, 70])  # the pad: held until the end
    while t < 60.0:
        t += rng.uniform(0.0, 0.12)
        jitter = rng.uniform(-0.04, 0.0)
        roll = rng.random()
        if roll < 0.35:
            channel = rng.choice((1, 9))
            status = rng.choice((0x90, 0x90, 0x80))
            rec.heard(t + jitter, [status | channel, rng.randint(36, 41), rng.choice((0, 90))])
        elif roll < 0.75:
            beats = rng.choice((0.125, 0.5, 1.0, 4.0, 16.0))
            for _ in range(rng.choice((1, 1, 2))):  # twice: the same note on one onset
                rec.queued(note_id, 0.0, beats, rng.choice((4, 33)))
                rec.played(t + jitter, rng.choice((0, 9)), rng.randint(60, 63), 80, note_id)
                note_id += 1
        elif roll < 0.78:
            rec.stopped(t)
        elif roll < 0.83:
            rec.marker(t + rng.uniform(-0.5, 3.0), f"answer {note_id}")
        elif roll < 0.88:
            rec.tempo(t, rng.choice((90.0, 120.0, 151.5)))
        elif roll < 0.9:
            rec.all_notes_off(t, 1)
        if next_flush is not None and t >= next_flush:
            assert rec.flush()
            next_flush += flush_every_s
    assert rec.flush(now=t + 1.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_file_written_as_the_music_goes_is_the_file_built_whole(tmp_path, monkeypatch, seed):
    """Each event is encoded once, when nothing still to come can change it: the file
    rewritten every half second of music is byte for byte the one built whole from every
    note at the end (nothing ever settled)."""
    rec = SessionFile(tmp_path / "a.mid", lambda ch: PROGRAMS.get(ch, 0), t0=0.0)
    play_a_session(rec, seed, 0.5)
    assert rec._tracks.settled_t > 50.0  # the first 50 s were encoded once, for good
    monkeypatch.setattr(session_tracks, "SETTLE_S", 1e9)
    whole = SessionFile(tmp_path / "b.mid", lambda ch: PROGRAMS.get(ch, 0), t0=0.0)
    play_a_session(whole, seed, None)
    assert whole._tracks.settled_t < 0.0  # before the first note
    assert rec.path.read_bytes() == whole.path.read_bytes()
    assert not pairing_problems(rec.path)
    midi = mido.MidiFile(str(rec.path))
    assert len(midi.tracks) >= 5 and midi.length > 50.0
    pad = [m for t in midi.tracks for m in t if m.type == "note_on" and m.channel == 2]
    assert len(pad) == 1  # held across every write, written once


@pytest.mark.parametrize("value", ["off", "OFF"])
def test_record_off_is_no_recording(value) -> None:
    from ostinato.settings import SETTINGS

    assert SETTINGS["record"].from_text(value) is None
    assert SETTINGS["record"].check(False) is None
