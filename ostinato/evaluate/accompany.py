"""``ostinato eval MODEL CORPUS --mode accompany``: does the model play the parts it is asked
for, under the harmony the musician plays?

The first ask of a jam partner — "I play the chords, you play bass and drums" — on multi-track
music the model never saw (``--split heldout``):

* **Windows**: :data:`CONTEXT_BARS` bars of a file, then ``bars`` bars generated (default
  :data:`DEFAULT_BARS`). One window per file first (a random start), then more starts of the
  same files.
* **Parts**: the parts asked for are Ostinato's: ``programs`` (``--programs``), by default
  each window's bass (General MIDI 32–39) and drums; a window without a bass program but with
  three or more pitched parts (a string quartet) asks for its lowest part in the bass's role
  (lowest on average over the whole file: a quartet's cello).
  The window's other parts are *the musician's*. A window needs both, and the musician
  playing in its generated bars.
* **Generation**, as the daemon's jam mode plays: bar ``k`` is generated before the
  musician's part of it is heard — its header naming the parts asked for, each part's floor
  and budget from its own recent bars (:func:`ostinato.engine.accompany.jam_parts`) — then the
  musician's real part of it is added, and the next bar hears both: the context for bar ``k``
  is every earlier bar with all parts, the model's own in place of the real asked-for parts.
  The context bars before the first: the real ones (``context="all"``: Ostinato had been
  playing along) or the musician's parts alone (``"musician"``: Ostinato joins at the first
  generated bar, as when the musician starts a jam). As in the daemon before a loop is known,
  each bar varies Ostinato's bar before it under the copy prior (``variation``, the daemon's
  default 0.3; the bass's pitches the model's own, chosen against the harmony it hears), and
  a bar with nothing of Ostinato's before it to vary is an entry, sampled cooler
  (:func:`ostinato.engine.accompany.entering_sampling`). As the daemon does at its default
  ``commit`` (``--commit``, 1 beat; ``bar``: planned whole), the rest of the bar is then
  planned again at each commit point where the musician struck something since the plan
  before, hearing the musician's notes up to a 32nd after the point and Ostinato's up to the
  next one (final), the bass kept to the harmony sounding then
  (:mod:`ostinato.daemon.replan`).
* **Rows**: ``model``; ``real parts`` (the real asked-for parts: what the music itself does,
  the upper bound on chord tones); ``repeat last bar`` (the asked-for parts of the context's
  last bar, again).
* **Figures**, each row against the real asked-for parts of the same bars:

  - ``presence``: of (bar, asked part) pairs, the share where the part plays;
    ``bass_presence`` and ``drums_presence`` the share of bars where the bass (any part in
    the bass's role) and the drums play;
  - ``bass_chord_tones``: of the bass part's notes, the share whose pitch class the
    musician's parts sound in that bar (struck in it or held into it); bars where the
    musician sounds nothing are left out. ``bass_chord_tones_strong``: the same for the notes
    struck on a strong beat — the downbeat and, in a meter of an even number of beats, the
    bar's middle (beats 1 and 3 in 4/4) — up to a 16th after it;
  - ``pitch_class_overlap``, ``onset_overlap``, ``drum_onset_f1``: as for a continuation
    (:mod:`ostinato.evaluate.metrics`), over the asked-for parts;
  - ``kick_on_one``: of the bars where drums are asked for, the share whose downbeat has a
    bass drum (GM 35 or 36): the groove's anchor, which a jam partner keeps bar to bar;
  - ``density_ratio``: the asked-for parts' notes ÷ the real ones'.

  Presence, chord tones and density pool every window's bars and notes; the overlaps and F1
  are means over windows. Figures are given for all windows and per group (the first folder
  of each file's path in the corpus source: ``freedoom-midi``, ``openscore-quartets`` …).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from ostinato.engine.accompany import (
    GRACE_BEATS,
    HARMONY_BARS,
    bar_header,
    commit_points,
    entering,
    entering_sampling,
    expected_harmony,
    jam_parts,
    pitch_classes,
    programs_held,
    sounding_harmony,
)
from ostinato.engine.copy import CopyPrior
from ostinato.engine.engine import Engine
from ostinato.evaluate.band import (
    CONTEXT_BARS,
    DEFAULT_BARS,
    AccompanyWindow,
    accompany_metrics,
    accompany_windows,
    summarize_accompany,
)
from ostinato.evaluate.bars import (
    bar_meter,
    bar_quarters,
    keep_parts,
    merge_bars,
    parse_notes,
    quarters_per_position,
)
from ostinato.evaluate.continuation import (
    DEFAULT_SETTINGS,
    check_corpus,
    load_split,
    split_names,
)
from ostinato.evaluate.rolls import ROLL_WINDOWS, Roll, write_rolls
from ostinato.model.grammar import (
    DEFAULT_DENSITY,
    JAM_FLOOR,
    GrammarConfig,
    heard_bars,
    note_budget,
    note_floor,
    played_ranges,
)
from ostinato.model.key import key_lock_classes
from ostinato.model.parts import NoteTable
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import DRUM_PROGRAM, TokenType, Vocab, name_in_header, strip_headers
from ostinato.settings import GenerationSettings


class Accompanist(Protocol):
    """Plays a window's asked-for parts: one bar of tokens per generated bar."""

    name: str

    def __call__(self, window: AccompanyWindow, seed: int) -> list[np.ndarray]: ...


