"""MusicXML in the corpus builder: small scores written here with music21."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("music21")

from music21 import (
    bar,
    chord,
    duration,
    dynamics,
    layout,
    metadata,
    meter,
    note,
    repeat,
    stream,
    tempo,
)
from music21 import tie as m21tie

from ostinato.model import corpus as corpus_mod
from ostinato.model.corpus import CorpusSplit, build_corpus, composer_key
from ostinato.model.musicxml import (
    VOICE_PROGRAM,
    ConversionCache,
    convert_musicxml,
)

TPQ = 480
BAR = 4 * TPQ


def _note(pitch: str, ql: float, *, tie: str | None = None, lyric: str | None = None):
    n = note.Note(pitch, quarterLength=ql)
    if tie:
        n.tie = m21tie.Tie(tie)
    if lyric:
        n.lyric = lyric
    return n


def _measure(number: int, *elements, ts: str | None = None) -> stream.Measure:
    m = stream.Measure(number=number)
    if ts:
        m.insert(0, meter.TimeSignature(ts))
    for el in elements:
        m.append(el)
    if number == 0:  # a pickup: written as a short measure
        m.paddingLeft = 4 - m.duration.quarterLength
    return m


def _song(composer: str = "Clara Testmann") -> stream.Score:
    """Voice + piano in 4/4 at 90 BPM: a pickup, a tie, a grace note, a triplet, a repeat
    over bars 1–2, a quintuplet in the last bar."""
    s = stream.Score()
    s.insert(0, metadata.Metadata(title="Lied 0", composer=composer))
    voice = stream.Part(id="Voice")
    voice.partName = "Voice"
    m0 = _measure(0, _note("G4", 1, lyric="la"), ts="4/4")
    m0.insert(0, tempo.MetronomeMark(number=90))
    m0.insert(0, dynamics.Dynamic("p"))
    grace = note.Note("D5").getGrace()
    m1 = _measure(
        1,
        _note("C5", 2, tie="start", lyric="lie"),
        _note("C5", 1, tie="stop"),
        grace,
        _note("E5", 1, lyric="be"),
    )
    m1.leftBarline = bar.Repeat(direction="start")
    triplet = [_note(p, 1 / 3, lyric="x") for p in ("E4", "F4", "G4")]
    for n in triplet:
        n.duration.appendTuplet(duration.Tuplet(3, 2, "eighth"))
    m2 = _measure(2, *triplet, _note("A4", 3, lyric="und"))
    m2.rightBarline = bar.Repeat(direction="end")
    m3 = _measure(3, _note("C5", 4, lyric="ja"))
    m3.rightBarline = bar.Barline("final")
    for m in (m0, m1, m2, m3):
        voice.append(m)

    right = stream.PartStaff(id="PianoRH")
    left = stream.PartStaff(id="PianoLH")
    right.partName = left.partName = "Piano"
    quint = [note.Note(p, quarterLength=0.2) for p in ("C4", "D4", "E4", "F4", "G4")]
    for n in quint:
        n.duration.appendTuplet(duration.Tuplet(5, 4, "16th"))
    rh = [
        _measure(0, note.Rest(quarterLength=1), ts="4/4"),
        _measure(1, chord.Chord(["C4", "E4", "G4"], quarterLength=4)),
        _measure(2, note.Rest(quarterLength=4)),
        _measure(3, *quint, note.Note("C4", quarterLength=3)),
    ]
    rh[0].insert(0, dynamics.Dynamic("f"))
    lh = [
        _measure(0, note.Rest(quarterLength=1), ts="4/4"),
        _measure(1, note.Note("C3", quarterLength=4)),
        _measure(2, note.Note("G2", quarterLength=4)),
        _measure(3, note.Note("C4", quarterLength=4)),  # in unison with the right hand
    ]
    rh[1].leftBarline = bar.Repeat(direction="start")
    lh[1].leftBarline = bar.Repeat(direction="start")
    rh[2].rightBarline = bar.Repeat(direction="end")
    lh[2].rightBarline = bar.Repeat(direction="end")
    for m in rh:
        right.append(m)
    for m in lh:
        left.append(m)
    for p in (voice, right, left):
        s.insert(0, p)
    s.insert(0, layout.StaffGroup([right, left], name="Piano", symbol="brace"))
    return s


def _quartet(ts: str = "4/4", composer: str = "Franz Quartettmann") -> stream.Score:
    s = stream.Score()
    s.insert(0, metadata.Metadata(title="Quartet", composer=composer))
    beats = meter.TimeSignature(ts).barDuration.quarterLength
    for name, pitch in (("Violin 1", "E5"), ("Violin 2", "C5"), ("Viola", "G4"), ("Cello", "C3")):
        part = stream.Part(id=name)
        part.partName = name
        for i in range(2):
            part.append(
                _measure(i + 1, note.Note(pitch, quarterLength=beats), ts=ts if i == 0 else None)
            )
        s.insert(0, part)
    return s


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xml")
    paths = {
        "song": root / "song.mxl",
        "quartet": root / "quartet.musicxml",
        "quartet34": root / "quartet34.musicxml",
    }
    _song().write("mxl", fp=paths["song"])
    _quartet().write("musicxml", fp=paths["quartet"])
    _quartet("3/4", "Otto Dreiviertel").write("musicxml", fp=paths["quartet34"])
    return paths


def _notes(track) -> list[tuple[int, int, int]]:
    return [(n.time, n.duration, n.pitch) for n in track.notes]


def test_song_voice_and_piano_ties_grace_triplet_repeat(scores) -> None:
    conv = convert_musicxml(scores["song"])
    score = conv.score
    assert score.tpq == TPQ
    assert conv.parts == [("Voice", VOICE_PROGRAM), ("Piano", 0)]  # both staves in one track
    assert conv.composer == "Clara Testmann"
    voice, piano = score.tracks
    # The pickup is padded to a full bar: G4 on beat 4 of bar 0. Bars 1–2 are played twice.
    triplet = [(0, 180, 64), (180, 120, 65), (300, 180, 67)]  # E4 F4 G4 snapped to 8ths of 8
    once = [(0, 1440, 72), (1440, 480, 76)]  # C5 tied: one note of 3 beats; no grace D5
    bars12 = [(BAR + t, d, p) for t, d, p in once] + [(2 * BAR + t, d, p) for t, d, p in triplet]
    bars12.append((2 * BAR + 480, 1440, 69))  # A4
    again = [(t + 2 * BAR, d, p) for t, d, p in bars12]
    assert _notes(voice) == [(3 * TPQ, TPQ, 67), *bars12, *again, (5 * BAR, BAR, 72)]
    assert {n.velocity for n in voice.notes} == {round(0.35 * 127)}  # p
    piano_notes = _notes(piano)
    assert (BAR, BAR, 48) in piano_notes and (3 * BAR, BAR, 48) in piano_notes  # C3 twice
    assert (BAR, BAR, 64) in piano_notes  # the chord's E4
    # Quintuplet in the last bar: onsets 0, .2, .4, .6, .8 beats; .2 and .8 are too far off.
    last_bar = sorted((t - 5 * BAR, d) for t, d, p in piano_notes if t >= 5 * BAR)
    # Left hand C4 (a bar), right hand C4 (a 16th), E4 (.4→3/8), F4 (.6→5/8), the long C4.
    assert last_bar == [(0, 120), (0, BAR), (180, 120), (300, 60), (480, 1440)]
    assert conv.counts["grace notes skipped"] == 1
    assert conv.counts["off-grid notes skipped"] == 2
    assert conv.counts["repeats expanded"] == 1
    assert conv.counts["pickup bars padded"] == 1
    assert [(ts.time, ts.numerator, ts.denominator) for ts in score.time_signatures] == [(0, 4, 4)]
    assert [round(t.qpm) for t in score.tempos] == [90]


def test_quartet_programs_and_broken_repeats_fall_back(scores, tmp_path) -> None:
    conv = convert_musicxml(scores["quartet"])
    assert [p for _, p in conv.parts] == [40, 40, 41, 42]
    assert [len(t.notes) for t in conv.score.tracks] == [2, 2, 2, 2]
    assert conv.counts["default tempo"] == 1 and round(conv.score.tempos[0].qpm) == 100
    # A D.S. with no segno to go back to: the Expander refuses, the score is played as written.
    s = _quartet()
    for part in s.parts:
        part.getElementsByClass(stream.Measure)[1].append(repeat.DalSegno())
    s.write("musicxml", fp=tmp_path / "bad.musicxml")
    conv = convert_musicxml(tmp_path / "bad.musicxml")
    assert conv.counts.get("repeats as written (expansion failed)") == 1
    assert [len(t.notes) for t in conv.score.tracks] == [2, 2, 2, 2]


def _corpus_source(root: Path, scores: dict[str, Path]) -> Path:
    """OpenScore-like folders: 10 lieder composers with 2 songs each, one composer also
    in the quartets, plus a non-4/4 quartet and broken files."""
    src = root / "src"
    text = scores["song"].parent / "song_plain.musicxml"
    if not text.exists():
        _song().write("musicxml", fp=text)
    xml = text.read_text()
    for c in range(10):
        for k in range(2):
            folder = src / "openscore-lieder" / "scores" / f"Komponist{c},_Hans" / "_" / f"Lied{k}"
            folder.mkdir(parents=True)
            # Same notes, a different title: a different file by content.
            (folder / f"lc{c}{k}.musicxml").write_text(xml.replace("Lied 0", f"Lied {c}.{k}"))
    quartets = src / "openscore-quartets" / "scores" / "Komponist3,_Hans" / "Quartet"
    quartets.mkdir(parents=True)
    (quartets / "sq1.musicxml").write_bytes(scores["quartet"].read_bytes())
    other = src / "other"
    other.mkdir()
    (other / "q34.musicxml").write_bytes(scores["quartet34"].read_bytes())
    (other / "broken.mxl").write_bytes(b"PK\x03\x04 not a zip at all")
    (other / "notes.xml").write_text("<?xml version='1.0'?><shopping><item>milk</item></shopping>")
    return src


def test_build_counts_cache_and_composer_split(scores, tmp_path, monkeypatch) -> None:
    src = _corpus_source(tmp_path, scores)
    calls: list[str] = []
    real = corpus_mod.convert_musicxml

    def counting(path, **kw):
        calls.append(Path(path).name)
        return real(path, **kw)

    monkeypatch.setattr(corpus_mod, "convert_musicxml", counting)
    cache = tmp_path / "cache"
    kw = dict(validation_fraction=0.3, workers=1, progress=False, musicxml_cache=cache)
    summary = build_corpus(src, tmp_path / "out", **kw)
    assert len(calls) == 24
    assert summary["files_found"] == 24
    assert summary["files_used"] == 22  # the 3/4 song too: the tokenizer has its TimeSig
    skipped = dict(summary["skipped"])
    assert sum(skipped.values()) == 2 and all("MusicXML" in r for r in skipped)
    assert set(summary["skipped_files"]) == {"other/broken.mxl", "other/notes.xml"}
    assert summary["meters"]["dropped"] == {}
    assert summary["meters"]["files"] == {"3/4": 1, "4/4": 21}
    xml = summary["musicxml"]
    assert xml["files"] == 24 and xml["from cache"] == 0
    assert xml["grace notes skipped"] == 20 and xml["off-grid notes skipped"] == 40
    assert xml["repeats expanded"] == 20
    assert {"73", "0", "40", "41", "42"} <= set(summary["notes_per_program"])
    assert len(list(cache.rglob("*.pkl"))) == 24  # failures are cached too

    # Composer split: nobody in both splits; the quartet goes where its composer's songs go.
    out = tmp_path / "out"
    names = {s: [p for p in (out / f"{s}_files.txt").read_text().split() if "openscore" in p]
             for s in ("train", "validation")}  # fmt: skip

    def composer(path: str) -> str:
        return path.split("/")[2]

    train_c = {composer(p) for p in names["train"]}
    val_c = {composer(p) for p in names["validation"]}
    assert val_c and train_c and not train_c & val_c
    quartet_split = "train" if any("sq1" in p for p in names["train"]) else "validation"
    assert ("Komponist3,_Hans" in train_c) == (quartet_split == "train")
    assert summary["composers"]["validation"]["names"] == sorted(composer_key(c) for c in val_c)
    # (+ 1: the 3/4 song outside OpenScore, split by the composer in its metadata)
    assert summary["composers"]["train"]["count"] in (len(train_c), len(train_c) + 1)

    # Second build: everything from the cache, same arrays.
    calls.clear()
    again = build_corpus(src, tmp_path / "again", **kw)
    assert calls == []
    assert again["musicxml"]["from cache"] == 24
    assert again["skipped"] == summary["skipped"]
    for name in ("train_tokens.npy", "validation_tokens.npy"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()

    # Hold-out: a composer (any spelling) and a glob, kept out of both splits.
    held = build_corpus(
        src,
        tmp_path / "held",
        hold_out=["composer:Hans Komponist3", "openscore-lieder/scores/Komponist7*/*"],
        **kw,
    )
    assert calls == []
    assert held["splits"]["heldout"]["files"] == 5  # 2 + 1 quartet + 2
    heldout = (tmp_path / "held" / "heldout_files.txt").read_text().split()
    assert {composer(p) for p in heldout} == {"Komponist3,_Hans", "Komponist7,_Hans"}
    for split in ("train", "validation"):
        files = (tmp_path / "held" / f"{split}_files.txt").read_text().split()
        assert not set(files) & set(heldout)
    assert held["files_used"] == 22 - 5
    data = CorpusSplit.load(tmp_path / "held", "heldout")
    assert data.tokens.dtype == np.uint16 and len(data.files) == 5
    on_disk = json.loads((tmp_path / "held" / "summary.json").read_text())
    assert on_disk["hold_out"][0] == "composer:Hans Komponist3"


def test_cache_by_content_shared_by_parallel_and_serial_builds(scores, tmp_path) -> None:
    cache = ConversionCache(tmp_path / "cache")
    conv = convert_musicxml(scores["quartet"])
    cache.store("ab" * 32, conv)
    back = cache.load("ab" * 32)
    assert not isinstance(back, str) and back is not None
    assert back.counts == conv.counts and back.parts == conv.parts
    assert [n.pitch for t in back.score.tracks for n in t.notes] == [
        n.pitch for t in conv.score.tracks for n in t.notes
    ]
    assert cache.load("cd" * 32) is None
    cache.store("ef" * 32, "unreadable MusicXML: Boom")
    assert cache.load("ef" * 32) == "unreadable MusicXML: Boom"

    src = tmp_path / "src"
    src.mkdir()
    (src / "song.mxl").write_bytes(scores["song"].read_bytes())
    (src / "quartet.musicxml").write_bytes(scores["quartet"].read_bytes())
    kw = dict(progress=False, musicxml_cache=tmp_path / "cache2")
    first = build_corpus(src, tmp_path / "a", workers=2, **kw)  # the pool writes the cache
    second = build_corpus(src, tmp_path / "b", workers=1, **kw)
    assert first["files_used"] == 2 and first["musicxml"]["from cache"] == 0
    assert second["musicxml"]["from cache"] == 2
    assert first["splits"] == second["splits"]


def test_play_order_per_movement_with_words_and_stray_marks() -> None:
    """Two movements in one file (measure numbers start again): the second one's
    "Menuetto D.C." goes back to its own start and stops at its Fine; the first one's
    final bar marked Fine with no D.C. and its repeat start that nothing closes are
    played once."""
    from music21 import expressions

    from ostinato.model.musicxml import play_order

    part = stream.Part()
    for number in (1, 2, 3, 1, 2, 3):
        part.append(_measure(number, note.Note("C4", quarterLength=4)))
    ms = list(part.getElementsByClass(stream.Measure))
    ms[1].leftBarline = bar.Repeat(direction="start")  # never closed
    ms[2].insert(0, repeat.Fine())  # nothing jumps to it
    ms[2].rightBarline = bar.Barline("final")
    ms[4].insert(4, repeat.Fine())
    ms[5].insert(0, expressions.TextExpression("Menuetto D.C."))
    counts: dict[str, int] = {}
    assert play_order([part], counts) == [0, 1, 2, 3, 4, 5, 3, 4]
    assert counts == {"repeats expanded": 1}


def test_hold_out_list_file(tmp_path) -> None:
    from ostinato.model.corpus import read_hold_out

    listing = tmp_path / "heldout.txt"
    listing.write_text(
        "# songs kept for evaluation\n\ncomposer:Franz Schubert  # every spelling\n"
        "openscore-lieder/scores/Wolf*/*\n"
    )
    assert read_hold_out(listing) == [
        "composer:Franz Schubert",
        "openscore-lieder/scores/Wolf*/*",
    ]
    assert composer_key("Schubert,_Franz") == composer_key("Franz  Schubert")
