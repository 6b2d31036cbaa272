"""Corpus builder: a folder of MIDI and MusicXML files → token arrays for training.

``ostinato data build SRC OUT`` scans ``SRC`` recursively for .mid/.midi files and for
MusicXML (.mxl/.musicxml/.xml, converted by :mod:`ostinato.model.musicxml`, cached by content
hash), tokenizes them in a process pool, skips (and counts, with the reason) files that are
corrupt, empty or in a meter the tokenizer does not speak (without TimeSig tokens only 4/4, see
:data:`FOUR_FOUR_ONLY`), removes exact
duplicates by content hash, splits train and validation (seeded, stable under re-ordering:
by composer where a file has one, else by file; see :func:`split_key`), keeps the files a
hold-out list names out of both, and writes for each split:

* ``{split}_tokens.npy``  uint16 token ids of every file, concatenated (open with mmap);
* ``{split}_files.npy``   int64 (N, 2): start and length of each file in the tokens;
* ``{split}_bars.npy``    int64 indices of every ``Bar`` token (bar-aligned windows start there);
* ``{split}_files.txt``   the source path of each file, relative to ``SRC``;
* ``{split}_styles.txt``  the style of each file (:func:`ostinato.model.style.style_of`);

plus ``tokenizer.json`` and ``summary.json``. The same input gives byte-identical arrays.
Transposition augmentation happens at training time, not here. With a hold-out list the
files it names are written as a third split, ``heldout``, for evaluation only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import multiprocessing as mp
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from miditok import REMI
from symusic import Score
from tqdm import tqdm

from ostinato.model.musicxml import (
    MUSICXML_SUFFIXES,
    Conversion,
    ConversionCache,
    MusicXMLError,
    convert_musicxml,
    is_musicxml,
)
from ostinato.model.style import style_of
from ostinato.model.tokens import (
    TOKENIZER_FILE,
    TokenType,
    Vocab,
    add_headers,
    canonical_order,
    header_mask,
    load_tokenizer,
    new_tokenizer,
    save_tokenizer,
    score_to_ids,
    tokenizer_meters,
)

MIDI_SUFFIXES = (".mid", ".midi")
SPLITS = ("train", "validation")
#: Files a hold-out list names: never trained on, written for evaluation.
HELD_OUT = "heldout"
#: Keep only files whose every time signature is 4/4 (a file without one counts as 4/4).
#: The switch the time-signature work flips once the vocabulary speaks other meters;
#: ``summary.json`` counts what it drops per meter under ``meters``.
FOUR_FOUR_ONLY = True
METER_SKIP_REASON = "meter not 4/4 (only 4/4 is modelled)"  # a tokenizer without TimeSig
#: At most this many skipped files are named, with their reason, in ``summary.json``.
MAX_SKIPPED_LISTED = 200


@dataclass(frozen=True)
class FileResult:
    path: str
    sha256: str
    ids: np.ndarray | None
    skip_reason: str | None
    meters: tuple[str, ...] = ()
    composer: str | None = None  # MusicXML: from the score's metadata
    musicxml: bool = False
    conversion: dict[str, int] = field(default_factory=dict)
    parts: tuple[tuple[str, int], ...] = ()  # MusicXML: (part name, program) per track
    from_cache: bool = False
    seconds: float = 0.0


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


def find_source_files(src: Path) -> list[Path]:
    """MIDI and MusicXML files under ``src`` (following linked folders), sorted."""
    files = [
        Path(root) / name
        for root, _, names in os.walk(src, followlinks=True)
        for name in names
        if name.lower().endswith(MIDI_SUFFIXES + MUSICXML_SUFFIXES)
    ]
    return sorted(files, key=lambda p: p.as_posix())


def _meters(score: Score) -> tuple[str, ...]:
    return tuple(sorted({f"{ts.numerator}/{ts.denominator}" for ts in score.time_signatures}))


def tokenize_score(
    tokenizer: REMI, path: str, sha: str, score: Score, four_four_only: bool = FOUR_FOUR_ONLY
) -> FileResult:
    """Tokenize a loaded score: skips (with the reason) an empty one, one in a meter other
    than 4/4 when ``four_four_only``, and one the tokenizer cannot place."""
    meters = _meters(score)
    if score.note_num() == 0:
        return FileResult(path, sha, None, "no notes", meters)
    modelled = {f"{n}/{d}" for n, d in tokenizer_meters(tokenizer)}
    if modelled == {"4/4"}:  # a tokenizer without TimeSig tokens: only 4/4 is modelled
        if four_four_only and set(meters) - {"4/4"}:
            return FileResult(path, sha, None, METER_SKIP_REASON, meters)
    elif set(meters) - modelled:
        unknown = ",".join(sorted(set(meters) - modelled))
        return FileResult(path, sha, None, f"meter {unknown} (no TimeSig token for it)", meters)
    try:
        ids = score_to_ids(tokenizer, score)
    except Exception as exc:  # a tokenizer error on odd content must not stop the build
        return FileResult(path, sha, None, f"tokenizer error: {type(exc).__name__}", meters)
    if len(ids) == 0 or not np.any(ids != ids[0]):
        return FileResult(path, sha, None, "no notes in range", meters)
    return FileResult(path, sha, ids, None, meters)


def tokenize_file(tokenizer: REMI, path: Path, four_four_only: bool = FOUR_FOUR_ONLY) -> FileResult:
    """Tokenize one MIDI file; never raises for a bad file, reports why it was skipped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileResult(str(path), "", None, f"unreadable: {exc.strerror or exc}")
    sha = hashlib.sha256(data).hexdigest()
    try:
        score = Score.from_midi(data)
    except Exception:  # symusic raises RuntimeError on a broken file
        return FileResult(str(path), sha, None, "corrupt MIDI")
    return tokenize_score(tokenizer, str(path), sha, score, four_four_only)


