"""The per-bar cycle with a model of the new language: every bar heard and played carries the
session's meter, the context starts with the style, and a style or guidance changed while
playing reaches the engine without losing the context, prepared between bars."""

from __future__ import annotations

import numpy as np

from ostinato.daemon.clock import Clock
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import RecordedNote, Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.style import NONE
from ostinato.model.tokens import DRUM_PROGRAM, TokenType, ids_to_score, split_bars
from ostinato.settings import GenerationSettings


def _session(model_dir, meter, settings: GenerationSettings) -> BarPlanner:
    engine = Engine(model_dir, device="cpu")
    clock = Clock(bpm=120)
    clock.start_internal(0.0, 120)
    scheduler = Scheduler(lambda message: None, clock.snapshot)
    recorder = Recorder(beats_per_bar=meter[0] * 4 / meter[1])
    return BarPlanner(engine, clock, scheduler, recorder, settings,
                   beats_per_bar=meter[0] * 4 / meter[1], now=lambda: 0.0,
                   meter=meter)  # fmt: skip


def test_bars_carry_the_meter_and_the_context_the_style(tiny_meter_model_dir) -> None:
    settings = GenerationSettings(mode="jam", programs=(DRUM_PROGRAM, 33), seed=3,
                                  key_lock=False, style="techno")  # fmt: skip
    session = _session(tiny_meter_model_dir, (6, 8), settings)
    engine, vocab = session.engine, session.engine.vocab
    ts = vocab.meter_ids[(6, 8)]
    techno = vocab.style_ids["techno"]
    assert engine.context_tokens().tolist() == [vocab.bos_id, techno]
    # the musician's bars: tokenized in 6/8, an empty bar too
    notes = [RecordedNote(0.0, 0.5, 36, 100, DRUM_PROGRAM, "human"),
             RecordedNote(2.5, 0.5, 45, 90, 33, "human")]  # fmt: skip
    heard = session.bar_tokens(notes, 0)
    assert heard[:2].tolist() == [vocab.bar_id, ts]
    positions = vocab.values[heard[vocab.types[heard] == TokenType.POSITION]]
    assert positions.tolist() == [0, 40]  # 2.5 quarters = 5 eighths × 8
    assert session.bar_tokens([], 3).tolist() == [vocab.bar_id, ts]
    score = ids_to_score(engine.tokenizer, heard)
    assert [(t.numerator, t.denominator) for t in score.time_signatures] == [(6, 8)]

    refills = []
    refill = engine._refill
    engine._refill = lambda tokens: refills.append(len(tokens)) or refill(tokens)
    styles = []
    for next_bar in range(1, 12):
        session.run_cycle(next_bar, next_bar * 3.0 - 0.25)
        styles.append((engine.style, engine._guide is not None))
        if next_bar == 6:  # changed while playing: the style token is replaced in place
            length = engine.context_length
            session.settings = session.settings.replace(style="hiphop", guidance=1.0)
        session.spare_time(1.0)  # the time between bars: a new style is prepared there
    # the style from the first bar line after it was prepared, then the twin of guidance;
    # neither was computed inside a bar's cycle
    assert styles[6:9] == [("techno", False), ("hiphop", False), ("hiphop", True)]
    assert not refills
    context = engine.context_tokens()
    assert context[:2].tolist() == [vocab.bos_id, vocab.style_ids["hiphop"]]
    assert engine.guidance == 1.0 and engine._guide is not None
    mirrored = context.copy()
    mirrored[1] = vocab.style_ids[NONE]
    np.testing.assert_array_equal(engine._guide.context_tokens(), mirrored)
    assert length > 2
    for bar in split_bars(context, vocab.bar_id)[:-1]:  # every whole bar: Bar TimeSig_6/8
        assert bar[1] == ts
    played = [n for n in session.recorder.notes if n.source == "ostinato"]
    assert played and session.bars_generated == 11
    for n in played:  # inside their 3-quarter bar
        start = n.start_beats % 3.0
        assert start + n.duration_beats <= 3.0 + 1e-6
