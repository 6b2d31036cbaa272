"""``ostinato export CHECKPOINT --out MODEL_DIR``: ONNX graph, parity check, model folder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ostinato.exporter.graph import (
    OUTPUTS,
    DecodeGraph,
    StepGraph,
    example_inputs,
    input_names,
)
from ostinato.exporter.runtime import ort_run
from ostinato.model.network import Decoder, ModelConfig, note_follower
from ostinato.model.tokens import TOKENIZER_FILE, PlaceRule, echoes, load_tokenizer
from ostinato.model.train import load_checkpoint, model_from_checkpoint

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
DECODE_FILE = "decode.onnx"
CARD_FILE = "card.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ParityReport:
    max_abs_logit_diff: float
    greedy_tokens: int
    greedy_identical: bool
    first_mismatch: int | None

    def to_dict(self) -> dict:
        return {
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "greedy_tokens": self.greedy_tokens,
            "greedy_identical": self.greedy_identical,
            "first_mismatch": self.first_mismatch,
        }


def _to_dtype_keeping_angles(graph: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``graph.to(dtype)`` except the rotary frequency tables, which stay fp32."""
    saved = {n: b.clone() for n, b in graph.named_buffers() if n.endswith("inv_freq")}
    graph = graph.to(dtype)
    for name, value in saved.items():
        owner, _, attr = name.rpartition(".")
        setattr(graph.get_submodule(owner), attr, value)
    return graph


def graph_inputs(cfg: ModelConfig) -> list[str]:
    """The input names of a model's graphs (see :mod:`ostinato.exporter.graph`)."""
    return input_names(cfg.cache_layers, cfg.previous_token, cfg.bar_token >= 0, cfg.bar_echo)


def export_graph(model: Decoder, path: Path, fp16: bool = False, decode: bool = False) -> None:
    """Write the prefill graph (dynamic new-token count T and buffer length S) or, with
    ``decode``, the one-token decode graph (dynamic S)."""
    dtype = torch.float16 if fp16 else torch.float32
    graph: torch.nn.Module = (DecodeGraph if decode else StepGraph)(model.float()).eval()
    graph = _to_dtype_keeping_angles(graph, dtype)
    L = model.config.cache_layers
    if decode:
        args = example_inputs(model, new=1, past=17, dtype=dtype)
        S = torch.export.Dim("past", min=2, max=8192)
        mask_shape = {3: S + 1}
        token_shape = None
    else:
        # A past of 17 slots and 5 new tokens: non-trivial sizes so no dimension is specialized.
        args = example_inputs(model, new=5, past=17, dtype=dtype)
        T = torch.export.Dim("new", min=1, max=4096)
        S = torch.export.Dim("past", min=1, max=8192)
        mask_shape = {2: T, 3: torch.export.Dim.DYNAMIC}
        token_shape = {1: T}
    dynamic_shapes = {
        "tokens": token_shape,
        "positions": token_shape,
        "attn_mask": mask_shape,
        "past_k": [{2: S}] * L,
        "past_v": [{2: S}] * L,
    }
    if model.config.bar_token >= 0:  # (a None for prev where the model has no prev_tokens)
        dynamic_shapes["prev"] = token_shape if model.config.previous_token else None
        dynamic_shapes["places"] = token_shape
        if model.config.bar_echo:
            dynamic_shapes["echo"] = token_shape
    elif model.config.previous_token:
        dynamic_shapes["prev"] = token_shape
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            args,
            input_names=graph_inputs(model.config),
            output_names=list(OUTPUTS),
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    if program is None:  # only the TorchScript exporter (dynamo=False) returns nothing
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(str(path))
    model.float()


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_parity(
    model: Decoder,
    session: ort.InferenceSession,
    prompt: np.ndarray,
    greedy_tokens: int = 64,
    decode_session: ort.InferenceSession | None = None,
) -> ParityReport:
    """Same inputs through PyTorch and ONNX Runtime: prefill of ``prompt`` then
    ``greedy_tokens`` greedy steps each way (PyTorch with its own cache, ORT with the host
    concatenating K/V; the steps run through ``decode_session`` when given). Reports the
    largest |Δlogit| and whether the tokens agree."""
    cfg = model.config
    model = model.float().eval()
    empty = np.zeros((cfg.cache_layers, 1, cfg.n_head, 0, cfg.head_dim), dtype=np.float32)
    rule = PlaceRule.of(cfg)

    def ort_step(sess, tokens, start, past_k, past_v, before=None):
        return ort_run(sess, cfg.cache_layers, tokens, start, past_k, past_v, before, rule)

    tokens = prompt.astype(np.int64)[None]
    # ORT needs S ≥ 1 in the graph's dims only if the exporter specialized it; S = 0 works.
    logits, k, v = ort_step(session, tokens, 0, empty, empty)
    past_k, past_v = k, v
    with torch.no_grad():
        t_logits, tk, tv = model(torch.from_numpy(tokens))
    diffs = [float(np.abs(logits - t_logits[:, -1].numpy()).max())]
    t_logits = t_logits[:, -1]
    ort_out, torch_out = [], []
    position = tokens.shape[1]
    for _ in range(greedy_tokens):
        a = int(np.argmax(logits[0]))
        b = int(torch.argmax(t_logits[0]))
        ort_out.append(a)
        torch_out.append(b)
        step = np.array([[a]], dtype=np.int64)
        seen_a = np.array([*tokens[0], *ort_out[:-1]], dtype=np.int64)  # each side's cache
        seen_b = np.array([*tokens[0], *torch_out], dtype=np.int64)  # and the new token
        if cfg.copy_head:  # the last slot's follower, as the engine writes it
            note_follower(past_v, -1, a)
            note_follower(tv, -1, b)
        logits, k, v = ort_step(decode_session or session, step, position, past_k, past_v,
                                seen_a)  # fmt: skip
        past_k = np.concatenate((past_k, k), axis=3)
        past_v = np.concatenate((past_v, v), axis=3)
        place = echo = None
        if rule is not None:
            at = rule.places(seen_b)
            place = torch.from_numpy(at[-1:][None])
            if cfg.bar_echo:
                echo = torch.from_numpy(echoes(seen_b, at, rule.bar_id)[-1:][None])
        with torch.no_grad():
            out, k2, v2 = model(torch.tensor([[b]]), torch.tensor([[position]]), tk, tv,
                                prev_tokens=torch.tensor([[int(seen_b[-2])]]),
                                bar_places=place, echoes=echo)  # fmt: skip
        tk, tv = torch.cat((tk, k2), 3), torch.cat((tv, v2), 3)
        t_logits = out[:, -1]
        if a == b:
            diffs.append(float(np.abs(logits - t_logits.numpy()).max()))
        position += 1
    mismatch = next(
        (i for i, (a, b) in enumerate(zip(ort_out, torch_out, strict=True)) if a != b), None
    )
    return ParityReport(max(diffs), greedy_tokens, mismatch is None, mismatch)


