"""Parts left out in training: partial bars, an instrument entering, a bar cut at a position."""

from __future__ import annotations

import numpy as np
import pytest

from ostinato.model.parts import NoteTable, PartRates, augment, cut_bar, entering_part, partial_bars
from ostinato.model.tokens import (
    Vocab,
    bar_programs,
    header_mask,
    ids_to_score,
    new_tokenizer,
    score_to_ids,
    strip_headers,
    with_header,
)
from tests.conftest import make_band_score

ALL = [-1, 4, 33, 81]


@pytest.fixture(scope="module")
def tok():
    return with_header(new_tokenizer())


@pytest.fixture(scope="module")
def hvocab(tok) -> Vocab:
    return Vocab.from_tokenizer(tok)


@pytest.fixture(scope="module")
def plain(tok) -> np.ndarray:
    return score_to_ids(new_tokenizer(), make_band_score(bars=8)).astype(np.int64)


def test_no_augmentation_only_writes_headers(hvocab, plain):
    out = augment(hvocab, plain, np.random.default_rng(0), PartRates(0, 0, 0))
    assert np.array_equal(strip_headers(hvocab, out), plain)
    assert bar_programs(hvocab, out) == [ALL] * 8


def test_partial_bars_keep_a_subset_at_the_end(hvocab, plain):
    rng = np.random.default_rng(3)
    for _ in range(20):
        table = NoteTable(hvocab, plain)
        out = table.without(partial_bars(table, rng))
        programs = bar_programs(hvocab, out)
        changed = [k for k, p in enumerate(programs) if p != ALL]
        assert changed and changed == list(range(8 - len(changed), 8)) and len(changed) <= 4
        assert all(0 < len(p) < 4 and set(p) < set(ALL) for p in programs[changed[0] :])


def test_entering_part_is_absent_then_present(hvocab, plain):
    rng = np.random.default_rng(4)
    for _ in range(20):
        table = NoteTable(hvocab, plain)
        programs = bar_programs(hvocab, table.without(entering_part(table, rng)))
        missing = [set(ALL) - set(p) for p in programs]
        gone = set().union(*missing)
        assert len(gone) == 1
        first_back = next(k for k, m in enumerate(missing) if not m)
        assert all(missing[:first_back]) and not any(missing[first_back:])


def test_a_part_enters_on_the_downbeat_a_drum_part_on_its_kick(hvocab):
    """Bar ``j`` of an entering part holds a note of it at its first position (drums: a kick
    there); bars without one are never where a part comes in, while there is a bar with one."""
    score = make_band_score(bars=8)
    tpq, bar_ticks = score.ticks_per_quarter, 4 * score.ticks_per_quarter
    drums, bass = score.tracks[0], score.tracks[1]
    # odd bars: no kick on the one (a fill's bar) and the bass comes in after it
    drums.notes = [
        n
        for n in drums.notes
        if not (n.pitch == 36 and n.time % bar_ticks == 0 and n.time // bar_ticks % 2)
    ]
    for n in bass.notes:
        if n.time // bar_ticks % 2 and n.time % bar_ticks == 0:
            n.time += tpq // 2
    ids = score_to_ids(new_tokenizer(), score).astype(np.int64)
    rng = np.random.default_rng(6)
    entered = {-1: set(), 33: set()}
    for _ in range(200):
        table = NoteTable(hvocab, ids)
        programs = bar_programs(hvocab, table.without(entering_part(table, rng)))
        gone = set(ALL) - set(programs[0])
        (program,) = gone
        j = next(k for k, p in enumerate(programs) if program in p)
        if program in entered:
            entered[program].add(j)
    assert entered[-1] and entered[-1] <= {2, 4, 6}, entered
    assert entered[33] and entered[33] <= {2, 4, 6}, entered


def test_cut_bar_keeps_everything_before_the_cut(hvocab, plain, tok):
    rng = np.random.default_rng(5)
    whole = ids_to_score(tok, plain)
    for _ in range(20):
        table = NoteTable(hvocab, plain)
        flags = cut_bar(table, rng)
        assert flags is not None and flags.any()
        assert (table.note_bar[flags] == 7).all()
        cut = table.note_position[flags].min()
        kept_last = (table.note_bar == 7) & ~flags
        # every note of the last bar before the cut is still there
        assert kept_last[(table.note_bar == 7) & (table.note_position < cut)].all()
        out = ids_to_score(tok, table.without(flags))
        assert out.note_num() == whole.note_num() - int(flags.sum())


def test_augmented_windows_decode_and_headers_match(hvocab, plain, tok):
    rng = np.random.default_rng(6)
    for n in (len(plain), 333, 120):  # whole, and cut off anywhere (inside a note too)
        for _ in range(10):
            out = augment(hvocab, plain[:n], rng, PartRates(1, 1, 1))
            ids_to_score(tok, out)
            bars = np.split(out, np.flatnonzero(out == hvocab.bar_id)[1:])
            for bar in bars:
                header = sorted(hvocab.values[bar[header_mask(hvocab, bar)]].tolist())
                assert header == bar_programs(hvocab, bar)[0]
