"""``ostinato eval MODEL DATA_DIR``: how well the shipped model predicts and continues music.

(a) Negative log-likelihood on validation windows, in bits per token and per bar, computed with
    the exported ONNX model through the engine (what musicians run), next to the n-gram's.
(b) Continuation: for held-out 8-bar windows, 4 bars of context → 4 generated bars (default
    settings, grammar masks on the context's instruments), compared with the real next 4 bars:
    pitch-class and onset-position histogram overlap, note-density ratio, in-key ratio (key
    estimated from the context), drum-onset F1, share of bars that decode with miditok, and
    novelty (share of generated bars that are not a copy of a context bar).
    With ``--variation V[,V…]``, the same continuation as ``ostinato continue`` and the
    daemon's continue mode make it (``variation`` 0.3 by default): the model under the copy
    prior that varies the phrase, generated bar ``k`` varying context bar ``k``; one row
    ``model v=V`` each, beside the free model's.
(c) The same for two baselines: repeat the last context bar, and a token n-gram fitted on the
    training split, sampled under the same grammar and settings.

``--mode loop`` (:mod:`ostinato.model.evaluate_loop`) asks the same of the loop mode: one
pass of a loop as context, its next pass generated under the copy prior at several
variations, with the same metrics and baselines.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine
from ostinato.model.corpus import CorpusSplit
from ostinato.model.grammar import (
    DEFAULT_DENSITY,
    Grammar,
    GrammarConfig,
    heard_bars,
    note_budget,
    note_floor,
)
from ostinato.model.key import key_lock_classes, scale_of
from ostinato.model.ngram import NGramModel
from ostinato.model.sampling import Sampler, SamplingSettings
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    context_meter,
    load_tokenizer,
)

DEFAULT_SETTINGS = SamplingSettings(temperature=1.0, top_p=0.95)
OVERLAP_METRICS = ("pitch_class_overlap", "onset_overlap", "drum_onset_f1")


@dataclass(frozen=True)
class NoteEvent:
    bar: int
    position: int
    program: int
    pitch: int
    velocity: int
    duration: int  # positions


def parse_notes(vocab: Vocab, tokens: np.ndarray) -> list[NoteEvent]:
    """Notes of a REMI+ token sequence; bar 0 starts at the first Bar token."""
    notes = []
    bar, position, program, pitch, velocity = -1, 0, 0, 0, 0
    for token in np.asarray(tokens):
        kind, value = vocab.types[token], int(vocab.values[token])
        if kind == TokenType.BAR:
            bar += 1
        elif kind == TokenType.POSITION:
            position = value
        elif kind == TokenType.PROGRAM:
            program = value
        elif kind in (TokenType.PITCH, TokenType.PITCH_DRUM):
            pitch = value
        elif kind == TokenType.VELOCITY:
            velocity = value
        elif kind == TokenType.DURATION:
            notes.append(NoteEvent(max(bar, 0), position, program, pitch, velocity, value))
    return notes


def estimate_key(notes: list[NoteEvent]) -> frozenset[int] | None:
    """Scale pitch classes of the best-correlating major or minor key (duration-weighted)."""
    hist = np.zeros(12)
    for n in notes:
        if n.program != DRUM_PROGRAM:
            hist[n.pitch % 12] += n.duration
    return scale_of(hist)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())


def bar_decodes(tokenizer, vocab: Vocab, bar: np.ndarray) -> bool:
    """Whether miditok decodes ``bar`` to a score of exactly one note per Duration token."""
    try:
        score = tokenizer.decode([int(t) for t in bar])
    except Exception:  # a bar miditok cannot decode counts as a failure
        return False
    n_notes = sum(len(t.notes) for t in score.tracks)
    return n_notes == int((vocab.types[bar] == TokenType.DURATION).sum())


def continuation_metrics(
    context: list[NoteEvent],
    real: list[NoteEvent],
    generated: list[NoteEvent],
    generated_bars: list[np.ndarray],
    context_bars: list[np.ndarray],
    vocab: Vocab,
    tokenizer,
) -> dict:
    pc = lambda notes: np.bincount(  # noqa: E731
        [n.pitch % 12 for n in notes if n.program != DRUM_PROGRAM], minlength=12
    )
    n_positions = max(64, int((vocab.types == TokenType.POSITION).sum()))
    onsets = lambda notes: np.bincount([n.position for n in notes], minlength=n_positions)  # noqa: E731
    drums = lambda notes: {(n.bar, n.position, n.pitch) for n in notes if n.program == DRUM_PROGRAM}  # noqa: E731
    d_gen, d_real = drums(generated), drums(real)
    if d_gen or d_real:
        tp = len(d_gen & d_real)
        f1 = 2 * tp / (len(d_gen) + len(d_real))
    else:
        f1 = float("nan")
    scale = estimate_key(context)
    pitched = [n for n in generated if n.program != DRUM_PROGRAM]
    in_key = (
        float(np.mean([n.pitch % 12 in scale for n in pitched]))
        if scale is not None and pitched
        else float("nan")
    )
    decoded = sum(bar_decodes(tokenizer, vocab, bar) for bar in generated_bars)
    key = lambda bar: frozenset(  # noqa: E731
        (n.position, n.program, n.pitch) for n in parse_notes(vocab, bar)
    )
    context_keys = {key(b) for b in context_bars}
    novel = [key(b) not in context_keys for b in generated_bars]
    return {
        "pitch_class_overlap": _overlap(pc(generated), pc(real)),
        "onset_overlap": _overlap(onsets(generated), onsets(real)),
        "density_ratio": len(generated) / max(1, len(real)),
        "in_key": in_key,
        "drum_onset_f1": f1,
        "decodes": decoded / max(1, len(generated_bars)),
        "novelty": float(np.mean(novel)) if novel else float("nan"),
    }


def _bars_of(tokens: np.ndarray, bar_id: int) -> list[np.ndarray]:
    starts = np.flatnonzero(tokens == bar_id)
    ends = np.append(starts[1:], len(tokens))
    return [tokens[s:e] for s, e in zip(starts, ends, strict=True)]


def _sample_bars(
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


class Continuer(Protocol):
    """Continues a context by ``bars`` bars (token ids, starting with a Bar). ``references``:
    a bar the copy prior varies for each generated bar (loop mode), ignored by the others."""

    name: str

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray: ...


class ModelContinuer:
    """The model through the engine; with a ``variation``, under the copy prior that varies
    the ``references`` given (see :mod:`ostinato.engine.copy`)."""

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
        floor: float = 0.0,
    ) -> None:
        self.engine, self.settings, self.key_lock = engine, settings, key_lock
        self.floor = floor  # the note floor's share (jam mode's JAM_FLOOR; 0: none)
        self.variation = variation
        self.name = name or self.name
        self.style, self.guidance, self.density = style, guidance, density

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        e = self.engine
        e.reset(self.style)
        e.set_guidance(self.guidance)
        e.feed(context)
        tokens: list[int] = []
        scale = key_lock_classes(e.vocab, context) if self.key_lock else None
        meter = context_meter(e.vocab, context)
        heard = heard_bars(e.vocab, _bars_of(context, e.vocab.bar_id))
        grammar = GrammarConfig(programs=programs, scale_pitch_classes=scale, meter=meter,
                                max_notes=note_budget(heard, programs, self.density),
                                min_notes=note_floor(heard, programs, self.floor))  # fmt: skip
        prior = None
        if self.variation is not None and references is not None:
            prior = CopyPrior(e.vocab, [[bar] for bar in references], self.variation)
        sampler = e.sampler(self.settings, seed)
        list(e.generate(bars, sampler, grammar, tokens_out=tokens, prior=prior))
        head = [e.vocab.bar_id]
        if (
            len(context) >= 2
            and context[-2] == e.vocab.bar_id
            and (e.vocab.types[context[-1]] == TokenType.TIME_SIG)
        ):  # the context's last bar is empty (Bar TimeSig): the engine generated that bar
            head.append(int(context[-1]))
        return np.asarray([*head, *tokens[:-1]], dtype=np.int64)


class NGramContinuer:
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
        config = GrammarConfig(programs=programs, scale_pitch_classes=scale, meter=meter)
        grammar = Grammar(self.vocab, config)
        sampler = Sampler(self.settings, self.vocab.size, seed=seed)
        arr = lambda: np.asarray(hist[-256:], dtype=np.int64)  # noqa: E731
        body = _sample_bars(
            lambda: np.log(self.ngram.distribution(arr()[-8:])), hist.append, grammar, sampler,
            bars, arr,
        )  # fmt: skip
        return np.concatenate(([self.vocab.bar_id], body))


class RepeatContinuer:
    name = "repeat last bar"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(
        self, context: np.ndarray, bars: int, programs, seed: int, references=None
    ) -> np.ndarray:
        last = _bars_of(context, self.vocab.bar_id)[-1]
        return np.concatenate([last] * bars)


def check_corpus(tokenizer, corpus_dir: str | Path) -> None:
    """ValueError unless the corpus was tokenized with ``tokenizer``'s vocabulary (the same
    ids mean the same tokens): a corpus of the legacy language and a model with time
    signatures and styles, say, do not go together."""
    path = Path(corpus_dir) / TOKENIZER_FILE
    if path.is_file() and load_tokenizer(path).vocab != tokenizer.vocab:
        raise ValueError(
            f"the corpus {corpus_dir} was built with another tokenizer than the model's: build "
            "it again with `ostinato data build SRC OUT --tokenizer MODEL/tokenizer.json`"
        )


def nll_windows(split: CorpusSplit, n: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ends = split.file_end_of(split.bars)
    order = rng.permutation(len(split.bars))
    windows = []
    for i in order:
        start = int(split.bars[i])
        if ends[i] - start >= length:
            windows.append(np.asarray(split.tokens[start : start + length], dtype=np.int64))
        if len(windows) == n:
            break
    return windows


def continuation_windows(split: CorpusSplit, bar_id: int, n: int, seed: int):
    """(context bars, real bars) pairs: 4 + 4 consecutive bars of one validation file."""
    rng = np.random.default_rng(seed)
    pairs = []
    for f in rng.permutation(len(split.files)):
        start, length = (int(x) for x in split.files[f])
        tokens = np.asarray(split.tokens[start : start + length], dtype=np.int64)
        bars = _bars_of(tokens, bar_id)
        if len(bars) < 8:
            continue
        s = int(rng.integers(0, len(bars) - 7))
        pairs.append((bars[s : s + 4], bars[s + 4 : s + 8]))
        if len(pairs) == n:
            break
    return pairs


def likelihood(
    engine: Engine,
    split: CorpusSplit,
    ngram: NGramModel | None,
    count: int,
    length: int,
    seed: int,
    progress: bool = True,
) -> dict:
    """Bits per token and per bar of ``count`` windows of ``split``, token by token through
    the engine's decode path (and the n-gram's, when given; its keys are None otherwise)."""
    length = min(length, engine.window - 2)
    model_bits = ngram_bits = 0.0
    n_tokens = n_bars = 0
    for window in tqdm(
        nll_windows(split, count, length, seed), desc="likelihood", disable=not progress
    ):
        engine.reset()
        for i, token in enumerate(window):
            logits = engine.last_logits.astype(np.float64)
            log_z = logits.max() + math.log(np.exp(logits - logits.max()).sum())
            model_bits += (log_z - logits[token]) / math.log(2)
            if ngram is not None:
                ngram_bits += -math.log2(ngram.distribution(window[max(0, i - 8) : i])[token])
            engine.feed([int(token)])
        n_tokens += len(window)
        n_bars += int((window == engine.vocab.bar_id).sum())
    has_ngram = ngram is not None
    return {
        "tokens": n_tokens,
        "bars": n_bars,
        "model_bits_per_token": model_bits / max(1, n_tokens),
        "ngram_bits_per_token": ngram_bits / max(1, n_tokens) if has_ngram else None,
        "model_bits_per_bar": model_bits / max(1, n_bars),
        "ngram_bits_per_bar": ngram_bits / max(1, n_bars) if has_ngram else None,
        "ngram_order": ngram.order if ngram is not None else None,
    }


def score_continuations(
    continuers: Sequence[Continuer],
    pairs: Sequence[tuple[list[np.ndarray], list[np.ndarray]]],
    vocab: Vocab,
    tokenizer,
    seed: int,
    progress: bool = True,
    desc: str = "continuation",
    references: Sequence[list[np.ndarray]] | None = None,
) -> dict[str, dict]:
    """Each continuer's mean metrics over the (context bars, real bars) pairs; it generates
    as many bars as the real continuation has, with seed ``seed + window index`` (and the
    window's ``references`` for the copy prior, when given)."""
    rows: dict[str, list[dict]] = {c.name: [] for c in continuers}
    for k, (context_bars, real_bars) in enumerate(tqdm(pairs, desc=desc, disable=not progress)):
        refs = references[k] if references is not None else None
        context = np.concatenate(context_bars)
        real = np.concatenate(real_bars)
        context_notes = parse_notes(vocab, context)
        programs = tuple(sorted({n.program for n in context_notes})) or (DRUM_PROGRAM,)
        for c in continuers:
            generated = c(context, len(real_bars), programs, seed + k, refs)
            rows[c.name].append(
                continuation_metrics(
                    context_notes, parse_notes(vocab, real), parse_notes(vocab, generated),
                    _bars_of(generated, vocab.bar_id), context_bars, vocab, tokenizer,
                )
            )  # fmt: skip
    return {name: summarize(metrics) for name, metrics in rows.items()}


def variation_name(variation: float) -> str:
    return f"{variation:.1f}" if round(variation, 1) == variation else f"{variation:g}"


def summarize(metrics: list[dict]) -> dict:
    """Mean of each metric over windows (NaN ones left out) and the mean of the overlaps."""
    keys = metrics[0].keys() if metrics else []
    with warnings.catch_warnings():  # a metric NaN in every window stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = {k: float(np.nanmean([m[k] for m in metrics])) for k in keys}
        summary["overlap_mean"] = float(
            np.nanmean([summary.get(k, np.nan) for k in OVERLAP_METRICS])
        )
    return summary


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    windows: int = 48,
    nll_windows_count: int = 32,
    nll_length: int = 384,
    ngram_order: int = 4,
    seed: int = 0,
    settings: SamplingSettings = DEFAULT_SETTINGS,
    key_lock: bool = True,
    progress: bool = True,
    style: str | None = None,
    guidance: float = 0.0,
    split: str = "validation",
    density: float = DEFAULT_DENSITY,
    variations: Sequence[float] = (),
) -> dict:
    """The report of (a), (b) and (c) above, on ``split`` of the corpus (``validation``, or
    ``heldout``: what ``ostinato data build --hold-out`` kept out of training and validation).
    ``style``/``guidance``: what the model is asked for in every window (models with style
    tokens; see :class:`Engine`)."""
    engine = Engine(model_dir, device="cpu")
    engine.set_style(style)
    vocab, tokenizer = engine.vocab, engine.tokenizer
    check_corpus(tokenizer, data_dir)
    train = CorpusSplit.load(data_dir, "train")
    val = CorpusSplit.load(data_dir, split)
    if len(val.files) == 0:
        raise ValueError(f"the corpus {data_dir} has no {split} split")
    ngram = NGramModel(ngram_order, vocab.size).fit(train.tokens, train.files[:, 0])

    # (a) likelihood, token by token through the engine's decode path
    lk = likelihood(engine, val, ngram, nll_windows_count, nll_length, seed, progress)

    # (b, c) continuation
    continuers: list[Continuer] = [
        ModelContinuer(engine, settings, key_lock, style=style, guidance=guidance, density=density),
        NGramContinuer(ngram, vocab, settings, key_lock),
        RepeatContinuer(vocab),
    ]
    for v in dict.fromkeys(float(v) for v in variations):  # as continue mode answers
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"variation must be in [0, 1], got {v}")
        continuers.insert(-2, ModelContinuer(engine, settings, key_lock, variation=v,
                                             name=f"model v={variation_name(v)}", style=style,
                                             guidance=guidance, density=density))  # fmt: skip
    pairs = continuation_windows(val, vocab.bar_id, windows, seed)
    if not pairs:
        raise ValueError(f"the {split} split has no file of 8 bars or more to continue")
    summary = score_continuations(continuers, pairs, vocab, tokenizer, seed, progress,
                                  references=[context for context, _ in pairs])  # fmt: skip
    return {
        "mode": "continuation",
        "split": split,
        "model": str(model_dir),
        "data": str(data_dir),
        "windows": len(pairs),
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "key_lock": key_lock,
            "density": density,
        },
        "likelihood": lk,
        "continuation": summary,
    }


