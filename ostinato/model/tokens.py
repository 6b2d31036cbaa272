"""REMI+ tokens: miditok REMI with every program in one stream.

Per bar: ``Bar``, then per onset ``Position_p``, then per note
``Program_x Pitch_y Velocity_v Duration_d`` (drums: ``Program_-1 PitchDrum_y …``).
No tempo tokens (tempo comes from the DAW), no chord tokens, no time-signature tokens:
the bar length is a property of the session (see :class:`Vocab.positions_per_bar`).

The tokenizer's configuration lives in ``tokenizer.json`` next to a model and is always
loaded from there; :func:`new_tokenizer` and its defaults only build a new one for a new
corpus or model.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from miditok import REMI, TokenizerConfig
from symusic import Score

TOKENIZER_FILE = "tokenizer.json"
DRUM_PROGRAM = -1

#: Positions per beat in the first 4 beats of a duration, and coarser after (miditok's
#: ``beat_res``): 8 per quarter gives 32 positions in a 4/4 bar (16ths and 32nds).
DEFAULT_BEAT_RES = {(0, 4): 8, (4, 12): 4}
DEFAULT_VELOCITY_BINS = 16
DEFAULT_PITCH_RANGE = (21, 109)  # piano range, upper bound exclusive (miditok convention)
SPECIAL_TOKENS = ("PAD", "BOS", "EOS")


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
}


def new_tokenizer(
    *,
    beat_res: dict[tuple[int, int], int] | None = None,
    velocity_bins: int = DEFAULT_VELOCITY_BINS,
    pitch_range: tuple[int, int] = DEFAULT_PITCH_RANGE,
) -> REMI:
    """Build a fresh REMI+ tokenizer (for a new corpus or model; never at run time)."""
    if not 16 <= velocity_bins <= 32:
        raise ValueError(f"velocity_bins must be 16..32, got {velocity_bins}")
    config = TokenizerConfig(
        pitch_range=pitch_range,
        beat_res=dict(beat_res or DEFAULT_BEAT_RES),
        num_velocities=velocity_bins,
        special_tokens=list(SPECIAL_TOKENS),
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
        use_time_signatures=False,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_pitch_intervals=False,
        remove_duplicated_notes=True,
        encode_ids_split="no",
    )
    return REMI(config)


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
    """

    types: np.ndarray  # (V,) int8 TokenType
    values: np.ndarray  # (V,) int32
    positions_per_beat: int
    duration_beats: np.ndarray  # (V,) float32, 0 unless Duration
    pad_id: int
    bos_id: int
    eos_id: int
    bar_id: int

    @property
    def size(self) -> int:
        return int(self.types.shape[0])

    def ids_of(self, token_type: TokenType) -> np.ndarray:
        return np.flatnonzero(self.types == token_type)

    def positions_per_bar(self, beats_per_bar: float = 4.0) -> int:
        return round(self.positions_per_beat * beats_per_bar)

    @property
    def max_beats_per_bar(self) -> float:
        """The longest bar the Position tokens can hold, in beats (quarter notes)."""
        return int((self.types == TokenType.POSITION).sum()) / self.positions_per_beat

    def check_meter(self, beats_per_bar: float) -> None:
        """Refuse a bar the vocabulary cannot hold (its later beats would be cut)."""
        if beats_per_bar > self.max_beats_per_bar + 1e-9:
            raise ValueError(
                f"a bar of {beats_per_bar:g} beats is longer than this model's vocabulary "
                f"holds ({self.max_beats_per_bar:g} beats: 4/4, 3/4, 2/4, 6/8, 7/8 and shorter)"
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: REMI) -> Vocab:
        vocab: dict[str, int] = tokenizer.vocab
        size = len(vocab)
        types = np.full(size, -1, dtype=np.int8)
        values = np.zeros(size, dtype=np.int32)
        duration_beats = np.zeros(size, dtype=np.float32)
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


def score_to_ids(tokenizer: REMI, score: Score) -> np.ndarray:
    """Tokenize a Score to ids (uint16 array). Starts with ``Bar``; empty score gives []."""
    seq = tokenizer.encode(score)
    if isinstance(seq, list):  # one stream is configured; guard against a foreign config
        raise ValueError("tokenizer does not put all programs in one stream")
    return np.asarray(seq.ids, dtype=np.uint16)


def midi_to_ids(tokenizer: REMI, path: str | Path) -> np.ndarray:
    return score_to_ids(tokenizer, load_score(path))


def ids_to_score(tokenizer: REMI, ids: Sequence[int] | np.ndarray) -> Score:
    """Decode ids to a Score (ticks per quarter = the tokenizer's positions per beat)."""
    ids = [int(i) for i in ids]
    if not ids:
        return Score(tokenizer.time_division)
    return tokenizer.decode(ids)


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
