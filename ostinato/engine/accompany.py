"""What a generated bar holds: its instrument header and each part's floor and budget.

One place for the rules every generation path follows (the daemon's bar cycle, ``ostinato
continue`` and ``ostinato eval``), for a model whose bars carry the instrument header
(:attr:`~ostinato.model.tokens.Vocab.has_header`):

* the header names the instruments Ostinato plays in the bar: in jam and continue mode the
  programs asked for (``--programs``, else the phrase's); in loop mode the instruments of the
  pass's bar it varies (a lead that plays only in the loop's third bar keeps doing so), else
  the loop's;
* in jam mode, where Ostinato plays on its own for as long as the music runs, each part gets a
  floor and a budget from its own recent bars, and before it has any from the whole band's
  busiest bar (:func:`~ostinato.model.grammar.part_limits`): an asked-for bass plays in every
  bar, neither fading out nor flooding. Other modes keep the header's own rule only (every
  instrument it names plays at least one note).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ostinato.model.grammar import BUDGET_BARS, PartLimit, bar_counts, part_limits
from ostinato.model.tokens import Vocab, bar_programs, split_bars


def bar_header(
    vocab: Vocab, programs: Sequence[int], references: Sequence[np.ndarray] = ()
) -> tuple[int, ...] | None:
    """The header of the bar generated: ``programs``, or where ``references`` (bars the copy
    prior follows, best first) hold some of them, the ones the first such reference holds.
    None for a vocabulary without headers."""
    if not vocab.has_header:
        return None
    asked = set(programs)
    for ref in references:
        if len(ref):
            held = {p for bar in bar_programs(vocab, _with_bar(vocab, ref)) for p in bar} & asked
            if held:
                return tuple(sorted(held))
    return tuple(sorted(asked))


def _with_bar(vocab: Vocab, ref: np.ndarray) -> np.ndarray:
    ref = np.asarray(ref, dtype=np.int64)
    return ref if len(ref) and ref[0] == vocab.bar_id else np.concatenate(([vocab.bar_id], ref))


def jam_parts(
    vocab: Vocab, context: np.ndarray, programs: Sequence[int], density: float
) -> tuple[PartLimit, ...]:
    """Each asked-for part's floor and budget from the newest bars of ``context`` (token ids
    of the engine's context: the musician's and Ostinato's bars). Empty for a vocabulary
    without headers (the grammar has no parts to hold then)."""
    if not vocab.has_header:
        return ()
    bars = split_bars(np.asarray(context), vocab.bar_id)[-2 * BUDGET_BARS :]
    return part_limits(bar_counts(vocab, bars), programs, density)
