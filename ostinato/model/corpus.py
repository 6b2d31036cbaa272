"""Corpus builder: a folder of MIDI files → token arrays for training.

``ostinato data build SRC OUT`` scans ``SRC`` recursively for .mid/.midi files, tokenizes them
in a process pool, skips (and counts, with the reason) files that are corrupt, empty or in a
meter the tokenizer does not speak, removes exact duplicates by content hash, splits train and
validation by file (seeded, stable under re-ordering), and writes for each split:

* ``{split}_tokens.npy``  uint16 token ids of every file, concatenated (open with mmap);
* ``{split}_files.npy``   int64 (N, 2): start and length of each file in the tokens;
* ``{split}_bars.npy``    int64 indices of every ``Bar`` token (bar-aligned windows start there);
* ``{split}_files.txt``   the source path of each file, relative to ``SRC``;
* ``{split}_styles.txt``  the style of each file (:func:`ostinato.model.style.style_of`);

plus ``tokenizer.json`` and ``summary.json``. The same input gives byte-identical arrays.
Transposition augmentation happens at training time, not here.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from miditok import REMI
from symusic import Score
from tqdm import tqdm

from ostinato.model.style import style_of
from ostinato.model.tokens import (
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    load_tokenizer,
    new_tokenizer,
    save_tokenizer,
    score_to_ids,
    tokenizer_meters,
)

MIDI_SUFFIXES = (".mid", ".midi")
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class FileResult:
    path: str
    sha256: str
    ids: np.ndarray | None
    skip_reason: str | None


def find_midi_files(src: Path) -> list[Path]:
    """All MIDI files under ``src`` (following linked folders), sorted so that every run sees
    the same order."""
    files = [
        Path(root) / name
        for root, _, names in os.walk(src, followlinks=True)
        for name in names
        if name.lower().endswith(MIDI_SUFFIXES)
    ]
    return sorted(files, key=lambda p: p.as_posix())


_worker_tokenizer: REMI | None = None


def _init_worker(tokenizer_path: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_path)


def tokenize_file(tokenizer: REMI, path: Path) -> FileResult:
    """Tokenize one file; never raises for a bad file, reports why it was skipped instead."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileResult(str(path), "", None, f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        score = Score.from_midi(data)
    except Exception:  # symusic raises RuntimeError on a broken file
        return FileResult(str(path), sha, None, "corrupt MIDI")
    if score.note_num() == 0:
        return FileResult(str(path), sha, None, "no notes")
    meters = {(ts.numerator, ts.denominator) for ts in score.time_signatures}
    modelled = tokenizer_meters(tokenizer)
    if meters - modelled:
        meter = ",".join(f"{n}/{d}" for n, d in sorted(meters - modelled))
        why = "only 4/4 is modelled" if modelled == {(4, 4)} else "no TimeSig token for it"
        return FileResult(str(path), sha, None, f"meter {meter} ({why})")
    try:
        ids = score_to_ids(tokenizer, score)
    except Exception as exc:  # a tokenizer error on odd content must not stop the build
        return FileResult(str(path), sha, None, f"tokenizer error: {type(exc).__name__}")
    if len(ids) == 0 or not np.any(ids != ids[0]):
        return FileResult(str(path), sha, None, "no notes in range")
    return FileResult(str(path), sha, ids, None)


def _tokenize_in_worker(path: Path) -> FileResult:
    assert _worker_tokenizer is not None
    return tokenize_file(_worker_tokenizer, path)


