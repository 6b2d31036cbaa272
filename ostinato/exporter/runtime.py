"""Running an exported graph from the host, as the parity and int8 checks do."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ostinato.model.tokens import NO_PREVIOUS, PlaceRule, echoes

PREV_INPUT = "prev_tokens"  # the graphs of a model with previous_token (after the buffers)
PLACE_INPUT = "bar_places"  # … of a model with bar_token (after prev_tokens), see PlaceRule
ECHO_INPUT = "echoes"  # … of a model with bar_echo (last), see BarEcho


def ort_run(sess: ort.InferenceSession, n_layer: int, tokens: np.ndarray, start: int,
            past_k: np.ndarray, past_v: np.ndarray, before: np.ndarray | None = None,
            places: PlaceRule | None = None) -> list:  # fmt: skip
    """One call of an exported graph: ``tokens`` (1, n) at positions ``start`` … after the
    cache ``past_k``/``past_v`` (layers, 1, heads, S, head size), causal among the new ones;
    ``before``: the tokens the cache holds (1-D), for a graph that takes the token before each
    new one (``prev_tokens``), their places in their bars (``bar_places``, counted by the
    model's ``places`` rule) or their echoes (``echoes``, see BarEcho). Returns [logits,
    new_k, new_v]."""
    n, s = tokens.shape[1], past_k.shape[3]
    allowed = np.tril(np.ones((n, s + n), dtype=bool), s)
    feeds = {
        "tokens": tokens,
        "positions": np.arange(start, start + n, dtype=np.int64)[None],
        "attn_mask": np.where(allowed, 0.0, -np.inf).astype(np.float32)[None, None],
    }
    for i in range(n_layer):
        feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = past_k[i], past_v[i]
    names = {i.name for i in sess.get_inputs()}
    history = np.concatenate(([] if before is None else before, tokens[0])).astype(np.int64)
    if PREV_INPUT in names:
        feeds[PREV_INPUT] = np.concatenate(([NO_PREVIOUS], history))[-n - 1 : -1][None]
    if PLACE_INPUT in names or ECHO_INPUT in names:
        if places is None:
            raise ValueError("this graph takes places in the bar: give the model's PlaceRule")
        at = places.places(history)
        feeds[PLACE_INPUT] = at[-n:][None]
        if ECHO_INPUT in names:
            feeds[ECHO_INPUT] = echoes(history, at, places.bar_id)[-n:][None]
    return sess.run(None, feeds)
