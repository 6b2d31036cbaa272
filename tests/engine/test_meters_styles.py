"""The engine in the new token language (TimeSig and Style tokens) with a tiny random model,
and the bundled model's language unchanged."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ostinato.engine import engine as engine_module
from ostinato.engine.engine import Engine
from ostinato.engine.offline import continue_score
from ostinato.model.grammar import GrammarConfig
from ostinato.model.sampling import SamplingSettings
from ostinato.model.style import NONE
from ostinato.model.tokens import TokenType, ids_to_score, score_to_ids, split_bars
from tests.conftest import make_band_score
from tests.model.test_meters import meter_score

FREE = SamplingSettings(temperature=1.0, top_p=1.0)


@pytest.fixture(scope="module")
def meter_engine(tiny_meter_model_dir) -> Engine:
    return Engine(tiny_meter_model_dir, device="cpu")


@pytest.mark.parametrize("meter", [(3, 4), (6, 8), (7, 8), (12, 8)])
def test_generated_bars_have_the_meters_length_and_all_decode(meter_engine, meter) -> None:
    e, vocab = meter_engine, meter_engine.vocab
    num, den = meter
    bar_quarters = num * 4 / den
    ts = vocab.meter_ids[meter]
    e.reset()
    e.feed(score_to_ids(e.tokenizer, meter_score(num, den, bars=2)).astype(np.int64))
    decoded_bars = 0
    for seed in range(3):
        tokens: list[int] = []
        notes = list(e.generate(4, e.sampler(FREE, seed), GrammarConfig(meter=meter), tokens))
        bars = split_bars(np.asarray([vocab.bar_id, *tokens[:-1]]), vocab.bar_id)
        assert len(bars) == 4 and tokens[-1] == vocab.bar_id
        for bar in bars:
            assert bar[1] == ts  # the bar's meter, right after Bar
            assert not (vocab.types[bar[2:]] == TokenType.TIME_SIG).any()
            positions = vocab.values[bar[vocab.types[bar] == TokenType.POSITION]]
            assert (positions < num * 8).all()
            # every bar decodes alone with miditok, to exactly its notes, in its meter
            score = ids_to_score(e.tokenizer, bar)
            assert score.note_num() == int((vocab.types[bar] == TokenType.DURATION).sum())
            assert [(t.numerator, t.denominator) for t in score.time_signatures] == [meter]
            decoded_bars += 1
        for n in notes:  # inside their bar, in quarter notes
            assert n.bar * bar_quarters - 1e-9 <= n.start_beats
            assert n.start_beats + n.duration_beats <= (n.bar + 1) * bar_quarters + 1e-9
        # the notes the engine yields are the notes miditok decodes
        whole = ids_to_score(e.tokenizer, [vocab.bar_id, *tokens[:-1]])
        tpq = whole.ticks_per_quarter
        decoded = sorted((round(n.time / tpq, 4), round(n.duration / tpq, 4), n.pitch)
                         for t in whole.tracks for n in t.notes)  # fmt: skip
        assert decoded == sorted(
            (round(n.start_beats, 4), round(n.duration_beats, 4), n.pitch) for n in notes
        )
    assert decoded_bars == 12


def test_an_empty_last_bar_in_the_meter_is_the_bar_generated(meter_engine) -> None:
    e, vocab = meter_engine, meter_engine.vocab
    e.reset()
    ts = vocab.meter_ids[(7, 8)]
    e.feed([vocab.bar_id, ts])  # an empty bar heard: Bar TimeSig
    length = e.context_length
    tokens: list[int] = []
    list(e.generate(1, e.sampler(FREE, 0), GrammarConfig(meter=(7, 8)), tokens))
    assert e.context_tokens()[length] == tokens[0] != vocab.bar_id  # straight into its notes
    e.feed([vocab.bar_id, vocab.meter_ids[(3, 4)]])  # another meter: closed with a Bar first
    tokens = []
    list(e.generate(1, e.sampler(FREE, 0), GrammarConfig(meter=(7, 8)), tokens))
    assert tokens[0] == ts


def test_the_style_follows_bos_at_every_reset_and_slides_keep_it(tiny_meter_model_dir) -> None:
    e = Engine(tiny_meter_model_dir, device="cpu", window=64)
    vocab = e.vocab
    assert e.context_tokens().tolist() == [vocab.bos_id, vocab.style_ids[NONE]]
    e.reset("house")
    house = vocab.style_ids["house"]
    assert e.context_tokens().tolist() == [vocab.bos_id, house] and e.prefix_length == 2
    e.reset()  # keeps the style
    assert e.context_tokens().tolist() == [vocab.bos_id, house]
    for seed in range(6):  # far past the window: it slides
        list(e.generate(1, e.sampler(FREE, seed), GrammarConfig(meter=(3, 4))))
    assert e.dropped_front > 0
    context = e.context_tokens()
    assert context[:2].tolist() == [vocab.bos_id, house]  # BOS and the style stay
    e.set_style("techno")  # in place: the same tokens after the new style
    after = e.context_tokens()
    assert after[1] == vocab.style_ids["techno"]
    np.testing.assert_array_equal(after[2:], context[2:])
    e.set_style("auto")
    assert e.context_tokens()[1] == vocab.style_ids[NONE] and e.style is None
    with pytest.raises(ValueError, match="unknown style"):
        e.set_style("polka")


def test_guidance_zero_is_the_plain_model_and_more_changes_the_logits(
    tiny_meter_model_dir,
) -> None:
    e = Engine(tiny_meter_model_dir, device="cpu")
    plain = Engine(tiny_meter_model_dir, device="cpu")  # the style, no guidance
    uncond = Engine(tiny_meter_model_dir, device="cpu")  # no style
    vocab = e.vocab
    context = score_to_ids(e.tokenizer, meter_score(3, 4, bars=2)).astype(np.int64)
    for engine, style in ((e, "lofi"), (plain, "lofi"), (uncond, None)):
        engine.reset(style)
        engine.feed(context)
    e.set_guidance(0.0)
    assert e.guided_logits() is e.last_logits  # exactly the plain logits, no second pass
    np.testing.assert_array_equal(e.guided_logits(), plain.last_logits)

    e.set_guidance(1.5)  # a second context starts, without the style
    guided = e.guided_logits()
    assert not np.allclose(guided, plain.last_logits)
    expected = plain.last_logits + 1.5 * (plain.last_logits - uncond.last_logits)
    np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-4)

    # the second context follows feeds, generation (and its slides) and truncation
    tokens: list[int] = []
    list(e.generate(2, e.sampler(FREE, 3), GrammarConfig(meter=(3, 4)), tokens))
    twin = e._guide
    assert twin is not None and twin.dropped_front == e.dropped_front
    mirrored = e.context_tokens()
    mirrored[1] = vocab.style_ids[NONE]
    np.testing.assert_array_equal(twin.context_tokens(), mirrored)
    e.truncate(e.context_length - 5)
    assert twin.context_length == e.context_length
    e.feed(np.asarray(tokens[:5], dtype=np.int64))
    np.testing.assert_array_equal(twin.context_tokens()[2:], e.context_tokens()[2:])
    cond, unc = e.last_logits, twin.last_logits
    np.testing.assert_allclose(e.guided_logits(), cond + 1.5 * (cond - unc), rtol=1e-6)

    e.set_style(None)  # no style: nothing to guide towards, no second context
    assert e._guide is None and e.guided_logits() is e.last_logits
    e.set_guidance(0.0)
    e.set_style("lofi")
    assert e._guide is None


def test_a_model_without_style_tokens_ignores_style_and_guidance(tiny_model_dir, caplog) -> None:
    e = Engine(tiny_model_dir, device="cpu")
    vocab = e.vocab
    with caplog.at_level(logging.INFO, logger="ostinato.engine.engine"):
        e.reset("house")
        e.set_guidance(2.0)
        e.set_style("techno")
    assert e.context_tokens().tolist() == [vocab.bos_id] and e.prefix_length == 1
    assert e.style is None and e.guidance == 0.0 and e._guide is None
    said = [r.getMessage() for r in caplog.records]
    assert said.count("this model has no style tokens: style house is ignored") == 1
    assert "this model has no style tokens: guidance is ignored" in said
    tokens: list[int] = []
    list(e.generate(2, e.sampler(FREE, 0), GrammarConfig(), tokens))  # 4/4 as before
    assert not (vocab.types[tokens] == TokenType.TIME_SIG).any()
    positions = vocab.values[np.asarray(tokens)[vocab.types[tokens] == TokenType.POSITION]]
    assert (positions < 32).all()


def test_continue_reads_the_files_meter(meter_engine, tiny_model_dir) -> None:
    score = meter_score(7, 8, bars=3)
    result = continue_score(meter_engine, score, 2, FREE, seed=0, style="quartet",
                            guidance=1.0)  # fmt: skip
    assert result.meter == (7, 8) and result.input_bars == 3
    assert meter_engine.context_tokens()[1] == meter_engine.vocab.style_ids["quartet"]
    assert all(n.start_beats + n.duration_beats <= 2 * 3.5 + 1e-9 for n in result.notes)
    tpq = result.score.ticks_per_quarter
    added = sorted(n.time for t in result.score.tracks for n in t.notes)[score.note_num() :]
    assert all(t >= 3 * 3.5 * tpq for t in added)  # after the input's three 7/8 bars
    with pytest.raises(ValueError, match="5/8, which this model does not know"):
        continue_score(meter_engine, meter_score(5, 8), 1, FREE)
    # the bundled model's language reads every bar as 4/4 and answers in 4/4, as before
    legacy = continue_score(Engine(tiny_model_dir, device="cpu"), make_band_score(2), 1, FREE,
                            seed=0, style="house")  # fmt: skip
    assert legacy.meter == (4, 4)


class _SteppingClock:
    """A stand-in for the ``time`` module whose ``perf_counter`` moves on by ``step`` at each
    reading: timed steps that do not depend on how fast the machine is."""

    def __init__(self, step: float) -> None:
        self.step, self.now = step, 0.0

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize("slides", [False, True], ids=["in-place", "sliding-meanwhile"])
def test_a_style_prepared_in_spare_time_takes_over_as_if_set_at_once(
    tiny_meter_model_dir, slides, monkeypatch
) -> None:
    """A new style is computed beside the context in use, a chunk at a time, while that one
    is extended, truncated and slid; when it takes over (at a bar line) the context and its
    logits are those of the style set at once."""
    ids = score_to_ids(Engine(tiny_meter_model_dir).tokenizer, meter_score(4, 4, bars=12))
    ids = ids.astype(np.int64)
    at_once, spare = (Engine(tiny_meter_model_dir, device="cpu", window=192) for _ in range(2))
    for e in (at_once, spare):
        e.reset("techno")
        e.feed(ids[:150])
    at_once.set_style("hiphop")
    spare.prepare_style("hiphop")
    assert spare.style == "techno" and spare.style_asked == "hiphop" and spare.preparing
    spare._shadow.chunk = 32  # (this window holds one chunk of the engine's own size)
    assert not spare.adopt_prepared()  # not complete yet: the style in use stays
    more = ids[150:230] if slides else ids[150:170]
    for e in (at_once, spare):  # the bars go on meanwhile
        e.feed(more)
        e.truncate(e.context_length - 7)
        e.feed(more[-7:])
    if slides:
        assert spare.dropped_front > 0
    steps = 0
    # the shadow's clock reads 0.4 ms later at each look: a chunk takes 0.4 ms, so one chunk
    # fits a call of 1 ms and the next does not, however fast this machine prefills
    monkeypatch.setattr(engine_module, "time", _SteppingClock(4e-4))
    while spare.preparing:
        spare._shadow.chunk_s = 0.0  # the first chunk of each call is not held back
        spare.prepare_step(1e-3)
        steps += 1
    monkeypatch.undo()
    assert steps >= 2 and spare.style == "techno"
    tail = ids[230:240]
    for e in (at_once, spare):
        e.feed(tail)  # after it was brought up to date: caught up again as it takes over
    assert spare.adopt_prepared() and spare.style == "hiphop" and not spare.preparing
    np.testing.assert_array_equal(spare.context_tokens(), at_once.context_tokens())
    assert spare.dropped_front == at_once.dropped_front
    np.testing.assert_allclose(spare.last_logits, at_once.last_logits, atol=1e-4)
    for token in ids[240:250].tolist():
        np.testing.assert_allclose(spare.feed([token]), at_once.feed([token]), atol=1e-4)


def test_guidance_prepared_in_spare_time_guides_once_it_takes_over(tiny_meter_model_dir) -> None:
    ids = score_to_ids(Engine(tiny_meter_model_dir).tokenizer, meter_score(4, 4, bars=4))
    ids = ids.astype(np.int64)
    at_once, spare = (Engine(tiny_meter_model_dir, device="cpu") for _ in range(2))
    for e in (at_once, spare):
        e.reset("lofi")
        e.feed(ids[:100])
    at_once.set_guidance(1.5)
    spare.prepare_guidance(1.5)
    assert spare.guidance == 1.5 and spare._guide is None  # no second pass until ready
    assert spare.guided_logits() is spare.last_logits
    while spare.preparing:
        spare.prepare_step(1.0)
    for e in (at_once, spare):
        e.feed(ids[100:110])
    assert spare.adopt_prepared() and spare._guide is not None
    np.testing.assert_allclose(spare.guided_logits(), at_once.guided_logits(), atol=1e-4)
    spare.prepare_guidance(0.0)
    assert spare._guide is None and spare.guided_logits() is spare.last_logits
