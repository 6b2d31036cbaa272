"""The copy prior: variation 0 plays the reference again, 1 is the model alone, and the
pointer follows the decoded bar when the model chooses differently."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine
from ostinato.evaluate.bars import parse_notes
from ostinato.model.grammar import GrammarConfig
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import TokenType, score_to_ids, split_bars
from tests.conftest import make_band_score

PROGRAMS = (-1, 4, 33, 81)


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def bars(engine) -> list[np.ndarray]:
    ids = score_to_ids(engine.tokenizer, make_band_score(bars=6)).astype(np.int64)
    return split_bars(ids, engine.vocab.bar_id)


def _generate(engine, bars, n, variation, seed, refs=None):
    engine.reset()
    engine.feed(np.concatenate(bars[:4]))
    refs = refs if refs is not None else [[bars[k]] for k in range(n)]
    prior = CopyPrior(engine.vocab, refs, variation)
    tokens: list[int] = []
    sampler = engine.sampler(SamplingSettings(temperature=1.0), seed)
    notes = list(engine.generate(n, sampler, GrammarConfig(programs=PROGRAMS), tokens, prior))
    return np.asarray(tokens[:-1]), notes, prior


def test_variation_zero_plays_the_reference_token_for_token(engine, bars) -> None:
    tokens, notes, prior = _generate(engine, bars, 2, 0.0, seed=1)
    expected = np.concatenate([bars[0][1:], [engine.vocab.bar_id], bars[1][1:]])
    np.testing.assert_array_equal(tokens, expected)
    assert len(notes) == int((engine.vocab.types[expected] == TokenType.DURATION).sum())
    assert prior.copied == len(expected) + 1  # the closing Bar too


def test_variation_one_is_the_model_alone(engine, bars) -> None:
    free, _, prior = _generate(engine, bars, 2, 1.0, seed=7)
    engine.reset()
    engine.feed(np.concatenate(bars[:4]))
    tokens: list[int] = []
    sampler = engine.sampler(SamplingSettings(temperature=1.0), 7)
    list(engine.generate(2, sampler, GrammarConfig(programs=PROGRAMS), tokens))
    np.testing.assert_array_equal(free, tokens[:-1])
    assert prior.copied == 0


def test_variation_in_between_keeps_more_of_the_reference_the_lower_it_is(engine, bars) -> None:
    """Even a model of random weights (whose own choices keep nothing) keeps most of the
    reference at a low variation, less as it rises, and changes something in every bar."""
    vocab = engine.vocab
    key = lambda toks: {(n.bar, n.position, n.program, n.pitch) for n in parse_notes(vocab, toks)}  # noqa: E731
    ref = key(np.concatenate([bars[0], bars[1]]))
    kept = {}
    for v in (0.3, 0.6, 1.0):
        share, changed = [], 0
        for seed in range(6):
            tokens, _, _ = _generate(engine, bars, 2, v, seed=seed)
            got = key(np.concatenate([[vocab.bar_id], tokens]))
            share.append(len(got & ref) / len(ref))
            changed += got != ref
        kept[v] = float(np.mean(share))
        assert changed >= 5, v  # never a plain copy
    assert kept[0.3] > 0.5, kept
    assert kept[0.3] > kept[0.6] > kept[1.0], kept


def test_a_bar_without_reference_is_free_and_a_fill_is_free(engine, bars) -> None:
    refs = [[bars[0]], [bars[1]]]
    prior = CopyPrior(engine.vocab, refs, [0.0, 1.0])
    prior.begin_bar(1)
    assert prior.choose(np.ones(engine.vocab.size, bool), np.random.default_rng(0))[0] == -1
    prior.begin_bar(2)  # past the references
    assert prior.expected() == []


def test_pointer_realigns_on_a_position_the_model_chose(engine, bars) -> None:
    vocab = engine.vocab
    ref = bars[0]
    prior = CopyPrior(vocab, [[ref]], 0.5)
    positions = [t for t in ref if vocab.types[t] == TokenType.POSITION]
    later = positions[2]
    prior.observe(int(later))  # the model skipped the first two onsets
    i = int(np.flatnonzero(ref == later)[0])
    assert prior.expected() == [int(ref[i + 1])]  # the notes of that onset come next
    prior.observe(int(ref[i + 1]))
    assert prior.expected() == [int(ref[i + 2])]


def test_a_changed_pitch_keeps_the_reference_velocity_and_duration(engine, bars) -> None:
    vocab = engine.vocab
    ref = bars[0][1:]
    prior = CopyPrior(vocab, [[ref]], 0.5)
    prior.observe(int(ref[0]))  # Position
    prior.observe(int(ref[1]))  # Program
    pitch = int(ref[2])
    other = next(t for t in range(vocab.size)
                 if vocab.types[t] == vocab.types[pitch] and t not in ref)  # fmt: skip
    prior.observe(other)
    assert prior.expected() == [int(ref[3])]  # the reference's velocity
    assert vocab.types[ref[3]] == TokenType.VELOCITY


def test_variation_out_of_range_is_refused(engine, bars) -> None:
    with pytest.raises(ValueError, match="variation"):
        CopyPrior(engine.vocab, [[bars[0]]], 1.5)
    with pytest.raises(ValueError, match="one variation per bar"):
        CopyPrior(engine.vocab, [[bars[0]], [bars[1]]], [0.1])


class _AlwaysFree:
    """A generator whose every draw sends the prior to the model's free choice."""

    def random(self) -> float:
        return 0.0


