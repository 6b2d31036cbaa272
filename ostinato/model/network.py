"""The decoder: pre-LayerNorm transformer with rotary positions, tied embeddings and an
explicit KV cache.

``forward(tokens, positions, past_k, past_v, attn_mask)`` is the one entry point used by
training, PyTorch generation and the ONNX exporter:

* training: ``forward(tokens)`` — causal attention over the window;
* prefill / extend: pass the cache of what came before and the new tokens' positions;
* decode over a fixed buffer: ``past_k/past_v`` are the whole preallocated window and
  ``attn_mask`` (additive) hides the empty slots. Keys are rotated by their absolute position
  when they are computed, so a slot's place in the buffer does not matter and the oldest
  slots can be overwritten without recomputing the rest (a sliding window under RoPE).

With ``previous_token`` each token enters as its own embedding plus a second, learned embedding
of the token before it (``prev_tokens``; PAD where that token is not known: a window's first).
That is what copying asks of attention: a key that says "I came after token x" is found by the
query of the token x just played, and the value carries what followed x last time. Without it
the first layer has to learn a previous-token head before any head can copy, which a small model
trained for hours on a CPU did not do (the model card's "hearing a bar come back"). It starts at
zero, so a model started from one without it (``train --init``) is the same function at step 0.

With ``bar_echo`` (and places in the bar) a third embedding is summed in: each token's echo,
the token that followed the same place in the bar before (:class:`ostinato.model.tokens.BarEcho`,
``echo_tokens``). Copying the bar before is then the model's plain default, one input away,
and what it learns is when to leave it; it also starts at zero.

With ``copy_head`` a pointer over the context is mixed into the output (:class:`CopyHead`): the
model can play again what followed a moment like the present one through one attention,
rather than carry its identity through every layer to the output embedding. The model then
returns log-probabilities in place of logits (the same to softmax, sampling and the loss).

The cache is stacked over layers: ``(n_layer, B, n_head, S, head_dim)`` (one more entry with a
copy head: its keys, and as each slot's first value the id of the token that followed it,
which the caller writes when it feeds that token, :func:`note_follower`); the model returns
only the new entries ``(n_layer, B, n_head, T, head_dim)`` and the caller stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ostinato.model.tokens import NO_PREVIOUS, BarEcho


@dataclass
class ModelConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    max_seq_len: int = 1024  # training window and the engine's default KV window
    dropout: float = 0.0
    rope_base: float = 10000.0
    # each token's input also holds an embedding of the token before it (see Decoder)
    previous_token: bool = False
    # ≥ 0 (the Bar token's id): every other rotary pair of each head turns with the token's
    # place in its bar (tokens since the last Bar) instead of its place in the sequence
    bar_token: int = -1
    # ≥ 0 (with bar_token): the first Position token's id, ``positions`` of them: the place is
    # counted in music (1 + the last Position's value) instead of in tokens (PlaceRule)
    position_token: int = -1
    positions: int = 0
    place_stride: int = 1  # … each onset's place that many apart, its tokens counted within
    # (with bar_token) each token's input also holds an embedding of its echo (see Decoder)
    bar_echo: bool = False
    # a pointer over the context mixed into the output (see CopyHead); its keys take one more
    # entry of the cache (index n_layer), its values there hold the id of each slot's follower
    copy_head: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} not divisible by n_head {self.n_head}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.bar_echo and self.bar_token < 0:
            raise ValueError("bar_echo needs places in the bar (bar_token)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def cache_layers(self) -> int:
        """Entries of the stacked KV cache: one per layer, one more for the copy head."""
        return self.n_layer + int(self.copy_head)

    def to_dict(self) -> dict:
        return asdict(self)


#: Named sizes. "compact" is trained on a CPU for the bundled default; "small" is the
#: d=256×4 reference of the latency targets; "base" is the ~25M-parameter one.
SIZES: dict[str, dict] = {
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "d_ff": 256, "max_seq_len": 256},
    "compact": {"n_layer": 4, "n_head": 6, "d_model": 192, "d_ff": 768, "max_seq_len": 512},
    "small": {"n_layer": 4, "n_head": 4, "d_model": 256, "d_ff": 1024, "max_seq_len": 1024},
    "base": {"n_layer": 8, "n_head": 8, "d_model": 512, "d_ff": 2048, "max_seq_len": 1024},
}


def config_for(size: str, vocab_size: int, **overrides) -> ModelConfig:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    return ModelConfig(vocab_size=vocab_size, **{**SIZES[size], **overrides})


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the last dim, halves layout.

    x: (B, H, T, D); cos, sin: (B, 1, T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def bar_offsets(
    tokens: torch.Tensor,
    bar_token: int,
    start: torch.Tensor | int = 0,
    position_token: int = -1,
    positions: int = 0,
    stride: int = 1,
) -> torch.Tensor:
    """(B, T) → each token's place in its bar (:class:`ostinato.model.tokens.PlaceRule`): in
    tokens, 0 at a Bar token, counting up from there; with ``position_token`` ≥ 0, in music:
    0 from a Bar, 1 + the position from a Position token on. ``start``: the place of the
    token before the first (a window without a Bar counts from it)."""
    T = tokens.shape[1]
    index = torch.arange(T, device=tokens.device).expand_as(tokens)
    before = torch.as_tensor(start, device=tokens.device).reshape(-1, 1)
    if position_token < 0:
        marks = tokens == bar_token
        last = torch.where(marks, index, torch.full_like(index, -1)).cummax(1).values
        return torch.where(last >= 0, index - last, before + 1 + index)
    value = tokens - position_token
    at_position = (value >= 0) & (value < positions)
    marks = at_position | (tokens == bar_token)
    last = torch.where(marks, index, torch.full_like(index, -1)).cummax(1).values
    base = torch.where(at_position, (value + 1) * stride, torch.zeros_like(value))
    marked = base.gather(1, last.clamp(min=0)) + (index - last).clamp(max=stride - 1)
    carried = before - before % stride + (before % stride + 1 + index).clamp(max=stride - 1)
    return torch.where(last >= 0, marked, carried)


def places_of(config: ModelConfig, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) → the places in the bar a model of ``config`` is given (see bar_offsets)."""
    return bar_offsets(tokens, config.bar_token, 0, config.position_token, config.positions,
                       config.place_stride)  # fmt: skip


