from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ostinato.model.corpus import CorpusSplit, build_corpus
from ostinato.model.tokens import load_tokenizer
from tests.conftest import DATA, make_band_score


def _make_source(root: Path) -> Path:
    src = root / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    for i in range(12):
        folder = src / ("nested/deeper" if i % 3 == 0 else "nested" if i % 3 == 1 else "")
        make_band_score(bars=2 + i % 3, transpose=i).dump_midi(str(folder / f"loop{i}.mid"))
    shutil.copy(
        src / "loop1.mid" if (src / "loop1.mid").exists() else src / "nested/loop1.mid",
        src / "copy_of_loop1.MIDI",
    )
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (src / "empty.mid").write_bytes(b"")
    (src / "notes.txt").write_text("not midi")
    for gmd in sorted(DATA.glob("*.mid")):
        shutil.copy(gmd, src / gmd.name)
    return src


def test_build_writes_bar_aligned_arrays_and_summary(tmp_path) -> None:
    src = _make_source(tmp_path)
    summary = build_corpus(
        src, tmp_path / "out", validation_fraction=0.3, workers=2, progress=False
    )
    gmd_files = len(list(DATA.glob("*.mid")))
    assert summary["files_found"] == 12 + 1 + 2 + gmd_files
    assert summary["skipped"]["exact duplicate"] == 1
    assert summary["skipped"]["corrupt MIDI"] == 2
    assert summary["files_used"] == 12 + gmd_files
    splits = summary["splits"]
    assert splits["train"]["files"] + splits["validation"]["files"] == summary["files_used"]
    assert splits["validation"]["files"] > 0
    assert {"-1", "33", "4", "81"} <= set(summary["notes_per_program"])
    assert summary["tokens_per_bar"]["median"] > 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk == summary

    tokenizer = load_tokenizer(tmp_path / "out")
    bar_id = tokenizer.vocab["Bar_None"]
    for split in ("train", "validation"):
        data = CorpusSplit.load(tmp_path / "out", split)
        assert data.tokens.dtype == np.uint16
        assert isinstance(data.tokens, np.memmap)
        assert (data.tokens[data.bars] == bar_id).all()
        assert len(data.bars) == splits[split]["bars"]
        # each file starts with a Bar token, and files tile the token array
        assert (data.tokens[data.files[:, 0]] == bar_id).all()
        assert data.files[:, 1].sum() == len(data.tokens)
        names = (tmp_path / "out" / f"{split}_files.txt").read_text().splitlines()
        assert len(names) == len(data.files)


def test_rebuild_is_identical_and_split_is_stable(tmp_path) -> None:
    src = _make_source(tmp_path)
    build_corpus(src, tmp_path / "a", workers=2, progress=False, validation_fraction=0.3)
    build_corpus(src, tmp_path / "b", workers=1, progress=False, validation_fraction=0.3)
    for name in sorted(p.name for p in (tmp_path / "a").glob("*.npy")):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # A different seed changes the split, never the set of files used.
    other = build_corpus(src, tmp_path / "c", seed=7, progress=False, validation_fraction=0.3)
    a_files = set((tmp_path / "a" / "train_files.txt").read_text().split()) | set(
        (tmp_path / "a" / "validation_files.txt").read_text().split()
    )
    c_files = set((tmp_path / "c" / "train_files.txt").read_text().split()) | set(
        (tmp_path / "c" / "validation_files.txt").read_text().split()
    )
    assert a_files == c_files and other["files_used"] == len(a_files)


def test_missing_source_and_bad_fraction(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        build_corpus(tmp_path / "nope", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="validation_fraction"):
        build_corpus(tmp_path, tmp_path / "out", validation_fraction=1.5, progress=False)


def test_a_corpus_written_in_its_files_track_order_is_read_in_the_one_order(
    tmp_path, tiny_corpus
) -> None:
    """A corpus built before the notes of an onset had one order (miditok's, the files' track
    order) is read in that order (tokens.canonical_order), bars and files where they were."""
    from ostinato.model.tokens import TokenType, Vocab, canonical_order

    corpus = tmp_path / "old"
    shutil.copytree(tiny_corpus, corpus)
    vocab = Vocab.from_tokenizer(load_tokenizer(corpus / "tokenizer.json"))
    built = np.load(corpus / "train_tokens.npy")
    # write each onset's notes the other way round, as a file with its tracks reversed would
    kinds = vocab.types[built]
    old = built.copy()
    onset_starts = np.flatnonzero((kinds == TokenType.POSITION) | (built == vocab.bar_id))
    for a, b in zip(onset_starts, [*onset_starts[1:], len(built)], strict=True):
        notes = built[a + 1 : b].reshape(-1, 4) if kinds[a] == TokenType.POSITION else None
        if notes is not None and len(notes) > 1:
            old[a + 1 : b] = notes[::-1].reshape(-1)
    assert not (old == built).all()
    np.save(corpus / "train_tokens.npy", old)
    split = CorpusSplit.load(corpus, "train")
    assert np.asarray(split.tokens).tolist() == built.tolist()
    assert (canonical_order(vocab, built) == built).all()  # built in the one order already
    assert (split.bars == np.load(corpus / "train_bars.npy")).all()
