"""``ostinato continue``: the daemon's tokens → engine → tokens path on a MIDI file.

The continuation answers the file's last phrase the way the daemon's continue mode does: bar
*k* of the answer varies bar *k* of the phrase by the copy prior (``variation`` 0: the phrase's
shape again, 1: free; see :mod:`ostinato.engine.copy`), and ``bars=None`` answers with as many
bars as the phrase (the bars of the file the context holds, at most ``AUTO_BARS_MAX``).

The meter: with a model whose tokenizer has time-signature tokens, every bar of the file is
tokenized in its own meter and the answer is in the meter of the file's last bar (one the
model does not know is refused); a model without them reads every bar as 4/4 and answers in
4/4, as it always did."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Note, Score, Track

from ostinato.engine.accompany import bar_header, programs_held
from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine, GeneratedNote
from ostinato.model.grammar import (
    DEFAULT_DENSITY,
    GrammarConfig,
    heard_bars,
    note_budget,
    played_ranges,
)
from ostinato.model.key import key_lock_classes
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import (
    DRUM_PROGRAM,
    Meter,
    format_meter,
    load_score,
    score_meters,
    score_to_ids,
    split_bars,
)

AUTO_BARS_MAX = 16


@dataclass(frozen=True)
class Continuation:
    score: Score  # the input followed by the continuation
    notes: list[GeneratedNote]
    input_bars: int
    context_bars: int
    meter: Meter = (4, 4)  # the answer's


def programs_in(score: Score) -> tuple[int, ...]:
    return tuple(
        sorted({DRUM_PROGRAM if t.is_drum else t.program for t in score.tracks if t.notes})
    )


def continue_score(
    engine: Engine,
    score: Score,
    bars: int | None,
    settings: SamplingSettings,
    programs: tuple[int, ...] | None = None,
    seed: int | None = None,
    context_tokens: int | None = None,
    key_lock: bool = True,
    variation: float = 1.0,
    style: str | None = None,
    guidance: float = 0.0,
    density: float = DEFAULT_DENSITY,
) -> Continuation:
    """Continue ``score`` by ``bars`` bars after its last bar (None: as many as the phrase),
    each varying the phrase's bar by ``variation``, in the meter of its last bar (4/4 for a
    model without time-signature tokens). ``style`` (None: none) and ``guidance``: see
    :class:`~ostinato.engine.engine.Engine` (ignored by a model without style tokens)."""
    vocab = engine.vocab
    if vocab.has_meters:
        written = score_meters(score)
        unknown = sorted(set(written) - set(vocab.meters))
        if unknown:
            raise ValueError(
                f"the input is in {', '.join(format_meter(m) for m in unknown)}, which this "
                f"model does not know (it knows {', '.join(format_meter(m) for m in vocab.meters)})"
            )
    ids = score_to_ids(engine.tokenizer, score)
    if len(ids) == 0:
        raise ValueError("the input has no notes to continue")
    all_bars = split_bars(ids, vocab.bar_id)
    # Each bar's length in quarter notes: its TimeSig token's, or 4 (read as 4/4).
    lengths = [float(vocab.bar_beats[b[1]]) if vocab.has_meters and len(b) > 1 else 4.0
               for b in all_bars]  # fmt: skip
    meter: Meter = (4, 4)
    if vocab.has_meters and len(all_bars[-1]) > 1:
        meter = vocab.meter_of_token(int(all_bars[-1][1]))
    budget = context_tokens or (3 * engine.window) // 4
    context: list[np.ndarray] = []
    for bar in reversed(all_bars):  # the newest bars that fit the budget
        if context and sum(len(b) for b in context) + len(bar) > budget:
            break
        context.insert(0, bar)
    engine.reset(style)
    engine.set_guidance(guidance)
    context_ids = np.concatenate(context)
    engine.feed(context_ids)
    programs = programs or programs_in(score)
    scale = key_lock_classes(engine.vocab, context_ids) if key_lock else None
    max_notes = note_budget(heard_bars(vocab, context), programs, density)
    grammar = GrammarConfig(programs=programs, scale_pitch_classes=scale, meter=meter,
                            max_notes=max_notes, pitch_ranges=played_ranges(vocab, context_ids),
                            header=bar_header(vocab, programs))  # fmt: skip
    phrase = context[-AUTO_BARS_MAX:]
    if bars is None:
        bars = len(phrase)
    sampler = engine.sampler(settings, seed)
    played = programs_held(vocab, phrase)
    bar_beats = grammar.beats_per_bar
    notes: list[GeneratedNote] = []
    for k in range(bars):  # bar by bar, as the daemon answers: each the phrase's bar varied
        ref = phrase[k % len(phrase)]
        # the instruments of the phrase's bar (those of --programs it holds), as it played
        config = dataclasses.replace(grammar, header=bar_header(vocab, programs, [ref], played))
        prior = CopyPrior(vocab, [[ref]], variation) if variation < 1.0 else None
        notes += [
            dataclasses.replace(n, bar=k, start_beats=n.start_beats + k * bar_beats)
            for n in engine.generate(1, sampler, config, prior=prior)
        ]

    tpq = score.ticks_per_quarter
    offset_beats = sum(lengths)
    out = score.copy()
    tracks: dict[int, Track] = {}
    for t in out.tracks:
        tracks.setdefault(DRUM_PROGRAM if t.is_drum else t.program, t)
    for note in notes:
        track = tracks.get(note.program)
        if track is None:
            is_drum = note.program == DRUM_PROGRAM
            track = Track(name="ostinato", program=max(0, note.program), is_drum=is_drum)
            out.tracks.append(track)
            tracks[note.program] = track
        start = round((offset_beats + note.start_beats) * tpq)
        track.notes.append(
            Note(start, max(1, round(note.duration_beats * tpq)), note.pitch, note.velocity)
        )
    for t in out.tracks:
        t.notes.sort(key=lambda n: (n.time, n.pitch))
    return Continuation(out, notes, len(all_bars), len(context), meter)


def continue_file(
    engine: Engine, src: str | Path, dst: str | Path, bars: int | None,
    settings: SamplingSettings, programs: tuple[int, ...] | None = None,
    seed: int | None = None, key_lock: bool = True, variation: float = 1.0,
    style: str | None = None, guidance: float = 0.0, density: float = DEFAULT_DENSITY,
) -> Continuation:  # fmt: skip
    result = continue_score(
        engine, load_score(src), bars, settings, programs, seed, key_lock=key_lock,
        variation=variation, style=style, guidance=guidance, density=density,
    )  # fmt: skip
    result.score.dump_midi(str(dst))
    return result
