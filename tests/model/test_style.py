"""Style tokens: where a file's style comes from, the vocabulary's Style tokens, and the
training batches (the style after BOS, dropped to none at the configured rate)."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.loops.styles import STYLES as LOOP_GENERATOR_STYLES
from ostinato.model.corpus import CorpusSplit, build_corpus
from ostinato.model.style import LOOP_STYLES, NONE, STYLES, style_of
from ostinato.model.tokens import TokenType, Vocab, ids_to_score, load_tokenizer, score_to_ids
from ostinato.model.train import TrainConfig, WindowSampler, file_styles
from tests.conftest import make_band_score


def test_the_styles_are_the_generators_plus_the_corpora() -> None:
    assert tuple(LOOP_GENERATOR_STYLES) == LOOP_STYLES
    assert (*LOOP_STYLES, "lied", "quartet", "drums", NONE) == STYLES


@pytest.mark.parametrize(
    ("path", "style"),
    [
        ("synth/house/000012_house_Am_124bpm.mid", "house"),
        ("synth/lofi/000003_lofi_C_80bpm.mid", "lofi"),
        ("000004_dnb_Dm_172bpm.mid", "dnb"),
        ("groove-midi/drummer1/session1/1_funk_80_beat_4-4.mid", "drums"),
        ("drummer7/eval_session/3_hiphop_90_beat_4-4.mid", "drums"),  # the folder wins
        ("gmd_drummer1_funk-groove1_138_beat.mid", "drums"),
        ("openscore-lieder/Schubert/Winterreise/01.mid", "lied"),
        ("openscore-quartets/Haydn/op76_1.mid", "quartet"),
        ("Hip-Hop/beat.mid", "hiphop"),
        ("my songs/song.mid", NONE),
        ("loop3.mid", NONE),
    ],
)
def test_style_of_a_corpus_path(path: str, style: str) -> None:
    assert style_of(path) == style


def test_new_tokenizers_have_a_style_token_each(meter_tokenizer, meter_vocab, vocab) -> None:
    assert set(meter_vocab.style_ids) == set(STYLES)
    for name, token in meter_vocab.style_ids.items():
        assert meter_vocab.types[token] == TokenType.STYLE
        assert meter_tokenizer[token] == f"Style_{name}"
    assert meter_vocab.style_token(None) == meter_vocab.style_token("auto")
    assert meter_vocab.style_token(None) == meter_vocab.style_ids[NONE]
    with pytest.raises(ValueError, match="unknown style 'polka'"):
        meter_vocab.style_token("polka")
    assert not vocab.has_styles and vocab.style_token("house") is None  # legacy
    # never made by the tokenizer, ignored when decoding
    ids = score_to_ids(meter_tokenizer, make_band_score(2))
    assert not (meter_vocab.types[ids] == TokenType.STYLE).any()
    with_style = [meter_vocab.bos_id, meter_vocab.style_ids["techno"], *ids.tolist()]
    assert ids_to_score(meter_tokenizer, with_style).note_num() == make_band_score(2).note_num()


def _corpus_with_styles(root):
    src = root / "src"
    for style, n in (("house", 3), ("techno", 3)):
        (src / style).mkdir(parents=True)
        for i in range(n):
            make_band_score(4, transpose=i + (style == "techno") * 5).dump_midi(
                str(src / style / f"{i}.mid")
            )
    make_band_score(4, transpose=9).dump_midi(str(src / "unknown.mid"))
    return build_corpus(src, root / "out", workers=1, progress=False, validation_fraction=0.0)


def test_the_corpus_records_each_files_style(tmp_path) -> None:
    summary = _corpus_with_styles(tmp_path)
    out = tmp_path / "out"
    assert summary["splits"]["train"]["styles"] == {"house": 3, "none": 1, "techno": 3}
    files = (out / "train_files.txt").read_text().splitlines()
    styles = (out / "train_styles.txt").read_text().splitlines()
    assert styles == [style_of(f) for f in files] and file_styles(out, "train") == styles
    (out / "train_styles.txt").unlink()  # a corpus built before styles: from the paths
    assert file_styles(out, "train") == styles


def test_batches_put_the_style_after_bos_and_drop_it_at_the_rate(tmp_path) -> None:
    _corpus_with_styles(tmp_path)
    out = tmp_path / "out"
    vocab = Vocab.from_tokenizer(load_tokenizer(out))
    split = CorpusSplit.load(out, "train")
    styles = file_styles(out, "train")
    none = vocab.style_ids[NONE]

    kept = WindowSampler(split, vocab, 64, 0, styles, style_dropout=0.0)
    batch = kept.batch(np.random.default_rng(0), 512)
    assert (batch[:, 0] == vocab.bos_id).all() and (batch[:, 2] == vocab.bar_id).all()
    assert len(batch[0]) == 65  # the window is one token shorter: the style takes its place
    # each window's style is its file's
    bar_file = np.searchsorted(split.files[:, 0], split.bars, side="right") - 1
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(split.bars), size=512)
    expected = [vocab.style_ids[styles[f]] for f in bar_file[picks]]
    assert batch[:, 1].tolist() == expected
    assert set(batch[:, 1].tolist()) == {vocab.style_ids[s] for s in ("house", "techno", NONE)}
    assert (batch[:, 3:] == np.asarray([split.tokens[split.bars[p] + 1 : split.bars[p] + 63]
                                        for p in picks])).all()  # fmt: skip

    dropping = WindowSampler(split, vocab, 64, 0, styles, style_dropout=TrainConfig().style_dropout)
    assert TrainConfig().style_dropout == 0.15
    batch = dropping.batch(np.random.default_rng(1), 4000)
    had_style = np.asarray([styles[f] != NONE for f in bar_file[
        np.random.default_rng(1).integers(0, len(split.bars), size=4000)]])  # fmt: skip
    dropped = batch[had_style, 1] == none
    assert 0.12 < dropped.mean() < 0.18  # ≈ 0.15 of the windows lose their style
    everything = WindowSampler(split, vocab, 64, 0, styles, style_dropout=1.0)
    assert (everything.batch(np.random.default_rng(2), 64)[:, 1] == none).all()
    with pytest.raises(ValueError, match="style_dropout"):
        TrainConfig(style_dropout=1.5).validate()


def test_legacy_batches_have_no_style(tmp_path) -> None:
    # a corpus of the bundled model's language: BOS then the bar, as before
    from ostinato.model.tokens import legacy_tokenizer

    src = tmp_path / "src"
    (src / "house").mkdir(parents=True)
    make_band_score(4).dump_midi(str(src / "house" / "a.mid"))
    legacy = tmp_path / "legacy.json"
    legacy_tokenizer().save(legacy)
    build_corpus(src, tmp_path / "out", tokenizer_path=legacy, workers=1, progress=False,
                 validation_fraction=0.0)  # fmt: skip
    vocab = Vocab.from_tokenizer(load_tokenizer(tmp_path / "out"))
    sampler = WindowSampler(CorpusSplit.load(tmp_path / "out", "train"), vocab, 32, 0,
                            file_styles(tmp_path / "out", "train"), 0.5)  # fmt: skip
    batch = sampler.batch(np.random.default_rng(0), 8)
    assert (batch[:, 0] == vocab.bos_id).all() and (batch[:, 1] == vocab.bar_id).all()