def test_a_free_choice_may_drop_one_onset_but_not_the_rest_of_the_bar(engine, bars) -> None:
    vocab = engine.vocab
    ref = bars[1]
    onsets = [int(vocab.values[t]) for t in ref if vocab.types[t] == TokenType.POSITION]
    assert len(onsets) >= 3
    prior = CopyPrior(vocab, [[ref]], 0.3)
    everything = np.ones(vocab.size, dtype=bool)
    token, mask = prior.choose(everything, _AlwaysFree())
    assert token == -1 and not mask[vocab.bar_id]  # not the end of the bar
    positions = vocab.ids_of(TokenType.POSITION)
    allowed = vocab.values[positions[mask[positions]]]
    assert allowed.max() == onsets[1]  # the first onset may be skipped, not the second
    for t in ref[1:]:  # the bar as the reference plays it, up to its last onset
        prior.observe(int(t))
    _, mask = prior.choose(everything, _AlwaysFree())
    assert mask[vocab.bar_id]  # the reference is done: the model may end the bar
    free = CopyPrior(vocab, [[ref]], 1.0)  # variation 1: the model alone, nothing held back
    assert free.choose(everything, _AlwaysFree())[1] is everything


class _Draws:
    """A generator that hands out the given draws, then ``then`` for ever."""

    def __init__(self, draws: list[float], then: float) -> None:
        self.draws, self.then, self.taken = list(draws), then, 0

    def random(self) -> float:
        self.taken += 1
        return self.draws.pop(0) if self.draws else self.then


def _walk_to(prior: CopyPrior, ref: np.ndarray, kind: TokenType) -> int:
    """Observe ``ref`` (no Bar) up to its first token of ``kind``; that token's index."""
    i = 0
    while prior.vocab.types[ref[i]] != kind:
        prior.observe(int(ref[i]))
        i += 1
    return i


def test_a_varied_pitch_keeps_to_the_pitch_classes_of_the_reference_bar(engine, bars) -> None:
    vocab = engine.vocab
    ref = bars[1][1:]
    prior = CopyPrior(vocab, [[ref]], 0.3)
    _walk_to(prior, ref, TokenType.PITCH)
    everything = np.ones(vocab.size, dtype=bool)
    # 0.05: the pitch's variation (under v² = 0.09; a pitch is no onset's draw)
    token, mask = prior.choose(everything, _Draws([], then=0.05))
    assert token == -1
    classes = {int(vocab.values[t]) % 12 for t in ref if vocab.types[t] == TokenType.PITCH}
    allowed = np.flatnonzero(mask)
    assert len(allowed) >= len(classes) and (vocab.types[allowed] == TokenType.PITCH).all()
    assert {int(vocab.values[t]) % 12 for t in allowed} == classes
    jam = CopyPrior(vocab, [[ref]], 0.3, free_pitches=True)  # jam: the model's own pitch
    _walk_to(jam, ref, TokenType.PITCH)
    _, mask = jam.choose(everything, _Draws([], then=0.99))
    assert mask.sum() == (vocab.types == TokenType.PITCH).sum()


