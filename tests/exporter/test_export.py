from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ostinato.exporter.export import check_parity, export_model, ort_session
from ostinato.model.tokens import TOKENIZER_FILE
from ostinato.model.train import load_checkpoint, model_from_checkpoint
from tests.conftest import save_random_checkpoint


def test_model_folder_and_parity_report(tiny_model_dir) -> None:
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == ["card.json", "model.onnx", TOKENIZER_FILE]
    card = json.loads((tiny_model_dir / "card.json").read_text())
    assert card["parity"]["max_abs_logit_diff"] <= 1e-3
    assert card["parity"]["greedy_identical"] and card["parity"]["greedy_tokens"] == 64
    assert card["window"] == 256 and card["precision"] == "fp32"
    session = ort.InferenceSession(str(tiny_model_dir / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == [
        "tokens", "positions", "attn_mask", "past_k_0", "past_k_1", "past_v_0", "past_v_1",
    ]  # fmt: skip
    past = session.get_inputs()[3].shape
    assert isinstance(past[2], str)  # dynamic buffer length


def test_parity_holds_for_the_small_config_with_a_music_prompt(tmp_path, tokenizer) -> None:
    """The d=256×4 reference size: ORT matches PyTorch within 1e-3, same greedy tokens."""
    from ostinato.exporter.export import export_graph
    from ostinato.model.tokens import score_to_ids
    from tests.conftest import make_band_score

    ckpt = save_random_checkpoint(tmp_path / "run", size="small", seed=3)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    export_graph(model, tmp_path / "m.onnx")
    prompt = score_to_ids(tokenizer, make_band_score(bars=2))
    report = check_parity(model, ort_session(tmp_path / "m.onnx"), prompt, 64)
    assert report.max_abs_logit_diff <= 1e-3
    assert report.greedy_identical


def test_parity_failure_is_reported(tmp_path, tiny_model_dir) -> None:
    """A graph from other weights must fail the check (the check can fail)."""
    ckpt = save_random_checkpoint(tmp_path / "other", seed=99)
    other = model_from_checkpoint(load_checkpoint(ckpt))
    session = ort_session(tiny_model_dir / "model.onnx")
    report = check_parity(other, session, np.arange(20), 16)
    assert report.max_abs_logit_diff > 1e-3


def test_mismatched_tokenizer_is_refused(tmp_path) -> None:
    from ostinato.model.tokens import new_tokenizer, save_tokenizer

    ckpt = save_random_checkpoint(tmp_path / "run")
    save_tokenizer(new_tokenizer(velocity_bins=32), tmp_path / "run")  # 16 more tokens
    with pytest.raises(ValueError, match="tokenizer has"):
        export_model(ckpt, tmp_path / "model")
    assert torch.load(ckpt, weights_only=False)["step"] == 0
