"""The exported graph and its contract with the engine.

One graph serves every call the engine makes:

    inputs   tokens     int64   (1, T)
             positions  int64   (1, T)          absolute position of each new token
             attn_mask  float   (1, 1, T, S+T)  additive: 0 = attend, -inf = hidden
             past_k_i   float   (1, H, S, D)    layer i's key buffer (any slot order), i < L
             past_v_i   float   (1, H, S, D)    layer i's value buffer
    outputs  logits     float   (1, V)          next-token logits after the last new token
             new_k      float   (L, 1, H, T, D) keys/values of the new tokens, to be stored
             new_v      float   (L, 1, H, T, D)

Prefill is T = n with an empty (fully masked) buffer; a decode step is T = 1 over the
preallocated window of S slots. The buffers are separate inputs per layer so the engine can
bind views of one preallocated array: a stacked (L, …) input would be split, i.e. copied,
inside the graph on every step.
"""

from __future__ import annotations

import torch
from torch import nn

from ostinato.model.network import Decoder

OUTPUTS = ("logits", "new_k", "new_v")


def input_names(n_layer: int) -> list[str]:
    return [
        "tokens",
        "positions",
        "attn_mask",
        *(f"past_k_{i}" for i in range(n_layer)),
        *(f"past_v_{i}" for i in range(n_layer)),
    ]


class StepGraph(nn.Module):
    def __init__(self, model: Decoder) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, tokens, positions, attn_mask, past_k: list, past_v: list):
        logits, new_k, new_v = self.model(tokens, positions, past_k, past_v, attn_mask)
        return logits[:, -1], new_k, new_v


def example_inputs(model: Decoder, new: int, past: int, dtype=torch.float32):
    """Inputs of the graph's shapes: ``new`` tokens after a buffer of ``past`` slots, all
    slots visible (a plain causal continuation)."""
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (1, new))
    positions = torch.arange(past, past + new).unsqueeze(0)
    kv_shape = (1, cfg.n_head, past, cfg.head_dim)
    past_k = [torch.randn(kv_shape, dtype=dtype) * 0.5 for _ in range(cfg.n_layer)]
    past_v = [torch.randn(kv_shape, dtype=dtype) * 0.5 for _ in range(cfg.n_layer)]
    allowed = torch.ones(new, past + new, dtype=torch.bool).tril(past)
    mask = torch.zeros(1, 1, new, past + new, dtype=dtype).masked_fill(~allowed, float("-inf"))
    return tokens, positions, mask, past_k, past_v
