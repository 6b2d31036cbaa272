"""``ostinato bench --markdown``: the decode table docs/benchmarks shows, from a report."""

from __future__ import annotations

from ostinato.bench import format_markdown


def _report() -> dict:
    budget = {"trials": 24, "handover_prefill_ms_p50": 30.0, "first_note_ms_p50": 50.0,
              "first_note_ms_max": 80.0, "whole_bar_ms_p50": 250.0, "whole_bar_ms_max": 330.0,
              "notes_per_bar_mean": 23.4, "bar_share_120bpm_p50": 0.125,
              "bar_share_180bpm_p50": 0.1875, "bar_share_180bpm_max": 0.2475}  # fmt: skip
    steps = {"p50_ms": 0.957, "p99_ms": 1.476, "tokens_per_s": 1045.0}
    return {
        "model": "/x/ostinato/assets/default", "parameters": 1_865_472, "precision": "int8",
        "window": 2048, "prompt_tokens": 512, "threads": 1,
        "config": {"d_model": 192, "n_layer": 4},
        "machine": {"onnxruntime": "1.32.0"},
        "engine": {"cpu": {"prefill_ms": 187.08, **steps, "bar_budget": budget}},
        "pytorch": {"prefill_ms": 73.35,
                    "with_cache": {"p50_ms": 3.843, "p99_ms": 5.755, "tokens_per_s": 260.0},
                    "no_cache": {"p50_ms": 68.5, "p99_ms": 85.7, "tokens_per_s": 15.0}},
        "speedup_vs_pytorch_kv": 4.02, "speedup_vs_pytorch_no_cache": 71.59,
    }  # fmt: skip


def test_the_markdown_table_holds_the_reports_figures() -> None:
    text = format_markdown(_report())
    assert "Model `default` (d=192×4, 1.87 M, int8, window 2048)" in text
    assert "| engine (ONNX Runtime, cpu) | 187.1 | **0.957** | **1.476** | 1045 |" in text
    assert "| PyTorch eager, KV cache | 73.3 | 3.843 | 5.755 | 260 |" in text
    assert "| PyTorch eager, no cache |  | 68.500 | 85.700 | 15 |" in text
    assert "4.02× PyTorch with KV cache, 71.59× without" in text
    assert "whole bar 250.0 ms (max 330.0; 23.4 notes) = 12.5% of a bar at 120 BPM, 18.8%" in text


def test_without_torch_the_table_has_the_engine_alone() -> None:
    report = _report()
    del report["pytorch"]
    text = format_markdown(report)
    assert "PyTorch" not in text and "| engine (ONNX Runtime, cpu) |" in text
