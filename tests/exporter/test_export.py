from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ostinato.exporter.export import check_parity, export_model, ort_session
from ostinato.model.network import UNKNOWN_FOLLOWER
from ostinato.model.tokens import TOKENIZER_FILE
from ostinato.model.train import load_checkpoint, model_from_checkpoint
from tests.conftest import save_random_checkpoint


def test_model_folder_and_parity_report(tiny_model_dir) -> None:
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == ["card.json", "decode.onnx", "model.onnx", TOKENIZER_FILE]
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
    assert card["decode_file"] == "decode.onnx" and len(card["decode_sha256"]) == 64
    decode = ort.InferenceSession(str(tiny_model_dir / "decode.onnx"))
    assert [i.name for i in decode.get_inputs()] == [i.name for i in session.get_inputs()]
    assert decode.get_inputs()[0].shape == [1, 1]  # one token
    assert isinstance(decode.get_inputs()[3].shape[2], str)


def test_parity_holds_for_the_small_config_with_a_music_prompt(tmp_path, tokenizer) -> None:
    """The d=256×4 reference size: ORT matches PyTorch within 1e-3, same greedy tokens."""
    from ostinato.exporter.export import export_graph
    from ostinato.model.tokens import score_to_ids
    from tests.conftest import make_band_score

    ckpt = save_random_checkpoint(tmp_path / "run", size="small", seed=3)
    model = model_from_checkpoint(load_checkpoint(ckpt))
    export_graph(model, tmp_path / "m.onnx")
    export_graph(model, tmp_path / "d.onnx", decode=True)
    prompt = score_to_ids(tokenizer, make_band_score(bars=2))
    prefill = ort_session(tmp_path / "m.onnx")
    for decode in (None, ort_session(tmp_path / "d.onnx")):
        report = check_parity(model, prefill, prompt, 64, decode_session=decode)
        assert report.max_abs_logit_diff <= 1e-3
        assert report.greedy_identical


def test_decode_graph_matches_the_network_over_a_window_with_holes(tmp_path) -> None:
    """The fused decode graph (scale in the weights, one rotary multiply-add, no transposes)
    computes what the network computes: one token over a buffer with free slots, at a large
    absolute position (as after hours of sliding the window)."""
    from ostinato.exporter.export import export_graph
    from ostinato.exporter.graph import input_names

    model = model_from_checkpoint(load_checkpoint(save_random_checkpoint(tmp_path / "r", seed=5)))
    export_graph(model, tmp_path / "d.onnx", decode=True)
    cfg = model.config
    rng = np.random.default_rng(1)
    S = 40
    past_k = rng.standard_normal((cfg.n_layer, 1, cfg.n_head, S, cfg.head_dim), np.float32)
    past_v = rng.standard_normal((cfg.n_layer, 1, cfg.n_head, S, cfg.head_dim), np.float32)
    mask = np.zeros((1, 1, 1, S + 1), np.float32)
    mask[..., rng.choice(S, 15, replace=False)] = -np.inf
    token, position = np.array([[7]]), np.array([[40_000]])
    feeds = dict(zip(input_names(cfg.n_layer)[:3], (token, position, mask), strict=True))
    for i in range(cfg.n_layer):
        feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = past_k[i], past_v[i]
    logits, new_k, new_v = ort_session(tmp_path / "d.onnx").run(None, feeds)
    with torch.no_grad():
        t_logits, t_k, t_v = model(
            torch.from_numpy(token), torch.from_numpy(position), torch.from_numpy(past_k),
            torch.from_numpy(past_v), torch.from_numpy(mask),
        )  # fmt: skip
    assert logits.shape == (1, cfg.vocab_size)
    assert np.abs(logits - t_logits[:, -1].numpy()).max() <= 1e-4
    assert np.abs(new_k - t_k.numpy()).max() <= 1e-4
    assert np.abs(new_v - t_v.numpy()).max() <= 1e-4
    assert np.abs(logits).max() > 1e-2  # a real output, not zeros


