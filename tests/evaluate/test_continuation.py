from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ostinato.evaluate.bars import NoteEvent, parse_notes
from ostinato.evaluate.continuation import evaluate, format_table
from ostinato.evaluate.metrics import continuation_metrics, estimate_key
from ostinato.model.corpus import CorpusSplit
from ostinato.model.ngram import NGramModel
from ostinato.model.tokens import score_to_ids, split_bars
from tests.conftest import make_band_score


def test_ngram_is_a_distribution_and_learns_patterns() -> None:
    tokens = np.tile(np.array([1, 2, 3, 4, 5]), 200)
    model = NGramModel(3, 10).fit(tokens)
    p = model.distribution(np.array([2, 3]))
    assert p.shape == (10,) and p.sum() == pytest.approx(1.0)
    assert np.argmax(p) == 4 and p[4] > 0.9
    unseen = model.distribution(np.array([7, 8]))  # backs off to unigrams
    assert unseen.sum() == pytest.approx(1.0) and unseen[7] < 0.05


def test_ngram_does_not_cross_file_starts() -> None:
    tokens = np.array([1, 2, 9, 1, 2, 9, 3, 4])  # file 2 starts at index 6
    model = NGramModel(2, 10).fit(tokens, file_starts=np.array([0, 6]))
    assert model.distribution(np.array([9]))[3] < model.distribution(np.array([9]))[1]


def test_key_estimation() -> None:
    c_major = [NoteEvent(0, i, 0, p, 80, 4) for i, p in enumerate([60, 64, 67, 72, 62, 65, 69, 71])]
    assert estimate_key(c_major) == frozenset({0, 2, 4, 5, 7, 9, 11})
    assert estimate_key([NoteEvent(0, 0, -1, 36, 100, 1)]) is None


def test_metrics_of_a_perfect_copy(tokenizer, vocab) -> None:
    ids = score_to_ids(tokenizer, make_band_score(bars=4))
    notes = parse_notes(vocab, ids)
    assert len(notes) == sum(len(t.notes) for t in make_band_score(bars=4).tracks)
    bars = np.split(ids, np.flatnonzero(ids == vocab.bar_id)[1:])
    m = continuation_metrics(notes, notes, notes, bars, bars, vocab, tokenizer)
    assert m["pitch_class_overlap"] == pytest.approx(1.0)
    assert m["onset_overlap"] == pytest.approx(1.0)
    assert m["drum_onset_f1"] == pytest.approx(1.0)
    assert m["density_ratio"] == pytest.approx(1.0)
    assert m["decodes"] == 1.0
    assert m["novelty"] == 0.0  # every bar is a context bar
    assert m["in_key"] == pytest.approx(1.0)


def test_eval_on_a_tiny_model(tiny_meter_model_dir, tiny_corpus, tmp_path) -> None:
    report = evaluate(tiny_meter_model_dir, tiny_corpus, windows=3, nll_windows_count=2,
                      nll_length=64, progress=False)  # fmt: skip
    lk = report["likelihood"]
    assert lk["tokens"] == 128
    # a random-weight model knows nothing: about log2(V) bits per token
    assert 6.0 < lk["model_bits_per_token"] < 10.0
    assert lk["ngram_bits_per_token"] < lk["model_bits_per_token"]
    assert set(report["continuation"]) == {"model", "n-gram", "repeat last bar", "repeat phrase"}
    repeat = report["continuation"]["repeat last bar"]
    assert repeat["novelty"] == 0.0 and repeat["decodes"] == 1.0
    assert report["continuation"]["model"]["decodes"] == 1.0  # the grammar's promise
    assert report["windows"] == 3
    assert len(CorpusSplit.load(tiny_corpus, "validation").files) >= 1