def _ends_in_empty_bar(vocab: Vocab, context: np.ndarray) -> bool:
    last = context[-1]
    return bool(last == vocab.bar_id or (
        vocab.types[last] == TokenType.TIME_SIG and len(context) >= 2
        and context[-2] == vocab.bar_id
    ))  # fmt: skip


#: The copy prior's variation of jam mode's bars: the daemon's default (``--variation``).
DEFAULT_VARIATION = GenerationSettings.variation
#: How often a bar's plan becomes final and the rest is planned again: the daemon's default
#: (``--commit``, beats; None: the bar planned whole).
DEFAULT_COMMIT = GenerationSettings.commit
RESEED = 7919  # a re-plan's seed: the bar's, moved by this per 32nd of its commit point


def cut_before(vocab: Vocab, bar: np.ndarray, quarters: float) -> np.ndarray:
    """``bar`` (from its ``Bar`` token, header left out) with only the notes struck before
    ``quarters`` into it."""
    ids = strip_headers(vocab, np.asarray(bar, dtype=np.int64))
    table = NoteTable(vocab, ids)
    per_position = quarters_per_position(vocab, bar_meter(vocab, ids))
    return table.without(table.note_position * per_position >= quarters - 1e-9)


class ModelAccompanist:
    """The model through the engine, bar by bar as the daemon's jam mode plays."""

    name = "model"

    def __init__(
        self, engine: Engine, settings: SamplingSettings, key_lock: bool,
        style: str | None = None, guidance: float = 0.0, density: float = DEFAULT_DENSITY,
        variation: float = DEFAULT_VARIATION, commit: float | None = DEFAULT_COMMIT,
    ) -> None:  # fmt: skip
        self.engine, self.settings, self.key_lock = engine, settings, key_lock
        self.style, self.guidance, self.density = style, guidance, density
        self.variation, self.commit = variation, commit

    def __call__(self, window: AccompanyWindow, seed: int) -> list[np.ndarray]:
        e = self.engine
        vocab = e.vocab
        e.reset(self.style)
        e.set_guidance(self.guidance)
        e.feed(np.concatenate(window.heard))
        asked = window.asked
        limits = self.density != 0  # density 0: no limits at all
        # the musician's bars, as the daemon counts them for its note budget and floor
        human = [keep_parts(vocab, b, window.musician) for b in window.real_context]
        # Ostinato's own bars: the asked-for parts of the context as heard, then its own
        own = [keep_parts(vocab, b, asked) for b in window.heard]
        played = [bool(programs_held(vocab, [b]) & set(asked)) for b in own]
        out = []
        for k, real in enumerate(window.real):
            before = own[-1] if played[-1] else None
            refs = [before] if before is not None else []
            sampling = self.settings
            if not refs and entering(played):
                sampling = entering_sampling(sampling)
            sampler = e.sampler(sampling, seed * 1000 + k)
            context = e.context_tokens()
            heard = heard_bars(vocab, human)
            config = GrammarConfig(
                programs=asked, meter=bar_meter(vocab, real),
                pitch_ranges=played_ranges(vocab, context),
                scale_pitch_classes=key_lock_classes(vocab, context) if self.key_lock else None,
                max_notes=note_budget(heard, asked, self.density),
                min_notes=note_floor(heard, asked, JAM_FLOOR) if limits else None,
                header=bar_header(vocab, asked),
                parts=jam_parts(vocab, context, asked, self.density) if limits else (),
                bass_pitch_classes=expected_harmony(pitch_classes(vocab, human[-HARMONY_BARS:]))
                if self.key_lock else None,  # the daemon's harmony coming (jam mode)
            )  # fmt: skip
            length, dropped = e.context_length, e.dropped_front
            if _ends_in_empty_bar(vocab, context):  # a silent bar heard: the next one opens
                e.feed([vocab.bar_id])
            prior = CopyPrior(vocab, [refs], self.variation, free_pitches=True) if refs else None
            tokens: list[int] = []
            list(e.generate(1, sampler, config, tokens_out=tokens, prior=prior))
            bar = np.asarray([vocab.bar_id, *tokens[:-1]], dtype=np.int64)
            musician = keep_parts(vocab, real, window.musician)
            anchor = (length, dropped)
            struck = 0  # the musician's notes of the bar its plan heard
            for point in commit_points(self.commit, bar_quarters(vocab, real)):
                bar, struck = self._replan(bar, musician, point, struck, anchor, config, refs,
                                           sampling, seed * 1000 + k)  # fmt: skip
            out.append(bar)
            own.append(bar)
            played.append(bool(programs_held(vocab, [bar])))
            human.append(musician)
            # the bar as the daemon hears it once it is over: the musician's part and ours
            self._back_to(anchor)
            e.feed(merge_bars(vocab, musician, bar))
        return out

    def _back_to(self, anchor: tuple[int, int]) -> None:
        """The engine's context as it was before the bar (``anchor``: its length and the
        tokens dropped from its front then)."""
        e = self.engine
        length, dropped = anchor
        e.truncate(max(e.prefix_length, length - (e.dropped_front - dropped)))

    def _replan(
        self, bar: np.ndarray, musician: np.ndarray, point: float, heard_before: int,
        anchor: tuple[int, int], config: GrammarConfig, refs: list[np.ndarray],
        sampling: SamplingSettings, seed: int,
    ) -> tuple[np.ndarray, int]:  # fmt: skip
        """``bar`` (Ostinato's parts) planned again from the commit point after ``point``
        (quarters into it) on, as the daemon's re-plan does, and how many of the musician's
        notes it heard. It hears those struck up to :data:`GRACE_BEATS` after
        ``point`` and Ostinato's up to the next commit point (final), and with key lock on
        keeps the bass to the harmony sounding then. Unchanged where the musician struck
        nothing since the plan before (``heard_before`` notes heard then)."""
        e, vocab = self.engine, self.engine.vocab
        assert self.commit is not None
        heard_until, boundary = point + GRACE_BEATS, point + self.commit
        per_position = quarters_per_position(vocab, bar_meter(vocab, bar))
        heard = [(n.position * per_position, n.duration * per_position, n.program, n.pitch)
                 for n in parse_notes(vocab, musician)
                 if n.position * per_position < heard_until - 1e-9]  # fmt: skip
        if len(heard) == heard_before:  # the same context: the plan stands
            return bar, heard_before
        mine = cut_before(vocab, bar, boundary)  # final
        known = merge_bars(vocab, cut_before(vocab, musician, heard_until), mine)
        self._back_to(anchor)
        e.feed(name_in_header(vocab, known, config.header or ()))
        context = e.context_tokens()
        grammar = replace(
            config, scale_pitch_classes=key_lock_classes(vocab, context) if self.key_lock else None
        )
        chord = sounding_harmony(heard, heard_until) if self.key_lock else None
        if chord is not None:  # the harmony the bass keeps to: the one sounding then
            grammar = replace(grammar, bass_pitch_classes=chord)
        prior = CopyPrior(vocab, [refs], self.variation, free_pitches=True) if refs else None
        sampler = e.sampler(sampling, seed + RESEED * round(8 * boundary))
        position = int(np.ceil(boundary / per_position - 1e-6))
        tokens: list[int] = []
        list(e.complete_bar(sampler, grammar, position, tokens, prior))
        head = mine[: _head_length(vocab, mine)]
        rest = np.concatenate((head, np.asarray(tokens[:-1], dtype=np.int64)))
        return merge_bars(vocab, mine, rest), len(heard)


