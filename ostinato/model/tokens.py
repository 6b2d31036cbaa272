"""REMI+ tokens: miditok REMI with every program in one stream.

Per bar: ``Bar``, then (new tokenizers) ``TimeSig_n/d``, then per onset ``Position_p``, then
per note ``Program_x Pitch_y Velocity_v Duration_d`` (drums: ``Program_-1 PitchDrum_y …``). A
sequence starts ``BOS`` and (new tokenizers) a ``Style_s`` token (:mod:`ostinato.model.style`).
No tempo tokens (tempo comes from the DAW), no chord tokens.

**The instrument header** (tokenizers whose configuration says ``instrument_header``, see
:func:`with_header`): after ``Bar`` (and its ``TimeSig``) a bar names the instruments whose
notes it holds, as ``Program`` tokens in rising program order, before its first ``Position``:
``Bar TimeSig_4/4 Program_-1 Program_33 Position_0 Program_-1 PitchDrum_36 …``. The header
reuses the ``Program`` tokens rather than adding new ones: a ``Program`` right after ``Bar``,
``TimeSig`` or another header ``Program`` can only be a header entry (a note's ``Program``
always follows a ``Position`` or a ``Duration``), so the segment needs no delimiter, the
vocabulary stays the same size (a model of the language before it can be trained on into
one with it), and the model reads "bass plays in this bar" with the very embedding it reads a
bass note's program with. Training writes the set the bar really holds; at run time the daemon
writes the instruments Ostinato plays in the bar it generates, and the grammar holds the bar
to them. :func:`score_to_ids` writes headers for such a tokenizer, :func:`add_headers` for
token arrays made without them (a corpus), and :func:`ids_to_score` drops them (miditok does
not know them).

**One order within an onset** (:func:`canonical_order`): the notes struck together come drums
first, then by program, each instrument's from low to high. miditok writes them in the order of
the file's tracks, which every file chooses for itself (the band songs of the corpus put the
drums last in 3 onsets of 5, the lieder the voice before the piano in half); a model reading
that order must guess, at every onset, which order this song took, and one that has played the
guitars of an onset may take the drums for done. :func:`score_to_ids` writes the one order
(everything the daemon hears, ``continue``'s input, a corpus built), and a corpus built before
is read in it (:meth:`ostinato.model.corpus.CorpusSplit.load`).

Two generations of the language, told apart by the tokenizer file:

* **legacy** (the first bundled model's): no time-signature and no style tokens. Every bar is
  read as 4/4; the bar length is a property of the session (:meth:`Vocab.positions_per_bar`).
* **meters and styles** (:func:`new_tokenizer`'s default, the bundled model's): miditok's
  ``TimeSig`` token after every ``Bar``, for the meters of :data:`METERS`. As in miditok,
  ``Position`` and ``Duration`` count in beats of the meter's denominator:
  ``positions_per_beat`` positions per quarter in n/4, per eighth in n/8, per half in n/2 (so
  a 7/8 bar has 7 × 8 positions, a 3/4 bar 3 × 8, a 2/2 bar 2 × 8). The style tokens are
  miditok *special tokens* (``Style_house`` …, right after PAD/BOS/EOS in the vocabulary):
  miditok stores them in ``tokenizer.json`` and skips them when decoding, and they never
  come out of :func:`score_to_ids`; the engine and the trainer put one after ``BOS``.

The tokenizer's configuration lives in ``tokenizer.json`` next to a model and is always
loaded from there; :func:`new_tokenizer` and its defaults only build a new one for a new
corpus or model.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from miditok import REMI, TokenizerConfig
from symusic import Score, TimeSignature

from ostinato.model.style import NONE, STYLES, TOKEN_PREFIX, token_name

TOKENIZER_FILE = "tokenizer.json"
DRUM_PROGRAM = -1
#: General MIDI's bass drums (acoustic, 35, and bass drum 1, 36): a drum bar's downbeat kick.
KICKS = frozenset((35, 36))
#: The tokenizer configuration's flag (``additional_params``) for the instrument header.
HEADER_PARAM = "instrument_header"

#: Positions per beat in the first 4 beats of a duration, and coarser after (miditok's
#: ``beat_res``): 8 per quarter gives 32 positions in a 4/4 bar (16ths and 32nds).
DEFAULT_BEAT_RES = {(0, 4): 8, (4, 12): 4}
DEFAULT_VELOCITY_BINS = 16
DEFAULT_PITCH_RANGE = (21, 109)  # piano range, upper bound exclusive (miditok convention)
SPECIAL_TOKENS = ("PAD", "BOS", "EOS")
#: PAD's id (miditok puts the special tokens first): what a model with ``previous_token`` is
#: given as the token before the first one of a window, or of a context
NO_PREVIOUS = 0


@dataclass(frozen=True)
class PlaceRule:
    """How a model whose rotary pairs turn with each token's place in its bar (a model
    with ``bar_token``) counts that place.

    In tokens (``position_id`` < 0): 0 at a Bar, one more than the token before otherwise.
    In music (``position_id``: the first Position token's id, ``positions`` of them, their
    values 0, 1, … in id order): a Bar at 0, a Position at ``stride`` × (1 + its value), and
    each token after one of these one more than the token before, up to ``stride`` − 1 more
    (the header's tokens count from the Bar, a note's from its onset's Position). The same
    onset in another bar is then at the same place however many notes came before it there:
    "what was played here a bar ago" is one angle the attention can learn, where a count of
    tokens since the Bar shifts with every note added or left out earlier in the bar; and
    within the onset the count tells its notes apart. ``stride`` 1: every token of a note at
    its onset's place."""

    bar_id: int
    position_id: int = -1
    positions: int = 0
    stride: int = 1

    @classmethod
    def of(cls, model: Mapping | object) -> PlaceRule | None:
        """The rule of a model's config (a ModelConfig or its dict); None without places."""
        get = model.get if isinstance(model, Mapping) else lambda k, d: getattr(model, k, d)
        bar = int(get("bar_token", -1))
        if bar < 0:
            return None
        return cls(bar, int(get("position_token", -1)), int(get("positions", 0)),
                   int(get("place_stride", 1)))  # fmt: skip

    @property
    def musical(self) -> bool:
        return self.position_id >= 0

    def places(self, tokens: np.ndarray, start: int = 0) -> np.ndarray:
        """(T,) token ids → each one's place; ``start``: the place of the token before the
        first (a window that begins inside a bar)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        index = np.arange(len(tokens))
        if not self.musical:
            last = np.where(tokens == self.bar_id, index, -1)
            last = np.maximum.accumulate(last) if len(tokens) else index
            return np.where(last >= 0, index - last, start + 1 + index).astype(np.int64)
        S = self.stride
        value = tokens - self.position_id
        at_position = (value >= 0) & (value < self.positions)
        marks = at_position | (tokens == self.bar_id)
        last = np.where(marks, index, -1)
        last = np.maximum.accumulate(last) if len(tokens) else index
        base = np.where(at_position, (value + 1) * S, 0)
        marked = base[np.maximum(last, 0)] + np.minimum(index - last, S - 1)
        carried = start - start % S + np.minimum(start % S + 1 + index, S - 1)
        return np.where(last >= 0, marked, carried).astype(np.int64)

    def after(self, last: int, token: int) -> int:
        """The place of ``token`` after a token at place ``last``."""
        if token == self.bar_id:
            return 0
        if not self.musical:
            return last + 1
        value = token - self.position_id
        if 0 <= value < self.positions:
            return (value + 1) * self.stride
        return last + 1 if last % self.stride < self.stride - 1 else last


class BarEcho:
    """The "echo" of each token for a model with ``bar_echo``: the token that followed the
    first token at the same place (:class:`PlaceRule`) in the bar before, ``NO_PREVIOUS``
    where there is none (before the first Bar of a window or context, or where the bar before
    had nothing at that place). A repeated bar is then read off one input: at each place the
    model is told what came next there a bar ago, and it learns when to play it again and when
    not.

    Kept token by token (:meth:`step`), as the engine decodes; :func:`echoes` is the same over
    a whole window, and ``ostinato.model.network.echo_tokens`` the same in PyTorch. The tokens
    before the first Bar count as a bar of their own, so the first bar's echoes come from them
    (a context's ``BOS`` and style; a training window's bar it begins inside)."""

    __slots__ = ("added", "bar_id", "before", "now", "pending")

    #: steps of a bar that :meth:`rewind` can take back (a longer bar is rebuilt instead)
    MAX_REWIND = 4096

    def __init__(self, bar_id: int) -> None:
        self.bar_id = bar_id
        self.before: dict[int, int] | None = None  # the bar before: place → the token after
        self.now: dict[int, int] = {}  # this bar's, filled as each next token comes
        self.pending: int | None = None  # the place of the last token (its next not yet known)
        # per step since this bar's Bar: the place it entered into ``now`` (-1: none)
        self.added: list[int] = []

    def step(self, token: int, place: int) -> int:
        """The echo of ``token`` at ``place``, the one after the last token stepped."""
        entered = -1
        if self.pending is not None and self.pending not in self.now:
            self.now[self.pending] = token
            entered = self.pending
        if token == self.bar_id:
            self.before, self.now, self.added = self.now, {}, []
        elif len(self.added) < self.MAX_REWIND:
            self.added.append(entered)
        self.pending = place
        return NO_PREVIOUS if self.before is None else self.before.get(place, NO_PREVIOUS)

    def steps(self, tokens: np.ndarray, places: np.ndarray) -> np.ndarray:
        """:meth:`step` over each of ``tokens`` in turn: their echoes."""
        return np.fromiter(
            (self.step(int(t), int(p)) for t, p in zip(tokens, places, strict=True)),
            dtype=np.int64,
            count=len(tokens),
        )

    def rewind(self, count: int, place: int) -> bool:
        """Take back the last ``count`` steps, all after this bar's Bar, so the last token is
        one at ``place`` again (a truncation inside the bar). False, and nothing changed,
        where they cannot be: a Bar among them, or a bar longer than :attr:`MAX_REWIND`."""
        if count > len(self.added) or len(self.added) >= self.MAX_REWIND:
            return False
        for _ in range(count):
            entered = self.added.pop()
            if entered >= 0:
                del self.now[entered]
        self.pending = place
        return True

    def copy(self) -> BarEcho:
        other = BarEcho(self.bar_id)
        other.before = None if self.before is None else dict(self.before)
        other.now, other.pending, other.added = dict(self.now), self.pending, list(self.added)
        return other

    @classmethod
    def after(cls, bar_id: int, tokens: np.ndarray, places: np.ndarray) -> BarEcho:
        """The state after ``tokens`` (at ``places``), from the start of a context: stepped
        from the Bar before the last one on, as only the last two bars count. A context that
        holds fewer than two Bars is stepped whole: the bar before its first Bar is then what
        it holds before it, which may be less than was played (a slide dropped the rest; the
        engine takes back steps with :meth:`rewind` where it can, which keeps it)."""
        bars = np.flatnonzero(np.asarray(tokens) == bar_id)
        first = int(bars[-2]) if len(bars) >= 2 else 0
        echo = cls(bar_id)
        for token, place in zip(tokens[first:], places[first:], strict=True):
            echo.step(int(token), int(place))
        return echo


def echoes(tokens: np.ndarray, places: np.ndarray, bar_id: int) -> np.ndarray:
    """(T,) tokens at their places → each one's echo (:class:`BarEcho`), from the start."""
    return BarEcho(bar_id).steps(np.asarray(tokens), np.asarray(places))


#: The meters a new tokenizer has TimeSig tokens for, as (numerator, denominator).
#: Half-note meters count 8 positions per half (16ths), eighth-note meters 8 per eighth.
METERS = (
    (2, 2), (3, 2), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4), (3, 8), (6, 8), (7, 8), (9, 8), (12, 8),
)  # fmt: skip
#: A meter: (numerator, denominator), e.g. (7, 8).
Meter = tuple[int, int]


