"""``ostinato eval MODEL DATA_DIR``: how well the shipped model predicts and continues music.

(a) Negative log-likelihood on validation windows, in bits per token and per bar, computed with
    the exported ONNX model through the engine (what musicians run), next to the n-gram's.
(b) Continuation: for held-out 8-bar windows, 4 bars of context → 4 generated bars (default
    settings, grammar masks on the context's instruments), compared with the real next 4 bars
    (the figures of :mod:`ostinato.evaluate.metrics`: overlaps, drum F1, density, in-key,
    decoding, novelty, and how many of the band's instruments it keeps playing).
    With ``--variation V[,V…]``, the same continuation as ``ostinato continue`` and the
    daemon's continue mode make it (``variation`` 0.3 by default): the model under the copy
    prior that varies the phrase, generated bar ``k`` varying context bar ``k``; one row
    ``model v=V`` each, beside the free model's.
(c) The same for three baselines: repeat the last context bar, repeat the phrase (the
    context's last 4 bars again), and a token n-gram fitted on the training split, sampled
    under the same grammar and settings.

A model whose bars carry the instrument header (:attr:`~ostinato.model.tokens.Vocab.has_header`)
is evaluated on the splits with every bar's header written (a corpus is stored without), the
n-gram fitted and scored on the same tokens, so bits per token compare like for like; every
generated bar's header names the instruments asked for, as in continue mode.

``--mode loop`` (:mod:`ostinato.evaluate.loop`), ``--mode jam`` (:mod:`ostinato.evaluate.jam`)
and ``--mode accompany`` (:mod:`ostinato.evaluate.accompany`) ask the same of the other modes;
``--rolls DIR`` draws a few windows (:mod:`ostinato.evaluate.rolls`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ostinato.engine.engine import Engine
from ostinato.evaluate.bars import group_of, parse_notes
from ostinato.evaluate.continuers import (
    Continuer,
    ModelContinuer,
    NGramContinuer,
    RepeatContinuer,
    RepeatPhraseContinuer,
)
from ostinato.evaluate.metrics import RETENTION_LAST, continuation_metrics, summarize
from ostinato.evaluate.rolls import ROLL_WINDOWS, Roll, write_rolls
from ostinato.model.corpus import CorpusSplit
from ostinato.model.grammar import DEFAULT_DENSITY
from ostinato.model.ngram import NGramModel
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TOKENIZER_FILE,
    Vocab,
    header_mask,
    load_tokenizer,
    split_bars,
)

DEFAULT_SETTINGS = SamplingSettings(temperature=1.0, top_p=0.95)


def check_corpus(tokenizer, corpus_dir: str | Path) -> None:
    """ValueError unless the corpus was tokenized with ``tokenizer``'s vocabulary (the same
    ids mean the same tokens): a corpus of the legacy language and a model with time
    signatures and styles, say, do not go together. (The instrument header changes no id: a
    corpus is stored without it and read with it, see :func:`load_split`.)"""
    path = Path(corpus_dir) / TOKENIZER_FILE
    if path.is_file() and load_tokenizer(path).vocab != tokenizer.vocab:
        raise ValueError(
            f"the corpus {corpus_dir} was built with another tokenizer than the model's: build "
            "it again with `ostinato data build SRC OUT --tokenizer MODEL/tokenizer.json`"
        )


def load_split(corpus_dir: str | Path, split: str, vocab: Vocab) -> CorpusSplit:
    """One split of a corpus as the model reads it: with every bar's instrument header
    written for a model whose bars carry it."""
    loaded = CorpusSplit.load(corpus_dir, split)
    return loaded.with_headers(vocab) if vocab.has_header else loaded


def fit_ngram(corpus_dir: str | Path, vocab: Vocab, order: int) -> NGramModel:
    """The n-gram baseline, fitted on the corpus's train split as the model reads it."""
    train = load_split(corpus_dir, "train", vocab)
    return NGramModel(order, vocab.size).fit(train.tokens, train.files[:, 0])


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