def next_places(config: ModelConfig, place: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """The places (B, 1) of the tokens (B, 1) after ones at ``place`` (see bar_offsets)."""
    if config.position_token < 0:
        return torch.where(token == config.bar_token, 0, place + 1)
    value = token - config.position_token
    at_position = (value >= 0) & (value < config.positions)
    S = config.place_stride
    within = torch.where(place % S < S - 1, place + 1, place)
    return torch.where(
        token == config.bar_token, 0, torch.where(at_position, (value + 1) * S, within)
    )


def previous_tokens(tokens: torch.Tensor, first: int = NO_PREVIOUS) -> torch.Tensor:
    """(B, T) → the token before each: ``first`` (the token before the window), then the
    window's own tokens shifted by one."""
    return torch.cat((torch.full_like(tokens[:, :1], first), tokens[:, :-1]), dim=1)


def echo_tokens(tokens: torch.Tensor, places: torch.Tensor, bar_token: int) -> torch.Tensor:
    """(B, T) tokens at their places → each one's echo: the token after the first one at the
    same place in the bar before, NO_PREVIOUS where there is none (the tokens before the
    window's first Bar count as a bar). The batch form of :class:`ostinato.model.tokens.BarEcho`,
    in O(B·T) memory: each token's (bar, place) key sorted, the bar before's looked up."""
    B, T = tokens.shape
    if T == 0:
        return tokens.clone()
    bars = (tokens == bar_token).long().cumsum(1)  # 0 before the first Bar
    width = int(places.max()) + 1
    key = bars * width + places
    index = torch.arange(T, device=tokens.device).expand(B, T)
    order = torch.argsort(key * T + index, dim=1)  # by key, the first of each key first
    ranked = key.gather(1, order)
    wanted = (bars - 1) * width + places
    at = torch.searchsorted(ranked, wanted).clamp(max=T - 1)
    found = (bars > 0) & (ranked.gather(1, at) == wanted)
    after = torch.cat((tokens[:, 1:], torch.full_like(tokens[:, :1], NO_PREVIOUS)), dim=1)
    return torch.where(found, after.gather(1, order.gather(1, at)), NO_PREVIOUS)


def weights_over_cache(
    q: torch.Tensor, k: torch.Tensor, past_k: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention weights (B, H, T, S + T) of new queries over the cache's keys then the new
    ones, without copying the cache: the scores are concatenated (T × S+T), not the keys
    (S × D per head and layer)."""
    scores = torch.cat((q @ past_k.transpose(-2, -1), q @ k.transpose(-2, -1)), dim=-1)
    scores = scores * (1.0 / math.sqrt(q.shape[-1]))
    if attn_mask is not None:
        scores = scores + attn_mask
    return scores.softmax(dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past_k: torch.Tensor | None,
        past_v: torch.Tensor | None,
        attn_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if past_k is None or past_v is None:
            dropout = self.dropout if self.training else 0.0
            # is_causal is a plain Python bool, so torch.export keeps it static.
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=attn_mask is None
            )
        else:
            weights = weights_over_cache(q, k, past_k, attn_mask)  # (B, H, T, S + T)
            w_past, w_new = weights.split([past_k.shape[2], T], dim=-1)
            y = w_past @ past_v + w_new @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), k, v


#: The copy head's gate starts at sigmoid(-3) = 0.047: a small share of the pointer mixed in,
#: enough for its gradient to move it (a gate at zero would learn nothing).
COPY_GATE_START = -3.0

#: The copy head's cache value of a slot whose follower is not known yet (the last token's):
#: overwritten by :func:`note_follower` before the next token is fed.
UNKNOWN_FOLLOWER = 0


def gather_by_id(weights: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, T, S) attention weights over slots holding (B, S) token ids → (B, H, T, size):
    each id's summed weight (a scatter-add, 10× faster than a product with one-hot rows in a
    decode step). An id outside [0, size) — an empty slot, its weight zero — is clamped."""
    index = ids.clamp(0, size - 1)[:, None, None, :].expand_as(weights)
    out = torch.zeros(*weights.shape[:-1], size, dtype=weights.dtype, device=weights.device)
    return out.scatter_add(-1, index, weights)


class CopyHead(nn.Module):
    """A pointer over the context mixed into the next-token distribution (a pointer-generator
    network's copy, with an induction head's keys): each head attends from the present token
    to every token before it and reads the token that *followed* that one; the weights, summed
    per token id and averaged over the heads, are a distribution over the vocabulary, and a
    learned gate ``g`` mixes it in:

        p(next) = (1 − g) · p_model + g · (Σ_{j<t} a_j [x_{j+1} = next] + a_∅ · p_model)

    A key is the final hidden state of a token (what the model knew there: the place in the
    bar, the instrument, the notes before), so a head finds the moments like the present one
    and plays what came next then: the next note of a riff heard in an earlier bar, one
    attention away instead of a path through every layer and the output embedding. ``a_∅``, a
    learned score per head, is the weight left with the model where no moment matches (and
    the whole weight at the first token). It returns log-probabilities in place of the logits.

    The cache: this head's keys, and as each slot's "value" the id of the token that followed
    it (first element; zeros after). The last token's follower is not known when its slot is
    written (:data:`UNKNOWN_FOLLOWER`): whoever feeds the next token writes it there first
    (:func:`note_follower`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qk = nn.Linear(cfg.d_model, 2 * cfg.d_model, bias=False)
        self.gate = nn.Linear(cfg.d_model, 1)
        # a_∅'s score, per head, in the shape the scores broadcast to (so that an exported
        # graph keeps it as the named weight ``copy.null``, which reload.py reads back)
        self.null = nn.Parameter(torch.zeros(1, cfg.n_head, 1, 1))

    def reset_gate(self) -> None:
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, COPY_GATE_START)

    def forward(
        self,
        h: torch.Tensor,  # (B, T, C) final hidden states
        logits: torch.Tensor,  # (B, T, V)
        tokens: torch.Tensor,  # (B, T)
        cos: torch.Tensor,
        sin: torch.Tensor,
        past_k: torch.Tensor | None,  # (B, H, S, D)
        past_ids: torch.Tensor | None,  # (B, S) the token that followed each cache slot
        attn_mask: torch.Tensor | None,
        copied_out: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities (B, T, V), and the new keys and "values" (B, H, T, D) to cache
        (each value the follower's id, the last one's unknown). ``copied_out`` receives the
        pointer's weight on each token id (B, T, V; the rest, ``a_∅``, stays with the model),
        for the training's loss on it."""
        B, T, C = h.shape
        V = logits.shape[-1]
        q, k = self.qk(h).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        # Among these tokens, a query reads only those before it: a token's follower is the
        # next one, its own not known yet (nor the last one's, UNKNOWN_FOLLOWER).
        order = torch.arange(T, device=h.device)
        before = torch.where(order[None, :] < order[:, None], 0.0, float("-inf")).to(q.dtype)
        follows = torch.cat((tokens[:, 1:], torch.full_like(tokens[:, :1], UNKNOWN_FOLLOWER)), 1)
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = (q @ k.transpose(-2, -1)) * scale + before
        ids = follows
        if attn_mask is not None:
            scores = scores + attn_mask[..., attn_mask.shape[-1] - T :]
        if past_k is not None and past_ids is not None:
            past = (q @ past_k.transpose(-2, -1)) * scale
            if attn_mask is not None:
                past = past + attn_mask[..., : attn_mask.shape[-1] - T]
            scores = torch.cat((past, scores), dim=-1)
            ids = torch.cat((past_ids.to(tokens.dtype), follows), dim=1)  # (B, S + T)
        null = self.null.expand(B, -1, T, 1).to(scores.dtype)
        weights = torch.cat((scores, null), dim=-1).softmax(-1).float().mean(1)  # (B, T, S+T+1)
        if past_k is None:  # training: one product with the followers' one-hot rows
            copied = weights[..., :-1] @ F.one_hot(ids, V).float()
        else:  # a decode step: a scatter-add, per id, of the slots' weights
            copied = gather_by_id(weights[:, None, :, :-1], ids, V)[:, 0]
        if copied_out is not None:
            copied_out.append(copied)
        g = torch.sigmoid(self.gate(h).float())  # (B, T, 1)
        kept = 1 - g + g * weights[..., -1:]  # the model's own share
        mixed = kept * logits.float().softmax(-1) + g * copied
        values = torch.zeros_like(k)
        values[..., 0] = follows[:, None, :].to(k.dtype)
        return mixed.clamp_min(1e-30).log().to(logits.dtype), k, values


def note_follower(past_v: Any, slot: int, token: int) -> None:
    """Write ``token`` into the copy head's cache entry (the last of ``past_v``, stacked
    ``(L, B, H, S, D)``, torch or numpy) as the follower of ``slot``: done before feeding the
    token after the one in ``slot``, so the pointer can read what followed it."""
    past_v[-1, :, :, slot, 0] = token


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff, bias=False),
            nn.GELU(approximate="tanh"),
            nn.Linear(cfg.d_ff, cfg.d_model, bias=False),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x, cos, sin, past_k, past_v, attn_mask):
        a, k, v = self.attn(self.ln1(x), cos, sin, past_k, past_v, attn_mask)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, k, v