class TokenType(enum.IntEnum):
    """Kind of each vocabulary entry, as used by the grammar."""

    PAD = 0
    BOS = 1
    EOS = 2
    BAR = 3
    POSITION = 4
    PROGRAM = 5
    PITCH = 6
    PITCH_DRUM = 7
    VELOCITY = 8
    DURATION = 9
    TIME_SIG = 10
    STYLE = 11


_TYPE_BY_PREFIX = {
    "PAD": TokenType.PAD,
    "BOS": TokenType.BOS,
    "EOS": TokenType.EOS,
    "Bar": TokenType.BAR,
    "Position": TokenType.POSITION,
    "Program": TokenType.PROGRAM,
    "Pitch": TokenType.PITCH,
    "PitchDrum": TokenType.PITCH_DRUM,
    "Velocity": TokenType.VELOCITY,
    "Duration": TokenType.DURATION,
    "TimeSig": TokenType.TIME_SIG,
    TOKEN_PREFIX.rstrip("_"): TokenType.STYLE,
}


def meter_beats(meter: Meter) -> float:
    """Length of a bar of ``meter`` in quarter notes: (7, 8) → 3.5."""
    return meter[0] * 4 / meter[1]


def format_meter(meter: Meter) -> str:
    return f"{meter[0]}/{meter[1]}"


