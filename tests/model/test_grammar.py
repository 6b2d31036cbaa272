from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostinato.model.grammar import (
    BUDGET_BARS,
    JAM_FLOOR,
    MAX_NOTES_AT_ONE_POSITION,
    Grammar,
    GrammarConfig,
    State,
    default_pitch_range,
    heard_bars,
    note_budget,
    note_floor,
)
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TokenType,
    ids_to_score,
    score_to_ids,
    split_bars,
)
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


def _eager(grammar: Grammar):
    """The most over-eager model there is: another note whenever one is allowed, at the
    earliest position allowed; the bar's end only when nothing else is."""
    vocab = grammar.vocab

    def draw(n: int) -> int:
        allowed = np.flatnonzero(grammar.mask())
        kinds = vocab.types[allowed]
        for kind in (TokenType.PROGRAM, TokenType.POSITION):
            hits = np.flatnonzero(kinds == kind)
            if len(hits):
                return int(hits[0])
        return 0

    return draw


def _notes_by_position(vocab, ids: list[int]) -> list[list[int]]:
    """Per bar, the position of each note (one per Duration token)."""
    bars: list[list[int]] = []
    position = -1
    for token in ids:
        kind = vocab.types[token]
        if kind == TokenType.BAR:
            bars.append([])
        elif kind == TokenType.POSITION:
            position = int(vocab.values[token])
        elif kind == TokenType.DURATION:
            bars[-1].append(position)
    return [b for b in bars[:-1]]  # the last Bar opens no bar


@pytest.mark.parametrize("budget", [1, 4, 12, 40])
@pytest.mark.parametrize("programs", [(DRUM_PROGRAM,), (DRUM_PROGRAM, 33, 0)])
def test_the_note_budget_holds_against_an_over_eager_model_and_is_paced_through_the_bar(
    vocab, tokenizer, budget, programs
) -> None:
    """With ``max_notes`` a bar never holds more notes than its budget, even when every draw
    asks for another note, and the notes are paced: none can pile up on the first beats."""
    grammar = Grammar(vocab, GrammarConfig(programs=programs, max_notes=budget))
    ids = _sample_bars(grammar, _eager(grammar), 3, max_tokens=2000)
    bars = _notes_by_position(vocab, ids)
    assert len(bars) == 3
    ppb = grammar.positions_per_bar
    burst = max(2, -(-budget // 4))
    for positions in bars:
        assert len(positions) == budget  # the eager model spends it all, and no more
        for k, p in enumerate(positions):  # k notes before it: it may start while k < allowance
            assert k < min(budget, budget * (p + 1) / ppb + burst)
        if budget >= 12:  # spread over the bar, not piled at its start
            assert max(positions) >= ppb // 2
    ids_to_score(tokenizer, ids)  # and they decode
    free = Grammar(vocab, GrammarConfig(programs=programs))
    unbounded = _notes_by_position(vocab, _sample_bars(free, _eager(free), 1, max_tokens=600))
    assert len(unbounded[0]) > budget  # without the budget the same model plays more


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), budget=st.integers(1, 30), meter=st.sampled_from([(4, 4), (7, 8), (3, 4)]))
def test_any_sequence_under_a_note_budget_keeps_it_and_decodes(
    vocab, tokenizer, data, budget, meter
) -> None:
    grammar = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM, 33), meter=meter,
                                           max_notes=budget))  # fmt: skip
    ids = _sample_bars(grammar, lambda n: data.draw(st.integers(0, n - 1)), 2)
    assert all(len(b) <= budget for b in _notes_by_position(vocab, ids))
    ids_to_score(tokenizer, ids)


def test_note_budget_follows_the_busiest_bar_played_on_the_instruments_played(vocab) -> None:
    drums, bass = {DRUM_PROGRAM}, {33}
    heard = [(drums, 5), (drums | bass, 8), (drums, 6), (drums, 11)]
    assert note_budget(heard, (DRUM_PROGRAM, 33), 1.5) == 17
    assert note_budget([(drums, 30)] + [(drums, 2)] * BUDGET_BARS, (DRUM_PROGRAM,), 1.5) == 4
    assert note_budget([(drums, 2), ((), 0)], (DRUM_PROGRAM,), 2.0) == 4  # room to play
    assert note_budget([], (DRUM_PROGRAM,), 1.5) is None  # nothing heard yet
    assert note_budget(heard, (DRUM_PROGRAM,), 0.0) is None  # density 0: no limit
    assert note_budget(heard, (DRUM_PROGRAM, 0), 1.5) is None  # piano was never heard
    grammar = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM,), max_notes=9))
    bars = split_bars(np.asarray(_sample_bars(grammar, _eager(grammar), 2)), vocab.bar_id)
    heard = heard_bars(vocab, bars)
    assert note_budget(heard, (DRUM_PROGRAM,), 2.0) == 18  # 2 × 9 notes
    assert note_budget(heard, (DRUM_PROGRAM, 33), 2.0) is None
    with pytest.raises(ValueError, match="max_notes"):
        GrammarConfig(max_notes=0)


