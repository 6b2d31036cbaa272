"""Running an exported graph from the host, as the parity and int8 checks do."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ostinato.model.tokens import NO_PREVIOUS

PREV_INPUT = "prev_tokens"  # the graphs of a model with previous_token (after the buffers)


def ort_run(sess: ort.InferenceSession, n_layer: int, tokens: np.ndarray, start: int,
            past_k: np.ndarray, past_v: np.ndarray, before: int = NO_PREVIOUS) -> list:  # fmt: skip
    """One call of an exported graph: ``tokens`` (1, n) at positions ``start`` … after the
    cache ``past_k``/``past_v`` (layers, 1, heads, S, head size), causal among the new ones;
    ``before``: the token before them (a graph with ``prev_tokens``).
    Returns [logits, new_k, new_v]."""
    n, s = tokens.shape[1], past_k.shape[3]
    allowed = np.tril(np.ones((n, s + n), dtype=bool), s)
    feeds = {
        "tokens": tokens,
        "positions": np.arange(start, start + n, dtype=np.int64)[None],
        "attn_mask": np.where(allowed, 0.0, -np.inf).astype(np.float32)[None, None],
    }
    for i in range(n_layer):
        feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = past_k[i], past_v[i]
    if any(i.name == PREV_INPUT for i in sess.get_inputs()):
        feeds[PREV_INPUT] = np.concatenate(([[before]], tokens[:, :-1]), axis=1).astype(np.int64)
    return sess.run(None, feeds)
