"""Jam mode with a model whose bars name their instruments: every part asked for plays in
every bar, under a keyboard player's chords and with nobody playing at all."""

from __future__ import annotations

from ostinato.daemon.clock import Clock
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM
from ostinato.settings import GenerationSettings

CHORDS = ((57, 60, 64), (57, 60, 65), (55, 60, 64), (55, 59, 62))  # Am F C G


def _jam(model_dir, programs, chords: bool, bars: int = 12, temperature: float = 0.3,
         plans: dict | None = None):  # fmt: skip
    engine = Engine(model_dir, device="cpu")
    assert engine.vocab.has_header
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)
    recorder = Recorder()  # channel 1 (0 here) is heard as keys
    settings = GenerationSettings(mode="jam", programs=programs, temperature=temperature,
                                  seed=2, key_lock=False)  # fmt: skip
    session = BarPlanner(engine, clock, scheduler, recorder, settings, now=lambda: 0.0)
    played = []
    for bar in range(bars):
        if chords:
            for beat in (0.0, 2.0):
                for pitch in CHORDS[bar % 4]:
                    recorder.note_on(bar * 4.0 + beat, 0, pitch, 80)
                    recorder.note_off(bar * 4.0 + beat + 1.9, 0, pitch)
        session.run_cycle(bar + 1, bar * 4.0 + 3.5)
        if plans is not None:
            plans[bar + 1] = session._takes[bar + 1].plan
        if bar >= 1:
            ours = [n for n in recorder.bar_notes(bar) if n.source == "ostinato"]
            played.append(sorted({n.program for n in ours}))
    return played


def test_bass_and_drums_in_every_bar_under_chords(tiny_header_model_dir):
    played = _jam(tiny_header_model_dir, (DRUM_PROGRAM, 33), chords=True)
    assert played and all(p == [DRUM_PROGRAM, 33] for p in played), played


def test_every_part_asked_for_plays_with_nobody_playing(tiny_header_model_dir):
    played = _jam(tiny_header_model_dir, (DRUM_PROGRAM, 0, 33), chords=False)
    assert played and all(p == [DRUM_PROGRAM, 0, 33] for p in played), played


def test_parts_enter_cooler_then_vary_the_groove_bar_to_bar(tiny_header_model_dir):
    """Jam mode: the bar Ostinato's parts enter with (nothing of their own to vary) is sampled
    at ENTER_COOLING × the temperature; each bar after it, until a loop is known, varies the
    bar before (its reference) at the musician's temperature; once the musician's 4-bar loop
    is known, the bar of the pass before at its place."""
    from ostinato.engine.accompany import ENTER_COOLING

    plans: dict = {}
    _jam(tiny_header_model_dir, (DRUM_PROGRAM, 33), chords=True, bars=10, temperature=0.5,
         plans=plans)  # fmt: skip
    assert abs(plans[1].sampling.temperature - 0.5 * ENTER_COOLING) < 1e-9
    assert plans[1].references == ()
    for bar in range(2, 11):
        assert plans[bar].sampling.temperature == 0.5, bar
        assert len(plans[bar].references) == 1, bar