def meter_of_beats(beats_per_bar: float) -> Meter:
    """The meter a bar length in quarter notes stands for when no meter is given: whole
    beats → n/4 (3 → 3/4, so 6/8 must be given as a meter), half beats → n/8 (3.5 → 7/8)."""
    if abs(beats_per_bar - round(beats_per_bar)) < 1e-9:
        return (round(beats_per_bar), 4)
    return (round(beats_per_bar * 2), 8)


def as_meter(meter: Meter | str | float) -> Meter:
    """A meter from (n, d), ``"n/d"`` or a bar length in quarter notes."""
    if isinstance(meter, str):
        try:
            num, den = (int(x) for x in meter.split("/"))
        except ValueError:
            raise ValueError(f"a meter looks like 4/4 or 7/8, got {meter!r}") from None
        return (num, den)
    if isinstance(meter, tuple):
        return (int(meter[0]), int(meter[1]))
    return meter_of_beats(float(meter))


def new_tokenizer(
    *,
    beat_res: dict[tuple[int, int], int] | None = None,
    velocity_bins: int = DEFAULT_VELOCITY_BINS,
    pitch_range: tuple[int, int] = DEFAULT_PITCH_RANGE,
    meters: Sequence[Meter] | None = METERS,
    styles: bool = True,
) -> REMI:
    """Build a fresh REMI+ tokenizer (for a new corpus or model; never at run time).

    ``meters``: the meters of its ``TimeSig`` tokens (None: none, every bar is 4/4: the legacy
    language of the first bundled model). ``styles``: ``Style_*`` tokens for :data:`STYLES`.
    ``new_tokenizer(meters=None, styles=False)`` is :func:`legacy_tokenizer`."""
    if not 16 <= velocity_bins <= 32:
        raise ValueError(f"velocity_bins must be 16..32, got {velocity_bins}")
    specials = list(SPECIAL_TOKENS) + ([token_name(s) for s in STYLES] if styles else [])
    time_signature_range: dict[int, list[int]] = {}
    for num, den in meters or ():
        time_signature_range.setdefault(den, []).append(num)
    extra = {"time_signature_range": time_signature_range} if meters else {}
    config = TokenizerConfig(
        pitch_range=pitch_range,
        beat_res=dict(beat_res or DEFAULT_BEAT_RES),
        num_velocities=velocity_bins,
        special_tokens=specials,
        use_velocities=True,
        use_note_duration_programs=list(range(-1, 128)),
        use_programs=True,
        one_token_stream_for_programs=True,
        programs=list(range(-1, 128)),
        program_changes=False,
        use_pitchdrum_tokens=True,
        use_chords=False,
        use_rests=False,
        use_tempos=False,
        use_time_signatures=bool(meters),
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_pitch_intervals=False,
        remove_duplicated_notes=True,
        encode_ids_split="no",
        **extra,
    )
    return REMI(config)


