"""Shared fixtures: small multi-track MIDI made in code, tokenizers and tiny random models.

Two token languages: ``tokenizer``/``vocab``/``tiny_model_dir`` are the legacy one of the
bundled model (no time signatures, no styles); ``meter_tokenizer``/``meter_vocab``/
``tiny_meter_model_dir`` the new one (TimeSig tokens for every meter, Style tokens)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from symusic import Note, Score, Track

from ostinato.model.tokens import Vocab, legacy_tokenizer, new_tokenizer

TPQ = 480
DATA = Path(__file__).parent / "data"

# Every daemon a test starts records its session (the default): into a folder of the test
# run's own, never the tester's ~/.local/share.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="ostinato-tests-data-")


def make_band_score(bars: int = 4, tpq: int = TPQ, transpose: int = 0) -> Score:
    """Drums, bass, chords and a melody on the 16th grid (4/4), A minor."""
    score = Score(tpq)
    drums = Track(name="drums", program=0, is_drum=True)
    bass = Track(name="bass", program=33)
    keys = Track(name="chords", program=4)
    lead = Track(name="lead", program=81)
    sixteenth = tpq // 4
    roots = [45, 41, 36, 43]  # A F C G
    melody = [69, 72, 74, 76, 74, 72, 71, 69]
    for bar in range(bars):
        t0 = bar * 4 * tpq
        root = roots[bar % 4] + transpose
        for step in range(16):
            t = t0 + step * sixteenth
            if step % 4 == 0:
                drums.notes.append(Note(t, sixteenth, 36, 110))
            if step % 8 == 4:
                drums.notes.append(Note(t, sixteenth, 38, 100))
            if step % 2 == 0:
                drums.notes.append(Note(t, sixteenth, 42, 70 + 8 * (step % 4 == 0)))
        for step in (0, 6, 8, 14):
            bass.notes.append(Note(t0 + step * sixteenth, 2 * sixteenth, root, 96))
        third = 3 if bar % 4 == 0 else 4
        for pitch in (root + 24, root + 24 + third, root + 31):
            keys.notes.append(Note(t0, 4 * tpq - sixteenth, pitch, 72))
        for step, pitch in enumerate(melody):
            if (step + bar) % 3 != 2:
                keys_t = t0 + step * 2 * sixteenth
                lead.notes.append(Note(keys_t, 2 * sixteenth, pitch + transpose, 88))
    score.tracks.extend([drums, bass, keys, lead])
    return score


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled model's language (no TimeSig, no Style tokens)."""
    return legacy_tokenizer()


@pytest.fixture(scope="session")
def vocab(tokenizer):
    return Vocab.from_tokenizer(tokenizer)


@pytest.fixture(scope="session")
def meter_tokenizer():
    """The new language: TimeSig tokens for every meter of METERS, Style tokens."""
    return new_tokenizer()


@pytest.fixture(scope="session")
def meter_vocab(meter_tokenizer):
    return Vocab.from_tokenizer(meter_tokenizer)


@pytest.fixture
def band_score() -> Score:
    return make_band_score()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small corpus: band loops made in code plus the GMD files in tests/data."""
    from ostinato.model.corpus import build_corpus

    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for i in range(16):
        make_band_score(bars=8 + i % 3, transpose=i % 7 - 3).dump_midi(str(src / f"loop{i}.mid"))
    for gmd in sorted(DATA.glob("*.mid")):
        (src / gmd.name).write_bytes(gmd.read_bytes())
    build_corpus(src, root / "out", validation_fraction=0.25, workers=1, progress=False)
    return root / "out"


def save_random_checkpoint(
    run_dir: Path, size: str = "tiny", seed: int = 0, tokenizer=None, **overrides
) -> Path:
    """A checkpoint of a random-weight decoder in the trainer's format, with tokenizer.json
    (default: the bundled model's legacy tokenizer)."""
    import torch

    from ostinato.model.network import Decoder, config_for
    from ostinato.model.tokens import save_tokenizer
    from ostinato.model.train import CHECKPOINT

    tokenizer = tokenizer or legacy_tokenizer()
    torch.manual_seed(seed)
    model = Decoder(config_for(size, vocab_size=len(tokenizer.vocab), **overrides))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, run_dir)
    torch.save(
        {"model_args": model.config.to_dict(), "model": model.state_dict(), "step": 0},
        run_dir / CHECKPOINT,
    )
    return run_dir / CHECKPOINT


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny model exported to a model folder (window 256)."""
    from ostinato.exporter.export import export_model

    root = tmp_path_factory.mktemp("tiny_model")
    ckpt = save_random_checkpoint(root / "run")
    export_model(ckpt, root / "model")
    return root / "model"


@pytest.fixture(scope="session")
def tiny_meter_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny model of the new language (TimeSig and Style tokens), exported."""
    from ostinato.exporter.export import export_model

    root = tmp_path_factory.mktemp("tiny_meter_model")
    ckpt = save_random_checkpoint(root / "run", tokenizer=new_tokenizer())
    export_model(ckpt, root / "model")
    return root / "model"


@pytest.fixture(scope="session")
def tiny_header_model_dir(tmp_path_factory, tiny_meter_model_dir) -> Path:
    """The tiny model of the new language with the instrument header switched on (the same
    vocabulary: only tokenizer.json's flag differs)."""
    import shutil

    from ostinato.model.tokens import load_tokenizer, save_tokenizer, with_header

    root = tmp_path_factory.mktemp("tiny_header_model") / "model"
    shutil.copytree(tiny_meter_model_dir, root)
    save_tokenizer(with_header(load_tokenizer(root)), root)
    return root
