"""What continues a context in an evaluation: the model as each of the daemon's modes plays
it, and the baselines it has to beat.

* :class:`ModelContinuer`: the model through the engine, bar by bar as the daemon generates
  them, each bar under the grammar of its mode (:mod:`ostinato.engine.accompany` says what a
  bar's header and its parts' limits are):

  - ``continue``: the header names the instruments asked for (the context's), every bar;
    with a ``variation``, generated bar ``k`` varies reference ``k`` under the copy prior
    (continue mode's answer varies the phrase);
  - ``loop``: as continue, but each bar's header follows the reference it varies (a part
    that plays only in the loop's third bar keeps doing so);
  - ``jam``: as continue, plus jam mode's note floor and each part's own floor and budget
    from the newest bars of the context, the bars already generated included.

* :class:`NGramContinuer`: a token n-gram sampled under the same grammar and header.
* :class:`RepeatContinuer`: the context's last bar, again and again.
* :class:`RepeatPhraseContinuer`: the context's last ``N`` bars played again, ``N`` the bars
  continued (``context bars 1–4 again as 5–8``): the phrase as continue mode answers it, at
  variation 0. What the model's own choices must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ostinato.engine.accompany import bar_header, jam_parts, programs_held
from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine
from ostinato.model.grammar import (
    DEFAULT_DENSITY,
    JAM_FLOOR,
    Grammar,
    GrammarConfig,
    heard_bars,
    note_budget,
    note_floor,
    played_ranges,
)
from ostinato.model.key import key_lock_classes
from ostinato.model.ngram import NGramModel
from ostinato.model.sampling import Sampler, SamplingSettings
from ostinato.model.tokens import TokenType, Vocab, context_meter, split_bars

MODES = ("continue", "loop", "jam")


class Continuer(Protocol):
    """Continues a context by ``bars`` bars (token ids, starting with a Bar). ``references``:
    a bar the copy prior varies for each generated bar, ignored by the baselines."""

    name: str

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray: ...


def sample_bars(
    next_distribution: Callable[[], np.ndarray],
    push: Callable[[int], None],
    grammar: Grammar,
    sampler: Sampler,
    bars: int,
    history: Callable[[], np.ndarray],
) -> np.ndarray:
    """Sample ``bars`` bars under the grammar (starting after a Bar token)."""
    grammar.reset(at_bar_start=True)
    out: list[int] = []
    while grammar.bars_completed < bars:
        token = sampler.sample(next_distribution(), grammar.mask(), history())
        grammar.advance(token)
        push(token)
        out.append(token)
    return np.asarray(out[:-1], dtype=np.int64)  # without the closing Bar


class ModelContinuer:
    """The model through the engine, as the daemon's ``mode`` plays (see the module
    docstring); with a ``variation``, under the copy prior that varies the ``references``
    given (see :mod:`ostinato.engine.copy`)."""

    name = "model"

    def __init__(
        self,
        engine: Engine,
        settings: SamplingSettings,
        key_lock: bool,
        variation: float | None = None,
        name: str | None = None,
        style: str | None = None,
        guidance: float = 0.0,
        density: float = DEFAULT_DENSITY,
        mode: str = "continue",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.engine, self.settings, self.key_lock = engine, settings, key_lock
        self.mode = mode
        self.variation = variation
        self.name = name or self.name
        self.style, self.guidance, self.density = style, guidance, density

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        e = self.engine
        vocab = e.vocab
        e.reset(self.style)
        e.set_guidance(self.guidance)
        e.feed(context)
        scale = key_lock_classes(vocab, context) if self.key_lock else None
        meter = context_meter(vocab, context)
        ranges = played_ranges(vocab, context)
        phrase = None if references is None else programs_held(vocab, references)
        heard = heard_bars(vocab, split_bars(context, vocab.bar_id))
        jam = self.mode == "jam" and self.density != 0  # density 0: no limits at all
        budget = note_budget(heard, programs, self.density)
        floor = note_floor(heard, programs, JAM_FLOOR) if jam else None
        sampler = e.sampler(self.settings, seed)
        tokens: list[int] = []
        for k in range(bars):  # bar by bar, as the daemon: each bar's header and limits
            ref = [references[k]] if references is not None and k < len(references) else []
            config = GrammarConfig(
                programs=programs, scale_pitch_classes=scale, meter=meter, max_notes=budget,
                min_notes=floor, pitch_ranges=ranges,
                header=bar_header(vocab, programs, ref if self.mode != "jam" else (), phrase),
                parts=jam_parts(vocab, e.context_tokens(), programs, self.density) if jam else (),
            )  # fmt: skip
            prior = None
            if self.variation is not None and ref:
                prior = CopyPrior(vocab, [ref], self.variation)
            list(e.generate(1, sampler, config, tokens_out=tokens, prior=prior))
        head = [vocab.bar_id]
        if (
            len(context) >= 2
            and context[-2] == vocab.bar_id
            and (vocab.types[context[-1]] == TokenType.TIME_SIG)
        ):  # the context's last bar is empty (Bar TimeSig): the engine generated that bar
            head.append(int(context[-1]))
        return np.asarray([*head, *tokens[:-1]], dtype=np.int64)


class NGramContinuer:
    """A token n-gram sampled under the grammar, with the header the model gets."""

    name = "n-gram"

    def __init__(
        self, ngram: NGramModel, vocab: Vocab, settings: SamplingSettings, key_lock: bool
    ) -> None:
        self.ngram, self.vocab, self.settings, self.key_lock = ngram, vocab, settings, key_lock

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        hist = [*context.tolist(), self.vocab.bar_id]
        scale = key_lock_classes(self.vocab, context) if self.key_lock else None
        meter = context_meter(self.vocab, context)
        config = GrammarConfig(programs=programs, scale_pitch_classes=scale, meter=meter,
                               pitch_ranges=played_ranges(self.vocab, context),
                               header=bar_header(self.vocab, programs))  # fmt: skip
        grammar = Grammar(self.vocab, config)
        sampler = Sampler(self.settings, self.vocab.size, seed=seed)
        arr = lambda: np.asarray(hist[-256:], dtype=np.int64)  # noqa: E731
        body = sample_bars(
            lambda: np.log(self.ngram.distribution(arr()[-8:])), hist.append, grammar, sampler,
            bars, arr,
        )  # fmt: skip
        return np.concatenate(([self.vocab.bar_id], body))


class RepeatContinuer:
    """The context's last bar, again and again."""

    name = "repeat last bar"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        last = split_bars(context, self.vocab.bar_id)[-1]
        return np.concatenate([last] * bars)


class RepeatPhraseContinuer:
    """The context's last ``bars`` bars played again (all of it, repeated, when it is
    shorter): the phrase as continue mode answers it, at variation 0."""

    name = "repeat phrase"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        phrase = split_bars(context, self.vocab.bar_id)[-bars:]
        return np.concatenate([phrase[k % len(phrase)] for k in range(bars)])