def with_header(tokenizer: REMI, on: bool = True) -> REMI:
    """``tokenizer`` with the instrument header on (or off): the same vocabulary, the flag in
    its configuration (saved in ``tokenizer.json``). In place; returned."""
    tokenizer.config.additional_params[HEADER_PARAM] = bool(on)
    return tokenizer


def has_header(tokenizer: REMI) -> bool:
    """Whether ``tokenizer``'s bars carry the instrument header."""
    return bool(tokenizer.config.additional_params.get(HEADER_PARAM, False))


def tokenizer_meters(tokenizer: REMI) -> set[Meter]:
    """The meters ``tokenizer`` encodes bars in: its TimeSig tokens' meters, or only 4/4 for
    one without them (it reads every bar as 4/4)."""
    if not tokenizer.config.use_time_signatures:
        return {(4, 4)}
    return {(int(n), int(d)) for n, d in tokenizer.time_signatures}


def legacy_tokenizer() -> REMI:
    """The first language (the first bundled model's): no time-signature, no style tokens."""
    return new_tokenizer(meters=None, styles=False)


def save_tokenizer(tokenizer: REMI, model_dir: str | Path) -> Path:
    """Write ``tokenizer.json`` into ``model_dir`` and return its path."""
    path = Path(model_dir) / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    return path


