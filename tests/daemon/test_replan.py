"""Re-planning within the bar (the ``commit`` setting), driven bar by bar on a clock of the
test's own: what the musician plays on a downbeat is in Ostinato's bass from the next commit
point on, what was final stays, and a re-plan not ready in time changes nothing."""

from __future__ import annotations

import pytest

from ostinato.daemon.clock import Clock
from ostinato.daemon.planner import BarPlanner
from ostinato.daemon.recorder import Recorder
from ostinato.daemon.scheduler import Scheduler
from ostinato.engine.engine import Engine
from ostinato.model.tokens import DRUM_PROGRAM
from ostinato.settings import GenerationSettings

# chords that never repeat in a period (C major, close voicings): C Am F G Dm Em ...
CHORDS = ((60, 64, 67), (57, 60, 64), (57, 60, 65), (55, 59, 62), (57, 62, 65), (55, 59, 64))
ORDER = (0, 3, 1, 4, 2, 5, 3, 0, 4, 1, 5, 2)
SPB = 0.5  # seconds per beat at 120 BPM


class Rig:
    def __init__(self, model_dir, commit: float | None) -> None:
        self.t = 0.0
        self.engine = Engine(model_dir, device="cpu")
        self.clock = Clock(bpm=120)
        self.clock.start_internal(0.0, 120)
        self.scheduler = Scheduler(lambda message: None, self.clock.snapshot)
        self.recorder = Recorder()  # channel 1 (0 here) is heard as keys
        self.recorder.keep_bars = 64
        settings = GenerationSettings(mode="jam", programs=(DRUM_PROGRAM, 33), seed=4,
                                      temperature=1.0, key_lock=True, commit=commit)  # fmt: skip
        self.session = BarPlanner(self.engine, self.clock, self.scheduler, self.recorder, settings,
                               now=lambda: self.t)  # fmt: skip

    def strike(self, bar: int) -> tuple[int, ...]:
        chord = CHORDS[ORDER[bar % len(ORDER)]]
        for pitch in chord:
            self.recorder.note_on(bar * 4.0, 0, pitch, 80)
        return chord

    def release(self, bar: int) -> None:
        for pitch in CHORDS[ORDER[bar % len(ORDER)]]:
            self.recorder.note_off(bar * 4.0 + 3.9, 0, pitch)

    def ours(self, bar: int) -> list:
        return [n for n in self.recorder.bar_notes(bar) if n.source == "ostinato"]


@pytest.fixture(scope="module")
def model(tiny_header_model_dir):
    return tiny_header_model_dir


def test_the_bass_is_on_the_chord_from_the_next_commit_point(model) -> None:
    rig = Rig(model, commit=1.0)
    session = rig.session
    following, replaced = 0, 0
    for bar in range(1, 9):
        rig.t = (bar * 4.0 - 0.3) * SPB  # the bar's plan, before its chord is known
        session.run_cycle(bar, bar * 4.0 - 0.3)
        planned = {(n.start_beats, n.program, n.pitch) for n in rig.ours(bar)}
        chord = rig.strike(bar)  # the musician's chord on the downbeat
        rig.t = (bar * 4.0 + 0.2) * SPB  # a re-plan after the commit point on beat 1
        count = session.replan(bar, 0.0, session._epoch)
        assert count is not None, "ready long before beat 2: its notes replace the plan's"
        replaced += 1
        after = rig.ours(bar)
        final = {(n.start_beats, n.program, n.pitch) for n in after if n.start_beats < bar * 4 + 1}
        assert final == {p for p in planned if p[0] < bar * 4 + 1}  # what was final stays
        bass = [n for n in after if n.program == 33 and n.start_beats >= bar * 4 + 1]
        assert all(n.pitch % 12 in {p % 12 for p in chord} for n in bass), (bar, chord, bass)
        following += bool(bass)
        rig.release(bar)
    assert replaced == 8 and following >= 4
    assert session.replans.applied == 8 and session.replans.late == 0


def test_a_replan_not_ready_at_its_commit_point_leaves_the_plan(model) -> None:
    rig = Rig(model, commit=1.0)
    session = rig.session
    rig.t = (4.0 - 0.3) * SPB
    session.run_cycle(1, 4.0 - 0.3)
    planned = sorted((n.start_beats, n.program, n.pitch) for n in rig.ours(1))
    ids = list(session._takes[1].ids)
    rig.strike(1)
    rig.t = (4.0 + 0.999) * SPB  # the commit point on beat 2 is due before the plan is ready
    assert session.replan(1, 0.0, session._epoch) is None
    assert sorted((n.start_beats, n.program, n.pitch) for n in rig.ours(1)) == planned
    assert session._takes[1].ids == ids
    assert session.replans.late == 1 and session.replans.applied == 0


def test_commit_bar_never_replans(model) -> None:
    rig = Rig(model, commit=None)
    rig.t = (4.0 - 0.3) * SPB
    rig.session.run_cycle(1, 4.0 - 0.3)
    rig.strike(1)
    rig.t = 4.2 * SPB
    assert rig.session.replan(1, 0.0, rig.session._epoch) is None
    assert rig.session._replan_due(rig.clock.snapshot(), 4.2, rig.session._epoch) is None