TABLE_COLUMNS = (
    ("pitch_class_overlap", "pc-ovl"),
    ("onset_overlap", "onset-ovl"),
    ("drum_onset_f1", "drum-F1"),
    ("overlap_mean", "ovl-mean"),
    ("density_ratio", "density"),
    ("in_key", "in-key"),
    ("decodes", "decodes"),
    ("novelty", "novelty"),
)


def format_table(report: dict) -> str:
    lk = report["likelihood"]
    loop = report.get("mode") == "loop"
    where = (
        f"likelihood on the {report['likelihood_data']}"
        if loop
        else f"{report.get('split', 'validation')} likelihood"
    )
    lines = [
        f"{where} ({lk['tokens']} tokens, {lk['bars']} bars):",
        f"  model   {lk['model_bits_per_token']:.3f} bits/token  "
        f"{lk['model_bits_per_bar']:.1f} bits/bar",
    ]
    if lk.get("ngram_bits_per_token") is not None:
        lines.append(
            f"  {lk['ngram_order']}-gram  {lk['ngram_bits_per_token']:.3f} bits/token  "
            f"{lk['ngram_bits_per_bar']:.1f} bits/bar"
        )
    if loop:
        lengths = ", ".join(f"{k}: {v}" for k, v in report["loop_bars"].items())
        lines.append(
            f"loop continuation of {report['windows']} windows (one pass of the loop → the "
            f"next pass; loop lengths in bars {lengths}); model = copy prior, v = variation:"
        )
        rows = {f"model v={v}": m for v, m in report["variations"].items()}
        rows |= {k: m for k, m in report["continuation"].items() if k != "model"}
    else:
        lines.append(f"continuation of {report['windows']} held-out windows (4 bars → 4 bars):")
        rows = report["continuation"]
    lines.append(f"  {'':16s}" + "".join(f"{head:>10s}" for _, head in TABLE_COLUMNS))
    for name, m in rows.items():
        lines.append(f"  {name:16s}" + "".join(f"{m[key]:10.3f}" for key, _ in TABLE_COLUMNS))
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)
