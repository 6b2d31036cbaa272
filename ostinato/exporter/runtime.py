"""Running an exported graph from the host, as the parity and int8 checks do."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def ort_run(sess: ort.InferenceSession, n_layer: int, tokens: np.ndarray, start: int,
            past_k: np.ndarray, past_v: np.ndarray) -> list:  # fmt: skip
    """One call of an exported graph: ``tokens`` (1, n) at positions ``start`` … after the
    cache ``past_k``/``past_v`` (layers, 1, heads, S, head size), causal among the new ones.
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
    return sess.run(None, feeds)