def continuation_windows(
    split: CorpusSplit,
    bar_id: int,
    n: int,
    seed: int,
    where: list | None = None,
    files: Sequence[int] | None = None,
):
    """(context bars, real bars) pairs: 4 + 4 consecutive bars of one file of the split, a
    window per file in a random order (``where``: given a list, each window's (file index,
    first bar) is appended to it). ``files``: only these files, and as many windows from each
    as ``n`` needs (at other bars) when they are fewer than ``n``."""
    rng = np.random.default_rng(seed)
    pairs: list = []
    if files is None:  # a window per file, the files in a random order
        for f in rng.permutation(len(split.files)):
            bars = _file_bars(split, int(f), bar_id)
            if len(bars) < 8:
                continue
            s = int(rng.integers(0, len(bars) - 7))
            pairs.append((bars[s : s + 4], bars[s + 4 : s + 8]))
            if where is not None:
                where.append((int(f), s))
            if len(pairs) == n:
                break
        return pairs
    # these files only: round after round, each file's next start of its own random order
    starts: dict[int, tuple[list, list]] = {}
    for f in files:
        bars = _file_bars(split, int(f), bar_id)
        if len(bars) >= 8:
            starts[int(f)] = (bars, list(rng.permutation(len(bars) - 7)))
    order: list[int] = [int(f) for f in rng.permutation(sorted(starts))] if starts else []
    while len(pairs) < n and any(left for _, left in starts.values()):
        for f in order:
            bars, left = starts[int(f)]
            if not left or len(pairs) == n:
                continue
            s = int(left.pop(0))
            pairs.append((bars[s : s + 4], bars[s + 4 : s + 8]))
            if where is not None:
                where.append((int(f), s))
    return pairs


def _file_bars(split: CorpusSplit, f: int, bar_id: int) -> list[np.ndarray]:
    start, length = (int(x) for x in split.files[f])
    return split_bars(np.asarray(split.tokens[start : start + length], dtype=np.int64), bar_id)


def split_names(corpus_dir: str | Path, split: str) -> list[str]:
    """The source path of each file of a split (``{split}_files.txt``; empty if absent)."""
    path = Path(corpus_dir) / f"{split}_files.txt"
    return path.read_text().splitlines() if path.is_file() else []


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


def bits_of(logits: np.ndarray, token: int) -> float:
    """−log2 of ``token``'s probability under next-token ``logits``."""
    x = logits.astype(np.float64)
    log_z = x.max() + math.log(np.exp(x - x.max()).sum())
    return float(log_z - x[token]) / math.log(2)


def hearing_bars_again(
    engine: Engine, pairs: Sequence[tuple[list[np.ndarray], list[np.ndarray]]],
    progress: bool = True,
) -> dict:  # fmt: skip
    """Whether the model hears a bar come back: each window's 8 bars fed token by token, the
    bits per token of each real continuation bar (5-8; the header tokens, which the session
    writes, left out), apart for a bar that repeats one before it in the window token for
    token (``repeated``) and a bar that does not (``new``). A model that copies makes a
    repeated bar nearly free; one that does not prices it about as a new one."""
    bits = {"repeated": 0.0, "new": 0.0}
    tokens = {"repeated": 0, "new": 0}
    bars = {"repeated": 0, "new": 0}
    for context, real in tqdm(pairs, desc="bars heard again", disable=not progress):
        engine.reset()
        seen: list[bytes] = [bar.tobytes() for bar in context]
        for bar in context:
            engine.feed(bar)
        for bar in real:
            kind = "repeated" if bar.tobytes() in seen else "new"
            scored = ~header_mask(engine.vocab, bar)
            for token, score in zip(bar, scored, strict=True):
                if score:
                    bits[kind] += bits_of(engine.last_logits, int(token))
                    tokens[kind] += 1
                engine.feed([int(token)])
            seen.append(bar.tobytes())
            bars[kind] += 1
    return {
        f"{kind}_{key}": value
        for kind in ("repeated", "new")
        for key, value in (
            ("bits_per_token", bits[kind] / tokens[kind] if tokens[kind] else None),
            ("bars", bars[kind]),
            ("tokens", tokens[kind]),
        )
    }


LOOP_PASSES = 4  # a bar played this many times in a row (looping_a_bar)


