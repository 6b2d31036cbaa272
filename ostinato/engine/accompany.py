"""What a generated bar holds: its instrument header and each part's floor and budget.

One place for the rules every generation path follows (the daemon's bar cycle, ``ostinato
continue`` and ``ostinato eval``), for a model whose bars carry the instrument header
(:attr:`~ostinato.model.tokens.Vocab.has_header`):

* the header names the instruments Ostinato plays in the bar: in jam mode the programs asked
  for (``--programs``); in continue mode those of the phrase's bar it answers with (a part
  the phrase rests in a bar rests there again; ``--programs`` limits them, and where the
  phrase's bar holds none of them, they all play) and in loop mode those of the pass's bar
  it varies (a lead that plays only in the loop's third bar keeps doing so), else the loop's;
* in jam mode, where Ostinato plays on its own for as long as the music runs, each part gets a
  floor and a budget from its own recent bars, and before it has any from the whole band's
  busiest bar (:func:`~ostinato.model.grammar.part_limits`): an asked-for bass plays in every
  bar, neither fading out nor flooding. Other modes keep the header's own rule only (every
  instrument it names plays at least one note).

**Entering** (:func:`entering`, :func:`entering_sampling`): jam mode's parts enter cooler.
A bar with nothing of Ostinato's own to vary, some of the :data:`ENTER_BARS` bars before it
without a note of Ostinato's, is sampled at :data:`ENTER_COOLING` × the temperature; every
later bar varies Ostinato's bar before it (or the pass before, once a loop is known).

**The harmony coming** (:func:`expected_harmony`): a bar is generated before the musician plays
it, so a bass that only hears the bars before follows the chords a bar late. A musician who
loops a progression says what comes: the pitch classes of their bars repeat with a period
(1, 2, 4 or 8 bars), and the next bar's harmony is the one a period back. Jam mode keeps its
bass to those pitch classes (with key lock on); before a period shows, nothing is assumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from ostinato.model.grammar import BUDGET_BARS, PartLimit, bar_counts, part_limits
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import TokenType, Vocab, bar_programs, split_bars


def bar_header(
    vocab: Vocab,
    programs: Sequence[int],
    references: Sequence[np.ndarray] = (),
    followed: Iterable[int] | None = None,
) -> tuple[int, ...] | None:
    """The header of the bar generated: ``programs``, or where ``references`` (bars the copy
    prior follows, best first) hold some of them, the ones the first such reference holds.
    ``followed``: the instruments whose presence the references decide (an answer's: those
    of its phrase; None: all of ``programs``); the others asked for play in every bar (an
    instrument the phrase never had has no bar of it to rest in). None for a vocabulary
    without headers."""
    if not vocab.has_header:
        return None
    asked = set(programs)
    decided = asked if followed is None else asked & set(followed)
    for ref in references:
        if len(ref):
            held = programs_held(vocab, [ref]) & decided
            if held:
                return tuple(sorted(held | (asked - decided)))
    return tuple(sorted(asked))


def programs_held(vocab: Vocab, bars: Iterable[np.ndarray]) -> set[int]:
    """The instruments whose notes the token bars hold (a leading ``Bar`` optional)."""
    return {p for bar in bars for b in bar_programs(vocab, _with_bar(vocab, bar)) for p in b}


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


#: Jam mode: a bar Ostinato's parts enter with — nothing of their own to vary, and some of the
#: ``ENTER_BARS`` bars before it without a note of Ostinato's — is sampled at
#: ``ENTER_COOLING`` × the temperature. A drummer sitting in plays the plain groove first and
#: varies it later; the model's most likely bar is that groove (its free drum bar under a
#: keyboard player's chords starts on a kick 0.96 of the time at temperature 0.3, 0.84 at
#: 0.5, 0.63 at 0.8; 20 seeds of 8 contexts), and every bar after it varies the
#: bar before (until a loop is known) or the pass before.
ENTER_BARS = 4
ENTER_COOLING = 0.4


def entering(played: Sequence[bool]) -> bool:
    """Whether Ostinato's parts enter at a bar: ``played`` says, for the bars before it
    (oldest first), whether each held a note of Ostinato's; fewer than :data:`ENTER_BARS` of
    them (it has just started) or one without (it came back in) is an entry."""
    return len(played) < ENTER_BARS or not all(played[-ENTER_BARS:])


def entering_sampling(sampling: SamplingSettings) -> SamplingSettings:
    """The sampler's settings for a bar the parts enter with: :data:`ENTER_COOLING` × the
    temperature."""
    return dataclasses.replace(sampling, temperature=sampling.temperature * ENTER_COOLING)


HARMONY_PERIODS = (1, 2, 4, 8)
HARMONY_BARS = 16  # the musician's bars read for the harmony coming (two 8-bar periods)


def pitch_classes(vocab: Vocab, bars: Sequence[np.ndarray]) -> list[frozenset[int]]:
    """The pitch classes each token bar sounds (pitched notes; drums are not harmony)."""
    pitched = vocab.types == TokenType.PITCH
    return [frozenset((vocab.values[b[pitched[b]]] % 12).tolist()) for b in map(np.asarray, bars)]


def expected_harmony(heard: Sequence[frozenset[int]]) -> frozenset[int] | None:
    """The pitch classes the musician's next bar will most likely sound, from the pitch
    classes of each bar they played (oldest first, the bar just heard last): those of the bar
    one period back, for the smallest period whose every comparison over the last two periods
    holds (at least one, and the bar just heard among them). None: no period, or a single
    pitch class (a melody note is not a chord)."""
    n = len(heard)
    for period in HARMONY_PERIODS:
        checks = [b for b in range(max(period, n - 2 * period), n)]
        if not checks or checks[-1] != n - 1:
            continue
        if all(heard[b] and heard[b] == heard[b - period] for b in checks):
            chord = heard[n - period]
            return chord if len(chord) >= 2 else None
    return None


def sounding_harmony(
    notes: Sequence[tuple[float, float, int, int]], at: float
) -> frozenset[int] | None:
    """The pitch classes the musician sounds at beat ``at``: their pitched notes ``(start,
    duration, program, pitch)`` held then, else those struck at the last onset before it (a
    chord played short still names the harmony). None: nothing pitched, or a single pitch
    class (a melody note is not a chord)."""
    pitched = [(s, d, p) for s, d, program, p in notes if program >= 0 and s <= at + 1e-9]
    held = frozenset(p % 12 for s, d, p in pitched if s + d > at)
    if len(held) < 2 and pitched:
        last = max(s for s, _, _ in pitched)
        held = frozenset(p % 12 for s, _, p in pitched if s >= last - STRUM_BEATS)
    return held if len(held) >= 2 else None


STRUM_BEATS = 1 / 8  # notes struck this close together sound as one chord


#: Within the bar (the ``commit`` setting): a re-plan waits a 32nd note after its commit point,
#: so that a chord struck on the beat (a human's a little late) is in what it hears.
GRACE_BEATS = 1 / 8


def commit_points(commit: float | None, beats_per_bar: float) -> list[float]:
    """The commit points of a bar, in beats from its bar line (the bar line first), that have
    a later one inside the bar: each is where a re-plan of the bar from the next one starts.
    ``commit`` None: a bar is committed whole (no re-plan)."""
    if commit is None or commit <= 0 or commit >= beats_per_bar:
        return []
    points, k = [], 0
    while (k + 1) * commit < beats_per_bar - 1e-9:
        points.append(k * commit)
        k += 1
    return points
