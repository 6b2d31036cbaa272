"""Training: ``ostinato train CORPUS_DIR --out RUN_DIR``.

Bar-aligned random windows from the corpus arrays (``BOS`` then the tokens from a ``Bar``;
with a tokenizer that has style tokens, ``BOS``, the file's ``Style`` token — replaced by
``Style_none`` with probability ``style_dropout``, so the model also learns to play without a
style and classifier-free guidance can compare both — then the tokens), random transposition
of pitched notes (drums untouched), AdamW, cosine schedule with warm-up,
gradient clipping, optional label smoothing, bf16 autocast + TF32 on CUDA. Every
``eval_every`` steps: validation loss; every ``checkpoint_every`` steps and on Ctrl-C: a
checkpoint holding the model, optimizer, scheduler, step and every RNG, so ``--resume``
continues bit-for-bit. ``metrics.csv`` and ``loss.png`` are kept up to date in RUN_DIR.

Runs as is on one device, or under ``torchrun`` with DistributedDataParallel (each rank draws
its own windows; rank 0 writes files).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ostinato.model.corpus import CorpusSplit
from ostinato.model.network import SIZES, Decoder, ModelConfig, config_for
from ostinato.model.own_bars import with_own_bars
from ostinato.model.parts import PartRates, augment
from ostinato.model.style import NONE, style_of
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    add_headers,
    canonical_order,
    header_mask,
    load_tokenizer,
    with_header,
)

log = logging.getLogger(__name__)
logging.getLogger("matplotlib").setLevel(logging.WARNING)

CHECKPOINT = "checkpoint.pt"
#: The weights at the lowest validation loss so far (no optimizer: what an export needs). A
#: long run on a small corpus can go past its best; ``ostinato export RUN/best.pt`` takes it.
BEST = "best.pt"
MAX_TRANSPOSE = 5
#: A file of at most this many bars is a loop (the generator's 4-bar loops, a Groove MIDI
#: fill): the loop augmentation plays it over and over, 2 to ``LOOP_PASSES`` times.
LOOP_BARS = 8
LOOP_PASSES = 4
#: … and a longer file has a phrase of this many bars looped before it goes on.
PHRASE_BARS = (1, 2, 4, 8)
#: The instrument roles of the instrument augmentation, as General MIDI families (program // 8):
#: a part given another instrument keeps its role. Chords and keys: piano, chromatic
#: percussion, organ, guitar, ensemble, pad; bass; melody: strings, brass, reed, pipe, synth
#: lead, ethnic. Sound effects (families 12, 14, 15) are never drawn.
ROLES = ((0, 1, 2, 3, 6, 11), (4,), (5, 7, 8, 9, 10, 13))
#: The kinds of drum of the drum-kit augmentation, as General MIDI percussion keys: a drum
#: redrawn stays of its kind (a kick a kick, a crash a crash). Toms keep their order from low
#: to high (a fill still falls); the keys of no kind here are never changed.
DRUM_KINDS = (
    (35, 36),
    (38, 40),
    (37, 39),
    (42, 44),
    (49, 52, 55, 57),
    (51, 53, 59),
    (41, 43, 45, 47, 48, 50),
)
ORDERED_DRUM_KINDS = frozenset({6})  # (their index in DRUM_KINDS)


@dataclass
class TrainConfig:
    size: str = "small"
    seq_len: int = 0  # 0 = the model's max_seq_len
    batch_size: int = 32
    steps: int = 5000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    dropout: float = 0.1
    transpose: int = MAX_TRANSPOSE  # ± semitones of random transposition; 0 = off
    style_dropout: float = 0.15  # share of windows whose style token is Style_none
    pack: bool = True  # fill windows past their file's end with more files (WindowSampler)
    instruments: float = 0.5  # share of files in a window whose instruments are redrawn
    header: bool = True  # bars name their instruments (the tokenizer is saved with the flag)
    partial: float = 0.3  # share of files in a window whose last bars keep some parts
    entering: float = 0.2  # … with an instrument entering part-way
    cut: float = 0.15  # … whose last bar keeps a subset of its parts after a position
    loops: float = 0.0  # share of stretches with a phrase (a loop file: the whole) looped
    drum_kit: float = 0.0  # share of stretches whose drums are redrawn within their kind
    drum_remap: float = 0.0  # share of stretches whose drums are each moved to any other key
    rhythm: float = 0.0  # share of stretches whose bars' half beats are put in another order
    pitch_remap: float = 0.0  # share of stretches whose pitch classes are put in another order
    weights: str = ""  # sampling weight per source folder: "freedoom-midi=4,synth=0.5"
    init: str = ""  # a model folder whose weights a new run starts from
    previous_token: bool = False  # a new model's tokens also enter with the one before (network)
    bar_rotary: bool = False  # a new model turns half its rotary pairs with the place in the bar
    onset_places: bool = False  # … counted in music (its onset's position), not tokens
    place_stride: int = 1  # … each onset's place that many apart, its tokens counted within
    bar_echo: bool = False  # … and its tokens also enter with their echo from the bar before
    echo_lr: float = 0.0  # peak learning rate of the echo's embedding (0: lr), see make_optimizer
    copy_head: bool = False  # a new model mixes a pointer over the context into its output
    copy_lr: float = 0.0  # peak learning rate of the copy head (0: lr), see make_optimizer
    copy_aux: float = 0.3  # weight of the copy head's pointer loss (pointer_loss)
    own_bars: float = 0.0  # share of windows with bars the model plays itself (own_bars)
    layers: int = 0  # a new model's layers (0: its size's); --init grows one with fewer
    eval_every: int = 250
    eval_batches: int = 20
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # processes drawing windows beside the training (0: drawn in between)
    compile: bool = False  # torch.compile the network for the training steps
    minutes: float = 0.0  # train about this long: steps set from the rate (0: cfg.steps)

    def validate(self) -> None:
        for name in ("batch_size", "steps", "eval_every", "checkpoint_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        if self.workers < 0:
            raise ValueError("workers must be ≥ 0")
        if self.minutes < 0:
            raise ValueError("minutes must be ≥ 0")
        if not 0 <= self.transpose <= 11:
            raise ValueError("transpose must be in 0..11 semitones")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if not 0.0 <= self.style_dropout <= 1.0:
            raise ValueError("style_dropout must be in [0, 1]")
        if not 0.0 <= self.instruments <= 1.0:
            raise ValueError("instruments must be in [0, 1]")
        if not 0.0 <= self.loops <= 1.0:
            raise ValueError("loops must be in [0, 1]")
        if not 0.0 <= self.drum_kit <= 1.0:
            raise ValueError("drum_kit must be in [0, 1]")
        if not 0.0 <= self.drum_remap <= 1.0:
            raise ValueError("drum_remap must be in [0, 1]")
        if not 0.0 <= self.rhythm <= 1.0:
            raise ValueError("rhythm must be in [0, 1]")
        if not 0.0 <= self.pitch_remap <= 1.0:
            raise ValueError("pitch_remap must be in [0, 1]")
        if self.bar_echo and not self.bar_rotary:
            raise ValueError("--bar-echo hears the bar before at the places of --bar-rotary: "
                             "give both")  # fmt: skip
        if not 0.0 <= self.own_bars <= 1.0:
            raise ValueError("own_bars must be in [0, 1]")
        if self.layers < 0:
            raise ValueError("layers must be ≥ 0 (0: the size's)")
        if self.echo_lr < 0:
            raise ValueError("echo_lr must be ≥ 0")
        if self.echo_lr and not self.bar_echo:
            raise ValueError("--echo-lr is the rate of --bar-echo's embedding: give both")
        if self.copy_lr < 0:
            raise ValueError("copy_lr must be ≥ 0")
        if self.copy_aux < 0:
            raise ValueError("copy_aux must be ≥ 0")
        if self.copy_lr and not self.copy_head:
            raise ValueError("--copy-lr is the rate of --copy-head's weights: give both")
        self.part_rates().validate()
        source_weights(self.weights)

    def part_rates(self) -> PartRates:
        return PartRates(self.partial, self.entering, self.cut)


def source_weights(text: str) -> dict[str, float]:
    """``"freedoom-midi=4,synth=0.5"`` → {source folder: weight} (ValueError naming a bad
    entry). A source is a file's first folder under the corpus's SRC; unnamed ones weigh 1."""
    out: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, value = entry.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or weight < 0:
            raise ValueError(f"a source weight looks like freedoom-midi=4, got {entry!r}")
        out[name.strip()] = weight
    return out


def file_weights(corpus_dir: str | Path, split: str, weights: dict[str, float]) -> np.ndarray:
    """Each file's sampling weight from its source folder (``{split}_files.txt``)."""
    files = Path(corpus_dir) / f"{split}_files.txt"
    names = files.read_text().splitlines() if files.is_file() else []
    return np.asarray([weights.get(n.split("/", 1)[0], 1.0) for n in names], dtype=np.float64)