def test_eval_scores_continue_modes_answer_beside_the_free_model(
    tiny_meter_model_dir, tiny_corpus
) -> None:
    """--variation adds the continuation continue mode plays (the copy prior varying the
    phrase): at v=0 each generated bar is its context bar again, note for note."""
    report = evaluate(tiny_meter_model_dir, tiny_corpus, windows=3, nll_windows_count=1,
                      nll_length=32, progress=False, variations=(0.0, 0.3))  # fmt: skip
    rows = report["continuation"]
    assert list(rows) == ["model", "model v=0.0", "model v=0.3", "n-gram", "repeat last bar",
                          "repeat phrase"]  # fmt: skip
    assert rows["model v=0.0"]["novelty"] == 0.0  # every bar a copy of a context bar
    for key in ("pitch_class_overlap", "onset_overlap", "drum_onset_f1", "density_ratio"):
        # variation 0 plays the phrase again: the repeat-phrase baseline, note for note
        assert rows["model v=0.0"][key] == pytest.approx(rows["repeat phrase"][key]), key
    assert rows["model v=0.3"]["decodes"] == 1.0
    with pytest.raises(ValueError, match="variation must be in"):
        evaluate(tiny_meter_model_dir, tiny_corpus, windows=1, nll_windows_count=1,
                 nll_length=32, progress=False, variations=(1.5,))  # fmt: skip


def test_eval_cli_writes_json(tiny_meter_model_dir, tiny_corpus, tmp_path) -> None:
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, "-m", "ostinato", "eval", str(tiny_meter_model_dir), str(tiny_corpus),
         "--windows", "2", "--nll-windows", "1", "--json", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "repeat last bar" in result.stdout and "repeat phrase" in result.stdout
    assert json.loads(out.read_text())["windows"] == 2


def test_eval_refuses_a_corpus_of_another_tokenizer(tiny_model_dir, tiny_corpus) -> None:
    # the legacy model (no TimeSig, no Style tokens) and a corpus of the new language
    with pytest.raises(ValueError, match="built with another tokenizer than the model's"):
        evaluate(tiny_model_dir, tiny_corpus, windows=1, nll_windows_count=1, progress=False)


def test_eval_scores_the_held_out_split(tiny_meter_model_dir, tmp_path) -> None:
    """`--split heldout` scores what `data build --hold-out` kept out of training; a corpus
    without that split is refused with the reason, and the validation split stays the default."""
    from ostinato.model.corpus import build_corpus

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        make_band_score(bars=9, transpose=i - 3).dump_midi(str(src / f"loop{i}.mid"))
    build_corpus(src, tmp_path / "held", validation_fraction=0.2, workers=1, progress=False,
                 hold_out=["loop0.mid", "loop1.mid"])  # fmt: skip
    report = evaluate(tiny_meter_model_dir, tmp_path / "held", windows=2, nll_windows_count=1,
                      nll_length=64, progress=False, split="heldout")  # fmt: skip
    assert report["split"] == "heldout" and report["windows"] == 2  # both held-out files
    assert report["likelihood"]["tokens"] == 64
    build_corpus(src, tmp_path / "plain", validation_fraction=0.2, workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match=r"heldout_tokens\.npy missing"):
        evaluate(tiny_meter_model_dir, tmp_path / "plain", windows=1, nll_windows_count=1,
                 progress=False, split="heldout")  # fmt: skip


def test_repeat_phrase_plays_the_contexts_last_bars_again(meter_tokenizer, meter_vocab) -> None:
    from ostinato.evaluate.continuers import RepeatPhraseContinuer

    ids = score_to_ids(meter_tokenizer, make_band_score(bars=4)).astype(np.int64)
    bars = split_bars(ids, meter_vocab.bar_id)
    repeat = RepeatPhraseContinuer(meter_vocab)
    assert np.array_equal(repeat(ids, 4, (), 0), np.concatenate(bars))  # bars 1–4 as 5–8
    assert np.array_equal(repeat(ids, 2, (), 0), np.concatenate(bars[2:]))
    again = split_bars(repeat(ids, 6, (), 0), meter_vocab.bar_id)  # longer: the phrase again
    assert [b.tolist() for b in again] == [b.tolist() for b in [*bars, *bars[:2]]]