def _to_int8(model: Decoder, tokenizer, onnx_path: Path, decode_path: Path) -> dict:
    """Quantize both graphs in place; the card's entries for them, with their agreement."""
    from ostinato.exporter.int8 import agreement, music_prompt, quantize_file

    cfg = model.config
    fp32 = (ort_session(onnx_path), ort_session(decode_path))
    for path in (onnx_path, decode_path):
        quantize_file(path, path)
    quantized = (ort_session(onnx_path), ort_session(decode_path))
    shape = (cfg.cache_layers, cfg.n_head, cfg.head_dim)
    places = PlaceRule.of(cfg)
    report = agreement(fp32, quantized, shape, music_prompt(tokenizer), places=places,
                       copy_head=cfg.copy_head)  # fmt: skip
    log.info(
        "int8: greedy agreement with fp32 %.3f over %d steps, max |Δlogit| %.3f",
        report["greedy_agreement"], report["greedy_steps"], report["max_abs_logit_diff"],
    )  # fmt: skip
    return {
        "precision": "int8",
        "sha256": sha256_of(onnx_path),
        "decode_sha256": sha256_of(decode_path),
        "int8": report,
    }


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    fp16: bool = False,
    parity_prompt: np.ndarray | None = None,
    tolerance: float | None = None,
    extra_card: dict | None = None,
    int8: bool = False,
    context: int | None = None,
) -> dict:
    """Export, check parity (raises if it fails), and write the model folder. Returns the card.
    ``int8``: then store 8-bit weights, with their agreement with fp32 in the card
    (:mod:`ostinato.exporter.int8`). ``context``: the tokens the engine attends to by default
    (``context`` in the card; unset: the whole training window): each decoded token reads the
    whole key/value buffer, so its cost grows with it."""
    if int8 and fp16:
        raise ValueError("--int8 and --fp16 exclude each other")
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    if context is not None and not 32 <= context <= model.config.max_seq_len:
        raise ValueError(
            f"context must be 32 to {model.config.max_seq_len} tokens (the training window), "
            f"got {context}"
        )
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    tok_path = Path(tokenizer_path) if tokenizer_path else run_dir / TOKENIZER_FILE
    tokenizer = load_tokenizer(tok_path)
    if len(tokenizer.vocab) != model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer.vocab)} tokens but the model expects "
            f"{model.config.vocab_size}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, decode_path = out / MODEL_FILE, out / DECODE_FILE
    t0 = time.perf_counter()
    export_graph(model, onnx_path, fp16=fp16)
    export_graph(model, decode_path, fp16=fp16, decode=True)
    export_s = time.perf_counter() - t0
    shutil.copy(tok_path, out / TOKENIZER_FILE)

    card: dict = {
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "sha256": sha256_of(onnx_path),
        "decode_file": DECODE_FILE,
        "decode_sha256": sha256_of(decode_path),
        "precision": "fp16" if fp16 else "fp32",
        "model": ckpt["model_args"],
        "parameters": model.num_parameters(),
        "window": model.config.max_seq_len,
        "context": model.config.max_seq_len if context is None else context,
        "training_steps": ckpt["step"],
        "train_config": ckpt.get("train_config", {}),
        "inputs": graph_inputs(model.config),
        "outputs": list(OUTPUTS),
        "export_seconds": round(export_s, 2),
    }
    if not fp16:  # fp16 graphs are for CUDA; their parity check runs there (see docs)
        bound = 1e-3 if tolerance is None else tolerance
        rng = np.random.default_rng(0)
        prompt = (
            parity_prompt
            if parity_prompt is not None
            else rng.integers(0, model.config.vocab_size, 128)
        )
        report = check_parity(
            model,
            ort_session(onnx_path),
            np.asarray(prompt),
            64,
            decode_session=ort_session(decode_path),
        )
        card["parity"] = {**report.to_dict(), "bound": bound}
        log.info(
            "parity: max |Δlogit| %.2e (bound %.0e), greedy %d tokens %s",
            report.max_abs_logit_diff,
            bound,
            report.greedy_tokens,
            "identical" if report.greedy_identical else f"differ at {report.first_mismatch}",
        )
        if report.max_abs_logit_diff > bound or not report.greedy_identical:
            raise ValueError(f"parity check failed: {report.to_dict()}")
    if int8:
        card.update(_to_int8(model, tokenizer, onnx_path, decode_path))
    card.update(extra_card or {})
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card