def file_styles(corpus_dir: str | Path, split: str) -> list[str]:
    """The style of each file of a corpus split: ``{split}_styles.txt``, or for a corpus
    built before styles, :func:`style_of` of each path in ``{split}_files.txt``."""
    d = Path(corpus_dir)
    styles = d / f"{split}_styles.txt"
    if styles.is_file():
        return styles.read_text().splitlines()
    files = d / f"{split}_files.txt"
    return [style_of(p) for p in files.read_text().splitlines()] if files.is_file() else []


class WindowSampler:
    """Random bar-aligned training windows with transposition, from one corpus split.

    ``styles``: each file's style (a vocabulary with style tokens; missing or unknown: none),
    whose token follows ``BOS``; ``style_dropout``: the chance it is ``Style_none`` instead;
    ``pack``: fill a window past its file's end with more files (:meth:`batch`).

    ``instruments``: the chance that a file's stretch of a window has its instruments redrawn:
    each pitched program becomes another of its role (:data:`ROLES`), one per part, the
    drums untouched. The corpus holds 22 of the 128 programs (OpenScore's voice, piano and
    strings, the generator's and Groove MIDI's); music on any other instrument was, to a
    model trained without this, a run of tokens it had never seen (held-out loops on other
    instruments: 8.0 bits/token). Notes at one position then come in the order of the
    original programs, which the model learns to read as well.

    ``loops``: the chance that a file's stretch of a window starts with a phrase played over
    and over, 2 to :data:`LOOP_PASSES` passes, as a musician loops it in a DAW: a loop (a
    file of at most :data:`LOOP_BARS` bars) whole, or 1, 2, 4 or 8 bars of a longer file
    (:data:`PHRASE_BARS`), which then goes on. The corpus's loops are single passes (the
    generator writes a 4-bar loop once) and real music seldom repeats a bar exactly, so
    without this the model never learned to hear a bar come back: a fifth exact pass of a bar
    cost the model trained without it 2.05 bits/token, as much as a new bar."""

    #: The least room worth packing another file into.
    MIN_PACK = 16

    def __init__(
        self,
        split: CorpusSplit,
        vocab: Vocab,
        seq_len: int,
        transpose: int,
        styles: list[str] | None = None,
        style_dropout: float = 0.0,
        pack: bool = False,
        instruments: float = 0.0,
        parts: PartRates | None = None,
        weights: np.ndarray | None = None,
        loops: float = 0.0,
        drum_kit: float = 0.0,
        drum_remap: float = 0.0,
        rhythm: float = 0.0,
        pitch_remap: float = 0.0,
    ) -> None:
        if len(split.bars) == 0:
            raise ValueError("the corpus split has no bars")
        # parts: write every bar's instrument header, leaving parts out at these rates
        # (None: the language without headers); weights: each file's sampling weight
        self.parts = parts
        self._bar_cdf: np.ndarray | None = None
        if weights is not None and len(weights):
            per_bar = np.asarray(weights, dtype=np.float64)[split.file_of(split.bars)]
            if per_bar.sum() <= 0:
                raise ValueError("every file of the split has weight 0")
            cdf = np.cumsum(per_bar)
            self._bar_cdf = cdf / cdf[-1]
        self.split, self.vocab, self.seq_len, self.transpose = split, vocab, seq_len, transpose
        self.bar_file_end = split.file_end_of(split.bars)
        bar_file = split.file_of(split.bars)
        #: each bar's file is a loop (at most LOOP_BARS bars)
        self.bar_in_loop = np.bincount(bar_file, minlength=len(split.files))[bar_file] <= LOOP_BARS
        self.loops = loops
        self.style_dropout, self.pack, self.instruments = style_dropout, pack, instruments
        self.drum_kit, self.drum_remap, self.rhythm = drum_kit, drum_remap, rhythm
        self.pitch_remap = pitch_remap
        positions = np.flatnonzero(vocab.types == TokenType.POSITION)
        self.position_id = np.full(int(vocab.values[positions].max()) + 1, -1, dtype=np.int64)
        self.position_id[vocab.values[positions]] = positions
        drums = np.flatnonzero(vocab.types == TokenType.PITCH_DRUM)
        self.drum_id = {int(vocab.values[t]): int(t) for t in drums}
        self.is_drum_pitch = vocab.types == TokenType.PITCH_DRUM
        # the Program tokens of each role, and each pitched Program token's role
        programs = np.flatnonzero(vocab.types == TokenType.PROGRAM)
        self.is_program = vocab.types == TokenType.PROGRAM
        family = vocab.values[programs] // 8
        self.role_of = np.full(vocab.size, -1, dtype=np.int64)
        self.role_pools = [
            programs[np.isin(family, families) & (vocab.values[programs] >= 0)]
            for families in ROLES
        ]
        for token, fam in zip(programs, family, strict=True):
            if vocab.values[token] != DRUM_PROGRAM:
                self.role_of[token] = next(
                    (k for k, families in enumerate(ROLES) if fam in families), 0
                )  # a sound effect counts as keys
        self.bar_style: np.ndarray | None = None  # the style token of each bar's file
        if vocab.has_styles:
            none = vocab.style_ids[NONE]
            names = list(styles or [])
            per_file = np.array(
                [vocab.style_ids.get(names[f], none) if f < len(names) else none
                 for f in range(len(split.files))], dtype=np.int64,
            )  # fmt: skip
            bar_file = split.file_of(split.bars)
            self.bar_style = per_file[bar_file] if len(per_file) else np.full(len(bar_file), none)
            self.none_style = none
        pitched = vocab.types == TokenType.PITCH
        self.is_pitch = pitched
        pitch_values = vocab.values[pitched]
        self.pitch_low, self.pitch_high = int(pitch_values.min()), int(pitch_values.max())
        id_of_pitch = np.full(128, -1, dtype=np.int64)
        id_of_pitch[pitch_values] = np.flatnonzero(pitched)
        self.id_of_pitch = id_of_pitch
        # table[s + transpose, id] = id after shifting pitched notes by s semitones.
        self.table = np.tile(np.arange(vocab.size, dtype=np.int64), (2 * transpose + 1, 1))
        for row, shift in enumerate(range(-transpose, transpose + 1)):
            shifted = np.clip(vocab.values[pitched] + shift, 0, 127)
            self.table[row, pitched] = id_of_pitch[shifted]

    def batch(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """(batch_size, seq_len + 1) int64: BOS, then tokens from a random bar. Where the file
        ends before the window does, ``pack`` fills the rest with whole files from their start
        (each again ``BOS``, its style, its tokens; the window's one transposition), so short
        files (a Groove MIDI beat, a 4-bar loop) do not leave most of a long window as PAD;
        without ``pack``, or with less than :attr:`MIN_PACK` tokens of room, PAD."""
        L = self.seq_len
        out = np.full((batch_size, L + 1), self.vocab.pad_id, dtype=np.int64)
        out[:, 0] = self.vocab.bos_id
        picks = self._pick(rng, batch_size)
        shifts = rng.integers(-self.transpose, self.transpose + 1, size=batch_size)
        first = 1  # where the window's tokens start
        if self.bar_style is not None:  # BOS, Style (dropped to none now and then), tokens
            dropped = rng.random(batch_size) < self.style_dropout
            out[:, 1] = np.where(dropped, self.none_style, self.bar_style[picks])
            first = 2
        for row, (pick, shift) in enumerate(zip(picks, shifts, strict=True)):
            start = int(self.split.bars[pick])
            window = self._stretch(int(pick), start, L + 1 - first, rng)
            at = self._put(out[row], first, window, int(shift), rng)
            while self.pack and L + 1 - at >= self.MIN_PACK:
                nxt = int(self._pick(rng, 1)[0])  # a file, by its bars
                file_start = int(self.split.file_start_of(self.split.bars[nxt : nxt + 1])[0])
                out[row, at] = self.vocab.bos_id
                at += 1
                if self.bar_style is not None:
                    drop = rng.random() < self.style_dropout
                    out[row, at] = self.none_style if drop else self.bar_style[nxt]
                    at += 1
                window = self._stretch(nxt, file_start, L + 1 - at, rng)
                at = self._put(out[row], at, window, int(shift), rng)
        return out

    def _stretch(self, pick: int, start: int, room: int, rng: np.random.Generator) -> np.ndarray:
        """The corpus tokens a window takes from ``start`` (bar ``pick`` of a file) to the
        file's end, at most ``room``. With the chance :attr:`loops` a phrase is looped first:
        a loop file whole (from ``start`` to its end, then whole passes), or 1, 2, 4 or 8
        bars of a longer file played 2 to :data:`LOOP_PASSES` times before the file goes on."""
        end = int(self.bar_file_end[pick])
        tokens = self.split.tokens
        if not (self.loops and rng.random() < self.loops):
            return np.asarray(tokens[start : min(end, start + room)], dtype=np.int64)
        passes = int(rng.integers(2, LOOP_PASSES + 1))
        if self.bar_in_loop[pick]:
            file_start = int(self.split.file_start_of(self.split.bars[pick : pick + 1])[0])
            whole = np.asarray(tokens[file_start:end], dtype=np.int64)
            head = np.asarray(tokens[start:end], dtype=np.int64)
            return np.concatenate([head, np.tile(whole, passes - 1)])[:room]
        n = int(rng.choice(PHRASE_BARS))
        last = pick + n
        phrase_end = int(self.split.bars[last]) if last < len(self.split.bars) else end
        phrase_end = min(phrase_end, end)
        phrase = np.asarray(tokens[start:phrase_end], dtype=np.int64)
        looped = np.tile(phrase, passes)
        if len(looped) >= room:
            return looped[:room]
        rest = room - len(looped)
        return np.concatenate([looped, np.asarray(tokens[phrase_end : min(end, phrase_end + rest)],
                                                  dtype=np.int64)])  # fmt: skip

    def _pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` random bars (their index in the split's bars), by the files' weights."""
        if self._bar_cdf is None:
            return rng.integers(0, len(self.split.bars), size=n)
        return np.minimum(np.searchsorted(self._bar_cdf, rng.random(n), side="right"),
                          len(self.split.bars) - 1)  # fmt: skip

    def _put(
        self, row: np.ndarray, at: int, window: np.ndarray, shift: int,
        rng: np.random.Generator | None = None,
    ) -> int:  # fmt: skip
        """Copy corpus tokens ``window`` into ``row`` from ``at``, transposed by ``shift``
        (made smaller where a note would leave the pitch range), their instruments redrawn
        with the chance ``instruments``, parts left out and headers written (``parts``);
        return where they end. With headers the stretch is first shortened to what fits
        the row once its headers are written, so the bars the augmentation changes at its
        end stay in the window."""
        room = len(row) - at
        if self.parts is not None:
            written = add_headers(self.vocab, window)
            if len(written) > room:
                window = window[: room - int(header_mask(self.vocab, written[:room]).sum())]
        if self.instruments and rng is not None and rng.random() < self.instruments:
            window = self._redraw_instruments(window, rng)
        if self.drum_remap and rng is not None and rng.random() < self.drum_remap:
            window = self._remap_drums(window, rng)
        elif self.drum_kit and rng is not None and rng.random() < self.drum_kit:
            window = self._redraw_drums(window, rng)
        if self.rhythm and rng is not None and rng.random() < self.rhythm:
            window = self._shuffle_rhythm(window, rng)
        if self.pitch_remap and rng is not None and rng.random() < self.pitch_remap:
            window = self._remap_pitch_classes(window, rng)
        if self.transpose:
            pitches = self.vocab.values[window[self.is_pitch[window]]]
            if len(pitches):  # keep every note in range: shrink the shift if needed
                shift = int(
                    np.clip(shift, self.pitch_low - pitches.min(), self.pitch_high - pitches.max())
                )
            window = self.table[shift + self.transpose, window]
        if self.parts is not None:
            window = augment(self.vocab, window, rng or np.random.default_rng(0), self.parts)
            window = window[:room]
        row[at : at + len(window)] = window
        return at + len(window)

    def _redraw_instruments(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``window`` with each pitched program changed to another of its role, one program
        per part (two parts never merge into one)."""
        parts = np.unique(window[self.is_program[window]])
        parts = parts[self.role_of[parts] >= 0]
        if not len(parts):
            return window
        table = np.arange(self.vocab.size, dtype=np.int64)
        taken: set[int] = set()
        for token in parts:
            pool = self.role_pools[int(self.role_of[token])]
            free = pool[~np.isin(pool, list(taken))] if taken else pool
            if not len(free):
                continue  # every instrument of the role is taken: this part keeps its own
            table[token] = int(free[rng.integers(len(free))])
            taken.add(int(table[token]))
        return table[window]

    def _redraw_drums(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``window`` with each drum it plays changed to another of its kind
        (:data:`DRUM_KINDS`), two drums never merged into one, toms kept in their order."""
        played = set(self.vocab.values[np.unique(window[self.is_drum_pitch[window]])].tolist())
        table = np.arange(self.vocab.size, dtype=np.int64)
        for k, kind in enumerate(DRUM_KINDS):
            keys = [key for key in kind if key in self.drum_id]
            here = [key for key in keys if key in played]
            if not here:
                continue
            chosen = rng.choice(keys, size=len(here), replace=False)
            if k in ORDERED_DRUM_KINDS:
                chosen = np.sort(chosen)
            for old, new in zip(here, chosen.tolist(), strict=True):
                table[self.drum_id[old]] = self.drum_id[int(new)]
        return table[window]

    def _shuffle_rhythm(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``window`` with the half beats of each bar after its first put in another order,
        the same order in every bar of a meter; every part moves alike and each onset keeps its
        place within its half beat. The downbeat stays, a repeated bar stays repeated, and the
        rhythm is one no song has: it can only be read from the bars before."""
        vocab = self.vocab
        kinds = vocab.types[window]
        is_bar = window == vocab.bar_id
        is_position = kinds == TokenType.POSITION
        if not is_position.any():
            return window
        bar_of = np.cumsum(is_bar)  # 0 before the first Bar
        half = max(1, vocab.positions_per_beat // 2)
        blocks = np.full(int(bar_of[-1]) + 1, vocab.positions_per_bar((4, 4)) // half)
        if vocab.has_meters:
            signs = np.flatnonzero(kinds == TokenType.TIME_SIG)
            blocks[bar_of[signs]] = [vocab.positions_per_bar(vocab.meter_of_token(int(t)))
                                     // half for t in window[signs]]  # fmt: skip
        most = int(blocks.max())
        order = np.tile(np.arange(most), (most + 1, 1))  # order[n]: the bars of n half beats
        for n in np.unique(blocks):
            if n > 2:
                order[n, 1:n] = 1 + rng.permutation(int(n) - 1)
        at = np.flatnonzero(is_position)
        value = vocab.values[window[at]]
        block, offset = value // half, value % half
        n = blocks[bar_of[at]]
        inside = block < n
        moved = np.where(inside, order[n, np.minimum(block, most - 1)] * half + offset, value)
        out = window.copy()
        out[at] = self.position_id[moved]
        # each onset's notes go with its Position: the bar's onsets sorted by their new places
        starts = is_position | is_bar
        segment = np.cumsum(starts) - 1  # -1 before the first
        key = np.full(int(starts.sum()), -1, dtype=np.int64)
        key[is_position[starts]] = moved
        token_key = np.where(segment >= 0, key[np.maximum(segment, 0)], -1)
        return out[np.lexsort((np.arange(len(out)), token_key, bar_of))]

    def _remap_drums(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``window`` with each drum it plays moved to a key drawn from every drum key, the
        same one wherever it plays, two drums never merged: no kit to remember, so the drums
        can only be read from the bars before (a loop's drums are copied, not recalled)."""
        played = np.unique(window[self.is_drum_pitch[window]])
        if not len(played):
            return window
        table = np.arange(self.vocab.size, dtype=np.int64)
        table[played] = rng.choice(np.asarray(sorted(self.drum_id.values())), size=len(played),
                                   replace=False)  # fmt: skip
        return table[window]

    def _remap_pitch_classes(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``window`` with the twelve pitch classes put in a random order, one order for every
        pitched part, each note kept in its octave (moved one in where it would leave the range):
        no scale or chord shape to recall, so a riff or a voicing can only be read from the bars
        before — copied, as the drums are with ``drum_remap``. The parts still share their pitch
        classes as before (a bass on a chord's note stays on one of the chord's notes). Each
        onset's notes are put back in the one order (:func:`canonical_order`)."""
        pitched = self.is_pitch
        if not pitched[window].any():
            return window
        values = self.vocab.values[pitched]
        moved = 12 * (values // 12) + rng.permutation(12)[values % 12]
        moved = np.where(moved < self.pitch_low, moved + 12, moved)
        moved = np.where(moved > self.pitch_high, moved - 12, moved)
        table = np.arange(self.vocab.size, dtype=np.int64)
        table[pitched] = self.id_of_pitch[moved]
        return canonical_order(self.vocab, table[window])


class _Windows(torch.utils.data.IterableDataset):
    """Training batches drawn in loader processes: each worker its own stream, seeded from
    the run's seed, the rank, the step the run starts at and the worker's number."""

    def __init__(self, sampler: WindowSampler, batch_size: int, seed: list[int]) -> None:
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([*self.seed, info.id if info else 0])
        while True:
            yield torch.from_numpy(self.sampler.batch(rng, self.batch_size))


def training_batches(
    sampler: WindowSampler, cfg: TrainConfig, rng: np.random.Generator, rank: int, step: int,
    pin: bool,
):  # fmt: skip
    """The training batches, endlessly. Without workers they are drawn from ``rng`` between
    the steps, so a resumed run goes on bit for bit (the checkpoint holds ``rng``). With
    ``cfg.workers`` processes they are drawn beside the steps — a GPU trains a small model
    faster than one core draws its windows — each worker from its own stream; a run resumed
    at step s then draws other windows than the run that went on past s, as reproducibly."""
    if cfg.workers == 0:
        while True:
            yield torch.from_numpy(sampler.batch(rng, cfg.batch_size))
    loader = torch.utils.data.DataLoader(
        _Windows(sampler, cfg.batch_size, [cfg.seed, rank, step]), batch_size=None,
        num_workers=cfg.workers, pin_memory=pin, prefetch_factor=PREFETCH,
    )  # fmt: skip
    yield from loader


#: Batches each loader worker draws ahead.
PREFETCH = 4
#: ``--minutes``: ``TIMED_STEPS`` steps are timed from the ``TIMED_FROM``-th step of the run
#: (a compiled network is warm by then), later by the batches the loader drew ahead while it
#: compiled (:func:`timed_span`), then the steps are fixed.
TIMED_FROM, TIMED_STEPS = 10, 50


def timed_span(workers: int) -> tuple[int, int]:
    """The steps of a run (counted from where it starts) between which ``--minutes`` times
    the rate: after the loader's queue, filled while the network compiled, is used up."""
    start = TIMED_FROM + PREFETCH * workers
    return start, start + TIMED_STEPS


def steps_for(minutes: float, elapsed_s: float, step: int, per_step_s: float,
              cfg: TrainConfig) -> int:  # fmt: skip
    """The last step of a run that trains ``minutes`` in all: ``elapsed_s`` gone at ``step``,
    each step taking ``per_step_s``, every ``eval_every`` steps a validation of
    ``eval_batches`` batches (about a third of a step each)."""
    left = max(0.0, minutes * 60.0 - elapsed_s)
    per = per_step_s * (1.0 + cfg.eval_batches / (3.0 * cfg.eval_every))
    return step + max(1, int(left / per))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: Decoder, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, no weight decay on gains and biases. With ``echo_lr`` the echo's embedding has a
    peak learning rate of its own (scheduled as the rest): added at zero to a model trained for
    hours (``--init``), it would grow at ``lr``'s pace too slowly for a short run to learn what
    it says, while the weights around it should move no faster than the rest of the run moves
    them. Its weight decay is scaled down by as much, so it decays per step as the rest does
    (AdamW decays by rate × decay). ``copy_lr`` does the same for the copy head (its gate
    starts nearly closed, COPY_GATE_START)."""
    own: list[tuple[list[torch.Tensor], float]] = []
    if model.echo_embed is not None and cfg.echo_lr:
        own.append(([model.echo_embed.weight], cfg.echo_lr))
    if model.copy is not None and cfg.copy_lr:
        own.append((list(model.copy.parameters()), cfg.copy_lr))
    apart = {id(p) for params, _ in own for p in params}
    rest = [p for p in model.parameters() if id(p) not in apart]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    for params, lr in own:
        decay = cfg.weight_decay * cfg.lr / lr
        groups.append({"params": [p for p in params if p.dim() >= 2], "weight_decay": decay,
                       "lr": lr})  # fmt: skip
        if any(p.dim() < 2 for p in params):
            groups.append({"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0,
                           "lr": lr})  # fmt: skip
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def loss_on(
    model, batch: torch.Tensor, pad_id: int, label_smoothing: float = 0.0, copy_aux: float = 0.0,
    targets: torch.Tensor | None = None,
):  # fmt: skip
    """Cross-entropy of the next token; with ``copy_aux`` (a model with a copy head) plus that
    weight times the pointer's own loss (:func:`pointer_loss`). ``targets`` (B, T): the
    tokens to predict, PAD where none is (default: the batch's next tokens)."""
    copied: list[torch.Tensor] | None = [] if copy_aux else None
    logits, _, _ = model(batch[:, :-1], copied=copied)
    if targets is None:
        targets = batch[:, 1:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )
    if copied:
        loss = loss + copy_aux * pointer_loss(copied[0], batch, pad_id, targets)
    return loss


def pointer_loss(
    copied: torch.Tensor, batch: torch.Tensor, pad_id: int, targets: torch.Tensor | None = None
) -> torch.Tensor:
    """−log of the pointer's weight on the next token, over the places where that token was
    heard before in the window (elsewhere a pointer cannot be right). Trained on its own, the
    pointer learns where to look while the gate that mixes it in is still nearly closed:
    through the mix alone, the gate closes on a pointer that has not yet learnt to point
    before the pointer learns (it did in a first run from a trained model)."""
    tokens, target = batch[:, :-1], batch[:, 1:] if targets is None else targets
    seen = F.one_hot(tokens, copied.shape[-1]).cumsum(1) > 0  # (B, T, V): heard up to t
    present = seen.gather(2, target.unsqueeze(-1)).squeeze(-1) & (target != pad_id)
    if not present.any():
        return copied.sum() * 0.0
    weight = copied.gather(2, target.unsqueeze(-1)).squeeze(-1)
    return -(weight[present].clamp_min(1e-9).log()).mean()


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def model_from_checkpoint(ckpt: dict) -> Decoder:
    model = Decoder(ModelConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def end_rank(code: int = 0) -> NoReturn:
    """End a torchrun rank now, its output flushed, without the interpreter's finalization.

    A DistributedDataParallel wrapper keeps its Gloo process group alive in C++ past
    ``destroy_process_group`` and its own deletion (torch 2.13), so the group's threads run
    into the interpreter's exit. One of them still freeing the tensors of the last
    collective needs the GIL there, is made to exit instead, and aborts the rank after a
    good run ("terminate called without an active exception"; 1 run in 8 on two CPU
    ranks). Everything a run writes is written and closed before this."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Trainer:
    def __init__(self, corpus_dir: str | Path, run_dir: str | Path, cfg: TrainConfig) -> None:
        cfg.validate()
        self.cfg, self.corpus_dir, self.run_dir = cfg, Path(corpus_dir), Path(run_dir)
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self._own_group = self.distributed and not dist.is_initialized()
        if self._own_group:
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        self.tokenizer = load_tokenizer(self.corpus_dir / TOKENIZER_FILE)
        if cfg.header:
            with_header(self.tokenizer)
        self.vocab = Vocab.from_tokenizer(self.tokenizer)
        self.is_main = self.rank == 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.best = math.inf  # the lowest validation loss of the run so far (best.pt's)
        self.timed_steps: int | None = None  # the last step, where --minutes set it

    def close(self) -> bool:
        """Leave the process group this trainer joined (torchrun). True where it had joined
        one: the process should then end with :func:`end_rank`."""
        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()
            self._own_group = False
            return True
        return False

    def _onset_places(self) -> dict:
        """The model config's entries for places counted in music (``onset_places``)."""
        if not self.cfg.onset_places:
            return {}
        if not self.cfg.bar_rotary:
            raise ValueError("--onset-places counts the places of --bar-rotary: give both")
        ids = np.flatnonzero(self.vocab.types == TokenType.POSITION)
        values = self.vocab.values[ids]
        if not len(ids) or (np.diff(ids) != 1).any() or (values != np.arange(len(ids))).any():
            raise ValueError("the tokenizer's Position tokens are not one run of ids 0, 1, …")
        if self.cfg.place_stride < 1:
            raise ValueError("place_stride must be ≥ 1")
        return {"position_token": int(ids[0]), "positions": len(ids),
                "place_stride": self.cfg.place_stride}  # fmt: skip

    def _build(self, model_args: dict | None):
        cfg = self.cfg
        if model_args:
            mcfg = ModelConfig(**model_args)
        else:  # a longer --seq-len than the size's window widens it (positions are rotary)
            window = max(cfg.seq_len, SIZES[cfg.size]["max_seq_len"]) if cfg.size in SIZES else 0
            mcfg = config_for(cfg.size, self.vocab.size, dropout=cfg.dropout,
                              previous_token=cfg.previous_token,
                              bar_token=self.vocab.bar_id if cfg.bar_rotary else -1,
                              **self._onset_places(),
                              bar_echo=cfg.bar_echo, copy_head=cfg.copy_head,
                              **({"n_layer": cfg.layers} if cfg.layers else {}),
                              **({"max_seq_len": window} if window else {}))  # fmt: skip
        seq_len = cfg.seq_len or mcfg.max_seq_len
        if seq_len > mcfg.max_seq_len:
            raise ValueError(f"seq_len {seq_len} > the model's max_seq_len {mcfg.max_seq_len}")
        torch.manual_seed(cfg.seed)
        model = Decoder(mcfg).to(self.device)
        optimizer = make_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
        return mcfg, seq_len, model, optimizer, scheduler

    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train to ``cfg.steps`` (or only ``stop_after`` more steps, then checkpoint)."""
        cfg = self.cfg
        started = time.perf_counter()
        ckpt_path = self.run_dir / CHECKPOINT
        ckpt = load_checkpoint(ckpt_path) if resume else None
        for own_rate in ("echo_lr", "copy_lr"):  # each one set adds optimizer groups
            saved = float(ckpt.get("train_config", {}).get(own_rate, 0.0)) if ckpt else 0.0
            if ckpt and bool(saved) != bool(getattr(cfg, own_rate)):
                flag = "--" + own_rate.replace("_", "-")
                raise ValueError(f"{self.run_dir} was trained with {flag} {saved or 'unset'}: "
                                 "resume it with the same")  # fmt: skip
        mcfg, seq_len, model, optimizer, scheduler = self._build(
            ckpt["model_args"] if ckpt else None
        )
        rng = np.random.default_rng([cfg.seed, self.rank])
        step = 0
        if ckpt:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            step = ckpt["step"]
            rng.bit_generator.state = ckpt["rng"]["numpy"][self.rank]
            torch.set_rng_state(ckpt["rng"]["torch"])
            if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
            if self.is_main:
                log.info("resumed from %s at step %d", ckpt_path, step)
            timed = ckpt.get("timed_steps")
            if timed and (cfg.minutes or cfg.steps == timed):
                self.timed_steps = int(timed)
                if cfg.minutes:  # the same command again: the steps its timing fixed
                    cfg.steps, cfg.minutes = int(timed), 0.0
                    if self.is_main:
                        log.info("the run's steps were set by --minutes: to step %d", timed)
        else:
            if cfg.init:
                from ostinato.exporter.reload import load_into

                load_into(model, cfg.init)
                if self.is_main:
                    log.info("started from the weights of %s", cfg.init)
            if self.is_main:
                self.tokenizer.save(self.run_dir / TOKENIZER_FILE)  # with the header flag
        parts = cfg.part_rates() if cfg.header else None
        weights = source_weights(cfg.weights)
        train = WindowSampler(
            CorpusSplit.load(self.corpus_dir, "train"), self.vocab, seq_len, cfg.transpose,
            file_styles(self.corpus_dir, "train"), cfg.style_dropout, cfg.pack, cfg.instruments,
            parts, file_weights(self.corpus_dir, "train", weights) if weights else None,
            cfg.loops, cfg.drum_kit, cfg.drum_remap, cfg.rhythm, cfg.pitch_remap,
        )  # fmt: skip
        val_split = CorpusSplit.load(self.corpus_dir, "validation")
        # validation: the files' styles, never dropped; whole bars, headers but no part left out
        val = (
            WindowSampler(val_split, self.vocab, seq_len, 0, file_styles(self.corpus_dir,
                          "validation"), 0.0, cfg.pack, 0.0,
                          PartRates(0.0, 0.0, 0.0) if cfg.header else None)
            if len(val_split.bars) else None
        )  # fmt: skip

        net = DistributedDataParallel(model) if self.distributed else model
        if cfg.compile:
            net = torch.compile(net)
        amp = self.device.type == "cuda"
        batches = training_batches(train, cfg, rng, self.rank, step, amp)
        metrics = self.run_dir / "metrics.csv"
        if self.is_main and not (resume and metrics.exists()):
            metrics.write_text("step,train_loss,val_loss,lr,tokens_per_s\n")
        if self.is_main:
            log.info(
                "model %s: %.2fM parameters, window %d tokens, device %s, %d process(es)",
                cfg.size,
                model.num_parameters() / 1e6,
                seq_len,
                self.device,
                self.world,
            )
        bar = tqdm(
            total=cfg.steps, initial=step, desc="training", unit="step", disable=not self.is_main
        )
        last = {"train_loss": float("nan"), "val_loss": float("nan")}
        stop_at = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
        tokens_done, t0 = 0, time.perf_counter()
        first, timed_from, paused, paused_from = step, 0.0, 0.0, 0.0
        time_from, time_to = timed_span(cfg.workers)
        best_path = self.run_dir / BEST
        self.best = ckpt.get("best_val_loss", math.inf) if ckpt else math.inf
        if not resume and self.is_main:
            best_path.unlink(missing_ok=True)  # an earlier run's, in a reused folder
        try:
            while step < stop_at:
                if cfg.minutes and step - first in (time_from, time_to):
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    now = time.perf_counter()
                    if step - first == time_from:
                        timed_from, paused_from = now, paused
                    else:  # the length fixed from the rate (validation and saving left out)
                        per_step = (now - timed_from - (paused - paused_from)) / TIMED_STEPS
                        cfg.steps = steps_for(cfg.minutes, now - started, step, per_step, cfg)
                        if self.distributed:  # every rank to the same last step, rank 0's
                            shared = [cfg.steps]
                            dist.broadcast_object_list(shared, src=0)
                            cfg.steps = int(shared[0])
                        cfg.minutes = 0.0
                        self.timed_steps = cfg.steps  # kept in the checkpoint for --resume
                        stop_at = cfg.steps if stop_after is None else min(cfg.steps, stop_at)
                        bar.total = cfg.steps
                        bar.refresh()
                        if self.is_main:
                            log.info("%.0f ms a step: training to step %d", per_step * 1e3,
                                     cfg.steps)  # fmt: skip
                model.train()
                cpu_batch = next(batches)
                targets = None
                if cfg.own_bars:  # (the bars played are spliced in on the CPU)
                    cpu_batch, targets = with_own_bars(model, cpu_batch, self.vocab,
                                                       cfg.own_bars, rng)  # fmt: skip
                    targets = targets.to(self.device, non_blocking=True)
                batch = cpu_batch.to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = loss_on(net, batch, self.vocab.pad_id, cfg.label_smoothing,
                                   cfg.copy_aux if mcfg.copy_head else 0.0, targets)  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                tokens_done += int((cpu_batch[:, 1:] != self.vocab.pad_id).sum()) * self.world
                evaluating = step % cfg.eval_every == 0 or step == cfg.steps
                # reading the loss waits for the device: on a GPU only now and then
                if not amp or evaluating or step % 10 == 0 or step == stop_at:
                    last["train_loss"] = float(loss.detach())
                rate = tokens_done / max(1e-9, time.perf_counter() - t0)
                bar.update()
                bar.set_postfix(loss=f"{last['train_loss']:.3f}", tok_s=f"{rate:,.0f}")
                pause = time.perf_counter()
                if evaluating:
                    if val is not None:
                        last["val_loss"] = self.validation_loss(model, val)
                        if self.is_main and last["val_loss"] < self.best:
                            self.best = last["val_loss"]
                            self.save_best(model, mcfg, step, self.best)
                    if self.is_main:
                        with metrics.open("a", newline="") as fh:
                            csv.writer(fh).writerow(
                                [
                                    step,
                                    f"{last['train_loss']:.5f}",
                                    f"{last['val_loss']:.5f}",
                                    f"{scheduler.get_last_lr()[0]:.3e}",
                                    f"{rate:.0f}",
                                ]
                            )
                        plot_metrics(metrics, self.run_dir / "loss.png")
                if step % cfg.checkpoint_every == 0 or step == stop_at:
                    self.save(model, mcfg, optimizer, scheduler, step, rng)
                paused += time.perf_counter() - pause
        except KeyboardInterrupt:
            if self.is_main:
                log.warning("interrupted: saving a checkpoint at step %d", step)
            self.save(model, mcfg, optimizer, scheduler, step, rng)
            raise
        finally:
            bar.close()
            batches.close()  # the loader's workers end with it
        return {"step": step, **last, "parameters": model.num_parameters()}

    @torch.no_grad()
    def validation_loss(self, model: Decoder, val: WindowSampler) -> float:
        model.eval()
        rng = np.random.default_rng(12345)  # same windows every time; no effect on training RNG
        total = 0.0
        for _ in range(self.cfg.eval_batches):
            batch = torch.from_numpy(val.batch(rng, self.cfg.batch_size)).to(self.device)
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                total += float(loss_on(model, batch, self.vocab.pad_id))
        return total / self.cfg.eval_batches

    def save_best(self, model: Decoder, mcfg: ModelConfig, step: int, val_loss: float) -> None:
        best = {"model_args": mcfg.to_dict(), "model": model.state_dict(), "step": step,
                "train_config": asdict(self.cfg), "val_loss": val_loss}  # fmt: skip
        tmp = self.run_dir / (BEST + ".tmp")
        torch.save(best, tmp)
        tmp.replace(self.run_dir / BEST)

    def save(self, model, mcfg, optimizer, scheduler, step, rng) -> None:
        states = [rng.bit_generator.state]
        if self.distributed:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if not self.is_main:
            return
        ckpt = {
            "model_args": mcfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "train_config": asdict(self.cfg),
            "best_val_loss": self.best,
            "timed_steps": self.timed_steps,
            "rng": {
                "numpy": states,
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            },
        }
        tmp = self.run_dir / (CHECKPOINT + ".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(self.run_dir / CHECKPOINT)  # never leave a half-written checkpoint


def plot_metrics(metrics_csv: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [float(r["train_loss"]) for r in rows], label="train")
    ax.plot(steps, [float(r["val_loss"]) for r in rows], label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def train_config_from_args(args) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def average_runs(runs: list[str | Path], out: str | Path) -> dict:
    """A run folder whose checkpoint holds the mean of the weights of ``runs`` (checkpoints or
    run folders, ≥ 2): a uniform "model soup" of runs that started from the same model and
    went their own ways (another remap share, another input), which lands between them, where
    the loss is usually lower than at any one of them. Each must be the same network; an
    embedding one of them lacks (the previous token's, the echo's, started at zero) counts as
    zeros, as it was before that run added it. The tokenizer is the first's and must be
    the same in all. Returns the new checkpoint (no optimizer: a run is not resumed from it,
    a new one starts from it with ``--init`` after export)."""
    if len(runs) < 2:
        raise ValueError("average needs at least two runs")
    folders = [(Path(run) if Path(run).is_dir() else Path(run).parent).resolve() for run in runs]
    files = [(Path(run) / CHECKPOINT if Path(run).is_dir() else Path(run)).resolve()
             for run in runs]  # fmt: skip
    if len(set(files)) < len(files):
        raise ValueError("a run is named twice: each counts once")
    out = Path(out)
    if out.resolve() in folders or (out / CHECKPOINT).exists():
        raise ValueError(f"{out} holds a run: write the average to a new folder")
    ckpts = [load_checkpoint(run) for run in runs]
    missing = [str(folder) for folder in folders if not (folder / TOKENIZER_FILE).is_file()]
    if missing:
        raise ValueError(f"no {TOKENIZER_FILE} beside the checkpoint in {missing[0]}")
    tokenizers = [(folder / TOKENIZER_FILE).read_bytes() for folder in folders]
    if any(t != tokenizers[0] for t in tokenizers[1:]):
        raise ValueError("the runs' tokenizers differ: they are not one model's runs")
    zero_started = ("previous_token", "bar_echo")
    every = [ModelConfig(**c["model_args"]).to_dict() for c in ckpts]  # defaults filled in
    args = dict(every[0])
    for theirs in every[1:]:
        other = {k for k in set(args) | set(theirs)
                 if k not in zero_started and args.get(k) != theirs.get(k)}  # fmt: skip
        if other:
            raise ValueError(f"the runs are not the same network: they differ in {sorted(other)}")
        for k in zero_started:
            args[k] = bool(args.get(k)) or bool(theirs.get(k))
    model = Decoder(ModelConfig(**args))
    state = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            found = [c["model"][name].float() for c in ckpts if name in c["model"]]
            if not found:
                raise ValueError(f"no run has {name}")
            value.copy_(torch.stack(found).sum(0) / len(ckpts))  # a missing one counts as 0
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKENIZER_FILE).write_bytes(tokenizers[0])
    train_config = dict(ckpts[0].get("train_config", {}))  # the first run's, with what it adds
    train_config.update({k: args[k] for k in zero_started})
    ckpt = {
        "model_args": model.config.to_dict(),
        "model": state,
        "step": max(int(c["step"]) for c in ckpts),
        "train_config": train_config,
        "averaged": [str(run) for run in runs],
    }
    torch.save(ckpt, out / CHECKPOINT)
    return ckpt