def test_fp16_graphs_keep_fp32_rotary_angles(tmp_path) -> None:
    """fp16 cannot hold positions past 2048 exactly; the graphs compute angles in fp32."""
    import onnx

    from ostinato.exporter.export import export_graph

    model = model_from_checkpoint(load_checkpoint(save_random_checkpoint(tmp_path / "r")))
    for decode in (False, True):
        path = tmp_path / f"g{int(decode)}.onnx"
        export_graph(model, path, fp16=True, decode=decode)
        graph = onnx.load(str(path)).graph
        freq = [t for t in graph.initializer if "inv_freq" in t.name]
        cos_in = [n for n in graph.node if n.op_type == "Cos"]
        assert cos_in, "no rotary angles in the graph"
        assert freq and all(t.data_type == onnx.TensorProto.FLOAT for t in freq)
        assert [i.type.tensor_type.elem_type for i in graph.input][2] == onnx.TensorProto.FLOAT16
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched


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


def test_int8_export_stores_8_bit_weights_and_their_agreement(tmp_path) -> None:
    """--int8: smaller graphs of the same inputs and outputs, the card says int8 with the
    greedy agreement with fp32 measured on real music, and the engine plays them."""
    from ostinato.engine.engine import Engine
    from ostinato.model.grammar import GrammarConfig
    from ostinato.model.sampling import SamplingSettings
    from ostinato.model.tokens import new_tokenizer

    ckpt = save_random_checkpoint(tmp_path / "run", size="small", seed=1, tokenizer=new_tokenizer())
    fp32 = export_model(ckpt, tmp_path / "fp32")
    card = export_model(ckpt, tmp_path / "int8", int8=True)
    assert fp32["precision"] == "fp32" and card["precision"] == "int8"
    assert card["parity"]["greedy_identical"]  # the fp32 graphs were checked first
    report = card["int8"]
    assert report["greedy_steps"] == 256 and report["prompt_tokens"] > 500
    assert 0.0 <= report["greedy_agreement"] <= 1.0 and report["max_abs_logit_diff"] > 0
    on_disk = json.loads((tmp_path / "int8" / "card.json").read_text())
    assert on_disk["int8"] == report and on_disk["sha256"] != fp32["sha256"]
    for name in ("model.onnx", "decode.onnx"):  # weights in 8 bits: well under half the size
        assert (tmp_path / "int8" / name).stat().st_size < 0.5 * (
            tmp_path / "fp32" / name
        ).stat().st_size
        quantized = ort.InferenceSession(str(tmp_path / "int8" / name))
        plain = ort.InferenceSession(str(tmp_path / "fp32" / name))
        assert [i.name for i in quantized.get_inputs()] == [i.name for i in plain.get_inputs()]
    engine = Engine(tmp_path / "int8", device="cpu")
    engine.reset()
    notes = list(engine.generate(2, engine.sampler(SamplingSettings(), seed=0), GrammarConfig()))
    assert engine.context_length > 2 and all(0 <= n.pitch < 128 for n in notes)
    with pytest.raises(ValueError, match="exclude each other"):
        export_model(ckpt, tmp_path / "both", int8=True, fp16=True)


def test_the_card_names_the_context_the_engine_attends_to(tmp_path) -> None:
    """--context: the card's run-time context, the engine's window unless one is asked for;
    unset, the whole training window. Longer than the training window is refused."""
    from ostinato.engine.engine import Engine

    ckpt = save_random_checkpoint(tmp_path / "run")
    whole = export_model(ckpt, tmp_path / "whole")
    short = export_model(ckpt, tmp_path / "short", context=96)
    assert whole["context"] == whole["window"] == 256 and short["context"] == 96
    assert Engine(tmp_path / "whole", device="cpu").window == 256
    engine = Engine(tmp_path / "short", device="cpu")
    assert engine.window == 96 and engine.k_buf.shape[3] == 96
    assert Engine(tmp_path / "short", device="cpu", window=200).window == 200
    engine.feed(np.arange(4, 204) % 100 + 4)  # more than the context: the front slides out
    assert 0 < engine.context_length <= 96
    with pytest.raises(ValueError, match="training window"):
        export_model(ckpt, tmp_path / "long", context=512)