def _lazy(grammar: Grammar):
    """The laziest model there is: the bar's end whenever allowed, else the farthest position
    allowed, a new note only when nothing else is."""
    vocab = grammar.vocab

    def draw(n: int) -> int:
        allowed = np.flatnonzero(grammar.mask())
        kinds = vocab.types[allowed]
        if (kinds == TokenType.BAR).any():
            return int(np.flatnonzero(kinds == TokenType.BAR)[0])
        positions = np.flatnonzero(kinds == TokenType.POSITION)
        if len(positions):
            return int(positions[np.argmax(vocab.values[allowed[positions]])])
        return 0

    return draw


@pytest.mark.parametrize("floor", [1, 6, 20])
@pytest.mark.parametrize("meter", [(4, 4), (7, 8)])
def test_the_note_floor_holds_against_a_lazy_model_and_is_paced_through_the_bar(
    vocab, tokenizer, floor, meter
) -> None:
    """With ``min_notes`` a bar holds at least the floor even when every draw would rather
    stop, and the notes come through the bar, not all on its last beat."""
    grammar = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM, 33), meter=meter,
                                           min_notes=floor))  # fmt: skip
    ids = _sample_bars(grammar, _lazy(grammar), 3, max_tokens=2000)
    bars = _notes_by_position(vocab, ids)
    slack = max(1, -(-floor // 8))
    ppb = grammar.positions_per_bar
    for positions in bars:
        assert len(positions) >= floor
        for k, p in enumerate(positions):  # k notes before it: it may start at p
            assert p <= (k + slack) * ppb // floor
    ids_to_score(tokenizer, ids)
    free = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM, 33), meter=meter))
    assert all(len(b) == 0 for b in _notes_by_position(vocab, _sample_bars(free, _lazy(free), 2)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), floor=st.integers(1, 24), extra=st.integers(0, 20),
       meter=st.sampled_from([(4, 4), (3, 4), (6, 8)]))  # fmt: skip
def test_any_sequence_under_a_floor_and_a_budget_keeps_both_and_decodes(
    vocab, tokenizer, data, floor, extra, meter
) -> None:
    budget = max(4, floor + extra)
    grammar = Grammar(vocab, GrammarConfig(programs=(DRUM_PROGRAM,), meter=meter,
                                           min_notes=floor, max_notes=budget))  # fmt: skip
    ids = _sample_bars(grammar, lambda n: data.draw(st.integers(0, n - 1)), 2, max_tokens=3000)
    for positions in _notes_by_position(vocab, ids):
        assert len(positions) <= budget
        assert len(positions) >= min(floor, budget)
    ids_to_score(tokenizer, ids)


def test_note_floor_follows_the_mean_bar_played() -> None:
    drums, both = {DRUM_PROGRAM}, {DRUM_PROGRAM, 33}
    assert note_floor([(drums, 10), (both, 20), ((), 0)], both, JAM_FLOOR) == 9
    assert note_floor([(both, 30)], (33,), JAM_FLOOR) is None  # the bass alone owes nothing
    assert note_floor([(drums, 1)], drums, JAM_FLOOR) is None  # less than one note
    assert note_floor([], drums, JAM_FLOOR) is None
    assert note_floor([(drums, 10)], drums, 0.0) is None
    with pytest.raises(ValueError, match="min_notes"):
        GrammarConfig(min_notes=0)


def test_played_ranges_widen_a_family_range_to_the_notes_played(tokenizer) -> None:
    """A bass played down to 24 and a lead up to 100: their ranges reach those notes; a part
    inside its family's range (and the header's Program tokens) adds nothing."""
    from ostinato.model.grammar import default_pitch_range, played_ranges
    from ostinato.model.tokens import vocab_of

    vocab = vocab_of(tokenizer)
    token = {tokenizer[i]: i for i in range(len(tokenizer))}
    ids = [token[t] for t in ("Bar_None", "Position_0", "Program_33", "Pitch_24", "Velocity_95",
                              "Duration_1.0.8", "Program_81", "Pitch_100", "Velocity_95",
                              "Duration_1.0.8", "Program_0", "Pitch_60", "Velocity_95",
                              "Duration_1.0.8")]  # fmt: skip
    low, high = default_pitch_range(33)
    assert low > 24 and default_pitch_range(81)[1] < 100
    assert dict((p, (lo, hi)) for p, lo, hi in played_ranges(vocab, np.asarray(ids))) == {
        33: (24, high), 81: (default_pitch_range(81)[0], 100)}  # fmt: skip
    assert played_ranges(vocab, np.asarray(ids[:2])) == ()
