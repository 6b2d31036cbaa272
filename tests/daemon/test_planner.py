"""The per-bar cycle's context bookkeeping, driven bar by bar (no ports, no threads)."""

from __future__ import annotations

import numpy as np
import pytest

import ostinato.daemon.planner as planner_module
import ostinato.engine.engine as engine_module
from ostinato.daemon.clock import Clock
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM
from ostinato.settings import GenerationSettings


@pytest.mark.parametrize("renumbering", [False, True], ids=["sliding", "sliding-renumbering"])
def test_the_context_keeps_its_bars_while_the_window_slides(
    tiny_model_dir, monkeypatch, renumbering
) -> None:
    """A long jam fills the KV window again and again; each time it slides, the committed
    bars must be found where they now are: the context stays the newest bars exactly as
    played (no speculative tokens of an earlier cycle, no restart from a bare context).
    Renumbering the positions (past the engine's limit) happens between bars, never inside
    one, and changes none of it."""
    if renumbering:
        monkeypatch.setattr(engine_module, "POSITION_LIMIT", 600)
        monkeypatch.setattr(planner_module, "RENUMBER_HEADROOM", 200)
    engine = Engine(tiny_model_dir, device="cpu")
    ahead = []
    renumber_ahead = engine.renumber_ahead
    monkeypatch.setattr(engine, "renumber_ahead", lambda headroom: ahead.append(
        renumber_ahead(headroom)) or ahead[-1])  # fmt: skip
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)  # queued only, never sent
    recorder = Recorder()
    settings = GenerationSettings(mode="jam", programs=(DRUM_PROGRAM, 33), temperature=1.3,
                                  seed=5, key_lock=False)  # fmt: skip
    # bars are driven by hand ahead of their time: the session's clock stays at 0, before
    # every note (the fallback for late bars has tests of its own)
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=lambda: 0.0)
    recorder.keep_bars = 64
    vocab = engine.vocab
    slides = 0
    for next_bar in range(1, 40):
        before = engine.dropped_front
        session.run_cycle(next_bar, next_bar * 4.0 - 0.25)
        assert engine.dropped_front >= before  # never restarted from a bare context
        slides += engine.dropped_front > before
        current = next_bar - 1
        bars = [session.bar_tokens(recorder.bar_notes(b), b) for b in range(current)]
        committed = session._committed_len - (engine.dropped_front - session._committed_dropped)
        context = engine.context_tokens()
        assert context[0] == vocab.bos_id
        if not bars:
            continue
        played = np.concatenate(bars)
        kept = context[1:committed]
        assert kept[0] == vocab.bar_id  # whole bars
        np.testing.assert_array_equal(kept, played[len(played) - len(kept) :])
    assert slides >= 3  # the window did slide, several times
    assert engine.renumbered == sum(ahead)  # every time between bars
    assert engine.renumbered >= (2 if renumbering else 0)


def _jam_over_a_sparse_bass(tiny_model_dir, density: float) -> list[int]:
    """The musician plays 3 bass notes a bar for 4 bars, then leaves the model alone in jam
    mode (hot, so it plays busily): the notes of each bar Ostinato plays after that."""
    engine = Engine(tiny_model_dir, device="cpu")
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)
    recorder = Recorder(channel_programs={0: 33})
    recorder.keep_bars = 64
    settings = GenerationSettings(mode="jam", temperature=2.0, seed=3, key_lock=False,
                                  density=density)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=lambda: 0.0)
    counts = []
    for bar in range(16):
        if bar < 4:
            for beat, pitch in ((0.0, 36), (1.5, 43), (3.0, 40)):
                recorder.note_on(bar * 4.0 + beat, 0, pitch, 100)
                recorder.note_off(bar * 4.0 + beat + 0.5, 0, pitch)
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
        if bar >= 5:
            counts.append(len([n for n in recorder.bar_notes(bar) if n.source == "ostinato"]))
    return counts


def test_a_jam_keeps_within_the_note_budget_of_what_the_musician_played(tiny_model_dir):
    """``density`` × the busiest bar the musician played is the most notes a bar Ostinato
    plays may hold (3 notes × 1.25 → at least 4); with density 0 the same hot model plays
    more (the limit is what held it)."""
    budgeted = _jam_over_a_sparse_bass(tiny_model_dir, 1.25)
    assert max(budgeted) <= 4 and sum(budgeted) > 0
    free = _jam_over_a_sparse_bass(tiny_model_dir, 0.0)
    assert max(free) > 4


def _jam_after_drums(tiny_model_dir, density: float, mode: str = "jam") -> list[int]:
    """The musician plays 8 drum hits a bar for 4 bars, then leaves the model alone (cool,
    so it plays sparsely): the notes of each bar Ostinato plays after that."""
    engine = Engine(tiny_model_dir, device="cpu")
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)
    recorder = Recorder(channel_programs={9: DRUM_PROGRAM})
    recorder.keep_bars = 64
    settings = GenerationSettings(mode=mode, temperature=0.2, seed=1, key_lock=False,
                                  density=density)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=lambda: 0.0)
    counts = []
    for bar in range(14):
        if bar < 4:
            for step in range(8):
                recorder.note_on(bar * 4.0 + step / 2, 9, 36 if step % 4 == 0 else 42, 100)
                recorder.note_off(bar * 4.0 + step / 2 + 0.25, 9, 36 if step % 4 == 0 else 42)
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
        if bar >= 5:
            counts.append(len([n for n in recorder.bar_notes(bar) if n.source == "ostinato"]))
    return counts


def test_a_jam_left_alone_keeps_a_floor_of_what_the_musician_played(tiny_model_dir):
    """Jam mode: at least 0.6 × the musician's mean bar (8 hits → 4) in every bar the model
    plays alone; without limits the same cool model plays less."""
    floored = _jam_after_drums(tiny_model_dir, 1.25)
    assert min(floored) >= 4, floored
    free = _jam_after_drums(tiny_model_dir, 0.0)
    assert min(free) < 3, free