def tokenize_musicxml(
    tokenizer: REMI,
    path: Path,
    cache: ConversionCache | None = None,
    four_four_only: bool = FOUR_FOUR_ONLY,
) -> FileResult:
    """Convert (or take from ``cache``) and tokenize one MusicXML file; never raises for a
    bad file, reports why it was skipped instead."""
    start = time.perf_counter()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileResult(str(path), "", None, f"unreadable: {exc.strerror or exc}", musicxml=True)
    sha = hashlib.sha256(data).hexdigest()
    cached = cache.load(sha) if cache is not None else None
    conversion: Conversion | str
    if cached is not None:
        conversion = cached
    else:
        try:
            conversion = convert_musicxml(path, grid=max(tokenizer.config.beat_res.values()))
        except MusicXMLError as exc:
            conversion = str(exc)
        except Exception as exc:  # a converter bug on odd content must not stop the build
            conversion = f"conversion error: {type(exc).__name__}"
        # A converter error is not cached: it may be gone with the next version.
        if cache is not None and not conversion_failed(conversion):
            # A full or read-only disk costs speed next time, not this build.
            with contextlib.suppress(OSError):
                cache.store(sha, conversion)
    from_cache = cached is not None
    if isinstance(conversion, str):
        return FileResult(
            str(path), sha, None, conversion, musicxml=True, from_cache=from_cache,
            seconds=time.perf_counter() - start,
        )  # fmt: skip
    result = tokenize_score(tokenizer, str(path), sha, conversion.score, four_four_only)
    return dataclasses.replace(
        result,
        composer=conversion.composer,
        musicxml=True,
        conversion=conversion.counts,
        parts=tuple(conversion.parts),
        from_cache=from_cache,
        seconds=time.perf_counter() - start,
    )


def conversion_failed(conversion: Conversion | str) -> bool:
    return isinstance(conversion, str) and conversion.startswith("conversion error")


def load_and_tokenize(
    tokenizer: REMI,
    path: Path,
    cache: ConversionCache | None = None,
    four_four_only: bool = FOUR_FOUR_ONLY,
) -> FileResult:
    if is_musicxml(path):
        return tokenize_musicxml(tokenizer, path, cache, four_four_only)
    return tokenize_file(tokenizer, path, four_four_only)


_worker_tokenizer: REMI | None = None
_worker_cache: ConversionCache | None = None
_worker_four_four_only = FOUR_FOUR_ONLY


