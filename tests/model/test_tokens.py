from __future__ import annotations

import numpy as np
import pytest
from symusic import Score

from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    ids_to_score,
    load_tokenizer,
    new_tokenizer,
    save_tokenizer,
    score_to_ids,
    split_bars,
)
from tests.conftest import TPQ, make_band_score


def _notes(score: Score, tpq: int) -> list[tuple]:
    """(onset in beats, pitch, program, velocity) of every note."""
    out = []
    for track in score.tracks:
        program = DRUM_PROGRAM if track.is_drum else track.program
        for n in track.notes:
            out.append((n.time / tpq, n.pitch, program, n.velocity))
    return sorted(out)


def test_vocabulary_has_the_remi_plus_shape(vocab: Vocab) -> None:
    counts = {t: int((vocab.types == t).sum()) for t in TokenType}
    assert counts[TokenType.BAR] == 1
    assert counts[TokenType.POSITION] == 32  # 4/4 bar of 32nds
    assert counts[TokenType.PROGRAM] == 129  # drums (-1) and the 128 GM programs
    assert 16 <= counts[TokenType.VELOCITY] <= 32
    assert counts[TokenType.DURATION] > 0
    assert vocab.positions_per_bar(4) == 32
    assert vocab.positions_per_bar(3) == 24
    assert vocab.values[vocab.ids_of(TokenType.PROGRAM)].min() == DRUM_PROGRAM


def test_round_trip_keeps_every_note(tokenizer, vocab) -> None:
    score = make_band_score(bars=4)
    ids = score_to_ids(tokenizer, score)
    assert ids.dtype == np.uint16
    assert ids[0] == vocab.bar_id
    decoded = ids_to_score(tokenizer, ids)
    before = _notes(score, TPQ)
    after = _notes(decoded, decoded.ticks_per_quarter)
    assert len(before) == len(after)
    velocities = vocab.values[vocab.ids_of(TokenType.VELOCITY)]
    for (on_a, pitch_a, prog_a, vel_a), (on_b, pitch_b, prog_b, vel_b) in zip(
        before, after, strict=True
    ):
        assert on_b == pytest.approx(on_a, abs=1 / 16)  # within the 32nd grid
        assert (pitch_b, prog_b) == (pitch_a, prog_a)
        nearest_bin = velocities[np.argmin(np.abs(velocities - vel_a))]
        assert vel_b == nearest_bin


def test_split_bars_gives_one_chunk_per_bar(tokenizer, vocab) -> None:
    ids = score_to_ids(tokenizer, make_band_score(bars=3))
    bars = split_bars(ids, vocab.bar_id)
    assert len(bars) == 3
    assert all(b[0] == vocab.bar_id for b in bars)
    assert sum(len(b) for b in bars) == len(ids)


def test_tokenizer_json_round_trip(tmp_path, tokenizer) -> None:
    path = save_tokenizer(tokenizer, tmp_path)
    assert path.name == TOKENIZER_FILE
    loaded = load_tokenizer(tmp_path)
    assert loaded.vocab == tokenizer.vocab
    assert loaded.config.beat_res == tokenizer.config.beat_res
    assert loaded.config.num_velocities == tokenizer.config.num_velocities


def test_tokenizer_json_is_the_source_of_truth(tmp_path) -> None:
    """A tokenizer saved with other settings loads with those settings, not code defaults."""
    custom = new_tokenizer(velocity_bins=24)
    save_tokenizer(custom, tmp_path)
    assert load_tokenizer(tmp_path / TOKENIZER_FILE).config.num_velocities == 24


def test_bad_tokenizer_files_give_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text("{ not json")
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        load_tokenizer(tmp_path)


def test_velocity_bins_are_validated() -> None:
    with pytest.raises(ValueError, match="velocity_bins"):
        new_tokenizer(velocity_bins=8)