def _head_length(vocab: Vocab, bar: np.ndarray) -> int:
    """The tokens of a bar (header left out) before its first note: ``Bar``, ``TimeSig``."""
    at = np.flatnonzero(vocab.types[bar] == TokenType.POSITION)
    return int(at[0]) if len(at) else len(bar)


class RealParts:
    """The real asked-for parts: what the music itself does."""

    name = "real parts"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, window: AccompanyWindow, seed: int) -> list[np.ndarray]:
        return [keep_parts(self.vocab, b, window.asked) for b in window.real]


class RepeatLastBar:
    """The asked-for parts of the context's last bar (as heard), again and again."""

    name = "repeat last bar"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, window: AccompanyWindow, seed: int) -> list[np.ndarray]:
        last = keep_parts(self.vocab, window.heard[-1], window.asked)
        return [last] * len(window.real)


@dataclass
class _Rows:
    metrics: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, name: str, row: dict) -> None:
        self.metrics.setdefault(name, []).append(row)

    def summary(self) -> dict[str, dict]:
        return {name: summarize_accompany(rows) for name, rows in self.metrics.items()}


def evaluate_accompany(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str = "heldout",
    windows: int = 48,
    bars: int = DEFAULT_BARS,
    programs: Sequence[int] | None = None,
    context: str = "all",
    seed: int = 0,
    settings: SamplingSettings = DEFAULT_SETTINGS,
    key_lock: bool = True,
    progress: bool = True,
    style: str | None = None,
    guidance: float = 0.0,
    density: float = DEFAULT_DENSITY,
    rolls: str | Path | None = None,
    roll_windows: int = ROLL_WINDOWS,
    variation: float = DEFAULT_VARIATION,
    commit: float | None = DEFAULT_COMMIT,
) -> dict:
    """The accompany report of the module docstring on ``split`` of the corpus
    (``rolls``: a folder for piano rolls of the first windows; ``variation``: the copy
    prior's, varying the bar before; ``commit``: the daemon's, beats between re-plans of the
    rest of the bar, None for a bar planned whole)."""
    if bars < 1 or windows < 1:
        raise ValueError("windows and bars must be at least 1")
    if not 0.0 <= variation <= 1.0:
        raise ValueError(f"variation must be in [0, 1], got {variation}")
    engine = Engine(model_dir, device="cpu")
    engine.set_style(style)
    vocab = engine.vocab
    check_corpus(engine.tokenizer, data_dir)
    data = load_split(data_dir, split, vocab)
    chosen, skipped = accompany_windows(data, split_names(data_dir, split), vocab, windows,
                                        seed, programs, bars, context)  # fmt: skip
    if not chosen:
        raise ValueError(
            f"the {split} split has no window of {CONTEXT_BARS + bars} bars with parts to ask "
            f"for beside a musician's ({', '.join(f'{k}: {v}' for k, v in skipped.items())})"
        )
    accompanists: list[Accompanist] = [
        ModelAccompanist(engine, settings, key_lock, style, guidance, density, variation, commit),
        RealParts(vocab),
        RepeatLastBar(vocab),
    ]
    whole, groups = _Rows(), dict[str, _Rows]()
    drawn: list[Roll] = []
    for k, window in enumerate(tqdm(chosen, desc="accompany", disable=not progress)):
        played = {a.name: a(window, seed + k) for a in accompanists}
        for name, bars_played in played.items():
            row = accompany_metrics(vocab, window, bars_played)
            whole.add(name, row)
            groups.setdefault(window.group, _Rows()).add(name, row)
        if rolls is not None and k < roll_windows:
            heard = [keep_parts(vocab, b, window.musician) for b in window.real]
            drawn.append(Roll(
                f"{window.file}, from bar {window.start + 1}: the musician plays "
                f"{_names(window.musician)}, asked for {_names(window.asked)}",
                list(window.heard),
                {"real": list(window.real)} | {
                    name: [merge_bars(vocab, h, b) for h, b in zip(heard, bars_played, strict=True)]
                    for name, bars_played in played.items() if name != RealParts.name
                },
            ))  # fmt: skip
    notes = []
    if not vocab.has_header:
        notes.append("this model's bars carry no instrument header: the asked-for parts are "
                     "only enabled, not asked for")  # fmt: skip
    report = {
        "mode": "accompany",
        "model": str(model_dir),
        "data": str(data_dir),
        "split": split,
        "header": vocab.has_header,
        "windows": len(chosen),
        "context_bars": CONTEXT_BARS,
        "bars": bars,
        "context": context,
        "programs": list(programs) if programs is not None else None,
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "key_lock": key_lock,
            "density": density,
            "variation": variation,
            "commit": commit,
        },
        "accompany": whole.summary(),
        "groups": {
            g: {"windows": len(next(iter(r.metrics.values()))), "rows": r.summary()}
            for g, r in sorted(groups.items())
        },
        "skipped": skipped,
        "accompany_windows": [_describe(w) for w in chosen],
        "notes": notes,
    }
    if rolls is not None:
        report["rolls"] = [str(p) for p in write_rolls(rolls, vocab, drawn, "accompany")]
    return report


