"""Piano rolls of evaluation windows (``ostinato eval … --rolls DIR``), so the figures can be
looked at, not only read.

One PNG per window: one row per continuation (the real one first, then each continuer), each
row the window's context (on a grey ground) followed by that continuation; time in bars
across, pitch up. Every instrument has one colour in all rows of a figure (drums drawn as
short ticks at their drum's key), with a legend naming them. Drawn with matplotlib's Agg
backend (no display needed; matplotlib comes with the ``train`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ostinato.evaluate.bars import TimedNote, bar_starts_quarters, timed_notes
from ostinato.model.tokens import DRUM_PROGRAM, Vocab

#: Windows drawn by default.
ROLL_WINDOWS = 4
#: General MIDI's instrument families, program // 8.
GM_FAMILIES = (
    "piano", "chromatic perc.", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth fx", "ethnic", "percussive", "sound fx",
)  # fmt: skip
DRUM_TICK_QUARTERS = 0.125


@dataclass
class Roll:
    """One window to draw: its context bars, and the continuations to draw after it, by row
    name (token bars each)."""

    title: str
    context: list[np.ndarray]
    rows: dict[str, list[np.ndarray]]


def program_name(program: int) -> str:
    if program == DRUM_PROGRAM:
        return "drums"
    return f"{GM_FAMILIES[program // 8]} ({program})"


def _colours(programs: Sequence[int]) -> dict[int, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(programs) <= 10 else "tab20"]
    return {p: cmap(i % cmap.N) for i, p in enumerate(sorted(programs))}


def _draw(ax, notes: Sequence[TimedNote], colours: dict[int, tuple]) -> None:
    for program, colour in colours.items():
        mine = [n for n in notes if n.program == program]
        if not mine:
            continue
        drums = program == DRUM_PROGRAM
        lengths = [DRUM_TICK_QUARTERS if drums else max(n.length, 0.05) for n in mine]
        ax.barh(
            [n.pitch for n in mine],
            lengths,
            left=[n.start for n in mine],
            height=0.8,
            color=colour,
            alpha=0.8,
            linewidth=0,
        )  # fmt: skip (parts in unison both show)


def write_roll(path: str | Path, vocab: Vocab, roll: Roll) -> Path:
    """Draw one window to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    drawn = {name: timed_notes(vocab, [*roll.context, *bars]) for name, bars in roll.rows.items()}
    programs = sorted({n.program for notes in drawn.values() for n in notes})
    colours = _colours(programs)
    context_end = float(bar_starts_quarters(vocab, roll.context)[-1])
    longest = max((len(bars) for bars in roll.rows.values()), default=0)
    fig, axes = plt.subplots(len(drawn), 1, figsize=(12, 1.8 * len(drawn) + 0.8),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    pitches = [n.pitch for notes in drawn.values() for n in notes] or [60]
    for ax, (name, notes) in zip(axes[:, 0], drawn.items(), strict=True):
        ax.axvspan(0, context_end, color="0.92", zorder=0)
        _draw(ax, notes, colours)
        starts = bar_starts_quarters(vocab, [*roll.context, *roll.rows[name]])
        for x in starts:
            ax.axvline(x, color="0.75", linewidth=0.5, zorder=0)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    any_row = next(iter(roll.rows.values()), [])
    ends = bar_starts_quarters(vocab, [*roll.context, *any_row])
    axes[-1, 0].set_xlim(0, float(ends[-1]) if longest else context_end)
    ticks = ends[:-1]
    axes[-1, 0].set_xticks(ticks, [str(i + 1) for i in range(len(ticks))])
    axes[-1, 0].set_xlabel("bar (grey: the context)")
    fig.suptitle(roll.title, x=0.01, ha="left", fontsize="medium")
    fig.legend(handles=[Patch(color=colours[p], label=program_name(p)) for p in programs],
               loc="lower center", ncol=min(8, max(1, len(programs))), fontsize="small",
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_rolls(
    directory: str | Path, vocab: Vocab, rolls: Sequence[Roll], prefix: str
) -> list[Path]:
    """Draw every window of ``rolls`` to ``directory/{prefix}-{k}.png``; the paths written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "piano rolls need matplotlib: pip install matplotlib (or the train extra)"
        ) from exc
    return [
        write_roll(Path(directory) / f"{prefix}-{k}.png", vocab, roll)
        for k, roll in enumerate(rolls)
    ]
