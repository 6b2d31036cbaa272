"""Bars of the model's own in its training windows: what it hears when it plays on alone.

Trained on real music only, the model is always judged on the next token with the song's
real bars before it. Played on alone (the daemon with nothing to copy, ``eval``'s free model),
every bar after the first follows bars it played itself, and a bar it got a little wrong (a
riff's note played twice, a hat too many) is then copied and made worse: its drums get
denser, a riff turns into one note, where fed the real bars it chose them well.

``ostinato train --own-bars RATE`` shows it that case. In that share of a batch's windows,
the model being trained plays one or two bars in a row itself, at the daemon's temperature
(:data:`OWN_TEMPERATURE`), under the grammar with the real bar's meter and header (the
instruments the session asks for), in place of the real ones; then the window goes on with
the song's real bars. The bars it played are not targets (nothing to learn from its own
choices); the real bars after them are, so it learns to come back to the song after its own
bars, as the free model must (scheduled sampling, a bar at a time rather than a token).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ostinato.model.grammar import Grammar, GrammarConfig
from ostinato.model.sampling import Sampler, SamplingSettings
from ostinato.model.tokens import TokenType, Vocab, bar_programs, context_meter

#: The daemon's default temperature: the bars the model plays on its own are drawn at it.
OWN_TEMPERATURE = 0.2
#: The share of a window before the first bar the model plays (the bars it hears first; a
#: quarter of 1,024 tokens is 3–8 bars of a band) …
CONTEXT_SHARE = 4
#: … and the share at least after the bars it plays (the real bars it learns from).
ROOM_SHARE = 16
#: The most bars it plays in a row in one window.
MAX_OWN = 2
#: A bar it plays may be at most this many times as long as the real one (and this many
#: tokens more) before it is given up (the window keeps its real bars).
LENGTH_SLACK, LENGTH_EXTRA = 3, 32


def bar_spans(vocab: Vocab, ids: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each whole bar of a window whose notes it may replace: from its Bar
    to the next Bar, with a note (a Position) and no file boundary in it, a
    1/:data:`CONTEXT_SHARE` of the window in and 1/:data:`ROOM_SHARE` before its end."""
    starts = np.flatnonzero(ids == vocab.bar_id)
    types = vocab.types[ids]
    spans = []
    for s, e in itertools.pairwise(starts):
        if s < len(ids) // CONTEXT_SHARE or e > len(ids) - len(ids) // ROOM_SHARE:
            continue
        kinds = types[s:e]
        if (kinds == TokenType.POSITION).any() and not (
            (kinds == TokenType.BOS) | (kinds == TokenType.EOS) | (kinds == TokenType.PAD)
        ).any():
            spans.append((int(s), int(e)))
    return spans


def bar_config(vocab: Vocab, window: np.ndarray, start: int, end: int) -> GrammarConfig:
    """The grammar of a bar played in place of ``window[start:end]`` (from its Bar on): its
    meter, and the instruments whose notes it holds as its header and the only ones."""
    programs = tuple(bar_programs(vocab, window[start:end])[0])
    return GrammarConfig(
        programs=programs or None,
        meter=context_meter(vocab, window[:end]),
        header=programs if vocab.has_header else None,
    )


def play_bar(
    model, prompt: np.ndarray, vocab: Vocab, config: GrammarConfig, limit: int, sampler: Sampler
) -> np.ndarray | None:
    """The bar the model plays after ``prompt`` (which ends with the bar's ``Bar``): its
    tokens after that Bar, without the next one; None when it runs past ``limit`` tokens."""
    grammar = Grammar(vocab, config)
    grammar.reset(at_bar_start=True)

    def choose(logits: torch.Tensor) -> int | None:
        if grammar.bars_completed >= 1:
            return None
        token = sampler.sample(logits.float().cpu().numpy(), grammar.mask())
        grammar.advance(token)
        return token

    device = next(model.parameters()).device
    try:
        tokens = model.decode(torch.from_numpy(prompt)[None].to(device), choose, limit + 1)
    except ValueError:  # the grammar left no token (it should not): the real bar stays
        return None
    if grammar.bars_completed < 1:
        return None
    return np.asarray(tokens[:-1], dtype=np.int64)  # without the Bar that ends it


def with_own_bars(
    model, batch: torch.Tensor, vocab: Vocab, rate: float, rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``batch`` (B, T + 1) with a share ``rate`` of its windows given bars the model plays
    itself (see the module docstring), and the targets (B, T): the next tokens, PAD where
    the model played them."""
    pad = vocab.pad_id
    rows = batch.detach().cpu().numpy().copy()
    targets = rows[:, 1:].copy()
    chosen = np.flatnonzero(rng.random(len(rows)) < rate)
    if len(chosen) == 0:
        return batch, torch.from_numpy(targets).to(batch.device)
    sampler = Sampler(SamplingSettings(temperature=OWN_TEMPERATURE), vocab.size,
                      seed=int(rng.integers(2**63)))  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        for r in chosen:
            ids = rows[r]
            spans = bar_spans(vocab, ids)
            if not spans:
                continue
            first = int(rng.integers(len(spans)))
            count = int(rng.integers(1, MAX_OWN + 1))
            new, played = ids[: spans[first][0]], []  # tokens before, spans of own tokens
            end = spans[first][0]
            for s, e in spans[first : first + count]:
                if s != end:  # the next whole bar is not the next bar: stop there
                    break
                prompt = np.concatenate([new, ids[s : s + 1]])
                room = len(ids) - len(ids) // ROOM_SHARE - len(prompt)  # real bars after it
                limit = min(LENGTH_SLACK * (e - s) + LENGTH_EXTRA, room)
                if limit < 1:
                    break
                bar = play_bar(model, prompt, vocab, bar_config(vocab, ids, s, e), limit, sampler)
                if bar is None:
                    break
                played.append((len(prompt), len(prompt) + len(bar)))
                new, end = np.concatenate([prompt, bar]), e
            if not played:
                continue
            row = np.concatenate([new, ids[end:]])[: len(ids)]
            row = np.pad(row, (0, len(ids) - len(row)), constant_values=pad)
            target = row[1:].copy()
            for a, b in played:
                target[a - 1 : b - 1] = pad  # the tokens a..b-1 it played are not targets
            rows[r], targets[r] = row, target
    finally:
        model.train(was_training)
    return torch.from_numpy(rows).to(batch.device), torch.from_numpy(targets).to(batch.device)