def _init_worker(tokenizer_path: str, cache_dir: str | None, four_four_only: bool) -> None:
    global _worker_tokenizer, _worker_cache, _worker_four_four_only
    _worker_tokenizer = load_tokenizer(tokenizer_path)
    grid = max(_worker_tokenizer.config.beat_res.values())
    _worker_cache = ConversionCache(cache_dir, grid) if cache_dir else None
    _worker_four_four_only = four_four_only


def _tokenize_in_worker(task: tuple[int, Path]) -> tuple[int, FileResult]:
    assert _worker_tokenizer is not None
    index, path = task
    return index, load_and_tokenize(_worker_tokenizer, path, _worker_cache, _worker_four_four_only)


def is_validation(sha256: str, seed: int, validation_fraction: float) -> bool:
    """Seeded split by content: stable whatever the file order or folder layout."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction


def composer_key(name: str) -> str:
    """One spelling for a composer's name, from a folder ("Arriaga,_Juan_Crisóstomo_de")
    or a score's metadata ("Juan Crisóstomo de Arriaga"): its words, lower case, sorted."""
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFC", name).lower())
    return " ".join(sorted(words))


def composer_from_path(path: Path) -> str | None:
    """OpenScore layout: ``openscore-*/scores/<Last,_First>/<work>/…/<file>.mxl``; the
    folder after ``scores`` names the composer (the lieder and quartet corpora spell a
    composer alike: Brahms, Gounod and Wolf are in both)."""
    parts = path.parts
    for i in range(1, len(parts) - 2):
        if parts[i] == "scores" and parts[i - 1].lower().startswith("openscore"):
            return parts[i + 1]
    return None


def split_key(path: Path, result: FileResult) -> str:
    """What the train/validation split hashes: the composer of an OpenScore file (from its
    path), else the composer of a MusicXML score (from its metadata), else the file's content.
    A composer's works thus all land in one split: validation never holds a song by a
    composer the model trained on. MIDI files (synth loops, GMD) split by file as before."""
    composer = composer_from_path(path) or (result.composer if result.musicxml else None)
    return f"composer:{composer_key(composer)}" if composer else result.sha256


def read_hold_out(path: str | Path) -> list[str]:
    """Entries of a hold-out list file: one per line, ``#`` starts a comment. An entry is a
    glob over paths relative to SRC (``openscore-lieder/scores/Schubert*/*``) or
    ``composer:NAME`` (any spelling of the name: ``composer:Franz Schubert``)."""
    entries = []
    for line in Path(path).read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(entry)
    return entries