class Decoder(nn.Module):
    inv_freq: torch.Tensor  # a buffer (register_buffer), rebuilt from the config on load
    bar_pairs: torch.Tensor  # a buffer: the rotary pairs that turn with the place in the bar

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.prev_embed = nn.Embedding(cfg.vocab_size, cfg.d_model) if cfg.previous_token else None
        self.echo_embed = nn.Embedding(cfg.vocab_size, cfg.d_model) if cfg.bar_echo else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.copy = CopyHead(cfg) if cfg.copy_head else None
        self.head.weight = self.embed.weight  # tied input/output embeddings
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2) / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        bar_pairs = (torch.arange(cfg.head_dim // 2) % 2 == 1) & (cfg.bar_token >= 0)
        self.register_buffer("bar_pairs", bar_pairs, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        for extra in (self.prev_embed, self.echo_embed):
            if extra is not None:
                nn.init.zeros_(extra.weight)
        if self.copy is not None:
            self.copy.reset_gate()

    def layers(self) -> list[Block]:
        """The blocks, typed (an nn.ModuleList iterates as plain Modules)."""
        return [block for block in self.blocks if isinstance(block, Block)]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,  # (B, T) int64
        positions: torch.Tensor | None = None,  # (B, T) int64 absolute positions
        past_k: torch.Tensor | None = None,  # (L, B, H, S, D)
        past_v: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,  # additive, broadcastable to (B, H, T, S + T)
        prev_tokens: torch.Tensor | None = None,  # (B, T) the token before each (previous_token)
        bar_places: torch.Tensor | None = None,  # (B, T) place in the bar of each (bar_token)
        echoes: torch.Tensor | None = None,  # (B, T) the echo of each (bar_echo)
        copied: list[torch.Tensor] | None = None,  # receives the copy head's pointer (B, T, V)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and the new keys/values (L, B, H, T, D) of these tokens; with the
        copy head, log-probabilities, and one more cache entry (L + 1, see CopyHead)."""
        B, T = tokens.shape
        if positions is None:
            start = 0 if past_k is None else past_k.shape[3]
            positions = torch.arange(start, start + T, device=tokens.device).expand(B, T)
        if past_k is not None and attn_mask is None and T > 1:
            # Extending a cache by several tokens: all of the past, causal among the new.
            S = past_k.shape[3]
            allowed = torch.ones(T, S + T, dtype=torch.bool, device=tokens.device).tril(S)
            attn_mask = torch.zeros(T, S + T, device=tokens.device).masked_fill(
                ~allowed, float("-inf")
            )
        x = self.embed(tokens)
        if self.prev_embed is not None:
            if prev_tokens is None:
                if past_k is not None:
                    raise ValueError("a model with previous_token needs prev_tokens after a cache")
                prev_tokens = previous_tokens(tokens)
            x = x + self.prev_embed(prev_tokens)
        if self.config.bar_token >= 0 and bar_places is None:
            if past_k is not None:
                raise ValueError("a model with bar_token needs bar_places after a cache")
            bar_places = places_of(self.config, tokens)
        if self.echo_embed is not None:
            if echoes is None:
                if past_k is not None:
                    raise ValueError("a model with bar_echo needs echoes after a cache")
                assert bar_places is not None
                echoes = echo_tokens(tokens, bar_places, self.config.bar_token)
            x = x + self.echo_embed(echoes)
        x = self.drop(x)
        # Angles in fp32 even in an fp16 graph: positions past 2048 are not exact in fp16.
        freqs = positions.float()[:, :, None] * self.inv_freq.float()  # (B, T, D/2)
        if bar_places is not None and self.config.bar_token >= 0:
            in_bar = bar_places.float()[:, :, None] * self.inv_freq.float()
            freqs = torch.where(self.bar_pairs, in_bar, freqs)
        cos, sin = freqs.cos()[:, None].to(x.dtype), freqs.sin()[:, None].to(x.dtype)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            pk = None if past_k is None else past_k[i]
            pv = None if past_v is None else past_v[i]
            x, k, v = block(x, cos, sin, pk, pv, attn_mask)
            ks.append(k)
            vs.append(v)
        h = self.ln_f(x)
        logits = self.head(h)
        if self.copy is not None:
            n = self.config.n_layer
            ck = None if past_k is None else past_k[n]
            ids = None if past_v is None else past_v[n][:, 0, :, 0].round().long()
            logits, k, v = self.copy(h, logits, tokens, cos, sin, ck, ids, attn_mask, copied)
            ks.append(k)
            vs.append(v)
        return logits, torch.stack(ks), torch.stack(vs)

    @torch.no_grad()
    def generate_greedy(self, prompt: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy continuation of one prompt (1, T) with the KV cache (parity checks, tests)."""
        out = self.decode(prompt, lambda logits: int(logits.argmax()), steps)
        return torch.tensor([out], dtype=torch.long)

    @torch.no_grad()
    def decode(
        self, prompt: torch.Tensor, choose: Callable[[torch.Tensor], int | None], steps: int
    ) -> list[int]:
        """Continue one prompt (1, T) with the KV cache, at most ``steps`` tokens: ``choose``
        gets each next token's logits (V,) and names the token, or None to stop there."""
        logits, past_k, past_v = self(prompt)
        out: list[int] = []
        position = prompt.shape[1]
        prev = prompt[:, -1:]
        cfg = self.config
        places = places_of(cfg, prompt)
        place = places[:, -1:]
        echo = BarEcho(cfg.bar_token)
        if cfg.bar_echo:
            echo.steps(prompt[0].cpu().numpy(), places[0].cpu().numpy())
        for _ in range(steps):
            chosen = choose(logits[0, -1])
            if chosen is None:
                break
            out.append(chosen)
            if len(out) == steps:
                break
            token = torch.tensor([[chosen]], dtype=torch.long, device=prompt.device)
            pos = torch.full_like(token, position)
            place = next_places(cfg, place, token)
            heard = (
                torch.tensor([[echo.step(chosen, int(place))]], device=prompt.device)
                if cfg.bar_echo
                else None
            )
            if self.copy is not None:
                note_follower(past_v, -1, chosen)
            logits, k, v = self(token, pos, past_k, past_v, prev_tokens=prev, bar_places=place,
                                echoes=heard)  # fmt: skip
            prev = token
            past_k, past_v = torch.cat((past_k, k), 3), torch.cat((past_v, v), 3)
            position += 1
        return out