def looping_a_bar(engine: Engine, pairs: Sequence[tuple[list[np.ndarray], list[np.ndarray]]],
                  passes: int = LOOP_PASSES, progress: bool = True) -> dict:  # fmt: skip
    """The plainest case of hearing a bar come back: the last context bar of each window (a
    real bar of the piece) played ``passes`` times in a row after BOS, as a DAW loops one bar,
    and the bits per token of each pass (header tokens left out). A model that copies plays
    the second pass nearly for free; one that does not pays about what the first pass cost."""
    bits, tokens = np.zeros(passes), np.zeros(passes, dtype=np.int64)
    for context, _ in tqdm(pairs, desc="a bar looped", disable=not progress):
        bar = context[-1]
        scored = ~header_mask(engine.vocab, bar)
        engine.reset()
        for k in range(passes):
            for token, score in zip(bar, scored, strict=True):
                if score:
                    bits[k] += bits_of(engine.last_logits, int(token))
                    tokens[k] += 1
                engine.feed([int(token)])
    return {
        "bars": len(pairs),
        "bits_per_token_by_pass": [
            float(b / t) if t else None for b, t in zip(bits, tokens, strict=True)
        ],
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
    rolls: list[Roll] | None = None,
    roll_windows: int = ROLL_WINDOWS,
    groups: Sequence[str] | None = None,
    by_group: dict[str, dict[str, dict]] | None = None,
) -> dict[str, dict]:
    """Each continuer's mean metrics over the (context bars, real bars) pairs; it generates
    as many bars as the real continuation has, with seed ``seed + window index`` (and the
    window's ``references`` for the copy prior, when given). With ``rolls``, the first
    ``roll_windows`` windows are appended to it, every continuer's bars beside the real ones.
    With ``groups`` (one name per pair) and ``by_group``, the same means per group are put in
    ``by_group`` (group → continuer → metrics)."""
    rows: dict[str, list[dict]] = {c.name: [] for c in continuers}
    for k, (context_bars, real_bars) in enumerate(tqdm(pairs, desc=desc, disable=not progress)):
        refs = references[k] if references is not None else None
        context = np.concatenate(context_bars)
        real = np.concatenate(real_bars)
        context_notes = parse_notes(vocab, context)
        programs = tuple(sorted({n.program for n in context_notes})) or (DRUM_PROGRAM,)
        generated_rows = {}
        for c in continuers:
            generated = c(context, len(real_bars), programs, seed + k, refs)
            generated_bars = split_bars(generated, vocab.bar_id)
            generated_rows[c.name] = generated_bars
            rows[c.name].append(
                continuation_metrics(
                    context_notes, parse_notes(vocab, real), parse_notes(vocab, generated),
                    generated_bars, context_bars, vocab, tokenizer, real_bars=real_bars,
                )
            )  # fmt: skip
        if rolls is not None and k < roll_windows:
            rolls.append(Roll(f"window {k}", list(context_bars),
                              {"real": list(real_bars), **generated_rows}))  # fmt: skip
    if groups is not None and by_group is not None:
        for group in sorted(set(groups)):
            picked = [k for k, g in enumerate(groups) if g == group]
            by_group[group] = {
                name: summarize([metrics[k] for k in picked]) | {"windows": len(picked)}
                for name, metrics in rows.items()
            }
    return {name: summarize(metrics) for name, metrics in rows.items()}


def variation_name(variation: float) -> str:
    return f"{variation:.1f}" if round(variation, 1) == variation else f"{variation:g}"


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
    rolls: str | Path | None = None,
    groups: Sequence[str] | None = None,
) -> dict:
    """The report of (a), (b) and (c) above, on ``split`` of the corpus (``validation``, or
    ``heldout``: what ``ostinato data build --hold-out`` kept out of training and validation).
    ``style``/``guidance``: what the model is asked for in every window (models with style
    tokens; see :class:`Engine`). ``rolls``: a folder for piano rolls of the first windows.
    ``groups``: the continuation windows only from files of these groups (the first folder
    of the source path, e.g. ``freedoom-midi``), several from a file where it takes that."""
    for v in variations:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"variation must be in [0, 1], got {v}")
    engine = Engine(model_dir, device="cpu")
    engine.set_style(style)
    vocab, tokenizer = engine.vocab, engine.tokenizer
    check_corpus(tokenizer, data_dir)
    val = load_split(data_dir, split, vocab)
    if len(val.files) == 0:
        raise ValueError(f"the corpus {data_dir} has no {split} split")
    ngram = fit_ngram(data_dir, vocab, ngram_order)

    # (a) likelihood, token by token through the engine's decode path
    lk = likelihood(engine, val, ngram, nll_windows_count, nll_length, seed, progress)

    # (b, c) continuation
    def model(variation: float | None = None, name: str | None = None) -> ModelContinuer:
        return ModelContinuer(engine, settings, key_lock, variation=variation, name=name,
                              style=style, guidance=guidance, density=density)  # fmt: skip

    continuers: list[Continuer] = [model()]
    for v in dict.fromkeys(float(v) for v in variations):  # as continue mode answers
        continuers.append(model(v, f"model v={variation_name(v)}"))
    continuers += [NGramContinuer(ngram, vocab, settings, key_lock), RepeatContinuer(vocab),
                   RepeatPhraseContinuer(vocab)]  # fmt: skip
    where: list[tuple[int, int]] = []
    names = split_names(data_dir, split)
    chosen = None
    if groups:
        chosen = [f for f, name in enumerate(names) if group_of(name) in set(groups)]
        if not chosen:
            known = sorted({group_of(name) for name in names})
            raise ValueError(f"no file of the {split} split is in {', '.join(groups)} "
                             f"(its groups: {', '.join(known)})")  # fmt: skip
    pairs = continuation_windows(val, vocab.bar_id, windows, seed, where, files=chosen)
    if not pairs:
        raise ValueError(f"the {split} split has no file of 8 bars or more to continue")
    heard = hearing_bars_again(engine, pairs, progress)
    looped = looping_a_bar(engine, pairs, progress=progress)
    drawn: list[Roll] | None = [] if rolls is not None else None
    window_groups = [group_of(names[f]) if f < len(names) else "" for f, _ in where]
    by_group: dict[str, dict[str, dict]] = {}
    summary = score_continuations(continuers, pairs, vocab, tokenizer, seed, progress,
                                  references=[context for context, _ in pairs],
                                  rolls=drawn, groups=window_groups,
                                  by_group=by_group)  # fmt: skip
    report = {
        "mode": "continuation",
        "split": split,
        "model": str(model_dir),
        "data": str(data_dir),
        "windows": len(pairs),
        "only_groups": list(groups) if groups else None,
        "header": vocab.has_header,
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "key_lock": key_lock,
            "density": density,
        },
        "likelihood": lk,
        "bars_heard_again": heard,
        "bar_looped": looped,
        "continuation": summary,
        "groups": by_group,
    }
    if rolls is not None and drawn is not None:
        for roll, (f, start) in zip(drawn, where, strict=False):
            name = names[f] if f < len(names) else f"file {f}"
            roll.title = f"{name}, from bar {start + 1}"
        report["rolls"] = [str(p) for p in write_rolls(rolls, vocab, drawn, "continuation")]
    return report


