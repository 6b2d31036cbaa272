"""Variation by a copy prior: decode a bar as a blend of "play what was there" and the model.

A loop's worth is in the groove and harmony it keeps and the details it changes. While the
engine decodes bar *k* of a pass, :class:`CopyPrior` follows one or more *reference* bars — bar
*k* of Ostinato's previous pass, then bar *k* of the musician's loop (or, for an answer, bar *k*
of the phrase) — with a pointer into each: the reference's next token is the token that
"continues" the reference from where the decoded bar stands.

Each choice is then a mixture, with ``v`` the variation, drawn once per *onset* (a
``Position`` and the notes on it):

* with probability ``v²`` the next onset is the model's (every setting of the sampler, the
  grammar's mask): where it goes — it may add one, move one or skip one, but while the
  reference has onsets left to begin it may neither end the bar nor jump past more than one
  of them (a free choice drops a hit, not the rest of the bar) — and what it holds, notes
  and all, up to the next ``Position`` it chooses;
* otherwise the onset's *where* and *who* are the reference's — its ``Position``, ``Bar``
  at the end, each ``Program`` and drum (a drum's pitch is its instrument): the onsets and
  the instruments stay;
* and each *what* of a pitched note — ``Pitch``, ``Velocity``, ``Duration`` — is taken with
  probability ``1 − v²``; otherwise the model samples a token of that same kind: another
  accent or length, or another pitch among the pitch classes the reference bars sound (the
  bar's harmony, voiced anew: a note of the chord in another octave or order, the line's
  own notes moved).

Where the model takes a choice of the reference's it picks among those it rates at least as
likely as the reference's own (:meth:`CopyPrior._plausible`): a variation the model prefers,
never one it thinks worse; and a drum it adds is one of the kit the reference bars play.

One taper, ``v²``, for every kind of change: about ``v²`` of the onsets and ``v²`` of the
notes' pitch, accent and length change (0.09 at ``v = 0.3``, a quarter at 0.5, half at 0.7),
fine steps at the low end where a musician varies a loop lightly. Why: the model's own choices
are worse than the notes they replace, so each change costs; the draws before this one (an
onset's place and its contents drawn apart, ``2v²``, the notes at ``v``) varied a third of the
pitches at 0.3 and cost an answer more than it gave. Measured in continue mode (48 windows,
``eval --split heldout --variation 0.3 --groups …``, against repeating the phrase): held-out
band songs 0.756 → 0.768 (repeat-phrase 0.787), held-out composers 0.765 (0.772); loop mode on
held-out loops 0.909 (repeat-phrase 0.947, repeat-last-bar 0.808).

Why a draw per onset rather than per token: a drum hit is four choices and an onset of a
band bar a dozen, so a free draw per token let the model into most onsets at ``v = 0.3``,
not the ``v²`` of the groove the knob promises.

So the groove, the parts and the notes on them change with about ``v²`` (``free_pitches``:
every pitched note's pitch is the model's, the rest as said — jam mode, whose references are
Ostinato's own earlier bars, chosen before the musician's harmony in them was heard; the model
now hears it in the context and picks the pitches against it):

* ``0`` plays the reference again token for token: the previous pass, note for note;
* ``1`` is the model alone, exactly as without a prior;
* in between, most notes keep their place, pitch, velocity and length, and where the model
  chooses differently (another pitch, an extra note, a skipped onset) the pointer realigns:

  - a ``Position`` moves the pointer to that position in the reference (or to the reference's
    next onset after it, which the grammar may then allow),
  - a ``Program`` or ``Pitch`` the reference also has at this onset moves the pointer to it
    (a chord tone played in another order); one it lacks replaces the reference's note, so the
    velocity and duration that follow still come from the reference: a changed pitch keeps
    its rhythm and accent,
  - a different ``Velocity`` or ``Duration`` replaces the reference's one and the note goes on.

Why that limit on the free choice: a bar holds 30–60 choices of where and who, so at 0.3 a
few are free in every bar, and a model that ended the bar there, or jumped to its last beat,
threw away everything the reference still had to play. Measured on the held-out loops (24
windows, v = 0.3): notes 0.86 → 0.91 of the real pass's, drum F1 0.773 → 0.801, overlap
0.841 → 0.859 with the bundled model; a model that rarely does so is unchanged (0.870 →
0.868).

Measured on loops the model never saw (``ostinato eval --mode loop``, docs/benchmarks): at
0.3 the overlap with the loop's real next pass is above repeating its last bar, with every
bar new; letting the model re-pick instruments and drums at ``v`` instead lost a third of
the drum hits and a tenth of the notes (overlap 0.75 against repeat-last-bar's 0.81).

A mixture rather than a logit bonus: it gives the same behaviour at any temperature, reaches
both ends exactly, and keeps the model's own choices where it takes them. The draw uses the
sampler's random generator, so a seeded run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ostinato.model.tokens import TokenType, Vocab, strip_headers

#: Tokens a varied bar may hold beyond its longest reference: a few added notes.
TOKEN_HEADROOM = 32


@dataclass
class _Pointer:
    tokens: np.ndarray  # one reference bar without its Bar token
    onsets: np.ndarray  # the indices of its Position tokens
    index: int = 0


class CopyPrior:
    """References and variation for the bars one :meth:`Engine.generate` call decodes.

    ``references[k]``: the reference bars for generated bar ``k`` (token ids; a leading ``Bar``
    is dropped), best first; a bar with none is decoded freely. ``variation``: one value for
    every bar, or one per bar (a fill on a loop's last bar is ``1.0`` there).
    """

    def __init__(
        self,
        vocab: Vocab,
        references: Sequence[Sequence[np.ndarray]],
        variation: float | Sequence[float],
        free_pitches: bool = False,
    ) -> None:
        n = len(references)
        # free_pitches: every pitched note's pitch is the model's (the groove, the parts and
        # the accents still follow the reference): jam mode's, where the reference is
        # Ostinato's own previous pass, played before the harmony of its bar was known
        self.free_pitches = free_pitches
        variations = (
            [float(variation)] * n if isinstance(variation, (int, float)) else list(variation)
        )
        if len(variations) != n:
            raise ValueError("give one variation per bar or one for all")
        for v in variations:
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"variation must be in [0, 1], got {v}")
        self.vocab = vocab
        self._bar_id = vocab.bar_id
        self._types = vocab.types
        self._values = vocab.values
        # each reference without its Bar token and its instrument header: the grammar writes
        # the header of the bar decoded, the prior follows only its notes; a reference with
        # no notes is none where another has some (a pass that rested in a bar the musician
        # plays in: the musician's bar is the one to vary), and the rest, where all are empty
        self._refs = []
        for refs in references:
            notes = [self._notes_of(r) for r in refs]
            sounding = [r for r in notes if (self._types[r] == TokenType.POSITION).any()]
            self._refs.append(sounding or notes)
        self._variations = variations
        self._pointers: list[_Pointer] = []
        self._variation = 1.0
        self.copied = 0  # tokens taken from a reference
        self._kind_mask = np.zeros(vocab.size, dtype=bool)
        self._is_position = vocab.types == TokenType.POSITION
        self._structure = np.zeros(max(TokenType) + 1, dtype=bool)
        self._structure[[TokenType.POSITION, TokenType.BAR, TokenType.PROGRAM,
                         TokenType.PITCH_DRUM, TokenType.TIME_SIG]] = True  # fmt: skip
        # where one onset ends and the next begins in the reference
        self._boundary = np.zeros(max(TokenType) + 1, dtype=bool)
        self._boundary[[TokenType.POSITION, TokenType.BAR, TokenType.TIME_SIG]] = True
        self._is_pitch = vocab.types == TokenType.PITCH
        self._is_duration = vocab.types == TokenType.DURATION
        self._harmony = np.zeros(vocab.size, dtype=bool)  # Pitch tokens of the bar's classes
        self._is_drum = vocab.types == TokenType.PITCH_DRUM
        self._off_kit = np.zeros(vocab.size, dtype=bool)  # drums no reference bar plays
        self._onset_free = False  # the onset being decoded is the model's
        self._placed = False  # the model places the next onset: it is the model's, notes and all
        self.begin_bar(0)

    def _notes_of(self, reference: np.ndarray) -> np.ndarray:
        ref = strip_headers(self.vocab, np.asarray(reference, dtype=np.int64))
        return ref[1:] if len(ref) and ref[0] == self._bar_id else ref

    def begin_bar(self, k: int) -> None:
        """Decoding moves on to generated bar ``k`` (its ``Bar`` token has just been fed)."""
        if k < len(self._refs):
            self._pointers = [
                _Pointer(r, np.flatnonzero(self._types[r] == TokenType.POSITION))
                for r in self._refs[k]
            ]
            self._variation = self._variations[k]
            self._longest = max(len(p.tokens) for p in self._pointers) if self._pointers else 0
            # the harmony of every reference: Ostinato's previous pass and the musician's bar
            ref = np.concatenate([np.zeros(0, dtype=np.int64), *self._refs[k]])
            classes = np.unique(self._values[ref[self._is_pitch[ref]]] % 12)
            self._harmony = self._is_pitch & np.isin(self._values % 12, classes)
            kit = np.unique(self._values[ref[self._is_drum[ref]]])
            self._off_kit = (
                self._is_drum & ~np.isin(self._values, kit)
                if len(kit)
                else (np.zeros_like(self._is_drum))
            )
        else:
            self._pointers, self._variation, self._longest = [], 1.0, 0
        self._onset_free = self._placed = False

    def seek(self, position: int) -> None:
        """Decoding resumes inside the bar at ``position`` (a re-plan): every reference
        continues from its first onset there or later."""
        for p in self._pointers:
            later = p.onsets[self._values[p.tokens[p.onsets]] >= position]
            p.index = int(later[0]) if len(later) else len(p.tokens)
        self._onset_free = self._placed = False

    def token_cap(self, cap: int) -> int:
        """The tokens the bar decoded may hold: ``cap``, or room for the longest reference
        and a few notes more (a busy band bar is copied whole, not cut at the cap)."""
        return max(cap, self._longest + TOKEN_HEADROOM)

    def expected(self) -> list[int]:
        """The token each reference would continue with (its end: ``Bar``), best first."""
        return [
            int(p.tokens[p.index]) if p.index < len(p.tokens) else self._bar_id
            for p in self._pointers
        ]

    def choose(
        self,
        mask: np.ndarray,
        rng: np.random.Generator,
        logits: Callable[[], np.ndarray] | None = None,
    ) -> tuple[int, np.ndarray]:
        """``(token, mask)``: the copied token, or ``-1`` and the mask the model samples under
        (the grammar's, or the part of it of the reference's kind of token). ``logits``: the
        model's next-token logits, read at a drawn variation: the model then picks among the
        choices it rates at least as likely as the reference's."""
        if not self._pointers or self._variation >= 1.0:
            return -1, mask
        expected = self.expected()
        v = self._variation
        kind = self._types[expected[0]]
        if self._onset_free:  # this onset is the model's, up to the next it chooses
            return -1, self._plausible(self._free(mask, expected[0]), expected[0], logits)
        if self._boundary[kind] and v > 0.0 and rng.random() < v * v:
            # the next onset is the model's: where it goes (or one more note here) and then
            # what it holds
            self._placed = True
            return -1, self._plausible(self._free(mask, expected[0]), expected[0], logits)
        if self.free_pitches and kind == TokenType.PITCH:
            np.logical_and(mask, self._types == kind, out=self._kind_mask)
            return -1, (self._kind_mask if self._kind_mask.any() else mask)
        if self._structure[kind] or v <= 0.0 or rng.random() >= v * v:
            for token in expected:
                if mask[token]:
                    self.copied += 1
                    return token, mask
            if kind == TokenType.DURATION:  # held past the bar's end: held to it
                held = self._held_to(mask, expected[0])
                if held >= 0:
                    self.copied += 1
                    return held, mask
            return -1, mask
        np.logical_and(mask, self._types == kind, out=self._kind_mask)
        if kind == TokenType.PITCH:  # another note of the bar's harmony
            in_harmony = self._kind_mask & self._harmony
            if in_harmony.any():
                return -1, self._plausible(in_harmony, expected[0], logits)
        return -1, self._plausible(self._kind_mask if self._kind_mask.any() else mask,
                                   expected[0], logits)  # fmt: skip

    @staticmethod
    def _plausible(
        mask: np.ndarray, expected: int, logits: Callable[[], np.ndarray] | None
    ) -> np.ndarray:
        """``mask`` kept to the tokens the model rates at least as likely as ``expected``
        (which stays): a variation is one the model prefers to the reference's choice."""
        if logits is None or not mask[expected]:
            return mask
        values = logits()
        return mask & (values >= values[expected])

    def _held_to(self, mask: np.ndarray, duration: int) -> int:
        """The longest ``Duration`` the grammar allows that is no longer than ``duration``
        (a note of the reference tied over the bar line ends at it), or -1."""
        allowed = np.flatnonzero(mask & self._is_duration)
        allowed = allowed[self._values[allowed] <= self._values[duration]]
        return int(allowed[np.argmax(self._values[allowed])]) if len(allowed) else -1

    def _free(self, mask: np.ndarray, expected: int) -> np.ndarray:
        """The model's mask for a free choice: while the best reference has onsets left to
        begin, no ``Bar`` and no ``Position`` past its onset after next."""
        free = self._kind_mask
        np.copyto(free, mask)
        free[self._off_kit] = False  # the kit of the references: no new drum
        if not free.any():
            np.copyto(free, mask)
        if expected == self._bar_id:
            return free
        free[self._bar_id] = False
        p = self._pointers[0]
        k = int(np.searchsorted(p.onsets, p.index))
        if k >= len(p.onsets):
            free[self._bar_id] = mask[self._bar_id]  # its last onset is under way: it may end
            return free
        if k + 1 < len(p.onsets):  # skip one onset at most
            limit = self._values[p.tokens[p.onsets[k + 1]]]
            free[self._is_position & (self._values > limit)] = False
        return free if free.any() else mask

    def observe(self, token: int) -> None:
        """``token`` was decoded (copied or sampled): move every pointer past it."""
        kind = self._types[token]
        if kind == TokenType.BAR:
            return  # the caller starts the next bar
        for p in self._pointers:
            self._advance(p, token, kind)
        if kind == TokenType.POSITION:  # an onset begins: the model's where it placed it,
            # or where it is none of the reference's
            new = bool(self._pointers) and self._boundary[self._types[self.expected()[0]]]
            self._onset_free = self._placed or bool(new)
        self._placed = False

    def _advance(self, p: _Pointer, token: int, kind: int) -> None:
        ref, i = p.tokens, p.index
        if i < len(ref) and ref[i] == token:
            p.index = i + 1
            return
        types = self._types
        if kind == TokenType.POSITION:
            value = self._values[token]
            for j in range(len(ref)):
                if types[ref[j]] == TokenType.POSITION and self._values[ref[j]] >= value:
                    p.index = j + 1 if ref[j] == token else j
                    return
            p.index = len(ref)  # past the reference's last onset: it ends the bar next
            return
        if kind in (TokenType.PROGRAM, TokenType.PITCH, TokenType.PITCH_DRUM):
            j = i
            while j < len(ref) and types[ref[j]] != TokenType.POSITION:
                if ref[j] == token:  # the same note at this onset, further on
                    p.index = j + 1
                    return
                j += 1
        # a different token in the reference's place: it replaces that one
        if i < len(ref) and types[ref[i]] == kind:
            p.index = i + 1
