from __future__ import annotations

import csv
from pathlib import Path

import pytest
from symusic import Score

from ostinato.loops import bass, chords, lead
from ostinato.loops.generate import BAR_TICKS, TPQ, make_loop, synth_loops
from ostinato.loops.styles import STYLES
from ostinato.loops.theory import Key

GMD = Path(__file__).parents[1] / "data"
RANGES = {"bass": (bass.LOW, bass.HIGH), "chords": (chords.LOW, chords.HIGH),
          "lead": (lead.LOW, lead.HIGH)}  # fmt: skip


@pytest.mark.parametrize("index", range(60))
def test_loop_invariants(index: int) -> None:
    loop = make_loop(seed=11, index=index)
    score = loop.score
    assert loop.bars in (4, 8)
    assert STYLES[loop.style].bpm[0] <= loop.bpm <= STYLES[loop.style].bpm[1]
    loop_ticks = loop.bars * BAR_TICKS
    names = [t.name for t in score.tracks]
    assert names[:2] == ["drums", "bass"]
    assert score.tracks[0].is_drum
    for track in score.tracks:
        assert track.notes, track.name
        for note in track.notes:  # bar-aligned: everything inside the loop's bars
            assert 0 <= note.time < loop_ticks
            assert note.time + note.duration <= loop_ticks
            assert 1 <= note.velocity <= 127
        if track.is_drum:
            assert all(27 <= n.pitch <= 87 for n in track.notes)
            continue
        low, high = RANGES[track.name]
        assert all(low <= n.pitch <= high for n in track.notes), track.name
        assert {n.pitch % 12 for n in track.notes} <= loop.key.pitch_classes  # in key
    # the bass plays the progression's roots on the bar's first note often enough
    bass_track = score.tracks[1]
    assert len({n.pitch % 12 for n in bass_track.notes}) >= 1
    # human timing: not every onset sits exactly on the 16th grid
    onsets = [n.time for t in score.tracks[1:] for n in t.notes]
    if loop.style != "techno" or len(onsets) > 20:
        assert any(t % (TPQ // 4) for t in onsets)


def test_every_style_and_mode_is_reachable() -> None:
    loops = [make_loop(seed=3, index=i) for i in range(200)]
    assert {loop.style for loop in loops} == set(STYLES)
    assert len({loop.key.tonic for loop in loops}) == 12
    assert len({loop.key.mode for loop in loops}) >= 4


def test_bass_follows_the_roots() -> None:
    import numpy as np

    key = Key(9, "minor")  # A minor
    roots = [key.degree_pc(d) for d in (0, 5, 2, 6)]
    notes = bass.bass_line(key, roots, "root_8ths", TPQ, 90, np.random.default_rng(0))
    for bar, root in enumerate(roots):
        first = min((n for n in notes if n[0] // BAR_TICKS == bar), key=lambda n: n[0])
        assert first[2] % 12 == root


def test_grooves_from_gmd_keep_their_tempo(tmp_path) -> None:
    gmd = tmp_path / "gmd"
    (gmd / "d").mkdir(parents=True)
    src = sorted(GMD.glob("gmd_*.mid"))[0]
    (gmd / "d" / "a.mid").write_bytes(src.read_bytes())
    (gmd / "info.csv").write_text(
        "drummer,session,id,style,bpm,beat_type,time_signature,midi_filename,"
        "audio_filename,duration,split\n"
        "d,d,d/1,funk/groove1,138,beat,4-4,d/a.mid,,27.8,train\n"
    )
    summary = synth_loops(tmp_path / "out", 12, seed=5, gmd_dir=gmd, groove_share=1.0,
                          progress=False)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "loops.csv").open()))
    assert len(rows) == 12 and sum(summary["styles"].values()) == 12
    from_gmd = [r for r in rows if r["drums"] == "a.mid"]
    assert from_gmd and all(r["bpm"] == "138" for r in from_gmd)
    score = Score(str(tmp_path / "out" / from_gmd[0]["file"]))
    assert round(score.tempos[0].qpm) == 138


def test_same_seed_same_files(tmp_path) -> None:
    synth_loops(tmp_path / "a", 8, seed=9, progress=False)
    synth_loops(tmp_path / "b", 8, seed=9, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.mid"))
    assert len(files) == 8
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # loop N does not depend on how many loops are made
    synth_loops(tmp_path / "c", 3, seed=9, progress=False)
    for rel in sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*.mid")):
        assert (tmp_path / "c" / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes()


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown style"):
        synth_loops(tmp_path, 1, styles=("polka",), progress=False)
    with pytest.raises(ValueError, match="loops"):
        synth_loops(tmp_path, 0, progress=False)
    with pytest.raises(FileNotFoundError, match=r"info\.csv"):
        synth_loops(tmp_path, 1, gmd_dir=tmp_path, progress=False)