def _ours_from(rig: Rig, bar: int, beat: float) -> set:
    return {(n.start_beats, n.program, n.pitch) for n in rig.ours(bar) if n.start_beats >= beat}


def test_nothing_new_heard_is_no_replan(model) -> None:
    """A re-plan would sample what the plan did, from the same context: with nothing new from
    the musician since, the plan stands (counted unchanged), and a chord struck later is
    followed from the commit point after it."""
    rig = Rig(model, commit=1.0)
    session = rig.session
    rig.t = (4.0 - 0.3) * SPB
    session.run_cycle(1, 4.0 - 0.3)
    ids = list(session._takes[1].ids)
    rig.t = 4.2 * SPB
    assert session._replan_due(rig.clock.snapshot(), 4.2, session._epoch) is None
    assert session.replan(1, 0.0, session._epoch) is None
    assert session._takes[1].ids == ids
    assert session.replans.unchanged == 2 and session.replans.applied == 0
    for pitch in CHORDS[1]:  # struck on beat 2
        rig.recorder.note_on(5.0, 0, pitch, 80)
    rig.t = 5.2 * SPB
    assert session._replan_due(rig.clock.snapshot(), 5.2, session._epoch) == (1, 1.0, None)
    assert session.replan(1, 1.0, session._epoch) is not None
    assert session.replans.applied == 1
    rig.t = 6.2 * SPB  # heard already: the plan from beat 4 on heard it
    assert session._replan_due(rig.clock.snapshot(), 6.2, session._epoch) is None
    assert session.replans.unchanged == 3


def test_short_of_time_a_replan_covers_the_next_commit_span_only(model) -> None:
    """Where the rest of the bar would not be ready in time, the re-plan plans only up to the
    commit point after next; what lies beyond stays as planned, and is re-planned at the next
    commit point even with nothing new heard."""
    rig = Rig(model, commit=1.0)
    session = rig.session
    rig.t = (4.0 - 0.3) * SPB
    session.run_cycle(1, 4.0 - 0.3)
    later = _ours_from(rig, 1, 6.0)
    chord = rig.strike(1)
    rig.t = 4.2 * SPB  # 0.4 s to beat 2: the rest of the bar (0.75) would take 0.68 s with
    session._model_bar_ms.clear()  # its safety margin, one beat's span 0.23 s
    session._model_bar_ms.append(600.0)
    assert session._replan_due(rig.clock.snapshot(), 4.2, session._epoch) == (1, 0.0, 2.0)
    assert session.replan(1, 0.0, session._epoch, until=2.0) is not None
    assert _ours_from(rig, 1, 6.0) == later  # beyond the span: as planned before
    span = [n for n in rig.ours(1) if n.program == 33 and 5.0 <= n.start_beats < 6.0]
    assert all(n.pitch % 12 in {p % 12 for p in chord} for n in span), (chord, span)
    take = session._takes[1]
    assert take.stale_from == 2.0 and session.replans.partial == 1
    rig.t = 5.2 * SPB  # nothing new, but the rest was planned before the chord: re-planned
    session._model_bar_ms.clear()
    assert session._replan_due(rig.clock.snapshot(), 5.2, session._epoch) == (1, 1.0, None)
    assert session.replan(1, 1.0, session._epoch) is not None
    assert take.stale_from is None
    bass = [n for n in rig.ours(1) if n.program == 33 and n.start_beats >= 6.0]
    assert all(n.pitch % 12 in {p % 12 for p in chord} for n in bass), (chord, bass)
    rig.t = (8.0 - 0.3) * SPB
    session.run_cycle(2, 8.0 - 0.3)
    rig.strike(2)
    rig.t = 8.2 * SPB  # no time at all for the next bar's: skipped
    session._model_bar_ms.clear()
    session._model_bar_ms.append(5000.0)
    skipped = session.replans.skipped
    assert session._replan_due(rig.clock.snapshot(), 8.2, session._epoch) is None
    assert session.replans.skipped == skipped + 1


def test_a_replan_feeds_only_what_the_context_does_not_hold_yet(model) -> None:
    """The bar so far is mostly in the context already (the re-plan before fed it, and
    sampled the notes that have become final since): a re-plan later in the bar feeds only
    the tokens from the first that differs on."""
    rig = Rig(model, commit=1.0)
    session, engine = rig.session, rig.engine
    rig.t = (4.0 - 0.3) * SPB
    session.run_cycle(1, 4.0 - 0.3)
    rig.strike(1)
    rig.t = 4.2 * SPB
    assert session.replan(1, 0.0, session._epoch) is not None
    fed = []
    feed = engine.feed
    engine.feed = lambda tokens: fed.append((len(tokens), engine.context_length)) or feed(tokens)
    for pitch in (48, 55):  # the musician adds a bass note on beat 2: something new
        rig.recorder.note_on(5.0, 0, pitch, 80)
    rig.t = 5.2 * SPB
    snapshot = {}
    complete_bar = engine.complete_bar

    def before_sampling(*args, **kwargs):
        snapshot["context"] = engine.context_tokens()
        return complete_bar(*args, **kwargs)

    engine.complete_bar = before_sampling
    assert session.replan(1, 1.0, session._epoch) is not None
    bar_so_far = len(snapshot["context"]) - session._committed_len
    assert fed and sum(n for n, _ in fed) < bar_so_far, (fed, bar_so_far)
