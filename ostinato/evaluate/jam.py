"""``ostinato eval MODEL CORPUS --mode jam``: does the model hold up when it plays alone for a
long time, and in every meter it knows?

* **Jams**: from ``jams`` contexts (4 bars of a file of the split, one file each, as the
  continuation windows draw them), the model plays ``bars`` bars in one go, every bar it plays
  fed back as context (the engine's window sliding bar by bar, as in the daemon). Per jam:
  notes per bar of the context and of each block of ``block`` generated bars, the ratio of
  each block's density to the context's, silent bars, and the bars that decode. A model that
  collapses into silence or into a wall of notes shows it in the late blocks.
* **Meters**: for every meter of the model's vocabulary, ``meter_windows`` contexts of 4 bars
  in that meter from the corpus (any split: this checks the grammar and decoding, not the
  music; where the corpus has no such bar, one empty bar of the meter and piano and drums),
  continued by ``meter_bars`` bars in that meter. Reported: the share of generated bars that
  decode to exactly their notes, and of bars whose notes all lie inside the meter's bar.

A bar *decodes* when miditok turns it into a score holding one note per ``Duration`` token
(:func:`ostinato.evaluate.metrics.bar_decodes`).

The model plays as jam mode does (:class:`~ostinato.evaluate.continuers.ModelContinuer` in
mode ``jam``): the note floor, and for a model whose bars carry the instrument header, every
bar's header naming the context's instruments and each part's own floor and budget from the
newest bars. The split is read with its headers written for such a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ostinato.engine.engine import Engine
from ostinato.evaluate.bars import parse_notes
from ostinato.evaluate.continuation import (
    DEFAULT_SETTINGS,
    check_corpus,
    continuation_windows,
    load_split,
)
from ostinato.evaluate.continuers import Continuer, ModelContinuer
from ostinato.evaluate.metrics import bar_decodes
from ostinato.model.corpus import SPLITS, CorpusSplit
from ostinato.model.grammar import DEFAULT_DENSITY, JAM_FLOOR
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TokenType,
    Vocab,
    add_headers,
    format_meter,
    split_bars,
)

#: The density band a jam must keep, as a ratio to its context's notes per bar.
DENSITY_BAND = (0.5, 2.0)


def notes_per_bar(vocab: Vocab, bars: list[np.ndarray]) -> np.ndarray:
    """Notes of each bar (one ``Duration`` token per note, drums included)."""
    return np.asarray([int((vocab.types[b] == TokenType.DURATION).sum()) for b in bars])


def _programs(vocab: Vocab, context: np.ndarray) -> tuple[int, ...]:
    return tuple(sorted({n.program for n in parse_notes(vocab, context)})) or (DRUM_PROGRAM,)


def jam(
    continuer: Continuer,
    vocab: Vocab,
    tokenizer,
    context_bars: list[np.ndarray],
    bars: int,
    block: int,
    seed: int,
) -> dict:
    """One self-fed jam of ``bars`` bars after ``context_bars``: its densities and decoding."""
    context = np.concatenate(context_bars)
    generated = split_bars(continuer(context, bars, _programs(vocab, context), seed), vocab.bar_id)
    context_density = float(notes_per_bar(vocab, context_bars).mean())
    density = notes_per_bar(vocab, generated)
    blocks = [float(density[i : i + block].mean()) for i in range(0, len(density), block)]
    ratios = [b / context_density if context_density else float("nan") for b in blocks]
    return {
        "bars": len(generated),
        "context_notes_per_bar": context_density,
        "block_notes_per_bar": blocks,
        "block_density_ratio": ratios,
        "silent_bars": int((density == 0).sum()),
        "silent_bars_last_block": int((density[-block:] == 0).sum()),
        "decodes": float(np.mean([bar_decodes(tokenizer, vocab, b) for b in generated])),
    }


def jam_summary(rows: list[dict], bars: int, block: int) -> dict:
    """The jams' blocks together: the lowest and highest density ratio, whether every block
    (of every jam) stays inside :data:`DENSITY_BAND` (blocks of a silent context, NaN, left
    out; no block at all is not inside), and the bars that decode."""
    ratios = [r for row in rows for r in row["block_density_ratio"] if r == r]
    lo, hi = DENSITY_BAND
    return {
        "bars": bars,
        "block": block,
        "min_block_density_ratio": min(ratios) if ratios else float("nan"),
        "max_block_density_ratio": max(ratios) if ratios else float("nan"),
        "within_band": bool(ratios) and all(lo <= r <= hi for r in ratios),
        "decodes": float(np.mean([r["decodes"] for r in rows])) if rows else float("nan"),
    }


def _bars_in_meter(vocab: Vocab, splits: list[CorpusSplit], meter, n: int, seed: int):
    """Up to ``n`` runs of 4 consecutive bars in ``meter`` (each from another file if it can)."""
    token = vocab.meter_ids[meter]
    rng = np.random.default_rng(seed)
    found: list[list[np.ndarray]] = []
    for split in splits:
        for f in rng.permutation(len(split.files)):
            start, length = (int(x) for x in split.files[f])
            tokens = np.asarray(split.tokens[start : start + length], dtype=np.int64)
            if token not in tokens:
                continue
            bars = split_bars(tokens, vocab.bar_id)
            ok = [len(b) > 1 and b[1] == token for b in bars]
            runs = [i for i in range(len(bars) - 3) if all(ok[i : i + 4])]
            if runs:
                s = runs[int(rng.integers(0, len(runs)))]
                run = bars[s : s + 4]
                if vocab.has_header:  # as the model reads them
                    run = split_bars(add_headers(vocab, np.concatenate(run)), vocab.bar_id)
                found.append(run)
            if len(found) == n:
                return found
    return found


def _notes_inside(vocab: Vocab, bar: np.ndarray, meter) -> bool:
    positions = vocab.values[bar[vocab.types[bar] == TokenType.POSITION]]
    return bool((positions < vocab.positions_per_bar(meter)).all()) if len(positions) else True


def meters_check(
    continuer: Continuer,
    vocab: Vocab,
    tokenizer,
    splits: list[CorpusSplit],
    windows: int,
    bars: int,
    seed: int,
) -> dict:
    out = {}
    for meter in vocab.meters:
        contexts = _bars_in_meter(vocab, splits, meter, windows, seed)
        source = "corpus"
        if not contexts:  # one empty bar of the meter, piano and drums
            contexts = [[np.asarray([vocab.bar_id, vocab.meter_ids[meter]], dtype=np.int64)]]
            source = "empty bar"
        token = vocab.meter_ids[meter]
        generated: list[np.ndarray] = []
        for k, ctx in enumerate(contexts):
            context = np.concatenate(ctx)
            programs = _programs(vocab, context) if source == "corpus" else (0, DRUM_PROGRAM)
            generated += split_bars(continuer(context, bars, programs, seed + k), vocab.bar_id)
        out[format_meter(meter)] = {
            "context": source,
            "windows": len(contexts),
            "bars": len(generated),
            "decodes": float(np.mean([bar_decodes(tokenizer, vocab, b) for b in generated])),
            "in_meter": float(
                np.mean(
                    [
                        len(b) > 1 and b[1] == token and _notes_inside(vocab, b, meter)
                        for b in generated
                    ]
                )
            ),
            "notes_per_bar": float(notes_per_bar(vocab, generated).mean()),
        }
    return out


def evaluate_jam(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str = "validation",
    jams: int = 4,
    bars: int = 200,
    block: int = 50,
    meter_windows: int = 2,
    meter_bars: int = 8,
    seed: int = 0,
    settings: SamplingSettings = DEFAULT_SETTINGS,
    key_lock: bool = True,
    progress: bool = True,
    style: str | None = None,
    guidance: float = 0.0,
    density: float = DEFAULT_DENSITY,
) -> dict:
    if bars < 1 or block < 1 or jams < 1:
        raise ValueError("jams, bars and block must be at least 1")
    engine = Engine(model_dir, device="cpu")
    engine.set_style(style)
    vocab, tokenizer = engine.vocab, engine.tokenizer
    check_corpus(tokenizer, data_dir)
    data = load_split(data_dir, split, vocab)
    continuer = ModelContinuer(
        engine, settings, key_lock, style=style, guidance=guidance, density=density, mode="jam"
    )  # as jam mode plays
    pairs = continuation_windows(data, vocab.bar_id, jams, seed)
    if not pairs:
        raise ValueError(f"the {split} split has no file of 8 bars or more to start a jam")
    rows = [
        jam(continuer, vocab, tokenizer, ctx, bars, block, seed + k)
        for k, (ctx, _) in enumerate(tqdm(pairs, desc="jam", disable=not progress))
    ]
    report: dict = {
        "mode": "jam",
        "model": str(model_dir),
        "data": str(data_dir),
        "split": split,
        "header": vocab.has_header,
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "key_lock": key_lock,
            "density": density,
            "floor": JAM_FLOOR,
        },
        "jams": rows,
        "jam_summary": jam_summary(rows, bars, block),
    }
    if vocab.has_meters:  # (read without headers: the bars found get theirs written)
        others = [CorpusSplit.load(data_dir, s) for s in SPLITS if s != split]
        report["meters"] = meters_check(
            continuer, vocab, tokenizer, [data, *others], meter_windows, meter_bars, seed
        )
    return report


def format_jam(report: dict) -> str:
    s = report["jam_summary"]
    lines = [
        f"{len(report['jams'])} self-fed jams of {s['bars']} bars from the {report['split']} "
        f"split (density per block of {s['block']} bars ÷ the context's):"
    ]
    for k, row in enumerate(report["jams"]):
        ratios = " ".join(f"{r:.2f}" for r in row["block_density_ratio"])
        lines.append(
            f"  jam {k}: context {row['context_notes_per_bar']:.1f} notes/bar; blocks {ratios}; "
            f"silent bars {row['silent_bars']}; decodes {row['decodes']:.3f}"
        )
    band = "within" if s["within_band"] else "OUTSIDE"
    lines.append(
        f"  density ratio {s['min_block_density_ratio']:.2f}–{s['max_block_density_ratio']:.2f} "
        f"({band} {DENSITY_BAND[0]}–{DENSITY_BAND[1]}), decodes {s['decodes']:.3f}"
    )
    if "meters" in report:
        lines.append("meters (generated bars that decode / stay in the meter):")
        for meter, m in report["meters"].items():
            lines.append(
                f"  {meter:>5}: {m['bars']:3d} bars from {m['windows']} {m['context']} "
                f"context(s): decodes {m['decodes']:.3f}, in meter {m['in_meter']:.3f}, "
                f"{m['notes_per_bar']:.1f} notes/bar"
            )
    return "\n".join(lines)
