"""`ostinato eval --mode accompany`: the parts asked for, generated under the musician's."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Track

from ostinato.cli import main
from ostinato.evaluate.accompany import (
    ModelAccompanist,
    RealParts,
    RepeatLastBar,
    evaluate_accompany,
    format_accompany,
)
from ostinato.evaluate.band import (
    AccompanyWindow,
    accompany_metrics,
    bar_parts,
    lowest_part,
    strong_positions,
    summarize_accompany,
    window_roles,
)
from ostinato.evaluate.bars import keep_parts, merge_bars, parse_notes, programs_of
from ostinato.model.tokens import Vocab, new_tokenizer, score_to_ids, split_bars, with_header
from tests.conftest import TPQ, make_band_score

DRUMS, BASS, KEYS, LEAD = -1, 33, 4, 81


@pytest.fixture(scope="module")
def header_tokenizer():
    return with_header(new_tokenizer())


@pytest.fixture(scope="module")
def header_vocab(header_tokenizer):
    return Vocab.from_tokenizer(header_tokenizer)


def band_bars(tokenizer, vocab, bars: int = 8) -> list[np.ndarray]:
    ids = score_to_ids(tokenizer, make_band_score(bars=bars)).astype(np.int64)
    return split_bars(ids, vocab.bar_id)


def band_window(tokenizer, vocab, context: str = "all") -> AccompanyWindow:
    bars = band_bars(tokenizer, vocab)
    heard = bars[:4] if context == "all" else [keep_parts(vocab, b, (KEYS, LEAD)) for b in bars[:4]]
    return AccompanyWindow("band/loop.mid", 0, (DRUMS, BASS), (BASS,), (KEYS, LEAD), bars[:4],
                           bars[4:], heard)  # fmt: skip


def test_roles_ask_for_bass_and_drums_and_leave_the_rest_to_the_musician(
    header_tokenizer, header_vocab
) -> None:
    parts = [bar_parts(header_vocab, b) for b in band_bars(header_tokenizer, header_vocab)]
    assert window_roles(parts) == ((DRUMS, BASS), (BASS,), (KEYS, LEAD))
    assert window_roles(parts, programs=(DRUMS,)) == ((DRUMS,), (), (KEYS, BASS, LEAD))
    assert window_roles(parts, programs=(0, DRUMS)) == ((DRUMS, 0), (0,), (KEYS, BASS, LEAD))
    # a string quartet: no bass program, its lowest part (by mean pitch) plays the bass's role
    quartet = [{40: (4, 4 * 76), 41: (4, 4 * 64), 42: (2, 2 * 60)}, {42: (2, 2 * 36)}]
    assert window_roles(quartet) == ((42,), (42,), (40, 41))
    # the cello above the viola for a while: still the bass of the piece
    climbing = [{40: (4, 4 * 79), 41: (4, 4 * 55), 42: (4, 4 * 62)}]
    assert window_roles(climbing)[1] == (41,)
    lowest = lowest_part([*quartet, *climbing], {40, 41, 42})
    assert lowest == 42 and window_roles(climbing, lowest=lowest)[1] == (42,)
    # a song and its piano: nothing to ask for
    assert window_roles([{73: (8, 8 * 70), 0: (20, 20 * 55)}])[0] == ()


def test_keep_and_merge_parts_give_the_bar_back(header_tokenizer, header_vocab) -> None:
    vocab = header_vocab
    for bar in band_bars(header_tokenizer, vocab, bars=4):
        ours = keep_parts(vocab, bar, (DRUMS, BASS))
        theirs = keep_parts(vocab, bar, (KEYS, LEAD))
        assert programs_of(vocab, ours) == {DRUMS, BASS}
        assert [int(vocab.values[t]) for t in ours[2:4]] == [DRUMS, BASS]  # the header
        merged = merge_bars(vocab, theirs, ours)
        notes = lambda b: sorted(  # noqa: E731
            (n.position, n.program, n.pitch, n.velocity, n.duration) for n in parse_notes(vocab, b)
        )
        assert notes(merged) == notes(bar)
        assert [int(vocab.values[t]) for t in merged[2:6]] == [DRUMS, KEYS, BASS, LEAD]


def test_strong_beats(header_vocab) -> None:
    ppb = header_vocab.positions_per_beat
    sixteenth = ppb // 4
    beat_3 = (2 * ppb, 2 * ppb + sixteenth)
    assert strong_positions(header_vocab, (4, 4)) == [(0, sixteenth), beat_3]
    assert strong_positions(header_vocab, (3, 4)) == [(0, sixteenth)]
    # 6/8: positions count eighths; the downbeat and the second dotted quarter
    assert strong_positions(header_vocab, (6, 8)) == [(0, ppb // 2), (3 * ppb, 3 * ppb + ppb // 2)]


def test_the_real_parts_score_as_the_music_does(header_tokenizer, header_vocab) -> None:
    vocab = header_vocab
    window = band_window(header_tokenizer, vocab)
    real = summarize_accompany([accompany_metrics(vocab, window, RealParts(vocab)(window, 0))])
    assert real["presence"] == real["bass_presence"] == real["drums_presence"] == 1.0
    assert real["kick_on_one"] == 1.0  # the band's kick on every beat
    # the band's bass plays the roots of the keys' chords
    assert real["bass_chord_tones"] == 1.0 and real["bass_chord_tones_strong"] == 1.0
    assert real["bass_notes"] == 4 * 4
    for key in ("pitch_class_overlap", "onset_overlap", "drum_onset_f1", "density_ratio"):
        assert real[key] == pytest.approx(1.0), key
    assert real["presence_by_program"] == {str(DRUMS): 1.0, str(BASS): 1.0}

    repeat = RepeatLastBar(vocab)(window, 0)
    assert all(programs_of(vocab, b) == {DRUMS, BASS} for b in repeat)
    scored = summarize_accompany([accompany_metrics(vocab, window, repeat)])
    assert scored["presence"] == 1.0 and scored["drum_onset_f1"] == pytest.approx(1.0)
    # the last context bar's root (G) under the next bars' chords (A, F, C, G): two of the
    # four chords hold a G (C major, G major), A minor and F major do not
    assert scored["bass_chord_tones"] == pytest.approx(0.5)


def test_kick_on_one_counts_the_downbeats_with_a_bass_drum(header_tokenizer, header_vocab) -> None:
    """Drums whose kick comes an eighth late, and in every other bar a downbeat snare: drums
    in every bar, a bass drum on no downbeat; the same with the kick on 1 in two bars."""
    vocab = header_vocab
    window = band_window(header_tokenizer, vocab)

    def drums(kick_on_one: set[int]) -> list[np.ndarray]:
        score = Score(TPQ)
        kit = Track(program=0, is_drum=True)
        for bar in range(4):
            t0 = bar * 4 * TPQ
            kit.notes.append(Note(t0 + TPQ // 2, TPQ // 4, 36, 100))
            kit.notes.append(Note(t0, TPQ // 4, 38 if bar % 2 else 42, 90))
            if bar in kick_on_one:
                kit.notes.append(Note(t0, TPQ // 4, 35, 100))
        score.tracks.append(kit)
        return split_bars(score_to_ids(header_tokenizer, score).astype(np.int64), vocab.bar_id)

    late = summarize_accompany([accompany_metrics(vocab, window, drums(set()))])
    assert late["drums_presence"] == 1.0 and late["kick_on_one"] == 0.0
    some = summarize_accompany([accompany_metrics(vocab, window, drums({0, 3}))])
    assert some["kick_on_one"] == 0.5


def test_chord_tones_count_against_the_musicians_harmony(header_tokenizer, header_vocab) -> None:
    """A bass a semitone off every root: no chord tone; a musician who rests: left out."""
    vocab = header_vocab
    window = band_window(header_tokenizer, vocab)
    score = Score(TPQ)
    bass = Track(program=BASS)
    for bar, root in enumerate([45, 41, 36, 43]):  # the roots of bars 5–8, a semitone up
        for step in (0, 6, 8, 14):
            bass.notes.append(Note(bar * 4 * TPQ + step * TPQ // 4, TPQ // 2, root + 1, 90))
    score.tracks.append(bass)
    off = split_bars(score_to_ids(header_tokenizer, score).astype(np.int64), vocab.bar_id)
    m = summarize_accompany([accompany_metrics(vocab, window, off)])
    assert m["bass_chord_tones"] == 0.0 and m["bass_presence"] == 1.0
    assert m["drums_presence"] == 0.0 and m["presence"] == 0.5
    silent = AccompanyWindow(window.file, 0, window.asked, window.bass, (0,), window.real_context,
                             window.real, window.heard)  # fmt: skip
    m = summarize_accompany([accompany_metrics(vocab, silent, off)])
    assert np.isnan(m["bass_chord_tones"]) and m["bass_notes"] == 0


def test_the_model_hears_its_own_parts_and_the_musicians(tiny_header_model_dir,
                                                         header_tokenizer) -> None:  # fmt: skip
    """Bar k is generated with every bar before it in the context, the model's parts in place
    of the real ones; the header makes every asked-for part play in every bar."""
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.continuation import DEFAULT_SETTINGS

    engine = Engine(tiny_header_model_dir, device="cpu", window=2048)  # all 8 bars: no slide
    vocab = engine.vocab
    for context in ("all", "musician"):
        window = band_window(header_tokenizer, vocab, context)
        played = ModelAccompanist(engine, DEFAULT_SETTINGS, key_lock=True)(window, seed=1)
        assert len(played) == 4
        assert all(programs_of(vocab, b) == {DRUMS, BASS} for b in played)
        heard = split_bars(engine.context_tokens(), vocab.bar_id)
        assert len(heard) == 8
        assert [b.tolist() for b in heard[:4]] == [b.tolist() for b in window.heard]
        for bar, real, ours in zip(heard[4:], window.real, played, strict=True):
            musician = keep_parts(vocab, real, window.musician)
            assert bar.tolist() == merge_bars(vocab, musician, ours).tolist()
    # a window that slides while the bars are played: the newest bars are still what was heard
    small = Engine(tiny_header_model_dir, device="cpu", window=256)
    window = band_window(header_tokenizer, vocab)
    played = ModelAccompanist(small, DEFAULT_SETTINGS, key_lock=True)(window, seed=1)
    assert small.dropped_front > 0
    last = keep_parts(vocab, window.real[-1], window.musician)
    newest = split_bars(small.context_tokens(), vocab.bar_id)[-1]
    assert newest.tolist() == merge_bars(vocab, last, played[-1]).tolist()


def test_each_bar_varies_the_bar_before_and_an_entry_is_cooler(
    tiny_header_model_dir, header_tokenizer
) -> None:
    """As the daemon's jam mode before a loop is known: each bar varies Ostinato's bar before
    it (at variation 0 the drums are that bar's again; the first bar varies the context's own
    parts when Ostinato had been playing along), and a bar with nothing of its own before it
    is sampled at ENTER_COOLING × the temperature."""
    from ostinato.engine.accompany import ENTER_COOLING
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.continuation import DEFAULT_SETTINGS

    engine = Engine(tiny_header_model_dir, device="cpu", window=2048)
    vocab = engine.vocab
    temperatures: list[float] = []
    sampler = engine.sampler

    def spy(settings, seed=None):
        temperatures.append(settings.temperature)
        return sampler(settings, seed)

    engine.sampler = spy  # type: ignore[method-assign]
    drums = lambda bar: sorted((n.position, n.pitch) for n in parse_notes(vocab, bar)  # noqa: E731
                               if n.program == DRUMS)  # fmt: skip
    t = DEFAULT_SETTINGS.temperature
    for context in ("all", "musician"):
        window = band_window(header_tokenizer, vocab, context)
        temperatures.clear()
        played = ModelAccompanist(
            engine, DEFAULT_SETTINGS, key_lock=True, variation=0.0, commit=None
        )(window, seed=1)
        assert all(programs_of(vocab, b) == {DRUMS, BASS} for b in played)
        for before, bar in itertools.pairwise(played):
            assert drums(bar) == drums(before)  # the groove goes on bar to bar
        if context == "all":  # it had been playing: its context bar is the first reference
            assert drums(played[0]) == drums(window.heard[-1])
            assert temperatures == [t] * 4
        else:  # it joins: the first bar, with nothing to vary, cooler; the rest at t
            assert temperatures == [pytest.approx(t * ENTER_COOLING)] + [t] * 3
    # at variation 1 every onset is the model's: the bars are not all the same
    free = ModelAccompanist(engine, DEFAULT_SETTINGS, key_lock=True, variation=1.0)
    window = band_window(header_tokenizer, vocab, "musician")
    assert len({tuple(drums(b)) for b in free(window, seed=2)}) > 1


def test_a_bar_is_planned_again_from_each_commit_point_hearing_the_musician(
    tiny_header_model_dir, header_tokenizer
) -> None:
    """As the daemon's re-plans (``commit`` 1 beat): at each commit point of a bar where the
    musician struck something since the plan before, the rest of Ostinato's bar is planned
    again from the next point on, hearing the musician's notes struck up to a 32nd after the
    point and Ostinato's up to the next one (final: never taken back), the bass kept to the
    harmony sounding then. A bar planned whole, or one the musician plays nothing in, is not
    planned again."""
    from ostinato.engine.accompany import GRACE_BEATS
    from ostinato.engine.engine import Engine
    from ostinato.evaluate.bars import quarters_per_position
    from ostinato.evaluate.continuation import DEFAULT_SETTINGS

    engine = Engine(tiny_header_model_dir, device="cpu", window=2048)  # no slide
    vocab = engine.vocab
    per_position = quarters_per_position(vocab, (4, 4))
    beat = round(1 / per_position)
    calls: list[tuple[int, int, list, frozenset | None]] = []
    complete = engine.complete_bar

    def spy(sampler, grammar, from_position, tokens_out=None, prior=None, until_position=None):
        bars = split_bars(engine.context_tokens(), vocab.bar_id)
        calls.append((len(bars) - 5, from_position, parse_notes(vocab, bars[-1]),
                      grammar.bass_pitch_classes))  # fmt: skip
        return complete(sampler, grammar, from_position, tokens_out, prior, until_position)

    engine.complete_bar = spy  # type: ignore[method-assign]
    window = band_window(header_tokenizer, vocab)
    whole = ModelAccompanist(engine, DEFAULT_SETTINGS, key_lock=True, commit=None)(window, seed=1)
    assert not calls
    played = ModelAccompanist(engine, DEFAULT_SETTINGS, key_lock=True, commit=1.0)(window, seed=1)
    assert all(programs_of(vocab, b) == {DRUMS, BASS} for b in played)
    assert {k for k, *_ in calls} == {0, 1, 2, 3}  # the lead plays on: each bar is re-planned
    for k, from_position, heard, chord in calls:
        assert from_position in (beat, 2 * beat, 3 * beat)
        until = (from_position - beat) * per_position + GRACE_BEATS  # heard up to here
        real = parse_notes(vocab, keep_parts(vocab, window.real[k], window.musician))
        struck = lambda notes: sorted(  # noqa: E731
            (n.position, n.program, n.pitch) for n in notes if n.program in window.musician
        )
        assert struck(heard) == struck(n for n in real if n.position * per_position < until)
        assert all(n.position < from_position for n in heard if n.program in window.asked)
        keys = {n.pitch % 12 for n in real if n.program == KEYS}  # held through the bar
        assert chord is not None and keys <= chord
    # before the first re-plan's notes, the first bar is its plan's: the one planned whole
    early = lambda bar: [(n.position, n.program, n.pitch)  # noqa: E731
                         for n in parse_notes(vocab, bar) if n.position < beat]  # fmt: skip
    assert early(played[0]) == early(whole[0])
    calls.clear()
    silent = AccompanyWindow(window.file, 0, window.asked, window.bass, (0,), window.real_context,
                             window.real, window.heard)  # fmt: skip
    ModelAccompanist(engine, DEFAULT_SETTINGS, key_lock=True, commit=1.0)(silent, seed=1)
    assert not calls


def test_eval_accompany_on_a_tiny_model(tiny_header_model_dir, tiny_corpus, tmp_path) -> None:
    report = evaluate_accompany(tiny_header_model_dir, tiny_corpus, split="validation",
                                windows=3, bars=4, progress=False,
                                rolls=tmp_path / "rolls", roll_windows=2)  # fmt: skip
    assert report["mode"] == "accompany" and report["header"] is True
    assert report["windows"] == 3 and report["context"] == "all"
    rows = report["accompany"]
    assert list(rows) == ["model", "real parts", "repeat last bar"]
    model = rows["model"]
    # the header asks for each part, the grammar holds the bar to it: every part, every bar
    assert model["presence"] == model["bass_presence"] == model["drums_presence"] == 1.0
    for w in report["accompany_windows"]:  # band loops: drums and bass under keys and lead
        assert w["asked"] == [DRUMS, BASS] and w["musician"] == [KEYS, LEAD]
    assert rows["real parts"]["bass_chord_tones"] == 1.0
    assert rows["real parts"]["density_ratio"] == 1.0
    assert len(report["rolls"]) == 2
    for path in report["rolls"]:
        assert Path(path).parent == tmp_path / "rolls" and Path(path).stat().st_size > 1000
    text = format_accompany(report)
    assert "repeat last bar" in text and "chord-1/3" in text


def test_eval_cli_accompany_mode(tiny_header_model_dir, tiny_corpus, tmp_path, capsys) -> None:
    out = tmp_path / "accompany.json"
    status = main(["eval", str(tiny_header_model_dir), str(tiny_corpus), "--mode", "accompany",
                   "--programs", "33", "--context-parts", "musician", "--windows", "1",
                   "--bars", "2", "--json", str(out), "-q"])  # fmt: skip
    assert status == 0
    report = json.loads(out.read_text())
    assert report["programs"] == [BASS] and report["context"] == "musician"
    assert report["accompany_windows"][0]["asked"] == [BASS]
    assert DRUMS in report["accompany_windows"][0]["musician"]
    assert report["accompany"]["model"]["bass_presence"] == 1.0
    text = capsys.readouterr().out
    assert "parts asked for: 33" in text and "again every 1 beat" in text
    assert report["settings"]["commit"] == 1.0  # the daemon's default
    status = main(
        [
            "eval",
            str(tiny_header_model_dir),
            str(tiny_corpus),
            "--mode",
            "accompany",
            "--windows",
            "1",
            "--bars",
            "2",
            "--commit",
            "bar",
            "--json",
            str(out),
            "-q",
        ]
    )
    assert status == 0 and json.loads(out.read_text())["settings"]["commit"] is None
    assert "each planned before the musician's part of it is heard)" in capsys.readouterr().out
    assert main(["eval", str(tiny_header_model_dir), str(tiny_corpus), "--programs", "33"]) == 2
    assert main(["eval", str(tiny_header_model_dir), str(tiny_corpus), "--commit", "2"]) == 2
