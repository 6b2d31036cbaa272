"""Loop mode of ``ostinato eval``: loop lengths, windows, and every row of the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from symusic import Note, Score, Track

from ostinato.cli import main
from ostinato.evaluate.bars import parse_notes
from ostinato.evaluate.continuation import format_table
from ostinato.evaluate.loop import (
    LoopWindow,
    bar_signature,
    evaluate_loop,
    load_loop_set,
    loop_length,
    loop_windows,
    pass_bars,
)
from ostinato.evaluate.metrics import OVERLAP_METRICS, continuation_metrics, summarize
from ostinato.loops.heldout import write_held_out
from ostinato.model.tokens import Vocab, load_tokenizer, score_to_ids, split_bars

TPQ = 480
STEP = TPQ // 4
METRICS = {"pitch_class_overlap", "onset_overlap", "drum_onset_f1", "overlap_mean",
           "density_ratio", "in_key", "decodes", "novelty", "retention",
           "retention_bar4"}  # fmt: skip
VARIATIONS = {"0.0", "0.3", "0.6", "1.0"}


def loop_score(bars: list[list[tuple[int, int]]]) -> Score:
    """Drums on every beat of every bar, and per bar the bass notes (16th step, pitch)."""
    score = Score(TPQ)
    drums = Track(name="drums", program=0, is_drum=True)
    bass = Track(name="bass", program=33)
    for bar, notes in enumerate(bars):
        t0 = bar * 16 * STEP
        for step in range(0, 16, 4):
            drums.notes.append(Note(t0 + step * STEP, STEP, 36 if step % 8 == 0 else 38, 100))
        for step, pitch in notes:
            bass.notes.append(Note(t0 + step * STEP, STEP, pitch, 90))
    score.tracks.extend([drums, bass])
    return score


def signatures(tokenizer, vocab, bars) -> list:
    ids = score_to_ids(tokenizer, loop_score(bars)).astype(np.int64)
    return [bar_signature(vocab, b) for b in split_bars(ids, vocab.bar_id)]


def distinct_bar(rng: np.random.Generator) -> list[tuple[int, int]]:
    steps = sorted(rng.choice(16, size=6, replace=False))
    return [(int(s), int(rng.integers(33, 60))) for s in steps]


@pytest.mark.parametrize("period", [1, 2, 4, 8])
def test_loop_length_of_a_repeated_loop(tokenizer, vocab, period) -> None:
    rng = np.random.default_rng(period)
    loop = [distinct_bar(rng) for _ in range(period)]
    bars = [loop[i % period] for i in range(16)]
    bars[5] = bars[5][:-2]  # a human variation: two notes left out once
    assert loop_length(signatures(tokenizer, vocab, bars)) == period


def test_loop_length_of_music_that_does_not_repeat(tokenizer, vocab) -> None:
    rng = np.random.default_rng(0)
    sigs = signatures(tokenizer, vocab, [distinct_bar(rng) * 3 for _ in range(12)])
    assert loop_length(sigs) == 4  # the fallback
    assert loop_length([]) == 4


def test_a_pass_is_whole_repeats_of_at_least_four_bars() -> None:
    assert [pass_bars(n) for n in (1, 2, 4, 8)] == [4, 4, 4, 8]


def test_references_are_the_last_pass_of_the_loop() -> None:
    context = [np.array([i]) for i in range(4)]
    window = LoopWindow("f", 0, 2, context, [np.array([9])] * 4)
    assert [int(r[0]) for r in window.references] == [2, 3, 2, 3]
    window = LoopWindow("f", 0, 1, context, [np.array([9])] * 4)
    assert [int(r[0]) for r in window.references] == [3, 3, 3, 3]


def _copy_of_last_pass(window: LoopWindow, vocab, tokenizer) -> dict:
    """The metrics of playing the context's last loop pass again, computed from the
    window's bars without the copy prior."""
    L, P = window.loop_bars, len(window.context)
    copied_bars = [window.context[P - L + k % L] for k in range(P)]
    context = np.concatenate(window.context)
    real = np.concatenate(window.real)
    copied = np.concatenate(copied_bars)
    return continuation_metrics(
        parse_notes(vocab, context), parse_notes(vocab, real), parse_notes(vocab, copied),
        split_bars(copied, vocab.bar_id), window.context, vocab, tokenizer,
    )  # fmt: skip