TABLE_COLUMNS = (
    ("pitch_class_overlap", "pc-ovl"),
    ("onset_overlap", "onset-ovl"),
    ("drum_onset_f1", "drum-F1"),
    ("overlap_mean", "ovl-mean"),
    ("density_ratio", "density"),
    ("in_key", "in-key"),
    ("decodes", "decodes"),
    ("novelty", "novelty"),
    ("retention", "retain"),
    (RETENTION_LAST, "retain@4"),
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
    heard = report.get("bars_heard_again")
    if heard and heard["repeated_bars"] and heard["new_bars"]:
        lines.append(
            f"  real bars 5-8 repeating a bar before them: {heard['repeated_bits_per_token']:.3f}"
            f" bits/token ({heard['repeated_bars']} bars); new bars: "
            f"{heard['new_bits_per_token']:.3f} ({heard['new_bars']} bars)"
        )
    looped = report.get("bar_looped")
    if looped and None not in looped["bits_per_token_by_pass"]:
        passes = " / ".join(f"{b:.3f}" for b in looped["bits_per_token_by_pass"])
        lines.append(f"  a real bar looped (each window's 4th, {looped['bars']} bars), bits/token "
                     f"by pass: {passes}")  # fmt: skip
    if loop:
        lengths = ", ".join(f"{k}: {v}" for k, v in report["loop_bars"].items())
        lines.append(
            f"loop continuation of {report['windows']} windows (one pass of the loop → the "
            f"next pass; loop lengths in bars {lengths}); model = copy prior, v = variation:"
        )
        rows = {f"model v={v}": m for v, m in report["variations"].items()}
        rows |= {k: m for k, m in report["continuation"].items() if k != "model"}
    else:
        only = report.get("only_groups")
        within = f" of {', '.join(only)}" if only else ""
        split = report.get("split", "validation")
        lines.append(f"continuation of {report['windows']} windows of the {split} split"
                     f"{within} (4 bars → 4 bars):")  # fmt: skip
        rows = report["continuation"]
    lines += _rows_table(rows, "  ")
    groups = report.get("groups") or {}
    if len(groups) > 1:
        for group, grows in groups.items():
            windows = next(iter(grows.values()))["windows"]
            lines.append(f"  {group or '(no folder)'} ({windows} windows):")
            lines += _rows_table(grows, "    ")
    lines.append(
        "  retain: of the context's last bar's instruments that the real bar also has, the "
        "share still played (bars 1–4; retain@4: bar 4)"
    )
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    lines.extend(f"piano rolls: {path}" for path in report.get("rolls", []))
    return "\n".join(lines)


def _rows_table(rows: dict[str, dict], indent: str) -> list[str]:
    lines = [f"{indent}{'':16s}" + "".join(f"{head:>10s}" for _, head in TABLE_COLUMNS)]
    for name, m in rows.items():
        lines.append(
            f"{indent}{name:16s}"
            + "".join(f"{m.get(key, math.nan):10.3f}" for key, _ in TABLE_COLUMNS)
        )
    return lines
