"""`ostinato eval --mode jam`: long self-fed jams and bars in every meter of the model."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from ostinato.evaluate.continuers import RepeatPhraseContinuer
from ostinato.evaluate.jam import DENSITY_BAND, evaluate_jam, format_jam, jam, jam_summary
from ostinato.model.tokens import format_meter, score_to_ids, split_bars
from tests.conftest import make_band_score


class Silent:
    """A partner that plays nothing: every bar empty."""

    name = "silent"

    def __init__(self, vocab) -> None:
        self.vocab = vocab

    def __call__(self, context, bars, programs, seed, references=None) -> np.ndarray:
        return np.asarray([self.vocab.bar_id] * bars, dtype=np.int64)


def _context(tokenizer, vocab) -> list[np.ndarray]:
    ids = score_to_ids(tokenizer, make_band_score(bars=4)).astype(np.int64)
    return split_bars(ids, vocab.bar_id)


def test_a_jam_that_plays_the_phrase_again_keeps_its_density(tokenizer, vocab) -> None:
    """Four bars played again and again: each block of four holds the context's density."""
    context = _context(tokenizer, vocab)
    row = jam(RepeatPhraseContinuer(vocab), vocab, tokenizer, context, 12, 4, seed=0)
    assert row["bars"] == 12 and row["silent_bars"] == 0
    assert row["block_density_ratio"] == pytest.approx([1.0, 1.0, 1.0])
    summary = jam_summary([row], 12, 4)
    assert summary["within_band"] is True and summary["decodes"] == 1.0


def test_a_jam_that_falls_silent_is_outside_the_band(tokenizer, vocab) -> None:
    context = _context(tokenizer, vocab)
    row = jam(Silent(vocab), vocab, tokenizer, context, 6, 3, seed=0)
    assert row["silent_bars"] == 6 and row["silent_bars_last_block"] == 3
    assert row["block_density_ratio"] == [0.0, 0.0]
    assert jam_summary([row], 6, 3)["within_band"] is False


def test_the_density_band_is_checked_on_every_block_of_every_jam() -> None:
    lo, hi = DENSITY_BAND

    def row(*ratios: float) -> dict:
        return {"block_density_ratio": list(ratios), "decodes": 1.0}

    assert jam_summary([row(lo, 1.0), row(hi)], 3, 1)["within_band"] is True
    assert jam_summary([row(1.0, 1.0), row(1.0, hi + 0.01)], 4, 2)["within_band"] is False
    assert jam_summary([row(lo - 0.01)], 1, 1)["within_band"] is False
    # a silent context's blocks (NaN) say nothing; no block at all is not inside
    assert jam_summary([row(math.nan, 1.2)], 2, 1)["within_band"] is True
    assert jam_summary([row(math.nan)], 1, 1)["within_band"] is False
    s = jam_summary([row(0.7, 1.4), row(1.1)], 2, 1)
    assert (s["min_block_density_ratio"], s["max_block_density_ratio"]) == (0.7, 1.4)


def test_a_jam_reports_density_by_block_and_every_meter(tiny_meter_model_dir, tiny_corpus) -> None:
    from ostinato.engine.engine import Engine

    report = evaluate_jam(tiny_meter_model_dir, tiny_corpus, jams=2, bars=6, block=3,
                          meter_windows=1, meter_bars=2, progress=False)  # fmt: skip
    assert len(report["jams"]) == 2
    for row in report["jams"]:
        assert row["bars"] == 6 and len(row["block_notes_per_bar"]) == 2
        assert row["context_notes_per_bar"] > 0
        assert row["decodes"] == 1.0  # the grammar's promise, even for random weights
    vocab = Engine(tiny_meter_model_dir, device="cpu").vocab
    assert set(report["meters"]) == {format_meter(m) for m in vocab.meters}
    for meter, row in report["meters"].items():
        assert row["bars"] == 2 * row["windows"], meter
        assert row["decodes"] == 1.0 and row["in_meter"] == 1.0, meter
    assert report["meters"]["4/4"]["context"] == "corpus"  # the tiny corpus is in 4/4
    assert report["meters"]["7/8"]["context"] == "empty bar"
    text = format_jam(report)
    assert "self-fed jams of 6 bars" in text and "7/8" in text


def test_a_header_model_jams_with_every_instrument_of_the_context(
    tiny_header_model_dir, tiny_corpus
) -> None:
    """Jam mode with the header: every bar names the context's instruments and plays each."""
    report = evaluate_jam(tiny_header_model_dir, tiny_corpus, jams=1, bars=4, block=2,
                          meter_windows=1, meter_bars=1, progress=False)  # fmt: skip
    assert report["header"] is True
    assert report["jams"][0]["silent_bars"] == 0 and report["jams"][0]["decodes"] == 1.0
    assert all(m["decodes"] == 1.0 and m["in_meter"] == 1.0 for m in report["meters"].values())


def test_jam_cli(tiny_meter_model_dir, tiny_corpus, tmp_path) -> None:
    out = tmp_path / "jam.json"
    result = subprocess.run(
        [sys.executable, "-m", "ostinato", "eval", str(tiny_meter_model_dir), str(tiny_corpus),
         "--mode", "jam", "--windows", "1", "--bars", "4", "--json", str(out), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "self-fed jams of 4 bars" in result.stdout
    assert json.loads(out.read_text())["jams"][0]["bars"] == 4
