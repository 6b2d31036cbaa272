"""Time signatures in the token language: TimeSig tokens after every Bar for the meters of
METERS, the Vocab's view of them, the grammar's masks, and the corpus's meter filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

from ostinato.model.corpus import build_corpus, tokenize_file
from ostinato.model.grammar import Grammar, GrammarConfig, State
from ostinato.model.tokens import (
    METERS,
    TokenType,
    Vocab,
    context_meter,
    ids_to_score,
    legacy_tokenizer,
    load_tokenizer,
    score_to_ids,
    split_bars,
)
from tests.conftest import make_band_score

BUNDLED = Path(__file__).resolve().parents[2] / "ostinato" / "assets" / "default"
TPQ = 480


def meter_score(num: int, den: int, bars: int = 4) -> Score:
    """A score in num/den: per bar a note on the downbeat, one per beat of the denominator
    after it (pitch = bar + beat, so each note says where it belongs), a drum on beat 1."""
    score = Score(TPQ)
    score.time_signatures.append(TimeSignature(0, num, den))
    keys = Track(program=0)
    drums = Track(program=0, is_drum=True)
    beat = TPQ * 4 // den
    bar_ticks = num * beat
    for bar in range(bars):
        for b in range(num):
            keys.notes.append(Note(bar * bar_ticks + b * beat, beat // 2, 48 + 2 * bar + b, 90))
        drums.notes.append(Note(bar * bar_ticks, beat // 2, 36, 100))
    score.tracks.extend([keys, drums])
    return score


def _notes_by_bar(score: Score, bar_quarters: float) -> list[list[tuple]]:
    tpq = score.ticks_per_quarter
    bars: dict[int, list[tuple]] = {}
    for track in score.tracks:
        for n in track.notes:
            onset = n.time / tpq
            bar = int(onset // bar_quarters + 1e-9)
            bars.setdefault(bar, []).append(
                (round(onset - bar * bar_quarters, 4), n.pitch, track.is_drum)
            )
    return [sorted(bars[b]) for b in sorted(bars)]


@pytest.mark.parametrize("meter", [(3, 4), (7, 8)])
def test_a_score_round_trips_bar_by_bar(meter_tokenizer, meter_vocab, meter) -> None:
    num, den = meter
    score = meter_score(num, den)
    ids = score_to_ids(meter_tokenizer, score)
    bars = split_bars(ids, meter_vocab.bar_id)
    assert len(bars) == 4
    ts = meter_vocab.meter_ids[meter]
    for bar in bars:  # Bar, the bar's TimeSig, then positions inside the bar
        assert bar[0] == meter_vocab.bar_id and bar[1] == ts
        positions = meter_vocab.values[bar[meter_vocab.types[bar] == TokenType.POSITION]]
        assert positions.max() < num * meter_vocab.positions_per_beat
    decoded = ids_to_score(meter_tokenizer, ids)
    assert [(t.numerator, t.denominator) for t in decoded.time_signatures] == [meter]
    bar_quarters = num * 4 / den
    assert _notes_by_bar(decoded, bar_quarters) == _notes_by_bar(score, bar_quarters)
    # each bar alone decodes to its own notes
    for k, bar in enumerate(bars):
        alone = _notes_by_bar(ids_to_score(meter_tokenizer, bar), bar_quarters)
        assert alone == [_notes_by_bar(score, bar_quarters)[k]]
    assert context_meter(meter_vocab, ids) == meter


def test_the_vocabulary_knows_every_meter_and_its_bar_length(meter_vocab) -> None:
    assert meter_vocab.has_meters and set(meter_vocab.meters) == set(METERS)
    for (num, den), token in meter_vocab.meter_ids.items():
        assert meter_vocab.types[token] == TokenType.TIME_SIG
        assert meter_vocab.bar_beats[token] == pytest.approx(num * 4 / den)
        assert meter_vocab.meter_of_token(token) == (num, den)
    assert meter_vocab.positions_per_bar((7, 8)) == 56  # 8 per eighth
    assert meter_vocab.positions_per_bar((12, 8)) == 96
    assert meter_vocab.positions_per_bar((3, 4)) == 24
    assert meter_vocab.max_beats_per_bar == 6.0  # 12/8
    assert meter_vocab.check_meter("7/8") == (7, 8)
    with pytest.raises(ValueError, match=r"knows the meters 2/2, 3/2, 2/4, 3/4, 4/4, 5/4, "
                       r"6/4, 3/8, 6/8, 7/8, 9/8, 12/8; 5/8 is not one of them"):  # fmt: skip
        meter_vocab.check_meter("5/8")


def test_the_bundled_model_knows_every_meter_and_style() -> None:
    import json

    vocab = Vocab.from_tokenizer(load_tokenizer(BUNDLED))
    assert vocab.has_meters and vocab.has_styles
    assert set(vocab.meters) == set(METERS)
    card = json.loads((BUNDLED / "card.json").read_text())
    assert card["model"]["vocab_size"] == vocab.size
    assert card["window"] >= 1024  # 8 bars of 4-track music (about 120-250 tokens a bar)


def test_a_legacy_tokenizer_still_loads_and_keeps_its_meter_rule(tmp_path) -> None:
    """Models of the first language (no TimeSig, no Style tokens) keep working as before."""
    legacy_tokenizer().save(tmp_path / "tokenizer.json")
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.vocab == legacy_tokenizer().vocab
    vocab = Vocab.from_tokenizer(tokenizer)
    assert not vocab.has_meters and not vocab.has_styles and vocab.size == 396
    # as before: a bar up to 4 beats is a 4/4 bar cut short, anything longer is refused
    assert vocab.check_meter("4/4") == (4, 4)
    assert vocab.check_meter("3/4") == (3, 4)
    assert vocab.check_meter(3.5) == (7, 8)
    for meter in ("5/4", "9/8", "12/8"):
        with pytest.raises(ValueError, match=r"no time-signature tokens: it knows only 4/4 "
                           r"bars .* longer than it can hold"):  # fmt: skip
            vocab.check_meter(meter)
    assert vocab.meter_token((4, 4)) is None
    assert context_meter(vocab, score_to_ids(tokenizer, make_band_score(2))) == (4, 4)


def test_the_grammar_forces_the_meter_after_every_bar(meter_vocab) -> None:
    grammar = Grammar(meter_vocab, GrammarConfig(meter=(7, 8)))
    assert grammar.positions_per_bar == 56 and grammar.quarters_per_position == 1 / 16
    grammar.reset(at_bar_start=True)
    allowed = np.flatnonzero(grammar.mask())
    assert allowed.tolist() == [meter_vocab.meter_ids[(7, 8)]]  # only 7/8's TimeSig
    with pytest.raises(ValueError, match="not allowed"):
        grammar.advance(meter_vocab.meter_ids[(4, 4)])
    grammar.advance(meter_vocab.meter_ids[(7, 8)])
    assert grammar.state == State.AFTER_TIME_SIG
    mask = grammar.mask()
    positions = meter_vocab.values[mask & (meter_vocab.types == TokenType.POSITION)]
    assert positions.min() == 0 and positions.max() == 55
    assert mask[meter_vocab.bar_id]  # an empty bar
    grammar.advance(meter_vocab.bar_id)
    assert grammar.bars_completed == 1 and grammar.state == State.AFTER_BAR
    assert np.flatnonzero(grammar.mask()).tolist() == [meter_vocab.meter_ids[(7, 8)]]
    # 6/8 is given as a meter; 3 beats alone is 3/4
    assert Grammar(meter_vocab, GrammarConfig(beats_per_bar=3.0)).meter == (3, 4)
    assert Grammar(meter_vocab, GrammarConfig(meter=(6, 8))).positions_per_bar == 48
    with pytest.raises(ValueError, match="5/8 is not one of them"):
        Grammar(meter_vocab, GrammarConfig(meter=(5, 8)))


def test_the_legacy_grammar_is_unchanged(vocab) -> None:
    grammar = Grammar(vocab, GrammarConfig(meter=(7, 8)))
    assert grammar.time_sig_id is None and grammar.positions_per_bar == 28
    grammar.reset(at_bar_start=True)
    mask = grammar.mask()
    assert mask[vocab.bar_id] and not (vocab.types[mask] == TokenType.TIME_SIG).any()
    assert grammar.quarters_per_position == 1 / 8


def test_the_corpus_keeps_the_meters_its_tokenizer_has(tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for num, den in ((3, 4), (7, 8), (12, 8), (5, 8)):
        meter_score(num, den).dump_midi(str(src / f"m{num}_{den}.mid"))
    make_band_score(4).dump_midi(str(src / "four.mid"))
    summary = build_corpus(src, tmp_path / "new", workers=1, progress=False,
                           validation_fraction=0.0)  # fmt: skip
    assert summary["files_used"] == 4
    assert summary["skipped"] == {"meter 5/8 (no TimeSig token for it)": 1}
    # with the bundled model's tokenizer: 4/4 only, as before
    legacy = tmp_path / "legacy.json"
    legacy_tokenizer().save(legacy)
    summary = build_corpus(src, tmp_path / "old", tokenizer_path=legacy, workers=1,
                           progress=False, validation_fraction=0.0)  # fmt: skip
    assert summary["files_used"] == 1
    assert sum(summary["skipped"].values()) == 4
    assert all("(only 4/4 is modelled)" in why for why in summary["skipped"])
    result = tokenize_file(load_tokenizer(tmp_path / "new"), src / "m7_8.mid")
    assert result.ids is not None and context_meter(
        Vocab.from_tokenizer(load_tokenizer(tmp_path / "new")), result.ids
    ) == (7, 8)
