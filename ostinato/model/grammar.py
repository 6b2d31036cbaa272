"""Allowed-next-token masks for REMI+: the grammar the engine samples under.

A bar is ``Bar (Position (Program Pitch Velocity Duration)+)*`` and the next ``Bar`` ends it;
with a vocabulary that has time-signature tokens, ``Bar TimeSig (Position …)*``, and the
grammar forces the TimeSig token of the meter being generated right after each ``Bar``.
The state machine below tracks only what the next token depends on (the kind of the last
token, the current position and program), so :meth:`Grammar.advance` is O(1) and
:meth:`Grammar.mask` returns a row of a table built once in the constructor: no re-scan of
the sequence and no allocation per token.

Constraints: only enabled programs; pitches inside each program's range (and inside a scale
when scale lock is on); positions strictly increasing inside the bar and inside the meter
(with TimeSig tokens positions count beats of the meter's denominator: a 7/8 bar has 7 × 8);
notes end inside the bar unless ``notes_within_bar`` is off; no program strikes one pitch
twice at one position, and at most ``MAX_NOTES_AT_ONE_POSITION`` notes start together. Any
sequence sampled under these masks therefore decodes to valid notes that lie in the bar
being generated.

Why the last two: a model continuing only itself can fall into a loop of the same few notes
on one position (seen after ~175 self-fed bars: 100 notes on a downbeat, 87 of them repeats),
a blob no instrument can play that then fills the context and every following bar. Those
masks are the only ones built per call (a copy of one row, only once a note was struck at
the position).

**Note budget** (``max_notes``): the most notes one bar may start, paced through the bar so
that an over-eager model cannot spend it all on the first beats: a note may start at
position ``p`` only while the bar holds fewer than ``min(N, N·(p + 1)/P + burst)`` notes
(``N`` the budget, ``P`` the bar's positions, ``burst = max(2, ⌈N/4⌉)`` for a chord or a
kit hit on a downbeat). Past it, only a later position where the allowance has grown, or
the bar's end, may follow. The engine's callers set it from the density of what the musician
played (see :func:`note_budget`), so a model continuing itself for hundreds of bars cannot
drift into a wall of notes.

**Note floor** (``min_notes``): the fewest notes a bar may hold, paced the same way: the bar
may not move on to position ``q`` before it holds ``M·q/P − slack`` notes (``M`` the floor,
``slack = max(1, ⌈M/8⌉)``), nor end before it holds ``M``; where nothing else is left (every
instrument struck everything it may at this position) the next position stays open. The
daemon's jam mode sets it from the musician's bars (:func:`note_floor`), so a partner left to
itself for hundreds of bars does not fade out part by part.

**The instrument header** (a vocabulary with :attr:`Vocab.has_header`): after ``Bar
TimeSig`` the bar names its instruments, ``Program`` tokens in rising program order, then its
first ``Position`` (or ``Bar``: an empty bar names none). ``header`` in the configuration
forces it (the daemon writes what Ostinato plays in the bar); without one the model chooses
it among the enabled programs. The bar's notes then come only from the instruments its header
names, and the bar may not end before every one of them has played a note: the header says
what plays, the notes keep to it. The note budget keeps the last notes of the bar for the
named parts still silent, so a part that floods the bar cannot end it with the others
unheard (a free continuation's guitar played 104 notes, drums and three named parts none).

**Parts** (``parts``): a floor and a budget for each instrument, paced through the bar like
the bar's own: instrument ``i`` may not let the bar move on to position ``q`` before it holds
``Mᵢ·q/P − slackᵢ`` notes (where it lags, only its own ``Program`` may follow at this
position), nor end the bar before it holds ``Mᵢ``; and it may start a note at position ``p``
only while it holds fewer than ``min(Nᵢ, Nᵢ·(p + 1)/P + burstᵢ)``. The daemon sets them from
each instrument's own recent bars and the musician's (:func:`part_limits`), so a bass asked
for under a keyboard player's chords plays in every bar, neither fading nor flooding.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ostinato.model.tokens import (
    DRUM_PROGRAM,
    Meter,
    TokenType,
    Vocab,
    meter_beats,
    meter_of_beats,
)

#: Playable range per General MIDI family (program // 8), inclusive, as (low, high).
_FAMILY_RANGES = {
    0: (21, 108),  # piano
    1: (36, 96),  # chromatic percussion
    2: (36, 96),  # organ
    3: (40, 88),  # guitar
    4: (28, 67),  # bass
    5: (28, 100),  # strings
    6: (36, 96),  # ensemble
    7: (34, 84),  # brass
    8: (34, 88),  # reed
    9: (48, 100),  # pipe
    10: (40, 96),  # synth lead
    11: (36, 96),  # synth pad
}
_OTHER_RANGE = (24, 108)
DRUM_RANGE = (27, 87)  # GM percussion key map (High Q .. Open Surdo)
# Notes that may start at one position of a bar, all programs together: a band's downbeat
# (kick and crash, bass, a six-string chord, strings and brass in voices, doubled parts: up to
# 21 in the band songs of the corpus, 0.3% of their onsets above 16) fits; a wall of repeated
# notes does not.
MAX_NOTES_AT_ONE_POSITION = 24


#: The instruments that play a band's bass line where no bass (General MIDI 32–39) is asked
#: for: cello, contrabass, tuba, bassoon.
LOW_VOICES = frozenset({42, 43, 58, 70})


def bass_role(programs: Iterable[int]) -> frozenset[int]:
    """Of the instruments a bar plays, those in the bass's role, which keep to the harmony
    (``GrammarConfig.bass_pitch_classes``): the basses; where there is none, the low voices
    (:data:`LOW_VOICES`: a cello asked for under a pianist's chords plays the bass line)."""
    pitched = {p for p in programs if p >= 0}
    basses = {p for p in pitched if p // 8 == 4}
    return frozenset(basses or pitched & LOW_VOICES)


#: The daemon's default ``density`` (the ``density`` setting): a bar may hold 1.25 × the notes
#: of the busiest bar the musician played lately.
DEFAULT_DENSITY = 1.25
#: The musician's bars a note budget reads (the newest ones that hold notes).
BUDGET_BARS = 16


def note_budget(
    heard: Iterable[tuple[Iterable[int], int]], programs: Iterable[int], density: float
) -> int | None:
    """The note budget of a generated bar from the musician's bars ``heard``, each (its
    instruments, its notes), the newest last: ``density`` × the busiest of the newest
    ``BUDGET_BARS`` that hold notes, rounded up, and at least 4 (room to play after a sparse
    bar). None (no budget) when ``density`` is 0, no bar holds notes, or ``programs`` holds an
    instrument none of them plays: a pad's few notes say nothing of how busy drums may be."""
    bars = [(set(p), int(n)) for p, n in heard if n > 0][-BUDGET_BARS:]
    if density <= 0 or not bars or not set(programs) <= set().union(*(p for p, _ in bars)):
        return None
    return max(4, int(np.ceil(density * max(n for _, n in bars))))


#: Jam mode's floor: a bar holds at least this share of the musician's mean notes a bar.
JAM_FLOOR = 0.6


def note_floor(
    heard: Iterable[tuple[Iterable[int], int]], programs: Iterable[int], share: float
) -> int | None:
    """The note floor of a generated bar: ``share`` × the mean notes of the newest
    ``BUDGET_BARS`` of the musician's bars that hold notes (``heard`` as for
    :func:`note_budget`), rounded down. Only where ``programs`` are exactly the instruments
    heard (a bass alone owes nothing to the notes of drums and bass); None otherwise, when
    ``share`` is 0, no bar holds notes, or it comes to 0."""
    bars = [(set(p), int(n)) for p, n in heard if n > 0][-BUDGET_BARS:]
    if share <= 0 or not bars or set(programs) != set().union(*(p for p, _ in bars)):
        return None
    return int(share * float(np.mean([n for _, n in bars]))) or None


def heard_bars(vocab: Vocab, bars: Iterable[np.ndarray]) -> list[tuple[list[int], int]]:
    """Token bars (a context's, one array per bar) as :func:`note_budget` and
    :func:`note_floor` read them: (instruments, notes) each."""
    types, values = vocab.types, vocab.values
    return [
        (values[bar[types[bar] == TokenType.PROGRAM]].tolist(),
         int((types[bar] == TokenType.DURATION).sum()))
        for bar in bars
    ]  # fmt: skip


#: A part's floor: this share of its mean notes in its recent bars (at least one note).
PART_FLOOR = 0.5
#: A part's budget with no bar of its own yet: this many notes a bar for drums, else
#: ``PART_BUDGET_PITCHED`` (room for a busy groove or line, not a wall of notes).
PART_BUDGET_DRUMS = 40
PART_BUDGET_PITCHED = 20
#: Drums asked for play at least this many hits a bar (a pulse), whatever their own history:
#: a groove that thins to a hit or two a bar has stopped being one.
PART_FLOOR_DRUMS = 4


@dataclass(frozen=True)
class PartLimit:
    """Notes one instrument's part holds in a generated bar: at least ``floor``, at most
    ``budget`` (None: no budget of its own), both paced through the bar."""

    program: int
    floor: int = 1
    budget: int | None = None


def part_limits(
    bars: Iterable[dict[int, int]], programs: Iterable[int], density: float,
    floor_share: float = PART_FLOOR,
) -> tuple[PartLimit, ...]:  # fmt: skip
    """Each of ``programs``' floor and budget from recent ``bars`` (the context's, each a map
    program → notes, the newest last; the musician's and Ostinato's own): once an instrument
    has played in the newest ``BUDGET_BARS`` bars, its floor is ``floor_share`` × its mean
    notes in the bars where it played and its budget ``density`` × its median such bar;
    before that a floor of one note (the part is there) and a budget from the busiest bar of
    the whole band (``density`` × it). Never more than the cap of its kind
    (``PART_BUDGET_DRUMS``, ``PART_BUDGET_PITCHED``): the bars read are Ostinato's own too,
    and a part left to itself that filled each budget would otherwise raise the next one by
    ``density`` every bar (measured: 112 notes a bar after 200 bars of drums, bass and keys
    with nobody playing). Drums keep a pulse: at least ``PART_FLOOR_DRUMS`` hits. ``density``
    0: only the one-note floor, no budget."""
    recent = [b for b in bars if b][-BUDGET_BARS:]
    busiest = max((sum(b.values()) for b in recent), default=0)
    out = []
    for program in sorted(set(programs)):
        own = [b[program] for b in recent if b.get(program, 0) > 0]
        least = PART_FLOOR_DRUMS if program == DRUM_PROGRAM else 1
        cap = PART_BUDGET_DRUMS if program == DRUM_PROGRAM else PART_BUDGET_PITCHED
        if density <= 0:
            out.append(PartLimit(program, 1, None))
        elif own:
            budget = min(cap, max(4, int(np.ceil(density * float(np.median(own))))))
            floor = min(budget - 1, max(least, int(floor_share * float(np.mean(own)))))
            out.append(PartLimit(program, floor, budget))
        else:
            budget = min(cap, max(4, int(np.ceil(density * busiest)))) if busiest else cap
            out.append(PartLimit(program, least, max(budget, least + 1)))
    return tuple(out)


def bar_counts(vocab: Vocab, bars: Iterable[np.ndarray]) -> list[dict[int, int]]:
    """Token bars as :func:`part_limits` reads them: notes per program, one map per bar."""
    types, values = vocab.types, vocab.values
    out = []
    for bar in bars:
        bar = np.asarray(bar)
        programs = bar[types[bar] == TokenType.PROGRAM]
        notes = types[bar] == TokenType.DURATION
        # a note's Program is 3 tokens before its Duration; header entries are never so
        idx = np.flatnonzero(notes) - 3
        idx = idx[idx >= 0]
        counts: dict[int, int] = {}
        for p in values[bar[idx]].tolist():
            counts[int(p)] = counts.get(int(p), 0) + 1
        out.append(counts)
        del programs
    return out


def default_pitch_range(program: int) -> tuple[int, int]:
    """Inclusive (low, high) MIDI pitch range a program is allowed to play by default."""
    if program == DRUM_PROGRAM:
        return DRUM_RANGE
    return _FAMILY_RANGES.get(program // 8, _OTHER_RANGE)


def played_ranges(vocab: Vocab, tokens: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """``pitch_ranges`` for :class:`GrammarConfig`: each program whose notes in ``tokens``
    (a context) go outside :func:`default_pitch_range`, with that range widened to them. The
    family ranges keep the model's own notes playable; an instrument the musician played lower
    or higher (a synth lead as the bass line, a piano's low A) may play there too, and a copied
    bar keeps its notes."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) < 2:
        return ()
    types, values = vocab.types[tokens], vocab.values[tokens]
    pitch = (types[1:] == TokenType.PITCH) | (types[1:] == TokenType.PITCH_DRUM)
    at = np.flatnonzero((types[:-1] == TokenType.PROGRAM) & pitch)
    ranges = []
    for program in np.unique(values[at]):
        pitches = values[at[values[at] == program] + 1]
        low, high = default_pitch_range(int(program))
        lo, hi = min(low, int(pitches.min())), max(high, int(pitches.max()))
        if (lo, hi) != (low, high):
            ranges.append((int(program), lo, hi))
    return tuple(ranges)


@dataclass(frozen=True)
class GrammarConfig:
    """What the generated bars may contain. ``programs=None`` enables every program.
    ``pitch_ranges``: (program, low, high) overrides of :func:`default_pitch_range`.

    The bar: ``meter`` (n, d) when given (it then sets ``beats_per_bar``, in quarter notes),
    else ``beats_per_bar`` — read as n/4 for whole beats and n/8 for half beats where the
    vocabulary has TimeSig tokens (so 6/8 must be given as a meter: 3 beats is 3/4)."""

    programs: tuple[int, ...] | None = None
    pitch_ranges: tuple[tuple[int, int, int], ...] = ()
    beats_per_bar: float = 4.0
    notes_within_bar: bool = True
    scale_pitch_classes: frozenset[int] | None = None  # scale lock for pitched programs
    allow_empty_bar: bool = True
    meter: Meter | None = None
    max_notes: int | None = None  # the bar's note budget (None: no budget)
    min_notes: int | None = None  # the bar's note floor (None: none)
    # The instruments the bar's header names (a vocabulary with headers; None: the model
    # chooses them among ``programs``), and each part's floor and budget.
    header: tuple[int, ...] | None = None
    parts: tuple[PartLimit, ...] = ()
    # The harmony the part in the bass's role keeps to (:func:`bass_role`; pitch classes;
    # None: the scale or anything)
    bass_pitch_classes: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.programs is not None and len(self.programs) == 0:
            raise ValueError("at least one program must be enabled")
        if self.meter is not None:
            num, den = self.meter
            if num < 1 or den < 1:
                raise ValueError(f"bad meter {num}/{den}")
            object.__setattr__(self, "meter", (int(num), int(den)))
            object.__setattr__(self, "beats_per_bar", meter_beats(self.meter))
        if self.beats_per_bar <= 0:
            raise ValueError(f"beats_per_bar must be positive, got {self.beats_per_bar}")
        for program, low, high in self.pitch_ranges:
            if not (0 <= low <= high <= 127):
                raise ValueError(f"bad pitch range {low}..{high} for program {program}")
        if self.scale_pitch_classes is not None and (
            not self.scale_pitch_classes or not all(0 <= pc < 12 for pc in self.scale_pitch_classes)
        ):
            raise ValueError("scale_pitch_classes must be a non-empty set of 0..11")
        if self.max_notes is not None and (
            int(self.max_notes) != self.max_notes or self.max_notes < 1
        ):
            raise ValueError(f"max_notes must be an integer ≥ 1, got {self.max_notes}")
        if self.min_notes is not None and (
            int(self.min_notes) != self.min_notes or self.min_notes < 1
        ):
            raise ValueError(f"min_notes must be an integer ≥ 1, got {self.min_notes}")
        if self.header is not None:
            header = tuple(sorted(set(int(p) for p in self.header)))
            if self.programs is not None and not set(header) <= set(self.programs):
                raise ValueError(f"header {header} names programs not enabled")
            object.__setattr__(self, "header", header)
        for part in self.parts:
            if part.floor < 0 or (part.budget is not None and part.budget < max(1, part.floor)):
                raise ValueError(f"bad limits for program {part.program}: {part}")

    @property
    def bar_meter(self) -> Meter:
        """The meter of the bars: ``meter``, or the one ``beats_per_bar`` stands for."""
        return self.meter or meter_of_beats(self.beats_per_bar)


class State(enum.IntEnum):
    EXPECT_BAR = 0
    AFTER_BAR = 1  # with TimeSig tokens: only the bar's TimeSig may follow
    AFTER_POSITION = 2
    AFTER_PROGRAM = 3
    AFTER_PITCH = 4
    AFTER_VELOCITY = 5
    AFTER_DURATION = 6
    AFTER_TIME_SIG = 7  # a Position (the bar's first onset) or Bar (an empty bar)
    HEADER = 8  # (a vocabulary with headers) the bar's instruments, then its first Position


class Grammar:
    """Token-by-token state machine over a :class:`Vocab` producing boolean masks."""

    def __init__(self, vocab: Vocab, config: GrammarConfig | None = None) -> None:
        self.vocab = vocab
        self.config = config or GrammarConfig()
        cfg = self.config
        size = vocab.size
        types, values = vocab.types, vocab.values
        self.meter = cfg.bar_meter
        # The bar's TimeSig token (None: a vocabulary without them, every bar read as 4/4).
        self.time_sig_id = vocab.meter_token(self.meter) if vocab.has_meters else None
        if vocab.has_meters:
            self.positions_per_bar = vocab.positions_per_bar(self.meter)
        else:
            self.positions_per_bar = vocab.positions_per_bar(cfg.beats_per_bar)
        #: Quarter notes per position: positions count beats of the meter's denominator.
        self.quarters_per_position = vocab.beat_quarters(self.meter) / vocab.positions_per_beat
        ppb = self.positions_per_bar

        vocab_programs = set(values[types == TokenType.PROGRAM].tolist())
        enabled = set(vocab_programs if cfg.programs is None else cfg.programs)
        missing = enabled - vocab_programs
        if missing:
            raise ValueError(f"programs not in the vocabulary: {sorted(missing)}")
        self.enabled_programs = tuple(sorted(enabled))

        is_pos = types == TokenType.POSITION
        position_ok = is_pos & (values < ppb)
        if not position_ok.any():
            raise ValueError("the vocabulary has no positions inside this meter")
        program_ok = (types == TokenType.PROGRAM) & np.isin(values, list(enabled))

        def only(ids: Iterable[int]) -> np.ndarray:
            m = np.zeros(size, dtype=bool)
            m[list(ids)] = True
            return m

        bar = only([vocab.bar_id])
        self._expect_bar = bar
        self._after_bar = position_ok | (bar if cfg.allow_empty_bar else False)
        if self.time_sig_id is not None:  # Bar TimeSig, then the bar's content
            self._after_time_sig = self._after_bar
            self._after_bar = only([self.time_sig_id])
        else:
            self._after_time_sig = self._after_bar
        self._after_position = program_ok
        self._after_pitch = types == TokenType.VELOCITY

        # Pitch masks per program; row index = program + 1 (drums at row 0).
        self._after_program = np.zeros((129, size), dtype=bool)
        pitched = types == TokenType.PITCH
        drum = types == TokenType.PITCH_DRUM
        scale = cfg.scale_pitch_classes
        overrides = {program: (low, high) for program, low, high in cfg.pitch_ranges}
        bass = bass_role(self.enabled_programs)
        for program in self.enabled_programs:
            low, high = overrides.get(program, default_pitch_range(program))
            in_range = (values >= low) & (values <= high)
            if program == DRUM_PROGRAM:
                row = drum & in_range
            else:
                row = pitched & in_range
                if scale is not None:
                    row &= np.isin(values % 12, list(scale))
                chord = cfg.bass_pitch_classes
                if chord and program in bass and (row & np.isin(values % 12, list(chord))).any():
                    row &= np.isin(values % 12, list(chord))
            if not row.any():
                raise ValueError(f"no pitch allowed for program {program} ({low}..{high})")
            self._after_program[program + 1] = row
        self._pitch_counts = {
            p: int(self._after_program[p + 1].sum()) for p in self.enabled_programs
        }
        self._program_token = {int(values[i]): int(i) for i in np.flatnonzero(program_ok)}
        self._program_ids = np.flatnonzero(program_ok)  # every enabled Program token

        # Duration masks per position: the note must end by the end of the bar.
        is_dur = types == TokenType.DURATION
        self._after_velocity = np.zeros((ppb, size), dtype=bool)
        # After a note at position p: another note (Program), a later Position, or Bar.
        self._after_duration = np.zeros((ppb, size), dtype=bool)
        for pos in range(ppb):
            if cfg.notes_within_bar:
                self._after_velocity[pos] = is_dur & (values <= ppb - pos)
            else:
                self._after_velocity[pos] = is_dur
            self._after_duration[pos] = program_ok | (position_ok & (values > pos)) | bar
        for table in (self._after_velocity, self._after_duration):
            table.flags.writeable = False
        # The note budget: notes the bar may hold when a note starts at each position, and for
        # each count of notes so far the first position where one more may start (ppb: none).
        self._position_ids = np.full(ppb, -1, dtype=np.int64)
        for i in np.flatnonzero(position_ok):
            self._position_ids[int(values[i])] = int(i)
        self._allowance: np.ndarray | None = None
        # The note floor: for each count of notes so far, the last position the bar may move
        # on to (ppb - 1: any), and the notes before it may end.
        self._last_position: np.ndarray | None = None
        self._bar_after = 0
        if cfg.min_notes is not None:
            floor = int(cfg.min_notes)
            slack = max(1, -(-floor // 8))
            self._bar_after = floor
            self._last_position = np.asarray(
                [min(ppb - 1, (k + slack) * ppb // floor) for k in range(floor + 1)]
            )
        if cfg.max_notes is not None:
            n = int(cfg.max_notes)
            burst = max(2, -(-n // 4))
            allowance = np.minimum(n, n * (np.arange(ppb) + 1) / ppb + burst)
            self._allowance = allowance
            self._first_position = np.asarray(
                [int(np.argmax(allowance > k)) if (allowance > k).any() else ppb
                 for k in range(n + 1)]
            )  # fmt: skip
        for m in (self._expect_bar, self._after_bar, self._after_position, self._after_pitch,
                  self._after_time_sig):  # fmt: skip
            m.flags.writeable = False
        self._after_program.flags.writeable = False

        # The instrument header: the enabled Program tokens in rising program order, and the
        # parts' pacing tables (see the module docstring).
        self.has_header = vocab.has_header
        order = np.argsort(values[self._program_ids], kind="stable")
        self._header_ids = self._program_ids[order]
        self._header_values = values[self._header_ids]
        if cfg.header is not None:
            enabled_set = set(self.enabled_programs)
            unknown = [p for p in cfg.header if p not in enabled_set]
            if unknown:
                raise ValueError(f"header programs not enabled: {unknown}")
        self._limits = {part.program: part for part in cfg.parts}
        self._is_program = types == TokenType.PROGRAM
        self._part_tables: dict[int, tuple[int, np.ndarray, np.ndarray | None]] = {}
        self.reset()

    def _part_table(self, program: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(floor, last position the bar may move on to per notes so far, allowance per
        position or None) of ``program``'s part in a bar whose header names it."""
        table = self._part_tables.get(program)
        if table is None:
            limit = self._limits.get(program)
            floor = max(1, limit.floor if limit is not None else 1)
            ppb = self.positions_per_bar
            slack = max(1, -(-floor // 8))
            last = np.asarray([min(ppb - 1, (k + slack) * ppb // floor) for k in range(floor)]
                              + [ppb - 1])  # fmt: skip
            allowance = None
            if limit is not None and limit.budget is not None:
                n = int(limit.budget)
                burst = max(2, -(-n // 4))
                allowance = np.minimum(n, n * (np.arange(ppb) + 1) / ppb + burst)
            table = (floor, last, allowance)
            self._part_tables[program] = table
        return table

    # -- state ---------------------------------------------------------------------------
    def reset(self, at_bar_start: bool = False) -> None:
        """Start before a ``Bar`` token, or just after one with ``at_bar_start``."""
        self.state = State.AFTER_BAR if at_bar_start else State.EXPECT_BAR
        self.position = -1
        self.program = DRUM_PROGRAM
        self.bars_completed = 0
        self.notes_in_bar = 0
        self._clear_position()
        self._begin_bar()
        if at_bar_start and self.has_header and self.time_sig_id is None:
            self.state = State.HEADER

    def _begin_bar(self) -> None:
        self.header: list[int] = []  # the programs this bar's header named so far
        self._part_notes: dict[int, int] = {}  # notes per program in this bar
        self._others: np.ndarray | None = None  # Program tokens the header left out

    def _clear_position(self) -> None:
        self._struck: dict[int, list[int]] = {}  # program → pitch tokens at this position
        self._spent: list[int] = []  # Program tokens with no pitch left at this position
        self._at_position = 0  # notes started at this position

    def _over_budget(self, row: np.ndarray) -> np.ndarray:
        """``row`` (after a note) without what the note budget forbids: another note here
        when the allowance is spent, and the positions before the next one it allows."""
        allowance, notes = self._allowance, self.notes_in_bar
        assert allowance is not None
        first = int(self._first_position[min(notes, len(self._first_position) - 1)])
        here = notes < allowance[self.position]
        if here and first <= self.position + 1:
            return row
        row = row.copy()
        if not here:
            row[self._program_ids] = False
        ids = self._position_ids[: min(first, len(self._position_ids))]
        row[ids[ids >= 0]] = False
        return row

    def _under_floor(self, row: np.ndarray) -> np.ndarray:
        """``row`` (at a bar's start or after a note) without what the note floor forbids:
        the positions too far ahead for the notes so far, and the bar's end while it holds
        too few; the nearest position when nothing else would be left."""
        last, notes = self._last_position, self.notes_in_bar
        assert last is not None
        limit = int(last[min(notes, len(last) - 1)])
        end_ok = notes >= self._bar_after
        if limit >= self.positions_per_bar - 1 and end_ok:
            return row
        floored = row.copy()
        ahead = self._position_ids[limit + 1 :]
        floored[ahead[ahead >= 0]] = False
        if not end_ok:
            floored[self.vocab.bar_id] = False
        if floored.any():
            return floored
        nearest = self._position_ids[self.position + 1 :]
        nearest = nearest[(nearest >= 0) & row[np.maximum(nearest, 0)]]
        if len(nearest):
            floored[int(nearest[0])] = True
            return floored
        return row  # the bar's last position, nothing more to strike: it ends

    def mask(self) -> np.ndarray:
        """Boolean mask (V,) of the tokens allowed next. Read-only; do not keep across calls."""
        state = self.state
        if state == State.HEADER:
            row = self._header_mask()
            if row is not None:
                return row
            state = State.AFTER_TIME_SIG  # the header is complete: the bar's content
        row = self._mask(state)
        if self._last_position is not None and (
            state == State.AFTER_DURATION
            or state == State.AFTER_TIME_SIG
            or (state == State.AFTER_BAR and self.time_sig_id is None)
        ):
            row = self._under_floor(row)
        if self.has_header and state in (
            State.AFTER_DURATION, State.AFTER_POSITION, State.AFTER_TIME_SIG
        ):  # fmt: skip
            row = self._keep_parts(row, state)
        return row

    @property
    def in_header(self) -> bool:
        """Whether the next token may still be an entry of the bar's header."""
        return self.state == State.HEADER and self._header_mask() is not None

    def _header_mask(self) -> np.ndarray | None:
        """The header's next entry (None: the header is complete, its content follows)."""
        forced, named = self.config.header, self.header
        if forced is not None:
            if len(named) >= len(forced):
                return None
            row = np.zeros(self.vocab.size, dtype=bool)
            row[self._program_token[forced[len(named)]]] = True
            return row
        row = np.zeros(self.vocab.size, dtype=bool)
        later = self._header_values > (named[-1] if named else DRUM_PROGRAM - 1)
        row[self._header_ids[later]] = True
        if named:
            content = self._keep_parts(self._after_time_sig, State.AFTER_TIME_SIG)
            row |= content
        elif self.config.allow_empty_bar and self._bar_after == 0:
            row[self.vocab.bar_id] = True
        return row

    def _keep_parts(self, row: np.ndarray, state: State) -> np.ndarray:
        """``row`` kept to the bar's header: notes only of the instruments it names, each
        part's floor and budget (paced), and no end before each named part has played."""
        named = self.header
        position = self.position
        limit = self.positions_per_bar - 1
        end_ok = True
        lagging: list[int] = []
        spent: list[int] = []
        tokens = self._program_token
        owed: list[int] = []  # the named parts of ours that have not played yet
        for program in named:
            if program not in tokens:
                continue  # not ours to play (the musician's part of a bar re-planned)
            floor, last, allowance = self._part_table(program)
            n = self._part_notes.get(program, 0)
            if n == 0:
                owed.append(tokens[program])
            lim = int(last[min(n, floor)])
            if n < floor:
                end_ok = False
                if lim <= position:
                    lagging.append(self._program_token[program])
            limit = min(limit, lim)
            if allowance is not None and n >= allowance[max(0, position)]:
                spent.append(self._program_token[program])
        others = self._others
        if others is None and named:
            keep = np.isin(self._program_ids, [tokens[p] for p in named if p in tokens])
            others = self._others = self._program_ids[~keep]
        if not named:  # an empty header: an empty bar
            out = np.zeros_like(row)
            out[self.vocab.bar_id] = bool(row[self.vocab.bar_id])
            return out
        out = row.copy()
        if others is not None and len(others):
            out[others] = False
        if spent:
            out[spent] = False
        budget = self.config.max_notes
        if owed and budget is not None and self.notes_in_bar + len(owed) >= budget:
            # the bar's budget keeps a note for each named part still silent: the header
            # says they play, and a part that flooded the bar must not spend their notes
            silent = np.zeros(self.vocab.size, dtype=bool)
            silent[owed] = True
            out[self._is_program & ~silent] = False
        if not end_ok:
            out[self.vocab.bar_id] = False
        if state != State.AFTER_POSITION:
            ahead = self._position_ids[limit + 1 :]
            out[ahead[ahead >= 0]] = False
        if lagging and state != State.AFTER_TIME_SIG:
            # a part behind its floor plays before the bar moves on
            behind = np.zeros(self.vocab.size, dtype=bool)
            behind[lagging] = True
            if state == State.AFTER_DURATION:  # even past the notes one position may hold
                behind[self._spent] = False
                out |= behind
            kept = out & (behind | ~self._is_program)
            if (kept & behind).any():
                out = kept
        if out.any():
            return out
        nearest = self._position_ids[position + 1 :]
        nearest = nearest[(nearest >= 0) & row[np.maximum(nearest, 0)]]
        if len(nearest):
            out[int(nearest[0])] = True
            return out
        return row

    def _mask(self, state: State) -> np.ndarray:
        if state == State.AFTER_DURATION:
            row = self._after_duration[self.position]
            if self._at_position >= MAX_NOTES_AT_ONE_POSITION:
                row = row.copy()
                row[self._program_ids] = False  # a later position, or Bar
            elif self._spent:  # programs that struck every pitch they may play here
                row = row.copy()
                row[self._spent] = False
            if self._allowance is not None:
                row = self._over_budget(row)
            return row
        if state == State.AFTER_PROGRAM:
            row = self._after_program[self.program + 1]
            struck = self._struck.get(self.program)
            if struck:
                row = row.copy()
                row[struck] = False
            return row
        if state == State.AFTER_VELOCITY:
            return self._after_velocity[self.position]
        if state == State.AFTER_POSITION:
            return self._after_position
        if state == State.AFTER_PITCH:
            return self._after_pitch
        if state == State.AFTER_BAR:
            return self._after_bar
        if state == State.AFTER_TIME_SIG:
            return self._after_time_sig
        return self._expect_bar

    def allows(self, token_id: int) -> bool:
        return bool(self.mask()[token_id])

    def advance(self, token_id: int) -> None:
        """Consume one token. ``ValueError`` if the grammar does not allow it here."""
        if not self.mask()[token_id]:
            raise ValueError(
                f"token {token_id} ({TokenType(self.vocab.types[token_id]).name}) "
                f"not allowed in state {self.state.name}"
            )
        self._apply(token_id)

    def replay(self, bar: np.ndarray) -> None:
        """Stand inside a bar already written: ``bar`` from its ``Bar`` token on (its header,
        the notes known so far, in token order). Its notes need not be ones this grammar
        allows (the musician's instruments, the key they played in): they are read, not
        checked. The bar's note budget and floor count only the enabled programs' notes."""
        bar = np.asarray(bar, dtype=np.int64)
        if not len(bar) or bar[0] != self.vocab.bar_id:
            raise ValueError("replay() takes a bar from its Bar token on")
        self.reset()
        enabled = set(self.enabled_programs)
        types = self.vocab.types
        for token in bar.tolist():
            counted = self.program in enabled
            before = self.notes_in_bar
            self._apply(token)
            if not counted and types[token] in (TokenType.PITCH, TokenType.PITCH_DRUM):
                self.notes_in_bar = before

    def _apply(self, token_id: int) -> None:
        kind = self.vocab.types[token_id]
        if self.state == State.HEADER and kind == TokenType.PROGRAM:
            self.header.append(int(self.vocab.values[token_id]))
            self._others = None  # the parts left out, read again from the longer header
            return
        if kind == TokenType.BAR:
            if self.state != State.EXPECT_BAR:
                self.bars_completed += 1
            self.state = State.AFTER_BAR
            self.position = -1
            self.notes_in_bar = 0
            self._clear_position()
            self._begin_bar()
            if self.has_header and self.time_sig_id is None:
                self.state = State.HEADER
        elif kind == TokenType.POSITION:
            self.position = int(self.vocab.values[token_id])
            self.state = State.AFTER_POSITION
            self._clear_position()
        elif kind == TokenType.PROGRAM:
            self.program = int(self.vocab.values[token_id])
            self.state = State.AFTER_PROGRAM
        elif kind == TokenType.PITCH or kind == TokenType.PITCH_DRUM:
            struck = self._struck.setdefault(self.program, [])
            struck.append(token_id)
            if len(struck) == self._pitch_counts.get(self.program, -1):  # -1: not enabled
                self._spent.append(self._program_token[self.program])
            self._at_position += 1
            self.notes_in_bar += 1
            self._part_notes[self.program] = self._part_notes.get(self.program, 0) + 1
            self.state = State.AFTER_PITCH
        elif kind == TokenType.VELOCITY:
            self.state = State.AFTER_VELOCITY
        elif kind == TokenType.TIME_SIG:
            self.state = State.HEADER if self.has_header else State.AFTER_TIME_SIG
        else:  # Duration: a note is complete
            self.state = State.AFTER_DURATION

    @property
    def note_complete(self) -> bool:
        """True right after a Duration token: the last four tokens form a whole note."""
        return self.state == State.AFTER_DURATION
