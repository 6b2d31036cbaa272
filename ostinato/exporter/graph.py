"""The exported graphs and their contract with the engine.

Two graphs share one contract (the decode graph is the prefill graph specialized to T = 1):

    inputs   tokens     int64   (1, T)
             positions  int64   (1, T)          absolute position of each new token
             attn_mask  float   (1, 1, T, S+T)  additive: 0 = attend, -inf = hidden
             past_k_i   float   (1, H, S, D)    layer i's key buffer (any slot order), i < L
             past_v_i   float   (1, H, S, D)    layer i's value buffer; a model with a copy
                                                head has one more of each (i = L): the head's
                                                keys, and as each slot's first value the id of
                                                the token that followed it (the caller writes
                                                it when it feeds that token: note_follower)
             prev_tokens int64  (1, T)          the token before each new one (PAD: not known);
                                                only a model with ``previous_token`` has it
             bar_places int64   (1, T)          each new token's place in its bar (0 at a Bar);
                                                only a model with ``bar_token`` has it
             echoes     int64   (1, T)          each new token's echo (see BarEcho); only a
                                                model with ``bar_echo`` has it
    outputs  logits     float   (1, V)          next-token logits after the last new token
                                                (with a copy head, log-probabilities)
             new_k      float   (L, 1, H, T, D) keys/values of the new tokens, to be stored
             new_v      float   (L, 1, H, T, D)

``model.onnx`` (:class:`StepGraph`) takes any T: prefill of new tokens after an empty (fully
masked) buffer or after the cache. ``decode.onnx`` (:class:`DecodeGraph`) takes one token over
the preallocated window of S slots and is what every sampled token runs through, so it is
written for the fewest bytes and operators on that path:

* the attention scale is folded into the query weights;
* rotary embedding is one multiply-add over queries and keys together (swap halves, with the
  sign folded into the sine table), with angles computed once for all layers in fp32;
* with T = 1 the head split is a reshape, not a transpose.

The buffers are separate inputs per layer so the engine can bind views of one preallocated
array: a stacked (L, …) input would be split, i.e. copied, inside the graph on every step.
The exporter's parity check runs both graphs against the PyTorch model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ostinato.exporter.runtime import ECHO_INPUT, PLACE_INPUT, PREV_INPUT
from ostinato.model.network import UNKNOWN_FOLLOWER, Decoder

OUTPUTS = ("logits", "new_k", "new_v")


def input_names(n_layer: int, previous_token: bool = False, in_bar: bool = False,
                echo: bool = False) -> list[str]:  # fmt: skip
    return [
        "tokens",
        "positions",
        "attn_mask",
        *(f"past_k_{i}" for i in range(n_layer)),
        *(f"past_v_{i}" for i in range(n_layer)),
        *([PREV_INPUT] if previous_token else []),
        *([PLACE_INPUT] if in_bar else []),
        *([ECHO_INPUT] if echo else []),
    ]


class StepGraph(nn.Module):
    def __init__(self, model: Decoder) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, tokens, positions, attn_mask, past_k: list, past_v: list, prev=None,
                places=None, echo=None):  # fmt: skip
        logits, new_k, new_v = self.model(tokens, positions, past_k, past_v, attn_mask, prev,
                                          places, echo)  # fmt: skip
        return logits[:, -1], new_k, new_v


class DecodeGraph(nn.Module):
    """One token over the KV window: the same function as :class:`StepGraph` at T = 1."""

    inv_freq: torch.Tensor  # buffers (register_buffer)
    sign: torch.Tensor
    in_bar: torch.Tensor

    def __init__(self, model: Decoder) -> None:
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        C, D = cfg.d_model, cfg.head_dim
        self.n_head, self.head_dim, self.d_model = cfg.n_head, D, C
        half = D // 2
        within = torch.arange(2 * C) % D  # column → place inside its head, queries then keys
        inv_freq = model.inv_freq.float()[within % half]
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # rotate_half(x) = (-x2, x1): the halves are swapped in the graph, the sign lives here.
        self.register_buffer("sign", torch.where(within < half, -1.0, 1.0), persistent=False)
        # the columns that turn with the place in the bar (bar_token), the others with position
        self.register_buffer("in_bar", model.bar_pairs[within % half], persistent=False)
        scale = 1.0 / math.sqrt(D)
        weights = []
        for block in model.layers():
            w = block.attn.qkv.weight.detach().clone()
            w[:C] *= scale
            weights.append(nn.Parameter(w.t().contiguous(), requires_grad=False))
        self.qkv = nn.ParameterList(weights)
        self.copy_qk = None
        if model.copy is not None:  # the copy head's queries and keys, as the layers'
            w = model.copy.qk.weight.detach().clone()
            w[:C] *= scale
            self.copy_qk = nn.Parameter(w.t().contiguous(), requires_grad=False)

    def forward(self, tokens, positions, attn_mask, past_k: list, past_v: list, prev=None,
                places=None, echo=None):  # fmt: skip
        m, H, D, C = self.model, self.n_head, self.head_dim, self.d_model
        x = m.embed(tokens)  # (1, 1, C)
        if m.prev_embed is not None:
            x = x + m.prev_embed(prev)
        if m.echo_embed is not None:
            x = x + m.echo_embed(echo)
        angles = positions.float().unsqueeze(-1) * self.inv_freq  # (1, 1, 2C), fp32
        if places is not None:
            angles = torch.where(self.in_bar, places.float().unsqueeze(-1) * self.inv_freq, angles)
        cos = angles.cos().to(x.dtype)
        sin = (angles.sin() * self.sign).to(x.dtype)
        ks, vs = [], []
        for i, block in enumerate(m.layers()):
            qk, v = (block.ln1(x) @ self.qkv[i]).split([2 * C, C], dim=-1)
            swapped = qk.view(2 * H, 2, D // 2).flip(1).reshape(1, 1, 2 * C)
            q, k = (qk * cos + swapped * sin).view(2, H, 1, D).split(1, dim=0)
            v = v.view(1, H, 1, D)
            scores = torch.cat((q @ past_k[i].transpose(-2, -1), q @ k.transpose(-2, -1)), -1)
            weights = (scores + attn_mask).softmax(-1)
            y = weights[..., :-1] @ past_v[i] + weights[..., -1:] * v
            x = x + block.attn.proj(y.view(1, 1, C))
            x = x + block.mlp(block.ln2(x))
            ks.append(k)
            vs.append(v)
        h = m.ln_f(x)
        logits = m.head(h).view(1, -1)
        if m.copy is not None and self.copy_qk is not None:
            n = len(ks)
            qk = h @ self.copy_qk
            swapped = qk.view(2 * H, 2, D // 2).flip(1).reshape(1, 1, 2 * C)
            q, k = (qk * cos + swapped * sin).view(2, H, 1, D).split(1, dim=0)
            # the slots before this token, each read as the token that followed it; its own
            # follower is not known yet, so its own key is not read; a_∅ stays with the model
            scores = q @ past_k[n].transpose(-2, -1) + attn_mask[..., :-1]
            null = m.copy.null.to(scores.dtype)
            weights = torch.cat((scores, null), -1).softmax(-1).mean(1).view(1, -1)  # (1, S+1)
            ids = past_v[n][0, 0, :, 0]
            index = ids.round().long().clamp(0, logits.shape[-1] - 1).view(1, -1)
            slots = weights[:, :-1].to(logits.dtype)
            copied = torch.zeros_like(logits).scatter_add(1, index, slots)
            g = torch.sigmoid(m.copy.gate(h).float()).view(1, 1)
            kept = 1 - g + g * weights[:, -1:].float()
            mixed = kept * logits.float().softmax(-1) + g * copied.float()
            logits = mixed.clamp_min(1e-30).log().to(h.dtype)
            ks.append(k)
            v = torch.cat((torch.full((1, H, 1, 1), float(UNKNOWN_FOLLOWER), dtype=k.dtype),
                           torch.zeros(1, H, 1, D - 1, dtype=k.dtype)), dim=-1)  # fmt: skip
            vs.append(v)
        return logits, torch.stack(ks), torch.stack(vs)


def example_inputs(model: Decoder, new: int, past: int, dtype=torch.float32):
    """Inputs of the graph's shapes: ``new`` tokens after a buffer of ``past`` slots, all
    slots visible (a plain causal continuation)."""
    cfg = model.config
    tokens = torch.randint(0, cfg.vocab_size, (1, new))
    positions = torch.arange(past, past + new).unsqueeze(0)
    kv_shape = (1, cfg.n_head, past, cfg.head_dim)
    past_k = [torch.randn(kv_shape, dtype=dtype) * 0.5 for _ in range(cfg.cache_layers)]
    past_v = [torch.randn(kv_shape, dtype=dtype) * 0.5 for _ in range(cfg.cache_layers)]
    if cfg.copy_head:  # the copy head's "values" are its slots' token ids
        ids = torch.randint(0, cfg.vocab_size, (1, 1, past, 1)).to(dtype)
        past_v[-1] = torch.cat((ids.expand(1, cfg.n_head, past, 1),
                                torch.zeros(1, cfg.n_head, past, cfg.head_dim - 1, dtype=dtype)),
                               dim=-1)  # fmt: skip
    allowed = torch.ones(new, past + new, dtype=torch.bool).tril(past)
    mask = torch.zeros(1, 1, new, past + new, dtype=dtype).masked_fill(~allowed, float("-inf"))
    extra: list[torch.Tensor | None] = []
    if cfg.previous_token:
        extra.append(torch.randint(0, cfg.vocab_size, (1, new)))
    if cfg.bar_token >= 0:
        extra += [None] * (1 - len(extra)) + [torch.randint(0, 64, (1, new))]
    if cfg.bar_echo:
        extra.append(torch.randint(0, cfg.vocab_size, (1, new)))
    return (tokens, positions, mask, past_k, past_v, *extra)