def test_a_copy_head_exports_with_parity_and_the_engine_runs_it(tmp_path) -> None:
    """A model with a copy head: both graphs match the network (the decode graph over a
    window with holes too, its copy entry holding token ids), int8 keeps its greedy choices,
    the engine keeps one more cache entry and its outputs are probabilities, and the folder
    reloads into the same weights."""
    from ostinato.engine.engine import Engine
    from ostinato.exporter.export import export_graph
    from ostinato.exporter.graph import input_names
    from ostinato.exporter.reload import load_into, model_config_of
    from ostinato.model.network import Decoder
    from ostinato.model.sampling import SamplingSettings

    ckpt_path = save_random_checkpoint(tmp_path / "run", seed=2, copy_head=True,
                                       previous_token=True)  # fmt: skip
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["model"]["copy.gate.bias"].fill_(0.5)  # well open: the copy counts in every output
    null = ckpt["model"]["copy.null"]
    null.copy_(torch.linspace(-1.0, 1.0, null.numel()).view_as(null))  # … and is read back
    torch.save(ckpt, ckpt_path)
    card = export_model(ckpt_path, tmp_path / "model")
    assert card["parity"]["max_abs_logit_diff"] <= 1e-3 and card["parity"]["greedy_identical"]
    card8 = export_model(ckpt_path, tmp_path / "m8", int8=True)
    assert card8["int8"]["greedy_agreement"] >= 0.95

    model = model_from_checkpoint(load_checkpoint(ckpt_path))
    export_graph(model, tmp_path / "d.onnx", decode=True)
    cfg = model.config
    L, S = cfg.cache_layers, 40
    rng = np.random.default_rng(1)
    past_k = rng.standard_normal((L, 1, cfg.n_head, S, cfg.head_dim), np.float32)
    past_v = rng.standard_normal((L, 1, cfg.n_head, S, cfg.head_dim), np.float32)
    past_v[-1] = 0.0
    past_v[-1, ..., 0] = rng.integers(0, cfg.vocab_size, S)
    mask = np.zeros((1, 1, 1, S + 1), np.float32)
    mask[..., rng.choice(S, 15, replace=False)] = -np.inf
    token, position, prev = np.array([[7]]), np.array([[40_000]]), np.array([[9]])
    names = input_names(L, previous_token=True)
    feeds = dict(zip(names[:3], (token, position, mask), strict=True))
    for i in range(L):
        feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = past_k[i], past_v[i]
    feeds[names[-1]] = prev
    logits, new_k, new_v = ort_session(tmp_path / "d.onnx").run(None, feeds)
    with torch.no_grad():
        t_logits, t_k, _ = model(
            torch.from_numpy(token), torch.from_numpy(position), torch.from_numpy(past_k),
            torch.from_numpy(past_v), torch.from_numpy(mask), prev_tokens=torch.from_numpy(prev),
        )  # fmt: skip
    assert np.abs(logits - t_logits[:, -1].numpy()).max() <= 1e-4
    assert np.abs(new_k - t_k.numpy()).max() <= 1e-4
    assert new_v[-1, 0, 0, 0, 0] == UNKNOWN_FOLLOWER  # the engine writes it with the next token

    engine = Engine(tmp_path / "model", device="cpu")
    assert engine.k_buf.shape[0] == cfg.n_layer + 1
    fed = [1, 4, 5, 6, 7, 4, 5, 6]
    engine.feed(fed[:5])  # a prefill, then token by token: each slot gets its follower
    for token in fed[5:]:
        engine.feed([token])
    assert np.exp(engine.last_logits.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-4)
    context = engine.context_tokens()
    slots = engine._ctx_slots[: len(context)]
    assert np.array_equal(engine.v_buf[-1, 0, 0, slots[:-1], 0], context[1:])
    with torch.no_grad():
        whole = model(torch.from_numpy(context)[None])[0][0, -1].numpy()
    assert np.abs(engine.last_logits - whole).max() <= 1e-4
    out: list[int] = []
    list(engine.generate(1, engine.sampler(SamplingSettings(temperature=1.0), 0), None,
                         tokens_out=out))  # fmt: skip
    assert out and out[-1] == engine.vocab.bar_id

    again = Decoder(model_config_of(tmp_path / "model"))
    load_into(again, tmp_path / "model")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value)
