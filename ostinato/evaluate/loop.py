"""``ostinato eval MODEL DATA --mode loop``: how well the model varies a loop it plays over.

Loop mode does what the daemon's loop mode does: the context is the loop, the generated bars
are its next pass, each bar decoded under the copy prior (:mod:`ostinato.engine.copy`) that
varies the same bar of the last pass.

* **Loop length** ``L`` of a file: the smallest of 1, 2, 4, 8 bars with which its bars repeat,
  i.e. the mean, over every bar that has one, of the Jaccard similarity between the bar's
  notes and those of the bar ``L`` later is at least 0.75 (notes as onset on the 16th grid,
  program, pitch; two empty bars are alike). None repeats: ``L = 4``.
* **Windows**: one pass of ``P`` bars as context and the next ``P`` bars as the real
  continuation, with ``P = L`` for a loop of 4 or 8 bars and ``P = 4`` (whole repeats) for a
  loop of 1 or 2 bars. No bars before the pass are given. The start bar is drawn at random;
  a file shorter than ``2 P`` bars gives no window. One window per file first, then more
  starts of the same files when ``windows`` asks for more.
* **References**: generated bar ``k`` varies bar ``k mod L`` of the loop's last pass, i.e.
  context bar ``P − L + (k mod L)``. At variation 0 the model plays that pass again.
* **Rows**: the model with the copy prior at each variation (default 0, 0.3, 0.6, 1; 1 is the
  model alone), each generated bar's header naming the instruments of the bar it varies (as
  the daemon's loop mode), then the n-gram, "repeat last bar" and "repeat phrase" (the pass
  played again), with the continuation metrics of :mod:`ostinato.evaluate.metrics`.
  ``continuation["model"]`` is the row of the daemon's default variation (0.3) when it was
  run, else of the first variation.
* **Data**: a corpus folder (``ostinato data build``: its validation split, and its train
  split for the n-gram) or a folder of MIDI files (tokenized with the model's tokenizer, e.g.
  ``ostinato data loops --held-out``). The n-gram of a MIDI folder is fitted on the train
  split of ``corpus`` when given, else of the corpus the model was trained on when its folder
  is known and present (:func:`known_corpus`); without one the n-gram row is left out, with a
  note. The likelihood block is computed on the loop set's own tokens (``likelihood_data``
  says which). A model whose bars carry the instrument header reads every one of these
  with its headers written (:func:`ostinato.evaluate.continuation.load_split`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ostinato.config import default_model_dir
from ostinato.engine.engine import Engine
from ostinato.evaluate.bars import parse_notes
from ostinato.evaluate.continuation import (
    DEFAULT_SETTINGS,
    check_corpus,
    fit_ngram,
    likelihood,
    load_split,
    score_continuations,
    variation_name,
)
from ostinato.evaluate.continuers import (
    Continuer,
    ModelContinuer,
    NGramContinuer,
    RepeatContinuer,
    RepeatPhraseContinuer,
)
from ostinato.evaluate.rolls import Roll, write_rolls
from ostinato.model.corpus import CorpusSplit, find_midi_files, tokenize_file
from ostinato.model.grammar import DEFAULT_DENSITY
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import Vocab, split_bars

LOOP_LENGTHS = (1, 2, 4, 8)
SIMILAR = 0.75  # mean Jaccard similarity of bars one loop apart that counts as a repeat
FALLBACK_LOOP_BARS = 4  # when no length repeats
MIN_PASS_BARS = 4  # shorter loops are taken as whole repeats up to this many bars
DEFAULT_VARIATIONS = (0.0, 0.3, 0.6, 1.0)
MODEL_VARIATION = 0.3  # the daemon's default (settings.py: variation)

Signature = frozenset[tuple[int, int, int]]


def bar_signature(vocab: Vocab, bar: np.ndarray) -> Signature:
    """A bar's notes as (onset on the 16th grid, program, pitch)."""
    per_16th = max(1, vocab.positions_per_beat // 4)
    return frozenset((n.position // per_16th, n.program, n.pitch) for n in parse_notes(vocab, bar))


def jaccard(a: Signature, b: Signature) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def loop_length(signatures: Sequence[Signature]) -> int:
    """The smallest of 1, 2, 4, 8 bars with which the bars repeat (mean Jaccard similarity
    of each bar and the bar that many later ≥ :data:`SIMILAR`), else 4."""
    n = len(signatures)
    if not any(signatures):
        return FALLBACK_LOOP_BARS
    for bars in LOOP_LENGTHS:
        if n < 2 * bars:
            break
        mean = np.mean([jaccard(signatures[i], signatures[i + bars]) for i in range(n - bars)])
        if mean >= SIMILAR:
            return bars
    return FALLBACK_LOOP_BARS


def pass_bars(loop_bars: int) -> int:
    """Bars of one pass as a window sees it: the loop, repeated whole up to 4 bars."""
    return loop_bars * max(1, -(-MIN_PASS_BARS // loop_bars))


@dataclass(frozen=True)
class LoopFile:
    name: str
    tokens: np.ndarray  # int64, starting with Bar


@dataclass(frozen=True)
class LoopWindow:
    file: str
    start: int  # first context bar
    loop_bars: int  # L
    context: list[np.ndarray]  # P bars: one pass
    real: list[np.ndarray]  # the next P bars

    @property
    def references(self) -> list[np.ndarray]:
        """For generated bar k: bar k mod L of the loop's last pass in the context."""
        last = self.context[len(self.context) - self.loop_bars :]
        return [last[k % self.loop_bars] for k in range(len(self.real))]


def loop_windows(files: Sequence[LoopFile], vocab: Vocab, n: int, seed: int) -> list[LoopWindow]:
    rng = np.random.default_rng(seed)
    candidates = []
    for f in rng.permutation(len(files)):
        bars = split_bars(files[f].tokens, vocab.bar_id)
        L = loop_length([bar_signature(vocab, b) for b in bars])
        P = pass_bars(L)
        if len(bars) >= 2 * P:
            candidates.append((files[f].name, bars, L, P, rng.permutation(len(bars) - 2 * P + 1)))
    windows: list[LoopWindow] = []
    for round_ in range(max((len(c[4]) for c in candidates), default=0)):
        for name, bars, L, P, starts in candidates:
            if len(windows) == n:
                return windows
            if round_ < len(starts):
                s = int(starts[round_])
                windows.append(LoopWindow(name, s, L, bars[s : s + P], bars[s + P : s + 2 * P]))
    return windows


@dataclass
class LoopSet:
    files: list[LoopFile]
    split: CorpusSplit  # the same tokens, for the likelihood
    description: str
    skipped: dict[str, int] = field(default_factory=dict)


def _split_of(files: Sequence[LoopFile], bar_id: int) -> CorpusSplit:
    tokens = np.concatenate([f.tokens for f in files]) if files else np.zeros(0, np.int64)
    lengths = np.asarray([len(f.tokens) for f in files], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    return CorpusSplit(
        tokens=tokens,
        files=np.stack([starts, lengths], axis=1) if files else np.zeros((0, 2), np.int64),
        bars=np.flatnonzero(tokens == bar_id),
    )


def is_corpus(path: str | Path) -> bool:
    return (Path(path) / "validation_tokens.npy").is_file()


def load_loop_set(data: str | Path, tokenizer, vocab: Vocab) -> LoopSet:
    """The loops of a corpus folder's validation split, or of a folder of MIDI files (with
    every bar's header written, for a model whose bars carry it)."""
    data = Path(data)
    if is_corpus(data):
        check_corpus(tokenizer, data)
        split = load_split(data, "validation", vocab)
        names_file = data / "validation_files.txt"
        names = names_file.read_text().splitlines() if names_file.is_file() else []
        files = [
            LoopFile(names[i] if i < len(names) else f"file {i}",
                     np.asarray(split.tokens[s : s + n], dtype=np.int64))
            for i, (s, n) in enumerate(split.files)
        ]  # fmt: skip
        return LoopSet(files, split, f"validation split of {data}")
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is neither a corpus folder nor a folder of MIDI files")
    files = []
    skipped: Counter[str] = Counter()
    for path in find_midi_files(data):
        result = tokenize_file(tokenizer, path)
        if result.ids is None:
            skipped[result.skip_reason or "unknown"] += 1
            continue
        files.append(LoopFile(path.relative_to(data).as_posix(), result.ids.astype(np.int64)))
    if not files:
        raise ValueError(f"{data} holds no MIDI file the model's tokenizer can read")
    return LoopSet(files, _split_of(files, vocab.bar_id), f"MIDI files of {data}", dict(skipped))


def known_corpus(model_dir: str | Path) -> Path | None:
    """The corpus folder a model was trained on, when known and present: the card's
    ``data.corpus_dir``, or for the bundled model ``build/corpus`` under the working folder
    (where its model card says it was built)."""
    card = Path(model_dir) / "card.json"
    if card.is_file():
        corpus_dir = json.loads(card.read_text()).get("data", {}).get("corpus_dir")
        if corpus_dir and is_corpus(corpus_dir):
            return Path(corpus_dir)
    bundled = Path(str(default_model_dir())).resolve()
    built = Path("build/corpus")
    if Path(model_dir).resolve() == bundled and (built / "train_tokens.npy").is_file():
        return built
    return None


def evaluate_loop(
    model_dir: str | Path,
    data: str | Path,
    *,
    corpus: str | Path | None = None,
    windows: int = 48,
    nll_windows_count: int = 32,
    nll_length: int = 384,
    ngram_order: int = 4,
    seed: int = 0,
    settings: SamplingSettings = DEFAULT_SETTINGS,
    key_lock: bool = True,
    variations: Sequence[float] = DEFAULT_VARIATIONS,
    progress: bool = True,
    style: str | None = None,
    guidance: float = 0.0,
    density: float = DEFAULT_DENSITY,
    rolls: str | Path | None = None,
) -> dict:
    """The loop-mode report of the module docstring (``rolls``: a folder for piano rolls of
    the first windows)."""
    if not variations:
        raise ValueError("give at least one variation")
    for v in variations:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"variation must be in [0, 1], got {v}")
    engine = Engine(model_dir, device="cpu")
    engine.set_style(style)
    vocab, tokenizer = engine.vocab, engine.tokenizer
    loops = load_loop_set(data, tokenizer, vocab)
    notes = []
    ngram_corpus = Path(corpus) if corpus else (Path(data) if is_corpus(data) else None)
    if ngram_corpus is not None:
        check_corpus(tokenizer, ngram_corpus)
    else:
        ngram_corpus = known_corpus(model_dir)
        if ngram_corpus is not None:
            try:
                check_corpus(tokenizer, ngram_corpus)
            except ValueError:
                notes.append(f"{ngram_corpus} was built with another tokenizer: not used")
                ngram_corpus = None
    ngram = None
    if ngram_corpus is None:
        notes.append("no n-gram row: give --corpus DIR (a corpus folder) to fit it on its train "
                     "split")  # fmt: skip
    else:
        ngram = fit_ngram(ngram_corpus, vocab, ngram_order)

    lk = likelihood(engine, loops.split, ngram, nll_windows_count, nll_length, seed, progress)

    chosen = loop_windows(loops.files, vocab, windows, seed)
    if not chosen:
        raise ValueError(f"{loops.description}: no file holds two passes of its loop")
    names = {v: variation_name(v) for v in dict.fromkeys(float(v) for v in variations)}
    continuers: list[Continuer] = []
    for v, name in names.items():
        continuers.append(ModelContinuer(engine, settings, key_lock, variation=v,
                                         name=f"model v={name}", style=style,
                                         guidance=guidance, density=density,
                                         mode="loop"))  # fmt: skip
    if ngram is not None:
        continuers.append(NGramContinuer(ngram, vocab, settings, key_lock))
    continuers += [RepeatContinuer(vocab), RepeatPhraseContinuer(vocab)]
    drawn: list[Roll] | None = [] if rolls is not None else None
    summary = score_continuations(
        continuers, [(w.context, w.real) for w in chosen], vocab, tokenizer, seed, progress,
        desc="loop", references=[w.references for w in chosen], rolls=drawn,
    )  # fmt: skip
    rows = {name: summary[f"model v={name}"] for name in names.values()}
    model_variation = MODEL_VARIATION if MODEL_VARIATION in names else next(iter(names))
    continuation = {"model": rows[names[model_variation]]}
    continuation |= {c.name: summary[c.name] for c in continuers[len(names) :]}
    lengths = Counter(w.loop_bars for w in chosen)
    report = {
        "mode": "loop",
        "model": str(model_dir),
        "data": str(data),
        "ngram_corpus": str(ngram_corpus) if ngram_corpus else None,
        "header": vocab.has_header,
        "likelihood_data": loops.description,
        "files": len(loops.files),
        "skipped": loops.skipped,
        "windows": len(chosen),
        "loop_bars": {str(b): lengths[b] for b in sorted(lengths)},
        "loop_windows": [
            {
                "file": w.file,
                "start_bar": w.start,
                "loop_bars": w.loop_bars,
                "pass_bars": len(w.context),
            }
            for w in chosen
        ],
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "key_lock": key_lock,
            "density": density,
        },
        "model_variation": model_variation,
        "likelihood": lk,
        "continuation": continuation,
        "variations": rows,
        "notes": notes,
    }
    if rolls is not None and drawn is not None:
        for roll, window in zip(drawn, chosen, strict=False):
            roll.title = f"{window.file}, from bar {window.start + 1} (loop of {window.loop_bars})"
        report["rolls"] = [str(p) for p in write_rolls(rolls, vocab, drawn, "loop")]
    return report