def _describe(window: AccompanyWindow) -> dict:
    return {"file": window.file, "start_bar": window.start, "asked": list(window.asked),
            "bass": list(window.bass), "musician": list(window.musician)}  # fmt: skip


def _names(programs: Sequence[int]) -> str:
    return ", ".join("drums" if p == DRUM_PROGRAM else str(p) for p in programs)


ACCOMPANY_COLUMNS = (
    ("presence", "parts-in"),
    ("bass_presence", "bass-in"),
    ("drums_presence", "drums-in"),
    ("bass_chord_tones", "chord"),
    ("bass_chord_tones_strong", "chord-1/3"),
    ("pitch_class_overlap", "pc-ovl"),
    ("onset_overlap", "onset-ovl"),
    ("drum_onset_f1", "drum-F1"),
    ("kick_on_one", "kick-1"),
    ("density_ratio", "density"),
)


def _table(rows: dict[str, dict], indent: str) -> list[str]:
    lines = [f"{indent}{'':16s}" + "".join(f"{h:>10s}" for _, h in ACCOMPANY_COLUMNS)]
    for name, m in rows.items():
        lines.append(f"{indent}{name:16s}" + "".join(f"{m[k]:10.3f}" for k, _ in ACCOMPANY_COLUMNS))
    return lines