def _held_out(rel: str, key: str, patterns: Sequence[str], composers: set[str]) -> bool:
    if key in composers:
        return True
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _run_pool(
    files: list[Path],
    tokenizer: REMI,
    tok_file: Path,
    cache_dir: Path | None,
    four_four_only: bool,
    workers: int,
    progress: bool,
) -> list[FileResult]:
    """Load and tokenize every file, in a pool of ``workers`` processes; results in file
    order. MusicXML files go first, largest first, one at a time (a quartet takes seconds,
    a MIDI loop milliseconds), so no worker is left with a long file at the end."""
    bar = tqdm(total=len(files), desc="tokenizing", unit="file", disable=not progress)
    results: list[FileResult | None] = [None] * len(files)
    if workers == 1:
        grid = max(tokenizer.config.beat_res.values())
        cache = ConversionCache(cache_dir, grid) if cache_dir else None
        for i, path in enumerate(files):
            results[i] = load_and_tokenize(tokenizer, path, cache, four_four_only)
            bar.update()
    else:

        def cost(task: tuple[int, Path]) -> tuple[int, int]:
            path = task[1]
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            return (0, -size) if is_musicxml(path) else (1, task[0])

        tasks = sorted(enumerate(files), key=cost)
        any_xml = any(is_musicxml(p) for p in files)
        ctx = mp.get_context("spawn")  # no fork: safe with threads and onnxruntime
        initargs = (str(tok_file), str(cache_dir) if cache_dir else None, four_four_only)
        with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
            chunks = 1 if any_xml else 8
            for i, result in pool.imap_unordered(_tokenize_in_worker, tasks, chunksize=chunks):
                results[i] = result
                bar.update()
    bar.close()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def build_corpus(
    src: str | Path,
    out: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    musicxml_cache: str | Path | None = None,
    hold_out: Iterable[str] | None = None,
    four_four_only: bool = FOUR_FOUR_ONLY,
) -> dict:
    """Build the corpus arrays; returns the summary (also written to ``summary.json``).

    ``musicxml_cache``: folder of converted MusicXML scores by content hash (none: convert
    every time). ``hold_out``: entries as :func:`read_hold_out` reads them; the files they
    name go to the ``heldout`` split (written, possibly empty, whenever it is given)."""
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
    hold = list(hold_out) if hold_out is not None else None
    held_composers = {
        "composer:" + composer_key(e.split(":", 1)[1])
        for e in hold or []
        if e.startswith("composer:")
    }
    held_patterns = [e for e in hold or [] if not e.startswith("composer:")]

    files = find_source_files(src)
    workers = max(1, min(workers or os.cpu_count() or 1, len(files) or 1))
    cache_dir = Path(musicxml_cache) if musicxml_cache else None
    results = _run_pool(files, tokenizer, tok_file, cache_dir, four_four_only, workers, progress)

    skipped: Counter[str] = Counter()
    skipped_files: dict[str, str] = {}
    meter_files: Counter[str] = Counter()
    meter_dropped: Counter[str] = Counter()
    splits = (*SPLITS, HELD_OUT) if hold is not None else SPLITS
    kept: dict[str, list[tuple[str, np.ndarray]]] = {s: [] for s in splits}
    split_groups: dict[str, set[str]] = {s: set() for s in splits}
    xml: Counter[str] = Counter()
    part_programs: Counter[str] = Counter()  # how MusicXML part names mapped to programs
    xml_seconds = 0.0
    candidates = []
    for path, result in zip(files, results, strict=True):
        rel = path.relative_to(src).as_posix()
        if result.musicxml:
            xml["files"] += 1
            xml["from cache"] += result.from_cache
            xml_seconds += result.seconds
            for what, n in result.conversion.items():
                xml[what] += n
            for name, program in result.parts:
                part_programs[f"{name} → {program}"] += 1
        for meter in result.meters:
            meter_files[meter] += 1
        if result.skip_reason is not None:
            skipped[result.skip_reason] += 1
            if len(skipped_files) < MAX_SKIPPED_LISTED:
                skipped_files[rel] = result.skip_reason
            if result.skip_reason is not None and result.skip_reason.startswith("meter "):
                for meter in set(result.meters) - {"4/4"}:
                    meter_dropped[meter] += 1
            continue
        key = split_key(path.absolute(), result)
        held = hold is not None and _held_out(rel, key, held_patterns, held_composers)
        candidates.append((not held, rel, key, result))
    # Held-out files claim their content first: a copy elsewhere is a duplicate, not training.
    seen: set[str] = set()
    placed: list[tuple[str, str, str, np.ndarray]] = []
    for trainable, rel, key, result in sorted(candidates, key=lambda c: c[0]):
        if result.sha256 in seen:
            skipped["exact duplicate"] += 1
            if len(skipped_files) < MAX_SKIPPED_LISTED:
                skipped_files[rel] = "exact duplicate"
            continue
        seen.add(result.sha256)
        if not trainable:
            split = HELD_OUT
        elif is_validation(key, seed, validation_fraction):
            split = "validation"
        else:
            split = "train"
        assert result.ids is not None
        placed.append((rel, split, key, result.ids))
    for rel, split, key, ids in sorted(placed, key=lambda p: p[0]):  # file order
        kept[split].append((rel, ids))
        split_groups[split].add(key)

    summary: dict = {
        "source": str(src),
        "tokenizer": TOKENIZER_FILE,
        "vocab_size": vocab.size,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "files_found": len(files),
        "files_used": sum(len(kept[s]) for s in SPLITS),
        "skipped": dict(sorted(skipped.items())),
        "skipped_files": dict(sorted(skipped_files.items())),
        "meters": {
            "four_four_only": four_four_only,
            "files": dict(sorted(meter_files.items())),
            "dropped": dict(sorted(meter_dropped.items())),
        },
        "split_by": "composer for MusicXML (OpenScore: its folder), file content for MIDI",
        "composers": {},
        "splits": {},
    }
    for split in splits:
        names = sorted(
            k.removeprefix("composer:")
            for k in split_groups[split]
            if k != k.removeprefix("composer:")
        )
        summary["composers"][split] = {"count": len(names)}
        if split != "train":
            summary["composers"][split]["names"] = names
    if xml["files"]:
        summary["musicxml"] = {
            "cache": str(cache_dir) if cache_dir else None,
            "convert_seconds": round(xml_seconds, 1),
            **dict(sorted(xml.items())),
            "part_programs": dict(part_programs.most_common(40)),
        }
    if hold is not None:
        summary["hold_out"] = hold
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
        kinds = vocab.types[tokens]
        progs = vocab.values[tokens[kinds == TokenType.PROGRAM]]
        summary["splits"][split] = {
            "files": len(items),
            "tokens": len(tokens),
            "bars": len(bars),
            "notes": len(progs),
            "styles": dict(sorted(Counter(styles).items())),
        }
        if split == HELD_OUT:
            continue  # the statistics below describe what the model learns from
        # Tokens per bar, counted inside each file (the last bar ends with its file).
        file_ends = starts + lengths
        bar_file = np.searchsorted(starts, bars, side="right") - 1
        next_bar = np.append(bars[1:], len(tokens))
        bar_len = np.minimum(next_bar, file_ends[bar_file] if len(bars) else next_bar) - bars
        all_bar_lengths.append(bar_len)
        program_notes.update(dict(zip(*np.unique(progs, return_counts=True), strict=True)))
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
    """One split of a built corpus, memory-mapped (one built before the notes of an onset
    had one order: read into memory in it, :meth:`load`)."""

    tokens: np.ndarray
    files: np.ndarray
    bars: np.ndarray

    @classmethod
    def load(cls, corpus_dir: str | Path, split: str) -> CorpusSplit:
        d = Path(corpus_dir)
        if split not in (*SPLITS, HELD_OUT):
            raise ValueError(f"split must be one of {(*SPLITS, HELD_OUT)}, got {split!r}")
        path = d / f"{split}_tokens.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: build the corpus with `ostinato data build`")
        tokens = np.load(path, mmap_mode="r")
        if (d / TOKENIZER_FILE).is_file():  # a corpus built before the one order: read in it
            vocab = Vocab.from_tokenizer(load_tokenizer(d / TOKENIZER_FILE))
            ordered = canonical_order(vocab, tokens)
            if not np.array_equal(ordered, tokens):
                tokens = ordered
        return cls(
            tokens=tokens,
            files=np.load(d / f"{split}_files.npy"),
            bars=np.load(d / f"{split}_bars.npy"),
        )

    def file_of(self, token_index: np.ndarray) -> np.ndarray:
        """Index of the file that holds each token index."""
        return np.searchsorted(self.files[:, 0], token_index, side="right") - 1

    def file_start_of(self, token_index: np.ndarray) -> np.ndarray:
        """Start of the file that holds each token index."""
        return self.files[self.file_of(token_index), 0]

    def file_end_of(self, token_index: np.ndarray) -> np.ndarray:
        """End (exclusive) of the file that holds each token index."""
        which = self.file_of(token_index)
        return self.files[which, 0] + self.files[which, 1]

    def with_headers(self, vocab: Vocab) -> CorpusSplit:
        """This split with every bar's instrument header written (in memory), for a model
        whose bars carry it: a corpus is stored without (the trainer writes them)."""
        tokens = np.asarray(self.tokens, dtype=np.int64)
        written = add_headers(vocab, tokens)
        if len(written) == len(tokens):
            return self
        # a header goes after a Bar (and its TimeSig), never before a file's first token
        old_of_new = np.flatnonzero(~header_mask(vocab, written))  # new index of each old token
        files = self.files.copy()
        files[:, 0] = old_of_new[self.files[:, 0]]
        ends = self.files[:, 0] + self.files[:, 1]
        files[:, 1] = np.append(old_of_new, len(written))[ends] - files[:, 0]
        return CorpusSplit(written.astype(self.tokens.dtype), files,
                           np.flatnonzero(written == vocab.bar_id))  # fmt: skip