def load_tokenizer(path: str | Path) -> REMI:
    """Load the tokenizer from ``tokenizer.json`` (or a folder holding one).

    Raises ``FileNotFoundError`` or ``ValueError`` with a readable message when the file is
    missing or is not a REMI+ tokenizer of the kind Ostinato writes.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        tokenizer = REMI(params=path)
    except Exception as exc:  # miditok raises many kinds on a bad file
        raise ValueError(f"cannot read tokenizer {path}: {exc}") from exc
    cfg = tokenizer.config
    if not (cfg.use_programs and cfg.one_token_stream_for_programs) or cfg.use_tempos:
        raise ValueError(f"{path} is not a REMI+ tokenizer (programs in one stream, no tempos)")
    return tokenizer


@dataclass(frozen=True)
class Vocab:
    """Numpy view of a tokenizer's vocabulary: type and value of every token id.

    ``value`` holds: position index for Position, program number for Program, MIDI pitch for
    Pitch/PitchDrum, MIDI velocity for Velocity, length in positions for Duration, 0 else.
    Positions and durations count ``positions_per_beat`` per beat of the meter's denominator
    (a quarter in n/4 and in the legacy language, an eighth in n/8).

    ``meter_ids``: the TimeSig token of each meter (empty: legacy, every bar is 4/4), and
    ``bar_beats`` the bar length of each TimeSig token in quarter notes (0 for other tokens).
    ``style_ids``: the Style token of each style (empty: the vocabulary has no styles).
    """

    types: np.ndarray  # (V,) int8 TokenType
    values: np.ndarray  # (V,) int32
    positions_per_beat: int
    duration_beats: np.ndarray  # (V,) float32, 0 unless Duration (beats of the denominator)
    pad_id: int
    bos_id: int
    eos_id: int
    bar_id: int
    meter_ids: dict[Meter, int] = field(default_factory=dict)
    bar_beats: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    style_ids: dict[str, int] = field(default_factory=dict)
    has_header: bool = False  # bars name their instruments after Bar (TimeSig)

    @property
    def size(self) -> int:
        return int(self.types.shape[0])

    def ids_of(self, token_type: TokenType) -> np.ndarray:
        return np.flatnonzero(self.types == token_type)

    # -- meters ------------------------------------------------------------------------------
    @property
    def has_meters(self) -> bool:
        """Whether every bar carries its meter (a TimeSig token after Bar)."""
        return bool(self.meter_ids)

    @property
    def meters(self) -> tuple[Meter, ...]:
        return tuple(sorted(self.meter_ids, key=lambda m: (m[1], m[0])))

    def meter_of_token(self, token_id: int) -> Meter:
        for meter, idx in self.meter_ids.items():
            if idx == token_id:
                return meter
        raise ValueError(f"token {token_id} is not a TimeSig token")

    def positions_per_bar(self, beats_per_bar: float | Meter = 4.0) -> int:
        """Positions in a bar: of ``beats_per_bar`` quarter notes (legacy), or of a meter
        (n × positions_per_beat with TimeSig tokens, whose positions count denominator beats)."""
        if isinstance(beats_per_bar, tuple):
            if self.has_meters:
                return beats_per_bar[0] * self.positions_per_beat
            beats_per_bar = meter_beats(beats_per_bar)
        return round(self.positions_per_beat * beats_per_bar)

    def beat_quarters(self, meter: Meter) -> float:
        """Quarter notes per beat of the position grid in ``meter``: 1 in n/4 and in the
        legacy language (always quarters), 0.5 in n/8 with TimeSig tokens."""
        return 4 / meter[1] if self.has_meters else 1.0

    @property
    def max_beats_per_bar(self) -> float:
        """The longest bar the Position tokens can hold, in quarter notes."""
        if self.has_meters:
            return max(meter_beats(m) for m in self.meter_ids)
        return int((self.types == TokenType.POSITION).sum()) / self.positions_per_beat

    def check_meter(self, meter: Meter | str | float) -> Meter:
        """The meter (n, d) if this vocabulary can generate its bars; ValueError with the
        reason if not. With TimeSig tokens: one of their meters. Legacy (the first language):
        any bar up to 4 quarter notes, as before — read as a 4/4 bar cut short, since such a
        model only learned 4/4 (a warning says so) — and nothing longer."""
        meter = as_meter(meter)
        num, den = meter
        if num < 1 or den not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"{format_meter(meter)} is not a meter")
        if self.has_meters:
            if meter not in self.meter_ids:
                known = ", ".join(format_meter(m) for m in self.meters)
                raise ValueError(
                    f"this model knows the meters {known}; {format_meter(meter)} is not one "
                    "of them (it has no TimeSig token for it)"
                )
            return meter
        beats = meter_beats(meter)
        if beats > self.max_beats_per_bar + 1e-9:
            raise ValueError(
                f"this model has no time-signature tokens: it knows only 4/4 bars and plays "
                f"shorter meters (3/4, 2/4, 6/8, 7/8) as a 4/4 bar cut short; a bar of "
                f"{format_meter(meter)} ({beats:g} beats) is longer than it can hold. Use a "
                f"model trained with time signatures for {format_meter(meter)}"
            )
        return meter

    def meter_token(self, meter: Meter) -> int | None:
        """The TimeSig token of ``meter`` (None: legacy vocabulary); ValueError if it has
        TimeSig tokens but not that one."""
        if not self.has_meters:
            return None
        return self.meter_ids[self.check_meter(meter)]

    # -- styles ------------------------------------------------------------------------------
    @property
    def has_styles(self) -> bool:
        return bool(self.style_ids)

    def style_token(self, style: str | None) -> int | None:
        """The Style token of ``style`` (None or ``auto``: the ``none`` style); None for a
        vocabulary without styles. ValueError for a style it has no token for."""
        if not self.has_styles:
            return None
        name = NONE if style in (None, "auto") else str(style)
        if name not in self.style_ids:
            known = ", ".join(self.style_ids)
            raise ValueError(f"unknown style {name!r}; this model knows {known}")
        return self.style_ids[name]

    @classmethod
    def from_tokenizer(cls, tokenizer: REMI) -> Vocab:
        vocab: dict[str, int] = tokenizer.vocab
        size = len(vocab)
        types = np.full(size, -1, dtype=np.int8)
        values = np.zeros(size, dtype=np.int32)
        duration_beats = np.zeros(size, dtype=np.float32)
        bar_beats = np.zeros(size, dtype=np.float32)
        meter_ids: dict[Meter, int] = {}
        style_ids: dict[str, int] = {}
        positions_per_beat = max(tokenizer.config.beat_res.values())
        for token, idx in vocab.items():
            prefix, _, value = token.partition("_")
            if prefix not in _TYPE_BY_PREFIX:
                raise ValueError(f"unexpected token {token!r} in a REMI+ vocabulary")
            kind = _TYPE_BY_PREFIX[prefix]
            types[idx] = kind
            if kind in (
                TokenType.POSITION,
                TokenType.PROGRAM,
                TokenType.PITCH,
                TokenType.PITCH_DRUM,
                TokenType.VELOCITY,
            ):
                values[idx] = int(value)
            elif kind == TokenType.DURATION:
                beats, sub, res = (int(x) for x in value.split("."))
                duration_beats[idx] = beats + sub / res
                values[idx] = round(duration_beats[idx] * positions_per_beat)
            elif kind == TokenType.TIME_SIG:
                meter = as_meter(value)
                meter_ids[meter] = idx
                bar_beats[idx] = meter_beats(meter)
            elif kind == TokenType.STYLE:
                style_ids[value] = idx
        if (types < 0).any():
            raise ValueError("vocabulary has gaps in its ids")
        return cls(
            types=types,
            values=values,
            positions_per_beat=positions_per_beat,
            duration_beats=duration_beats,
            pad_id=vocab["PAD_None"],
            bos_id=vocab["BOS_None"],
            eos_id=vocab["EOS_None"],
            bar_id=vocab["Bar_None"],
            meter_ids=meter_ids,
            bar_beats=bar_beats,
            style_ids=style_ids,
            has_header=has_header(tokenizer),
        )


def token_types(tokenizer: REMI) -> np.ndarray:
    """Array (V,) of :class:`TokenType` for every id of ``tokenizer``."""
    return Vocab.from_tokenizer(tokenizer).types


def load_score(path: str | Path) -> Score:
    """Read a MIDI file into a symusic Score (ValueError with the reason if it cannot)."""
    try:
        return Score(str(path))
    except Exception as exc:  # symusic raises RuntimeError/ValueError on broken files
        raise ValueError(f"cannot read MIDI file {path}: {exc}") from exc


def score_meters(score: Score) -> list[Meter]:
    """The meters of a score's time signatures in order (none written: 4/4, as MIDI says)."""
    meters = [(ts.numerator, ts.denominator) for ts in score.time_signatures]
    return meters or [(4, 4)]