def test_eval_loop_on_a_corpus(tiny_meter_model_dir, tiny_corpus) -> None:
    report = evaluate_loop(tiny_meter_model_dir, tiny_corpus, windows=2, nll_windows_count=1,
                           nll_length=64, progress=False)  # fmt: skip
    assert report["mode"] == "loop" and report["windows"] == 2
    assert set(report["continuation"]) == {"model", "n-gram", "repeat last bar", "repeat phrase"}
    assert set(report["variations"]) == VARIATIONS
    for row in [*report["continuation"].values(), *report["variations"].values()]:
        assert set(row) == METRICS
    assert report["continuation"]["model"] == report["variations"]["0.3"]
    for row in report["variations"].values():
        assert row["decodes"] == 1.0  # the grammar's promise, copied or sampled
    assert report["continuation"]["repeat last bar"]["novelty"] == 0.0
    assert report["continuation"]["repeat phrase"]["novelty"] == 0.0
    lk = report["likelihood"]
    assert lk["tokens"] == 64 and lk["ngram_bits_per_token"] is not None

    # variation 0 plays the last pass again: the same metrics as copying it by hand
    tokenizer = load_tokenizer(tiny_meter_model_dir)
    vocab = Vocab.from_tokenizer(tokenizer)
    windows = loop_windows(load_loop_set(tiny_corpus, tokenizer, vocab).files, vocab, 2, seed=0)
    expected = summarize([_copy_of_last_pass(w, vocab, tokenizer) for w in windows])
    v0 = report["variations"]["0.0"]
    assert v0["novelty"] == 0.0
    for key in [*OVERLAP_METRICS, "overlap_mean", "density_ratio", "in_key"]:
        assert v0[key] == pytest.approx(expected[key], nan_ok=True), key

    table = format_table(report)
    for name in ("model v=0.0", "model v=0.3", "model v=0.6", "model v=1.0", "n-gram",
                 "repeat last bar", "repeat phrase", "retain@4"):  # fmt: skip
        assert name in table
    assert "likelihood on the validation split" in table


def test_eval_loop_on_midi_files_without_a_corpus(tiny_model_dir, tmp_path) -> None:
    write_held_out(tmp_path / "loops", 2, seed=1, progress=False)
    report = evaluate_loop(tiny_model_dir, tmp_path / "loops", windows=1, nll_windows_count=1,
                           nll_length=64, variations=(0.0, 1.0), progress=False)  # fmt: skip
    assert set(report["continuation"]) == {"model", "repeat last bar", "repeat phrase"}  # no n-gram
    assert set(report["variations"]) == {"0.0", "1.0"}
    assert report["model_variation"] == 0.0  # 0.3 was not run: the first one
    assert report["variations"]["0.0"]["novelty"] == 0.0
    assert report["likelihood"]["ngram_bits_per_token"] is None
    assert report["loop_windows"][0]["loop_bars"] in (2, 4)
    table = format_table(report)
    assert "no n-gram row" in table and "model v=1.0" in table and "4-gram" not in table


def test_eval_cli_loop_mode(tiny_meter_model_dir, tiny_corpus, tmp_path, capsys) -> None:
    write_held_out(tmp_path / "loops", 1, seed=2, progress=False)
    out = tmp_path / "eval.json"
    status = main(["eval", str(tiny_meter_model_dir), str(tmp_path / "loops"), "--mode", "loop",
                   "--corpus", str(tiny_corpus), "--variation", "0.3", "--windows", "1",
                   "--nll-windows", "1", "--json", str(out), "-q"])  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "loop" and set(report["variations"]) == {"0.3"}
    assert set(report["continuation"]) == {"model", "n-gram", "repeat last bar", "repeat phrase"}
    assert "model v=0.3" in capsys.readouterr().out
    status = main(["eval", str(tiny_meter_model_dir), str(tiny_corpus), "--corpus",
                   str(tiny_corpus)])  # fmt: skip
    assert status == 2  # a loop-mode option without --mode loop


def test_loop_mode_headers_follow_the_bar_varied(tiny_header_model_dir) -> None:
    """In loop mode each generated bar names the instruments of the bar it varies (at
    variation 0: that bar again, note for note, a drums-only bar staying drums only); so does
    an answer in continue mode, but an instrument asked for that the phrase never plays is
    named in every bar."""
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.bars import keep_parts, programs_of
    from ostinato.evaluate.continuation import DEFAULT_SETTINGS
    from ostinato.evaluate.continuers import ModelContinuer
    from tests.conftest import make_band_score

    engine = Engine(tiny_header_model_dir, device="cpu")
    vocab = engine.vocab
    bars = split_bars(score_to_ids(engine.tokenizer, make_band_score(bars=4)).astype(np.int64),
                      vocab.bar_id)  # fmt: skip
    drums_only = keep_parts(vocab, bars[3], [-1])
    programs = (-1, 4, 33, 81)
    context, refs = np.concatenate(bars), [bars[0], drums_only]
    loop = ModelContinuer(engine, DEFAULT_SETTINGS, key_lock=True, variation=0.0, mode="loop")
    played = split_bars(loop(context, 2, programs, 0, refs), vocab.bar_id)
    assert [b.tolist() for b in played] == [bars[0].tolist(), drums_only.tolist()]
    answer = ModelContinuer(engine, DEFAULT_SETTINGS, key_lock=True, variation=0.0)
    played = split_bars(answer(context, 2, programs, 0, refs), vocab.bar_id)
    assert [b.tolist() for b in played] == [bars[0].tolist(), drums_only.tolist()]
    # the phrase without its bass (33), the bass asked for: named in the drums-only bar too
    phrase = [keep_parts(vocab, b, [-1, 4, 81]) for b in bars]
    context, refs = np.concatenate(phrase), [phrase[0], keep_parts(vocab, phrase[3], [-1])]
    played = split_bars(answer(context, 2, programs, 0, refs), vocab.bar_id)
    assert [programs_of(vocab, b) for b in played] == [set(programs), {-1, 33}]
