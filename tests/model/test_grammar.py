from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostinato.model.grammar import (
    MAX_NOTES_AT_ONE_POSITION,
    Grammar,
    GrammarConfig,
    State,
    default_pitch_range,
)
from ostinato.model.tokens import DRUM_PROGRAM, TokenType, ids_to_score, score_to_ids
from tests.conftest import make_band_score

PROGRAM_SETS = [(-1,), (33,), (-1, 33, 4, 81), (0, 25, 48, 88)]


def _sample_bars(grammar: Grammar, draw_index, bars: int, max_tokens: int = 400) -> list[int]:
    """Sample ``bars`` bars under the grammar's masks; ``draw_index(n)`` picks one of n."""
    vocab = grammar.vocab
    grammar.reset()
    ids = [vocab.bar_id]
    grammar.advance(vocab.bar_id)
    while grammar.bars_completed < bars:
        allowed = np.flatnonzero(grammar.mask())
        assert len(allowed) > 0, f"empty mask in state {grammar.state.name}"
        # Past the token budget, close the bar as soon as the grammar lets us.
        if len(ids) > max_tokens and grammar.allows(vocab.bar_id):
            token = vocab.bar_id
        else:
            token = int(allowed[draw_index(len(allowed))])
        grammar.advance(token)
        ids.append(token)
    return ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    programs=st.sampled_from(PROGRAM_SETS),
    beats_per_bar=st.sampled_from([4.0, 3.0, 3.5]),
    bars=st.integers(1, 3),
)
def test_sequences_drawn_under_the_masks_decode_inside_the_bar(
    tokenizer, vocab, data, programs, beats_per_bar, bars
) -> None:
    grammar = Grammar(vocab, GrammarConfig(programs=programs, beats_per_bar=beats_per_bar))
    ids = _sample_bars(grammar, lambda n: data.draw(st.integers(0, n - 1)), bars)
    # Tokens carry 4/4 bars (positions 0..31); a shorter meter only uses the first positions.
    # Decode with miditok and check every note against the bar it was generated in.
    score = ids_to_score(tokenizer, ids)
    tpq = score.ticks_per_quarter
    bar_ticks = 4 * tpq  # miditok lays bars out as 4/4
    notes_seen = 0
    per_bar_end = beats_per_bar * tpq
    for track in score.tracks:
        program = DRUM_PROGRAM if track.is_drum else track.program
        assert program in programs
        low, high = default_pitch_range(program)
        for note in track.notes:
            notes_seen += 1
            bar_index, offset = divmod(note.time, bar_ticks)
            assert 0 <= bar_index < bars
            assert offset < per_bar_end  # onset inside the meter
            assert offset + note.duration <= per_bar_end  # the note ends inside the bar
            assert note.duration > 0
            assert low <= note.pitch <= high
            assert 1 <= note.velocity <= 127
    assert notes_seen == sum(1 for i in ids if vocab.types[i] == TokenType.DURATION)


def test_real_music_is_accepted_by_an_open_grammar(tokenizer, vocab) -> None:
    """Every bar of a tokenized band loop is a sentence of the grammar (all programs on)."""
    ids = score_to_ids(tokenizer, make_band_score(bars=4))
    grammar = Grammar(vocab, GrammarConfig(notes_within_bar=False))
    for token in ids:
        grammar.advance(int(token))
    assert grammar.bars_completed == 3  # four Bar tokens: three bars closed


def test_positions_strictly_increase(vocab) -> None:
    grammar = Grammar(vocab)
    grammar.reset(at_bar_start=True)
    pos = vocab.ids_of(TokenType.POSITION)
    grammar.advance(int(pos[vocab.values[pos] == 8][0]))
    grammar.advance(int(vocab.ids_of(TokenType.PROGRAM)[0]))  # drums
    assert grammar.state == State.AFTER_PROGRAM
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    assert grammar.note_complete
    mask = grammar.mask()
    assert not mask[pos[vocab.values[pos] <= 8]].any()
    assert mask[pos[vocab.values[pos] > 8]].all()
    assert mask[vocab.bar_id]


def test_disallowed_token_raises_and_leaves_state(vocab) -> None:
    grammar = Grammar(vocab, GrammarConfig(programs=(33,)))
    grammar.reset(at_bar_start=True)
    grammar.advance(int(vocab.ids_of(TokenType.POSITION)[0]))
    drums = int(vocab.ids_of(TokenType.PROGRAM)[0])
    with pytest.raises(ValueError, match="not allowed"):
        grammar.advance(drums)
    assert grammar.state == State.AFTER_POSITION