def format_accompany(report: dict) -> str:
    asked = (
        f"parts asked for: {_names(report['programs'])}"
        if report["programs"] is not None
        else "parts asked for: each window's bass and drums"
    )
    heard = "all parts" if report["context"] == "all" else "the musician's parts alone"
    commit = report["settings"].get("commit")
    planned = (
        "each planned before the musician's part of it is heard"
        if commit is None
        else f"each planned before the musician's part of it is heard and again every "
        f"{commit:g} beat{'s' if commit != 1 else ''}, hearing it so far"
    )
    lines = [
        f"accompany: {report['windows']} windows of the {report['split']} split "
        f"({report['context_bars']} bars of context, {heard} → {report['bars']} bars "
        f"generated bar by bar, {planned}); {asked}:",
        *_table(report["accompany"], "  "),
    ]
    if len(report["groups"]) > 1:
        for group, g in report["groups"].items():
            lines.append(f"  {group or '(no folder)'} ({g['windows']} windows):")
            lines.extend(_table(g["rows"], "    "))
    lines.append(
        "  parts-in: bars × asked parts played; chord: bass notes on a pitch class the "
        "musician sounds in the bar (chord-1/3: struck on beats 1 and 3 in 4/4)"
    )
    if report["skipped"]:
        lines.append("files without a window: " + ", ".join(
            f"{reason}: {count}" for reason, count in report["skipped"].items()))  # fmt: skip
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    lines.extend(f"piano rolls: {path}" for path in report.get("rolls", []))
    return "\n".join(lines)
