"""`ostinato eval --mode jam`: long self-fed jams and bars in every meter of the model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ostinato.model.evaluate_jam import evaluate_jam, format_jam
from ostinato.model.tokens import format_meter


def test_a_jam_reports_density_by_block_and_every_meter(tiny_meter_model_dir, tiny_corpus) -> None:
    from ostinato.engine.engine import Engine

    report = evaluate_jam(tiny_meter_model_dir, tiny_corpus, jams=2, bars=6, block=3,
                          meter_windows=1, meter_bars=2, progress=False)  # fmt: skip
    assert len(report["jams"]) == 2
    for row in report["jams"]:
        assert row["bars"] == 6 and len(row["block_notes_per_bar"]) == 2
        assert row["context_notes_per_bar"] > 0
        ratio = row["block_notes_per_bar"][0] / row["context_notes_per_bar"]
        assert row["block_density_ratio"][0] == pytest.approx(ratio)
        assert row["decodes"] == 1.0  # the grammar's promise, even for random weights
    s = report["jam_summary"]
    assert s["min_block_density_ratio"] <= s["max_block_density_ratio"]
    assert s["within_band"] == (
        s["min_block_density_ratio"] >= 0.5 and s["max_block_density_ratio"] <= 2.0
    )
    vocab = Engine(tiny_meter_model_dir, device="cpu").vocab
    assert set(report["meters"]) == {format_meter(m) for m in vocab.meters}
    for meter, row in report["meters"].items():
        assert row["bars"] == 2 * row["windows"], meter
        assert row["decodes"] == 1.0 and row["in_meter"] == 1.0, meter
    assert report["meters"]["4/4"]["context"] == "corpus"  # the tiny corpus is in 4/4
    assert report["meters"]["7/8"]["context"] == "empty bar"
    text = format_jam(report)
    assert "self-fed jams of 6 bars" in text and "7/8" in text


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
