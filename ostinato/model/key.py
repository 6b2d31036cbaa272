"""The key of a passage, and the key lock that keeps generated notes in it.

The key is the best-correlating major or minor Krumhansl–Kessler profile of the
duration-weighted pitch-class histogram of the pitched notes (drums do not count). The lock
allows the pitch classes of that key's scale *and* every pitch class the passage itself
used, so a blue note or a borrowed chord the musician played stays available while the
model's stray chromatic notes do not. numpy only: the daemon uses it every bar.
"""

from __future__ import annotations

import numpy as np

from ostinato.model.tokens import TokenType, Vocab

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
MIN_LOCK_NOTES = 4  # fewer pitched notes than this: too little to tell a key, no lock


def _standardized(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# The 24 keys: rows 0–11 major on tonics C…B, rows 12–23 minor; their scales as masks.
_PROFILES = _standardized(
    np.array([np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)])
)
_SCALES = [
    frozenset((t + step) % 12 for step in steps)
    for steps in (MAJOR_SCALE, MINOR_SCALE)
    for t in range(12)
]


def scale_of(histogram: np.ndarray) -> frozenset[int] | None:
    """Scale pitch classes of the key whose profile correlates best with a 12-bin
    pitch-class histogram (Pearson, as Krumhansl–Schmuckler)."""
    histogram = np.asarray(histogram, dtype=np.float64)
    if histogram.sum() <= 0 or np.ptp(histogram) == 0:
        return None
    return _SCALES[int(np.argmax(_PROFILES @ _standardized(histogram)))]


def pitch_class_histogram(vocab: Vocab, tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """Duration-weighted (in beats) pitch-class histogram of the pitched notes of a REMI+
    token sequence, and how many pitched notes it counts. A note is ``Pitch Velocity
    Duration``; drum notes use their own pitch tokens and are left out."""
    tokens = np.asarray(tokens, dtype=np.int64)
    types = vocab.types[tokens]
    ends = np.flatnonzero(types == TokenType.DURATION)
    ends = ends[ends >= 2]
    pitch_tokens = tokens[ends - 2]
    pitched = vocab.types[pitch_tokens] == TokenType.PITCH
    classes = vocab.values[pitch_tokens[pitched]].astype(np.int64) % 12
    weights = np.maximum(vocab.duration_beats[tokens[ends[pitched]]], 1e-3)
    return np.bincount(classes, weights=weights, minlength=12).astype(np.float64), len(classes)


def key_lock_classes(vocab: Vocab, tokens: np.ndarray) -> frozenset[int] | None:
    """The pitch classes the key lock allows after ``tokens``, or None (no lock) when the
    passage has too few pitched notes to tell its key."""
    hist, count = pitch_class_histogram(vocab, tokens)
    if count < MIN_LOCK_NOTES:
        return None
    scale = scale_of(hist)
    if scale is None:
        return None
    return scale | frozenset(int(pc) for pc in np.flatnonzero(hist))