def test_the_free_draw_is_made_once_per_onset(engine, bars) -> None:
    """The draw before an onset decides it: given to the model, the onset is the model's,
    where it goes and what it holds, up to the next Position it chooses (even where it
    places it where the reference has one); given to the reference, it keeps its place,
    drums and instruments whatever the later draws say; each onset is drawn for anew."""
    vocab = engine.vocab
    ref = bars[1][1:]
    everything = np.ones(vocab.size, dtype=bool)
    prior = CopyPrior(vocab, [[ref]], 0.3)
    i = _walk_to(prior, ref, TokenType.POSITION)
    rng = _Draws([0.05], then=0.99)  # the onset: the model's (0.05 < v²)
    assert prior.choose(everything, rng)[0] == -1
    prior.observe(int(ref[i]))  # it chose the reference's place: its notes are still its own
    assert prior.choose(everything, rng)[0] == -1
    prior.observe(int(ref[i + 1]))
    assert prior.choose(everything, rng)[0] == -1 and rng.taken == 1  # one draw for it all
    later = _walk_to(prior, ref[i + 2 :], TokenType.POSITION) + i + 2
    assert prior.choose(everything, rng)[0] == -1  # where its onset ends is its choice too
    prior.observe(int(ref[later]))  # at the reference's next onset: that one is the reference's
    rng = _Draws([], then=0.0)  # though every later draw says "vary"
    for t in ref[later + 1 :]:
        if vocab.types[t] == TokenType.POSITION:
            token, _ = prior.choose(everything, _Draws([0.5], then=0.0))
            assert token == int(t)  # the onset after it: drawn anew, the reference's
            break
        token, _ = prior.choose(everything, rng)
        if vocab.types[t] in (TokenType.PROGRAM, TokenType.PITCH_DRUM):
            assert token == int(t)
        prior.observe(int(t) if token < 0 else token)
    else:
        raise AssertionError("the reference has no onset after these")


def test_an_onset_the_model_adds_is_its_own_and_a_free_last_onset_may_end_the_bar(
    engine, bars
) -> None:
    vocab = engine.vocab
    ref = bars[1][1:]
    everything = np.ones(vocab.size, dtype=bool)
    positions = [int(t) for t in ref if vocab.types[t] == TokenType.POSITION]
    taken = {int(vocab.values[t]) for t in positions}
    new = next(t for t in vocab.ids_of(TokenType.POSITION)
               if int(vocab.values[t]) not in taken and int(vocab.values[t]) > 0)  # fmt: skip
    prior = CopyPrior(vocab, [[ref]], 0.3)
    prior.observe(int(new))  # an onset the reference does not have
    rng = _Draws([], then=0.99)  # every draw says "copy"
    assert prior.choose(everything, rng)[0] == -1 and rng.taken == 0  # the model's notes
    prior.begin_bar(0)  # a new bar: drawn again
    assert prior.choose(everything, rng)[0] == int(ref[0])

    last = CopyPrior(vocab, [[ref]], 0.3)
    i = len(ref) - 1 - [vocab.types[t] for t in ref[::-1]].index(TokenType.POSITION)
    for t in ref[: i + 1]:  # up to the reference's last onset
        last.observe(int(t))
    _, mask = last.choose(everything, _Draws([0.0], then=0.99))  # its notes: the model's
    assert mask[vocab.bar_id]  # nothing left to begin: the model may end the bar


def test_the_varied_pitch_keeps_to_the_harmony_of_every_reference(engine, bars) -> None:
    vocab = engine.vocab
    own, musician = bars[1][1:], bars[2][1:]
    pitched = vocab.types == TokenType.PITCH

    def classes(bar) -> set[int]:
        return {int(vocab.values[t]) % 12 for t in bar if pitched[t]}

    assert classes(musician) - classes(own)  # the musician's bar adds to the harmony
    prior = CopyPrior(vocab, [[own, musician]], 0.3)
    _walk_to(prior, own, TokenType.PITCH)
    _, mask = prior.choose(np.ones(vocab.size, dtype=bool), _Draws([], then=0.05))
    assert {int(vocab.values[t]) % 12 for t in np.flatnonzero(mask)} == classes(own) | classes(
        musician
    )


