"""Token n-gram baseline with Witten–Bell interpolation (no parameter to tune).

p(w | h) = (c(h, w) + N(h) · p(w | h')) / (c(h) + N(h)), where N(h) is the number of distinct
tokens seen after h and h' is h without its oldest token; the base is add-one unigrams. Counts
are kept as sorted int64 keys ``history · V + next`` so a lookup is two binary searches.
"""

from __future__ import annotations

import numpy as np


class NGramModel:
    def __init__(self, order: int, vocab_size: int) -> None:
        if not 1 <= order <= 5:
            raise ValueError("order must be 1..5")
        self.order, self.vocab_size = order, vocab_size
        self.unigram = np.ones(vocab_size, dtype=np.float64)
        self._keys: list[np.ndarray] = []  # per order k ≥ 2: sorted keys
        self._counts: list[np.ndarray] = []

    def fit(self, tokens: np.ndarray, file_starts: np.ndarray | None = None) -> NGramModel:
        """Count n-grams in ``tokens``; n-grams never cross a file start."""
        V = self.vocab_size
        t = np.asarray(tokens, dtype=np.int64)
        self.unigram = np.bincount(t, minlength=V).astype(np.float64) + 1.0
        self.unigram /= self.unigram.sum()
        boundary = np.zeros(len(t), dtype=bool)
        if file_starts is not None:
            boundary[np.asarray(file_starts, dtype=np.int64)] = True
        self._keys, self._counts = [], []
        for k in range(2, self.order + 1):
            n = len(t) - k + 1
            if n <= 0:
                self._keys.append(np.zeros(0, dtype=np.int64))
                self._counts.append(np.zeros(0, dtype=np.int64))
                continue
            key = np.zeros(n, dtype=np.int64)
            crosses = np.zeros(n, dtype=bool)
            for j in range(k):
                key = key * V + t[j : j + n]
                if j > 0:
                    crosses |= boundary[j : j + n]
            keys, counts = np.unique(key[~crosses], return_counts=True)
            self._keys.append(keys)
            self._counts.append(counts)
        return self

    def distribution(self, history: np.ndarray) -> np.ndarray:
        """p(· | the last order-1 tokens of history), shape (V,)."""
        V = self.vocab_size
        p = self.unigram.copy()
        history = np.asarray(history, dtype=np.int64)
        for k in range(2, self.order + 1):
            if len(history) < k - 1:
                break
            h = 0
            for token in history[len(history) - (k - 1) :]:
                h = h * V + int(token)
            keys, counts = self._keys[k - 2], self._counts[k - 2]
            lo, hi = np.searchsorted(keys, [h * V, h * V + V])
            if lo == hi:
                continue
            c = np.zeros(V, dtype=np.float64)
            c[keys[lo:hi] - h * V] = counts[lo:hi]
            total, types = c.sum(), float(hi - lo)
            p = (c + types * p) / (total + types)
        return p

    def log_prob(self, history: np.ndarray, token: int) -> float:
        return float(np.log(self.distribution(history)[token]))