def is_validation(sha256: str, seed: int, validation_fraction: float) -> bool:
    """Seeded split by content: stable whatever the file order or folder layout."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction


def build_corpus(
    src: str | Path,
    out: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Build the corpus arrays; returns the summary (also written to ``summary.json``)."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else new_tokenizer()
    tok_file = save_tokenizer(tokenizer, out)
    vocab = Vocab.from_tokenizer(tokenizer)
    if vocab.size > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {vocab.size} does not fit uint16 arrays")

    files = find_midi_files(src)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files) or 1))
    bar = tqdm(total=len(files), desc="tokenizing", unit="file", disable=not progress)
    results: list[FileResult] = []
    if workers == 1:
        for path in files:
            results.append(tokenize_file(tokenizer, path))
            bar.update()
    else:
        ctx = mp.get_context("spawn")  # no fork: safe with threads and onnxruntime
        with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tok_file),)) as pool:
            for result in pool.imap(_tokenize_in_worker, files, chunksize=8):
                results.append(result)
                bar.update()
    bar.close()

    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    kept: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in SPLITS}
    for result in results:
        if result.skip_reason is not None:
            skipped[result.skip_reason] += 1
            continue
        if result.sha256 in seen:
            skipped["exact duplicate"] += 1
            continue
        seen.add(result.sha256)
        split = "validation" if is_validation(result.sha256, seed, validation_fraction) else "train"
        rel = Path(result.path).relative_to(src).as_posix()
        assert result.ids is not None
        kept[split].append((rel, result.ids))

    summary: dict = {
        "source": str(src),
        "tokenizer": TOKENIZER_FILE,
        "vocab_size": vocab.size,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "files_found": len(files),
        "files_used": sum(len(v) for v in kept.values()),
        "skipped": dict(sorted(skipped.items())),
        "splits": {},
    }
    all_bar_lengths = []
    program_notes: Counter[int] = Counter()
    for split, items in kept.items():
        lengths = np.array([len(ids) for _, ids in items], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        tokens = (
            np.concatenate([ids for _, ids in items]).astype(np.uint16)
            if items
            else np.zeros(0, dtype=np.uint16)
        )
        bars = np.flatnonzero(tokens == vocab.bar_id).astype(np.int64)
        np.save(out / f"{split}_tokens.npy", tokens)
        np.save(out / f"{split}_files.npy", np.stack([starts, lengths], axis=1))
        np.save(out / f"{split}_bars.npy", bars)
        (out / f"{split}_files.txt").write_text("".join(f"{rel}\n" for rel, _ in items))
        styles = [style_of(rel) for rel, _ in items]
        (out / f"{split}_styles.txt").write_text("".join(f"{s}\n" for s in styles))
        # Tokens per bar, counted inside each file (the last bar ends with its file).
        file_ends = starts + lengths
        bar_file = np.searchsorted(starts, bars, side="right") - 1
        next_bar = np.append(bars[1:], len(tokens))
        bar_len = np.minimum(next_bar, file_ends[bar_file] if len(bars) else next_bar) - bars
        all_bar_lengths.append(bar_len)
        kinds = vocab.types[tokens]
        progs = vocab.values[tokens[kinds == TokenType.PROGRAM]]
        program_notes.update(dict(zip(*np.unique(progs, return_counts=True), strict=True)))
        summary["splits"][split] = {
            "files": len(items),
            "tokens": len(tokens),
            "bars": len(bars),
            "notes": len(progs),
            "styles": dict(sorted(Counter(styles).items())),
        }
    bar_lengths = np.concatenate(all_bar_lengths) if all_bar_lengths else np.zeros(0)
    if len(bar_lengths):
        summary["tokens_per_bar"] = {
            "mean": round(float(bar_lengths.mean()), 2),
            "median": float(np.median(bar_lengths)),
            "p90": float(np.percentile(bar_lengths, 90)),
            "p99": float(np.percentile(bar_lengths, 99)),
            "max": int(bar_lengths.max()),
        }
    summary["notes_per_program"] = {
        str(int(p)): int(n) for p, n in sorted(program_notes.items(), key=lambda kv: int(kv[0]))
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class CorpusSplit:
    """One split of a built corpus, memory-mapped."""

    tokens: np.ndarray
    files: np.ndarray
    bars: np.ndarray

    @classmethod
    def load(cls, corpus_dir: str | Path, split: str) -> CorpusSplit:
        d = Path(corpus_dir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = d / f"{split}_tokens.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the corpus with `ostinato data build`")
        return cls(
            tokens=np.load(path, mmap_mode="r"),
            files=np.load(d / f"{split}_files.npy"),
            bars=np.load(d / f"{split}_bars.npy"),
        )

    def file_end_of(self, token_index: np.ndarray) -> np.ndarray:
        """End (exclusive) of the file that holds each token index."""
        starts = self.files[:, 0]
        which = np.searchsorted(starts, token_index, side="right") - 1
        return starts[which] + self.files[which, 1]