def test_variation_zero_keeps_the_musicians_range_and_holds_a_tied_note_to_the_bar_end(
    engine,
) -> None:
    """A bass note below the bass family's range and a lead note tied over the bar line: the
    grammar widened to the ranges the context plays lets the copy keep the low note, and the
    tied note is held to the bar's end (the longest the grammar allows), not redrawn."""
    from ostinato.model.grammar import played_ranges

    vocab = engine.vocab
    score = make_band_score(bars=5)
    bass, lead = score.tracks[1], score.tracks[3]
    bar4 = 4 * 4 * score.ticks_per_quarter
    for n in bass.notes:
        if n.time >= bar4:
            n.pitch = 24  # below 28, the lowest of the bass family
    last = max((n for n in lead.notes if n.time >= bar4), key=lambda n: n.time)
    last.duration = 3 * score.ticks_per_quarter  # two quarters past the bar's end
    bars = split_bars(score_to_ids(engine.tokenizer, score).astype(np.int64), vocab.bar_id)
    context, ref = np.concatenate(bars), bars[4]

    def copy(ranges) -> np.ndarray:
        engine.reset()
        engine.feed(context)
        config = GrammarConfig(programs=PROGRAMS, pitch_ranges=ranges)
        tokens: list[int] = []
        prior = CopyPrior(vocab, [[ref]], 0.0)
        list(engine.generate(1, engine.sampler(SamplingSettings(), 3), config, tokens, prior))
        return np.asarray(tokens[:-1])

    tokens = copy(played_ranges(vocab, context))
    expected, ppb = ref[1:], vocab.positions_per_bar(4.0)
    position, tied = 0, []  # the notes of the reference that end past the bar's end
    for i, t in enumerate(expected):
        if vocab.types[t] == TokenType.POSITION:
            position = int(vocab.values[t])
        elif vocab.types[t] == TokenType.DURATION and position + vocab.values[t] > ppb:
            tied.append((i, ppb - position))
    assert len(tied) == 1
    assert np.flatnonzero(tokens != expected).tolist() == [tied[0][0]]
    assert vocab.values[tokens[tied[0][0]]] == tied[0][1]
    # without the widened range the low bass notes cannot be copied
    assert 24 not in {n.pitch for n in parse_notes(vocab, copy(())) if n.program == 33}


def test_a_drawn_variation_is_one_the_model_rates_at_least_as_likely(engine, bars) -> None:
    """A varied pitch: among the harmony's pitches those the model's logits put at or above
    the reference's pitch (which stays allowed); a free onset's drums: the reference's kit."""
    vocab = engine.vocab
    ref = bars[1][1:]
    prior = CopyPrior(vocab, [[ref]], 0.3)
    i = _walk_to(prior, ref, TokenType.PITCH)
    everything = np.ones(vocab.size, dtype=bool)
    logits = np.zeros(vocab.size, dtype=np.float32)
    pitches = np.flatnonzero(vocab.types == TokenType.PITCH)
    logits[pitches] = vocab.values[pitches]  # the higher the pitch, the likelier
    _, mask = prior.choose(everything, _Draws([], then=0.05), lambda: logits)
    allowed = np.flatnonzero(mask)
    assert int(ref[i]) in allowed
    assert (vocab.values[allowed] >= vocab.values[ref[i]]).all()
    free = CopyPrior(vocab, [[ref]], 0.3)
    _walk_to(free, ref, TokenType.PITCH)
    _, mask = free.choose(everything, _Draws([], then=0.05))  # no logits: the harmony alone
    assert (vocab.values[np.flatnonzero(mask)] < vocab.values[ref[i]]).any()

    kit = {int(vocab.values[t]) for t in ref if vocab.types[t] == TokenType.PITCH_DRUM}
    drums = CopyPrior(vocab, [[ref]], 0.3)
    _, mask = drums.choose(everything, _Draws([0.0], then=0.99))  # the first onset: free
    allowed = np.flatnonzero(mask & (vocab.types == TokenType.PITCH_DRUM))
    assert {int(vocab.values[t]) for t in allowed} == kit


def test_a_reference_longer_than_the_token_cap_is_copied_whole(engine, bars, monkeypatch) -> None:
    """The cap on a bar's tokens (a safety net against a run-away bar) makes room for the
    reference: a busy bar is copied whole at variation 0, not cut at the cap."""
    import ostinato.engine.engine as engine_module

    ref = bars[0]
    monkeypatch.setattr(engine_module, "MAX_TOKENS_PER_BAR", len(ref) // 3)
    tokens, _, _ = _generate(engine, bars, 1, 0.0, seed=1)
    np.testing.assert_array_equal(tokens, ref[1:])
    engine.reset()
    engine.feed(np.concatenate(bars[:4]))
    free: list[int] = []
    list(engine.generate(1, engine.sampler(SamplingSettings(), 1), GrammarConfig(programs=PROGRAMS),
                         free))  # fmt: skip
    assert len(free) <= len(ref) // 3 + 8  # without a reference the cap holds


def test_an_empty_reference_gives_way_to_one_that_sounds(engine, bars) -> None:
    """A previous pass that rested in a bar the musician plays in: the musician's bar is
    the one varied; where every reference is empty, the rest is played again."""
    vocab = engine.vocab
    empty = np.asarray([vocab.bar_id], dtype=np.int64)
    prior = CopyPrior(vocab, [[empty, bars[1]], [empty]], 0.0)
    assert prior.expected() == [int(bars[1][1])]
    prior.begin_bar(1)
    assert prior.expected() == [vocab.bar_id]