def test_retention_counts_the_instruments_the_real_continuation_keeps(
    meter_tokenizer, meter_vocab
) -> None:
    from ostinato.evaluate.bars import keep_parts
    from ostinato.evaluate.continuers import RepeatContinuer
    from ostinato.evaluate.metrics import retention

    vocab = meter_vocab
    ids = score_to_ids(meter_tokenizer, make_band_score(bars=8)).astype(np.int64)
    bars = split_bars(ids, vocab.bar_id)
    context, real = bars[:4], bars[4:]
    repeated = split_bars(RepeatContinuer(vocab)(np.concatenate(context), 4, (), 0), vocab.bar_id)
    assert retention(vocab, context, real, repeated) == (1.0, 1.0)
    drums = [keep_parts(vocab, b, [-1]) for b in real]  # the band dropped, drums left
    assert retention(vocab, context, real, drums) == (0.25, 0.25)
    fading = [real[0], *drums[1:]]  # all four in bar 1, then drums alone
    assert retention(vocab, context, real, fading) == ((4 + 3) / 16, 0.25)
    # what the real continuation drops is not asked of the continuer
    real_drums = [keep_parts(vocab, b, [-1]) for b in real]
    assert retention(vocab, context, real_drums, drums) == (1.0, 1.0)
    silent = [keep_parts(vocab, b, [0]) for b in real]  # nothing in common: NaN
    got = retention(vocab, context, silent, drums)
    assert np.isnan(got[0]) and np.isnan(got[1])


