"""The held-out loop set: reproducible, and nothing the corpus generator makes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ostinato.cli import main
from ostinato.evaluate.loop import bar_signature, loop_length
from ostinato.loops import drums
from ostinato.loops.generate import make_loop
from ostinato.loops.heldout import (
    BARS,
    HELD_OUT_DRUMS,
    HELD_OUT_PROGRAMS,
    HELD_OUT_PROGRESSIONS,
    HELD_OUT_TEMPOS,
    corpus_chord_windows,
    held_out_windows,
    make_held_out_loop,
    parse_chord,
    write_held_out,
)
from ostinato.loops.styles import STYLES
from ostinato.model.grammar import default_pitch_range
from ostinato.model.tokens import score_to_ids, split_bars

STYLE_PROGRAMS = {p for s in STYLES.values()
                  for p in (*s.bass_programs, *s.chord_programs, *s.lead_programs)}  # fmt: skip


def _notes(loop) -> list:
    return [(t.program, t.is_drum, n.time, n.duration, n.pitch, n.velocity)
            for t in loop.score.tracks for n in t.notes]  # fmt: skip


def test_same_seed_same_loops_other_seed_other_loops(tmp_path) -> None:
    assert _notes(make_held_out_loop(5, 3)) == _notes(make_held_out_loop(5, 3))
    assert _notes(make_held_out_loop(5, 3)) != _notes(make_held_out_loop(6, 3))
    write_held_out(tmp_path / "a", 3, seed=4, progress=False)
    write_held_out(tmp_path / "b", 3, seed=4, progress=False)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 4 and "heldout.csv" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_no_progression_is_one_the_corpus_generator_plays() -> None:
    corpus = corpus_chord_windows()
    cycles = set()
    for mode, numerals, _ in HELD_OUT_PROGRESSIONS:
        windows = held_out_windows(mode, numerals)
        assert not windows & corpus, numerals
        assert min(windows) not in cycles, f"{numerals} repeats another held-out progression"
        cycles.add(min(windows))
    # the check itself finds a corpus progression, in another key and started elsewhere
    assert held_out_windows("major", "vi IV I V") & corpus  # I V vi IV


def test_no_instrument_or_tempo_is_one_the_corpus_generator_uses() -> None:
    held_out = {p for programs in HELD_OUT_PROGRAMS.values() for p in programs}
    assert not held_out & STYLE_PROGRAMS
    for low, high in HELD_OUT_TEMPOS:
        for style in STYLES.values():
            assert high < style.bpm[0] or low > style.bpm[1]
    corpus_kit = {pitch for pattern in drums.PATTERNS.values() for pitch in pattern}
    for name, (_, pattern) in HELD_OUT_DRUMS.items():
        assert name not in drums.PATTERNS
        assert set(pattern) - corpus_kit, f"{name} uses only the corpus' kit pieces"
    # and what the generator actually makes (pattern drums: its own tempos)
    for index in range(150):
        loop = make_loop(seed=0, index=index)
        assert not {t.program for t in loop.score.tracks[1:]} & held_out
        assert not any(low <= loop.bpm <= high for low, high in HELD_OUT_TEMPOS)


def test_chord_numerals() -> None:
    assert parse_chord("V", "minor").pitch_classes(0) == (7, 11, 2)  # a major V in minor
    assert parse_chord("iv", "minor").pitch_classes(9) == (2, 5, 9)
    assert parse_chord("Isus4", "major").pitch_classes(0) == (0, 5, 7)
    assert parse_chord("vdim", "minor").quality == "dim"
    with pytest.raises(ValueError):
        parse_chord("X", "major")


@pytest.mark.parametrize("index", range(6))
def test_held_out_loops_are_playable_loops(tokenizer, vocab, index) -> None:
    loop = make_held_out_loop(0, index)
    assert any(low <= loop.bpm <= high for low, high in HELD_OUT_TEMPOS)
    assert loop.loop_bars in (2, 4)
    for track in loop.score.tracks:
        assert track.notes
        assert max(n.time for n in track.notes) < BARS * 4 * 480
        if track.is_drum:
            continue
        assert track.program in HELD_OUT_PROGRAMS[track.name]
        low, high = default_pitch_range(track.program)
        assert all(low <= n.pitch <= high for n in track.notes), track.name
    ids = score_to_ids(tokenizer, loop.score).astype(np.int64)
    bars = split_bars(ids, vocab.bar_id)
    assert len(bars) == BARS
    assert loop_length([bar_signature(vocab, b) for b in bars]) == loop.loop_bars


def test_data_loops_cli(tmp_path, capsys) -> None:
    assert main(["data", "loops", "--held-out", str(tmp_path), "--count", "2", "-q"]) == 0
    with (tmp_path / "heldout.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all((tmp_path / r["file"]).is_file() for r in rows)
    assert '"loops": 2' in capsys.readouterr().out
