"""A context prepared beside the one in use, a chunk at a time, in the caller's spare time.

A new style replaces the style token after ``BOS``; every cached key and value after it
depends on it, so the whole context must be computed again: 0.6 s for the bundled model's
2,048 tokens, far more than the time between two bars leaves at a fast tempo. Turning
guidance on needs the same for the unconditional twin context. Done at once, either makes a
bar late. A :class:`Shadow` computes that context in an engine of its own (its own KV cache,
the same ONNX sessions) a prefill chunk at a time, while the context in use goes on being
extended, truncated and slid; when it is complete it is brought up to date with the context
in use (the bars that slid off the front dropped, the tokens both share kept, the newer ones
fed) and takes over at a bar line — in the planner, before the bar's plan, at the cost of
a copy and the tokens fed since its last catch-up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ostinato.engine.engine import Engine

STYLE, GUIDE = "style", "guide"
FIRST_CHUNK_S = 0.1  # a chunk's time before one was measured (256 tokens of a 2,048 window)


class Shadow:
    """``tokens`` (the context as it was, with its style token replaced) being prefilled into
    a twin of ``main``. ``kind``: STYLE (it becomes the context, under ``style``) or GUIDE
    (it becomes the unconditional twin of guidance)."""

    def __init__(self, main: Engine, kind: str, style: str | None, tokens: np.ndarray,
                 chunk: int) -> None:  # fmt: skip
        self.kind, self.style, self.chunk = kind, style, chunk
        self.engine = main.twin()
        self.tokens = tokens
        self.done = 0  # of ``tokens``, prefilled
        self.chunk_s = FIRST_CHUNK_S  # what the last chunk took (before one ran: a guess)
        self.synced = False  # complete and brought up to date (since, main may have grown)
        self.engine.dropped_front = main.dropped_front

    @property
    def ready(self) -> bool:
        return self.done >= len(self.tokens)

    def step(self, budget_s: float) -> int:
        """Prefill chunks while the next one, timed like the last, fits in ``budget_s``.
        Returns how many."""
        end = time.perf_counter() + budget_s
        chunks = 0
        while not self.ready and time.perf_counter() + self.chunk_s <= end:
            chunks += 1
            started = time.perf_counter()
            chunk = self.tokens[self.done : self.done + self.chunk]
            self.engine._prefill(chunk)
            self.done += len(chunk)
            self.chunk_s = time.perf_counter() - started
        return chunks

    def catch_up(self, main: Engine) -> bool:
        """Make the prepared context hold what ``main``'s holds now (its own style token
        aside): what slid off main's front since is dropped, the tokens both still share are
        kept, the rest fed. False when main slid past all it holds (it must start again)."""
        twin = self.engine
        first = main.prefix_length
        slid = main.dropped_front - twin.dropped_front
        if slid < 0 or first + slid > twin.context_length:
            return False
        if slid:
            twin._drop_front(first, first + slid)
            twin.dropped_front = main.dropped_front
        mine, theirs = twin.context_tokens(), main.context_tokens()
        n = min(len(mine), len(theirs))
        differ = np.flatnonzero(mine[first:n] != theirs[first:n])
        common = first + (int(differ[0]) if len(differ) else n - first)
        if common < len(mine):
            twin.truncate(common)
        if len(theirs) > common:
            twin.feed(theirs[common:])
        return twin.dropped_front == main.dropped_front  # (the window held them all)
