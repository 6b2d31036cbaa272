"""8-bit weights: ``ostinato export CHECKPOINT --out DIR --int8``.

ONNX Runtime's dynamic quantization (``onnxruntime.quantization.quantize_dynamic``) stores the
weights of every ``MatMul``/``Gemm`` as signed 8-bit integers with one scale per tensor; the
activations are quantized on the fly per call. The graphs keep their inputs and outputs, so
the engine runs them as it runs fp32 ones. The embedding table (also the tied output layer's
weights, read through a ``MatMul`` of the transposed table) is quantized with the rest.

Quantized weights never meet a 1e-3 logit bound, so they are judged otherwise
(:func:`agreement`): the fp32 graphs play ``steps`` greedy tokens after a prompt of real music
(a few bars of generated 4-track loops), and the int8 graphs are fed exactly the same tokens;
reported are the share of steps whose most likely token is the same in both, and the largest
|Δlogit|. Whether int8 is worth shipping is decided by the evaluation (``ostinato eval``) and
the bar budget (``ostinato bench``), not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ostinato.exporter.runtime import ort_run
from ostinato.model.network import note_follower
from ostinato.model.tokens import PlaceRule


def quantize_file(src: Path, dst: Path) -> None:
    """Write ``src``'s graph with 8-bit MatMul/Gemm weights to ``dst`` (may be ``src``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_suffix(".int8.tmp")
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
    tmp.replace(dst)


def _run(sess: ort.InferenceSession, n_layer: int, tokens, start: int, past_k, past_v,
         before: np.ndarray | None = None, places: PlaceRule | None = None):  # fmt: skip
    """The last position's logits and the cache grown by these tokens (``before``: the tokens
    before them)."""
    logits, k, v = ort_run(sess, n_layer, tokens, start, past_k, past_v, before, places)
    return logits[0, -1], np.concatenate((past_k, k), axis=3), np.concatenate((past_v, v), axis=3)


def agreement(
    fp32: tuple[ort.InferenceSession, ort.InferenceSession],
    int8: tuple[ort.InferenceSession, ort.InferenceSession],
    shape: tuple[int, int, int],
    prompt: np.ndarray,
    steps: int = 256,
    places: PlaceRule | None = None,
    copy_head: bool = False,
) -> dict:
    """Greedy agreement of the int8 graphs with the fp32 ones (each a (prefill, decode) pair)
    on ``prompt`` then ``steps`` tokens that the fp32 graphs choose; ``shape``: (layers,
    heads, head size); ``places``: the model's rule for places in the bar (None: it has none);
    ``copy_head``: the last entry is a copy head's, whose slots hold their followers."""
    n_layer, n_head, head_dim = shape
    empty = np.zeros((n_layer, 1, n_head, 0, head_dim), dtype=np.float32)
    tokens = np.asarray(prompt, dtype=np.int64)[None]
    a, ak, av = _run(fp32[0], n_layer, tokens, 0, empty, empty, None, places)
    b, bk, bv = _run(int8[0], n_layer, tokens, 0, empty, empty, None, places)
    same, diff = [], []
    position = tokens.shape[1]
    seen = list(tokens[0])
    for _ in range(steps):
        chosen = int(np.argmax(a))
        same.append(chosen == int(np.argmax(b)))
        diff.append(float(np.abs(a - b).max()))
        step = np.array([[chosen]], dtype=np.int64)
        before = np.asarray(seen, dtype=np.int64)
        if copy_head:
            note_follower(av, -1, chosen)
            note_follower(bv, -1, chosen)
        a, ak, av = _run(fp32[1], n_layer, step, position, ak, av, before, places)
        b, bk, bv = _run(int8[1], n_layer, step, position, bk, bv, before, places)
        position += 1
        seen.append(chosen)
    return {
        "prompt_tokens": int(tokens.shape[1]),
        "greedy_steps": steps,
        "greedy_agreement": float(np.mean(same)),
        "max_abs_logit_diff": max(diff),
        "mean_max_abs_logit_diff": float(np.mean(diff)),
    }


def music_prompt(tokenizer, bars: int = 8) -> np.ndarray:
    """``BOS``, then ``bars`` bars of 4-track loops from the loop generator."""
    from ostinato.bench import band_bars

    bos = tokenizer.vocab["BOS_None"]
    return np.concatenate([[bos], *band_bars(tokenizer, count=bars)]).astype(np.int64)