def test_scale_lock_and_ranges(vocab) -> None:
    c_major = frozenset({0, 2, 4, 5, 7, 9, 11})
    cfg = GrammarConfig(programs=(33,), scale_pitch_classes=c_major, pitch_ranges=((33, 40, 52),))
    grammar = Grammar(vocab, cfg)
    grammar.reset(at_bar_start=True)
    grammar.advance(int(vocab.ids_of(TokenType.POSITION)[0]))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    pitches = vocab.values[np.flatnonzero(grammar.mask())]
    assert set(pitches.tolist()) == {p for p in range(40, 53) if p % 12 in c_major}


def test_late_positions_only_allow_short_notes(vocab) -> None:
    grammar = Grammar(vocab, GrammarConfig(programs=(-1,)))
    grammar.reset(at_bar_start=True)
    pos = vocab.ids_of(TokenType.POSITION)
    grammar.advance(int(pos[vocab.values[pos] == 30][0]))
    for _ in range(3):
        grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    assert grammar.state == State.AFTER_VELOCITY
    lengths = vocab.values[np.flatnonzero(grammar.mask())]
    assert lengths.max() <= 2 and lengths.min() >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"programs": ()}, "at least one program"),
        ({"beats_per_bar": 0}, "beats_per_bar"),
        ({"pitch_ranges": ((0, 90, 20),)}, "bad pitch range"),
        ({"scale_pitch_classes": frozenset({12})}, "scale_pitch_classes"),
    ],
)
def test_bad_config_is_rejected(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        GrammarConfig(**kwargs)


def test_unknown_program_is_rejected(vocab) -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Grammar(vocab, GrammarConfig(programs=(200,)))


def test_one_position_holds_no_repeated_note_and_no_wall_of_notes(vocab) -> None:
    """A program never strikes the same pitch twice at one position (the loop a model
    continuing itself can fall into), and at most MAX_NOTES_AT_ONE_POSITION notes start
    together; a new position starts afresh."""
    grammar = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM, 0)))
    grammar.reset(at_bar_start=True)
    pos = vocab.ids_of(TokenType.POSITION)
    grammar.advance(int(pos[vocab.values[pos] == 0][0]))
    programs = vocab.ids_of(TokenType.PROGRAM)
    drums = int(programs[vocab.values[programs] == DRUM_PROGRAM][0])
    grammar.advance(drums)
    kick = int(np.flatnonzero(grammar.mask())[0])
    grammar.advance(kick)
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    grammar.advance(drums)
    assert not grammar.mask()[kick]  # the same drum again at this position: no
    with pytest.raises(ValueError, match="not allowed"):
        grammar.advance(kick)
    played = 1
    while grammar.state == State.AFTER_PROGRAM or grammar.mask()[drums]:
        if grammar.state != State.AFTER_PROGRAM:
            grammar.advance(drums)
        grammar.advance(int(np.flatnonzero(grammar.mask())[0]))  # a new pitch each time
        grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
        grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
        played += 1
    assert played == MAX_NOTES_AT_ONE_POSITION
    mask = grammar.mask()
    assert (
        not mask[programs].any() and mask[vocab.bar_id] and mask[pos[vocab.values[pos] > 0]].all()
    )
    grammar.advance(int(pos[vocab.values[pos] == 4][0]))  # a later position: all open again
    grammar.advance(drums)
    assert grammar.mask()[kick]


def test_a_program_with_every_pitch_struck_is_not_offered_again(vocab) -> None:
    """With a one-pitch range, bass may play once per position and never reach a state
    with nothing to choose."""
    grammar = Grammar(vocab, GrammarConfig(programs=(33, 0), pitch_ranges=((33, 40, 40),)))
    grammar.reset(at_bar_start=True)
    pos = vocab.ids_of(TokenType.POSITION)
    programs = vocab.ids_of(TokenType.PROGRAM)
    bass = int(programs[vocab.values[programs] == 33][0])
    piano = int(programs[vocab.values[programs] == 0][0])
    grammar.advance(int(pos[vocab.values[pos] == 0][0]))
    grammar.advance(bass)
    (only,) = np.flatnonzero(grammar.mask())
    grammar.advance(int(only))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    grammar.advance(int(np.flatnonzero(grammar.mask())[0]))
    mask = grammar.mask()
    assert not mask[bass] and mask[piano]