def set_meter(score: Score, meter: Meter) -> Score:
    """Give ``score`` one time signature, ``meter`` from its start (in place; returned)."""
    score.time_signatures.clear()
    score.time_signatures.append(TimeSignature(0, meter[0], meter[1]))
    return score


_VOCABS: dict[int, tuple[REMI, int, Vocab]] = {}  # id(tokenizer) → (it, its size, its Vocab)


def vocab_of(tokenizer: REMI) -> Vocab:
    """``Vocab.from_tokenizer``, built once per tokenizer (2 ms: every bar the daemon hears
    or plays is tokenized, several times a bar when it re-plans)."""
    cached = _VOCABS.get(id(tokenizer))
    if cached is None or cached[0] is not tokenizer or cached[1] != len(tokenizer.vocab):
        if len(_VOCABS) > 16:
            _VOCABS.clear()
        cached = _VOCABS[id(tokenizer)] = (tokenizer, len(tokenizer.vocab),
                                           Vocab.from_tokenizer(tokenizer))  # fmt: skip
    return cached[2]


def canonical_order(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
    """``ids`` with the notes of each onset in one order (the module docstring): drums first,
    then by program, each instrument's notes from low to high pitch, equal ones as they were.
    A note is its four tokens (``Program``, ``Pitch``/``PitchDrum``, ``Velocity``,
    ``Duration``); every other token (``Bar``, ``TimeSig``, ``Position``, a header's
    ``Program``, a note cut short at the end) stays where it is, and notes move only among
    those between two of them."""
    ids = np.asarray(ids)
    n = len(ids)
    kinds = vocab.types[ids]
    starts = np.flatnonzero(kinds[: max(0, n - 3)] == TokenType.PROGRAM)
    whole = (
        np.isin(kinds[starts + 1], (TokenType.PITCH, TokenType.PITCH_DRUM))
        & (kinds[starts + 2] == TokenType.VELOCITY)
        & (kinds[starts + 3] == TokenType.DURATION)
    )
    starts = starts[whole]
    if len(starts) < 2:
        return ids
    note = np.full(n, -1, dtype=np.int64)
    offset = np.zeros(n, dtype=np.int64)
    for k in range(4):
        note[starts + k] = np.arange(len(starts))
        offset[starts + k] = k
    in_note = note >= 0
    group = np.cumsum(~in_note)  # each token that is no note's begins a group
    program = np.full(n, -(2**31), dtype=np.int64)  # (such a token first in its group)
    pitch = np.zeros(n, dtype=np.int64)
    program[in_note] = vocab.values[ids[starts]][note[in_note]]
    pitch[in_note] = vocab.values[ids[starts + 1]][note[in_note]]
    order = np.lexsort((offset, note, pitch, program, group))
    return ids[order]


def score_to_ids(tokenizer: REMI, score: Score) -> np.ndarray:
    """Tokenize a Score to ids (uint16 array), the notes of each onset in one order
    (:func:`canonical_order`). Starts with ``Bar``; empty score gives []."""
    seq = tokenizer.encode(score)
    if isinstance(seq, list):  # one stream is configured; guard against a foreign config
        raise ValueError("tokenizer does not put all programs in one stream")
    ids = canonical_order(vocab_of(tokenizer), np.asarray(seq.ids, dtype=np.uint16))
    if has_header(tokenizer) and len(ids):
        ids = add_headers(vocab_of(tokenizer), ids).astype(np.uint16)
    return ids


def midi_to_ids(tokenizer: REMI, path: str | Path) -> np.ndarray:
    return score_to_ids(tokenizer, load_score(path))


def ids_to_score(tokenizer: REMI, ids: Sequence[int] | np.ndarray) -> Score:
    """Decode ids to a Score (ticks per quarter = the tokenizer's positions per beat)."""
    if not len(ids):
        return Score(tokenizer.time_division)
    ids = strip_headers(vocab_of(tokenizer), np.asarray(ids, dtype=np.int64))
    return tokenizer.decode([int(i) for i in ids])


def context_meter(vocab: Vocab, ids: Sequence[int] | np.ndarray) -> Meter:
    """The meter of the last bar of ``ids``: its TimeSig token's, else 4/4 (a legacy
    vocabulary, or no TimeSig token in ``ids``)."""
    if vocab.has_meters:
        ids = np.asarray(ids)
        found = np.flatnonzero(vocab.types[ids] == TokenType.TIME_SIG)
        if len(found):
            return vocab.meter_of_token(int(ids[found[-1]]))
    return (4, 4)


def bar_starts(ids: np.ndarray, bar_id: int) -> np.ndarray:
    """Indices of the ``Bar`` tokens in ``ids``."""
    return np.flatnonzero(np.asarray(ids) == bar_id)


def split_bars(ids: np.ndarray, bar_id: int) -> list[np.ndarray]:
    """Split ids into bars, each starting with its ``Bar`` token (tokens before the first
    ``Bar``, such as BOS, are dropped)."""
    ids = np.asarray(ids)
    starts = bar_starts(ids, bar_id)
    ends = np.append(starts[1:], len(ids))
    return [ids[s:e] for s, e in zip(starts, ends, strict=True)]


# -- the instrument header ---------------------------------------------------------------------
def header_mask(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the header entries of ``ids``: the ``Program`` tokens right after a
    ``Bar``, a ``TimeSig`` or another header entry (a note's ``Program`` never is)."""
    ids = np.asarray(ids)
    kinds = vocab.types[ids]
    is_program = kinds == TokenType.PROGRAM
    mask = np.zeros(len(ids), dtype=bool)
    if not len(ids):
        return mask
    opens = np.zeros(len(ids), dtype=bool)  # the token before i opens a header
    opens[1:] = (kinds[:-1] == TokenType.BAR) | (kinds[:-1] == TokenType.TIME_SIG)
    # a run of Programs that starts right after an opener: mark it whole
    starts = np.flatnonzero(is_program & opens)
    if not len(starts):
        return mask
    run_ends = np.flatnonzero(~is_program)  # the first non-Program after each start
    for s in starts:
        k = int(np.searchsorted(run_ends, s))
        e = int(run_ends[k]) if k < len(run_ends) else len(ids)
        mask[s:e] = True
    return mask


def strip_headers(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
    """``ids`` without instrument headers (unchanged where there are none)."""
    ids = np.asarray(ids)
    mask = header_mask(vocab, ids)
    return ids[~mask] if mask.any() else ids


def bar_programs(vocab: Vocab, ids: np.ndarray) -> list[list[int]]:
    """The programs whose notes each bar of ``ids`` holds (header entries not counted), in
    rising order: one list per ``Bar`` token."""
    ids = strip_headers(vocab, np.asarray(ids))
    bar_index = np.cumsum(ids == vocab.bar_id) - 1
    notes = vocab.types[ids] == TokenType.PROGRAM
    out: list[set[int]] = [set() for _ in range(int(bar_index[-1]) + 1 if len(ids) else 0)]
    for b, program in zip(bar_index[notes], vocab.values[ids[notes]], strict=True):
        if b >= 0:
            out[int(b)].add(int(program))
    return [sorted(s) for s in out]


def header_tokens(vocab: Vocab, programs: Iterable[int]) -> list[int]:
    """The header naming ``programs``: their Program tokens in rising program order."""
    token = program_tokens(vocab)
    return [token[p] for p in sorted(set(programs))]


def program_tokens(vocab: Vocab) -> dict[int, int]:
    """Program number → its Program token id."""
    ids = np.flatnonzero(vocab.types == TokenType.PROGRAM)
    return {int(vocab.values[i]): int(i) for i in ids}


def add_headers(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
    """``ids`` with every bar's instrument header written from the notes it holds (an
    existing header is replaced). Bars are found by their ``Bar`` token; the header goes after
    it and after its ``TimeSig`` token where it has one."""
    ids = strip_headers(vocab, np.asarray(ids, dtype=np.int64))
    bars = np.flatnonzero(ids == vocab.bar_id)
    if not len(bars):
        return ids
    kinds = vocab.types[ids]
    bar_index = np.cumsum(ids == vocab.bar_id) - 1
    notes = np.flatnonzero((kinds == TokenType.PROGRAM) & (bar_index >= 0))
    # one entry per (bar, program), in bar order then rising program value
    order = np.lexsort((vocab.values[ids[notes]], bar_index[notes]))
    pairs = np.stack((bar_index[notes][order], ids[notes][order]), axis=1)
    if len(pairs):
        keep = np.ones(len(pairs), dtype=bool)
        keep[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
        pairs = pairs[keep]
    # where each bar's header goes: after the Bar, and after its TimeSig if one follows
    at = bars + 1
    has_sig = at < len(ids)
    has_sig[has_sig] = kinds[at[has_sig]] == TokenType.TIME_SIG
    at = at + has_sig
    if not len(pairs):
        return ids
    return np.insert(ids, at[pairs[:, 0]], pairs[:, 1])


def name_in_header(vocab: Vocab, bar: np.ndarray, programs: Sequence[int]) -> np.ndarray:
    """One bar (from its ``Bar`` token) with a header naming ``programs`` besides the
    instruments its notes hold: a bar known in part, whose other instruments are still to
    play. Unchanged for a vocabulary without headers."""
    bar = np.asarray(bar, dtype=np.int64)
    if not vocab.has_header:
        return bar
    held = bar_programs(vocab, bar)
    named = header_tokens(vocab, set(programs) | set(held[0] if held else ()))
    notes = strip_headers(vocab, bar)
    at = 1 + int(len(notes) > 1 and vocab.types[notes[1]] == TokenType.TIME_SIG)
    return np.concatenate((notes[:at], np.asarray(named, dtype=np.int64), notes[at:]))
