"""The figures a continuation gets against the real one, and their means over windows.

* **pitch-class overlap**, **onset overlap**: the histograms of the continuation's pitch
  classes (pitched notes) and onset positions against the real continuation's, each
  normalised, ``Σ min`` (1: the same shape);
* **drum F1**: drum hits as (bar, position, drum) against the real ones;
* **density**: notes played ÷ the real continuation's;
* **in-key**: pitched notes inside the key estimated from the context;
* **decodes**: bars miditok turns into exactly their notes;
* **novelty**: bars that are not a copy of a context bar;
* **retention** (``retention``, ``retention_bar4``): of the instruments of the context's last
  bar that the real continuation's bar ``k`` also holds, the share the continuation's bar
  ``k`` still plays — pooled over its first :data:`RETENTION_BARS` bars, and at bar
  :data:`RETENTION_BARS` alone. A partner that drops the band after a bar scores low; one
  that keeps every part the music keeps scores 1.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ostinato.evaluate.bars import NoteEvent, parse_notes, programs_of
from ostinato.model.key import scale_of
from ostinato.model.tokens import DRUM_PROGRAM, TokenType, Vocab, strip_headers

OVERLAP_METRICS = ("pitch_class_overlap", "onset_overlap", "drum_onset_f1")
#: Retention is read over this many bars of the continuation, and at the last of them.
RETENTION_BARS = 4
RETENTION_LAST = f"retention_bar{RETENTION_BARS}"


def estimate_key(notes: list[NoteEvent]) -> frozenset[int] | None:
    """Scale pitch classes of the best-correlating major or minor key (duration-weighted)."""
    hist = np.zeros(12)
    for n in notes:
        if n.program != DRUM_PROGRAM:
            hist[n.pitch % 12] += n.duration
    return scale_of(hist)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """``Σ min`` of two histograms, each normalised (NaN when either is empty)."""
    if a.sum() == 0 or b.sum() == 0:
        return float("nan")
    return float(np.minimum(a / a.sum(), b / b.sum()).sum())


def f1(found: set, real: set) -> float:
    """F1 of a set of events against the real ones (NaN when both are empty)."""
    if not found and not real:
        return float("nan")
    return 2 * len(found & real) / (len(found) + len(real))


def pitch_class_histogram(notes: Sequence[NoteEvent]) -> np.ndarray:
    return np.bincount([n.pitch % 12 for n in notes if n.program != DRUM_PROGRAM], minlength=12)


def onset_histogram(vocab: Vocab, notes: Sequence[NoteEvent]) -> np.ndarray:
    n_positions = max(64, int((vocab.types == TokenType.POSITION).sum()))
    return np.bincount([n.position for n in notes], minlength=n_positions)


def drum_hits(notes: Sequence[NoteEvent]) -> set[tuple[int, int, int]]:
    return {(n.bar, n.position, n.pitch) for n in notes if n.program == DRUM_PROGRAM}


def bar_decodes(tokenizer, vocab: Vocab, bar: np.ndarray) -> bool:
    """Whether miditok decodes ``bar`` (its instrument header left out: miditok does not know
    it) to a score of exactly one note per Duration token."""
    bar = strip_headers(vocab, np.asarray(bar))
    try:
        score = tokenizer.decode([int(t) for t in bar])
    except Exception:  # a bar miditok cannot decode counts as a failure
        return False
    n_notes = sum(len(t.notes) for t in score.tracks)
    return n_notes == int((vocab.types[bar] == TokenType.DURATION).sum())


def retention(
    vocab: Vocab,
    context_bars: Sequence[np.ndarray],
    real_bars: Sequence[np.ndarray],
    generated_bars: Sequence[np.ndarray],
    bars: int = RETENTION_BARS,
) -> tuple[float, float]:
    """(pooled over the first ``bars`` bars, at bar ``bars``): of the context's last bar's
    instruments that real bar ``k`` also holds, the share generated bar ``k`` plays (NaN where
    there are none, or the continuation is shorter)."""
    last = programs_of(vocab, context_bars[-1]) if len(context_bars) else set()
    kept = asked = 0
    at_last = float("nan")
    for k in range(min(bars, len(real_bars))):
        expected = last & programs_of(vocab, real_bars[k])
        played = programs_of(vocab, generated_bars[k]) if k < len(generated_bars) else set()
        kept += len(expected & played)
        asked += len(expected)
        if k == bars - 1 and expected:
            at_last = len(expected & played) / len(expected)
    return (kept / asked if asked else float("nan")), at_last


def continuation_metrics(
    context: list[NoteEvent],
    real: list[NoteEvent],
    generated: list[NoteEvent],
    generated_bars: list[np.ndarray],
    context_bars: list[np.ndarray],
    vocab: Vocab,
    tokenizer,
    real_bars: list[np.ndarray] | None = None,
) -> dict:
    """The figures of the module docstring for one window (retention NaN without
    ``real_bars``)."""
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
    retained, retained_last = (
        retention(vocab, context_bars, real_bars, generated_bars)
        if real_bars is not None
        else (float("nan"), float("nan"))
    )
    return {
        "pitch_class_overlap": overlap(pitch_class_histogram(generated),
                                       pitch_class_histogram(real)),
        "onset_overlap": overlap(onset_histogram(vocab, generated), onset_histogram(vocab, real)),
        "density_ratio": len(generated) / max(1, len(real)),
        "in_key": in_key,
        "drum_onset_f1": f1(drum_hits(generated), drum_hits(real)),
        "decodes": decoded / max(1, len(generated_bars)),
        "novelty": float(np.mean(novel)) if novel else float("nan"),
        "retention": retained,
        RETENTION_LAST: retained_last,
    }  # fmt: skip


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