def test_a_header_model_reads_headers_and_keeps_the_band(tiny_header_model_dir, tiny_corpus,
                                                         tmp_path) -> None:  # fmt: skip
    """A model whose bars carry the instrument header: the split is read with headers, each
    generated bar's header names the context's instruments (so the model, the n-gram and both
    repeats keep every instrument the real continuation keeps), and the rolls are drawn."""
    from ostinato.evaluate.continuation import load_split
    from ostinato.model.tokens import Vocab, header_mask, load_tokenizer, strip_headers

    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_header_model_dir / "tokenizer.json"))
    plain = CorpusSplit.load(tiny_corpus, "validation")
    read = load_split(tiny_corpus, "validation", vocab)
    assert header_mask(vocab, read.tokens).any() and not header_mask(vocab, plain.tokens).any()
    assert np.array_equal(strip_headers(vocab, read.tokens), plain.tokens)

    report = evaluate(tiny_header_model_dir, tiny_corpus, windows=3, nll_windows_count=1,
                      nll_length=64, progress=False, variations=(0.3,),
                      rolls=tmp_path / "rolls")  # fmt: skip
    assert report["header"] is True
    rows = report["continuation"]
    for name in ("model", "model v=0.3", "n-gram", "repeat last bar", "repeat phrase"):
        assert rows[name]["retention"] == 1.0, name
        assert rows[name]["decodes"] == 1.0, name
    assert len(report["rolls"]) == 3
    for path in report["rolls"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_scores_each_group_of_the_split_apart(tiny_meter_model_dir, tmp_path) -> None:
    """Held-out songs and held-out composers are judged apart: every row again per group
    (the first folder of the file's source path), the windows of the groups adding up."""
    from ostinato.model.corpus import build_corpus

    src = tmp_path / "src"
    for group, shift in (("songs", 0), ("quartets", 4)):
        (src / group).mkdir(parents=True)
        for i in range(3):
            score = make_band_score(bars=9, transpose=i + shift - 3)
            score.dump_midi(str(src / group / f"piece{i}.mid"))
    held = ["songs/piece0.mid", "quartets/piece1.mid", "quartets/piece2.mid"]
    build_corpus(src, tmp_path / "held", validation_fraction=0.2, workers=1, progress=False,
                 hold_out=held)  # fmt: skip
    report = evaluate(tiny_meter_model_dir, tmp_path / "held", windows=3, nll_windows_count=1,
                      nll_length=32, progress=False, split="heldout",
                      variations=(0.0,))  # fmt: skip
    groups = report["groups"]
    assert set(groups) == {"songs", "quartets"}
    assert groups["songs"]["model"]["windows"] == 1 and groups["quartets"]["model"]["windows"] == 2
    assert set(groups["songs"]) == set(report["continuation"])
    # v=0 repeats the phrase in each group too
    for rows in groups.values():
        assert rows["model v=0.0"]["onset_overlap"] == pytest.approx(
            rows["repeat phrase"]["onset_overlap"]
        )
    table = format_table(report)
    assert "songs (1 windows):" in table and "quartets (2 windows):" in table
    # only one group: windows from its files alone, several from a file where needed (its
    # one file of 9 bars has two windows of 4 + 4 bars)
    songs = evaluate(tiny_meter_model_dir, tmp_path / "held", windows=3, nll_windows_count=1,
                     nll_length=32, progress=False, split="heldout",
                     groups=["songs"])  # fmt: skip
    assert set(songs["groups"]) == {"songs"} and songs["windows"] == 2
    assert "of songs" in format_table(songs)
    with pytest.raises(ValueError, match="its groups: quartets, songs"):
        evaluate(tiny_meter_model_dir, tmp_path / "held", windows=1, nll_windows_count=1,
                 progress=False, split="heldout", groups=["lieder"])  # fmt: skip


def test_bars_heard_again_are_told_from_new_ones(tiny_header_model_dir) -> None:
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.continuation import hearing_bars_again
    from ostinato.model.tokens import add_headers, header_mask

    engine = Engine(tiny_header_model_dir, device="cpu")
    vocab = engine.vocab

    def bars_of(score) -> list[np.ndarray]:
        ids = add_headers(vocab, score_to_ids(engine.tokenizer, score).astype(np.int64))
        return split_bars(ids, vocab.bar_id)

    bars = bars_of(make_band_score(bars=4))
    other = bars_of(make_band_score(bars=4, transpose=2))
    assert len({bar.tobytes() for bar in [*bars, *other[1:]]}) == 7
    # two bars of the context again, a new bar, then that bar once more
    pairs = [(bars, [bars[1], bars[2], other[1], other[1]])]
    heard = hearing_bars_again(engine, pairs, progress=False)
    assert heard["repeated_bars"] == 3 and heard["new_bars"] == 1

    def scored(bar: np.ndarray) -> int:
        return int((~header_mask(vocab, bar)).sum())

    assert heard["repeated_tokens"] == scored(bars[1]) + scored(bars[2]) + scored(other[1])
    assert heard["new_tokens"] == scored(other[1]) < len(other[1])  # the header not scored
    assert heard["repeated_bits_per_token"] > 0 and heard["new_bits_per_token"] > 0


def test_a_bar_looped_is_scored_pass_by_pass(tiny_header_model_dir) -> None:
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.continuation import format_table, looping_a_bar
    from ostinato.model.tokens import add_headers, header_mask

    engine = Engine(tiny_header_model_dir, device="cpu")
    vocab = engine.vocab
    ids = add_headers(vocab, score_to_ids(engine.tokenizer, make_band_score(bars=4)))
    bars = split_bars(ids.astype(np.int64), vocab.bar_id)
    looped = looping_a_bar(engine, [(bars, bars)], passes=3, progress=False)
    first, second, third = looped["bits_per_token_by_pass"]
    engine.reset()
    bits = []
    for token in bars[-1]:  # the first pass is the bar after BOS, header tokens included here
        logits = engine.last_logits.astype(np.float64)
        bits.append((np.logaddexp.reduce(logits) - logits[int(token)]) / np.log(2))
        engine.feed([int(token)])
    scored = ~header_mask(vocab, bars[-1])
    assert first == pytest.approx(float(np.mean(np.asarray(bits)[scored])), rel=1e-6)
    assert looped["bars"] == 1 and second > 0 and third > 0 and second != first
    report = {"likelihood": {"tokens": 1, "bars": 1, "model_bits_per_token": 1.0,
                             "model_bits_per_bar": 1.0}, "bar_looped": looped,
              "continuation": {}, "windows": 1}  # fmt: skip
    assert f"by pass: {first:.3f} / {second:.3f} / {third:.3f}" in format_table(report)
