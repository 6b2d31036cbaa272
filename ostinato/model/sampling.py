"""Next-token sampling in numpy, shared by every generation path (engine, eval, tests).

Order of operations: grammar mask → repetition penalty (on a recent window, on the token
kinds it is asked to act on) → temperature → top-k → top-p → draw with a seeded RNG.
Temperature 0 means greedy (argmax of the allowed tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off; > 1 discourages recent tokens
    repetition_window: int = 64  # how many recent tokens the penalty looks at

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and 0.0 <= self.temperature <= 5.0):
            raise ValueError(f"temperature must be in [0, 5], got {self.temperature}")
        if int(self.top_k) != self.top_k or self.top_k < 0:
            raise ValueError(f"top_k must be an integer ≥ 0 (0 = off), got {self.top_k}")
        if not (np.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (np.isfinite(self.repetition_penalty) and 1.0 <= self.repetition_penalty <= 3.0):
            raise ValueError(
                f"repetition_penalty must be in [1, 3] (1 = off), got {self.repetition_penalty}"
            )
        if int(self.repetition_window) != self.repetition_window or self.repetition_window < 1:
            raise ValueError(f"repetition_window must be ≥ 1, got {self.repetition_window}")


class Sampler:
    """Draws the next token id from logits. One per generation stream (it owns the RNG).

    ``penalized``: boolean mask of the token ids the repetition penalty acts on (by default
    every id; the engine passes pitches so that bar lines and positions are left alone).
    """

    def __init__(
        self,
        settings: SamplingSettings,
        vocab_size: int,
        seed: int | None = None,
        penalized: np.ndarray | None = None,
    ) -> None:
        self.settings = settings
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(seed)
        if penalized is not None and penalized.shape != (vocab_size,):
            raise ValueError("penalized mask must have one entry per token id")
        self.penalized = penalized
        self._work = np.empty(vocab_size, dtype=np.float64)
        self._hidden = np.empty(vocab_size, dtype=bool)  # ~mask, without allocating

    def sample(
        self,
        logits: np.ndarray,
        mask: np.ndarray | None = None,
        recent: np.ndarray | None = None,
    ) -> int:
        s = self.settings
        work = self._work
        np.copyto(work, logits, casting="same_kind")
        if mask is not None:
            if not mask.any():
                raise ValueError("the grammar mask allows no token")
            np.logical_not(mask, out=self._hidden)
            np.copyto(work, -np.inf, where=self._hidden)
        if s.repetition_penalty != 1.0 and recent is not None and len(recent):
            ids = np.unique(recent[-s.repetition_window :])
            if self.penalized is not None:
                ids = ids[self.penalized[ids]]
            vals = work[ids]
            work[ids] = np.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
        if s.temperature == 0.0:
            return int(np.argmax(work))
        candidates = np.flatnonzero(np.isfinite(work))
        scores = work[candidates] / s.temperature
        if 0 < s.top_k < len(candidates):
            keep = np.argpartition(-scores, s.top_k - 1)[: s.top_k]
            candidates, scores = candidates[keep], scores[keep]
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if s.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            cut = int(np.searchsorted(cumulative, s.top_p)) + 1  # smallest set reaching top_p
            order = order[:cut]
            candidates, probs = candidates[order], probs[order] / probs[order].sum()
        return int(candidates[self.rng.choice(len(candidates), p=probs)])
