from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from ostinato.model.corpus import CorpusSplit
from ostinato.model.network import SIZES
from ostinato.model.tokens import DRUM_PROGRAM, TokenType, Vocab, load_tokenizer, split_bars
from ostinato.model.train import (
    BEST,
    CHECKPOINT,
    ROLES,
    TrainConfig,
    Trainer,
    WindowSampler,
    load_checkpoint,
    lr_at,
    steps_for,
    timed_span,
)

TINY = dict(
    size="tiny",
    seq_len=128,
    batch_size=8,
    warmup_steps=5,
    eval_every=10,
    eval_batches=2,
    dropout=0.0,
    lr=3e-3,
)


def test_windows_start_on_a_bar_and_transpose_only_pitched_notes(tiny_corpus) -> None:
    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    plain = WindowSampler(split, vocab, 64, transpose=0).batch(np.random.default_rng(1), 32)
    moved = WindowSampler(split, vocab, 64, transpose=5).batch(np.random.default_rng(1), 32)
    assert (plain[:, 0] == vocab.bos_id).all()
    assert (plain[:, 1] == vocab.style_ids["none"]).all()  # no styles given: none
    assert (plain[:, 2] == vocab.bar_id).all()
    kinds = vocab.types[plain]
    assert (kinds == vocab.types[moved]).all()  # same structure
    same = plain == moved
    assert same[kinds != TokenType.PITCH].all()  # drums, positions, durations untouched
    shifts = set()
    for row in range(len(plain)):
        pitched = kinds[row] == TokenType.PITCH
        if pitched.any():
            diff = vocab.values[moved[row, pitched]] - vocab.values[plain[row, pitched]]
            assert len(set(diff.tolist())) == 1 and abs(diff[0]) <= 5  # one shift per window
            shifts.add(int(diff[0]))
    assert len(shifts) > 1


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_training_lowers_the_loss_and_writes_its_files(tiny_corpus, tmp_path) -> None:
    cfg = TrainConfig(steps=40, checkpoint_every=20, **TINY)
    result = Trainer(tiny_corpus, tmp_path, cfg).run()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.5
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert result["step"] == 40
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "tokenizer.json").is_file()
    assert load_checkpoint(tmp_path)["step"] == 40
    best = load_checkpoint(tmp_path / BEST)  # the weights at the lowest validation loss
    assert best["val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows), abs=1e-5)
    assert best["step"] == int(min(rows, key=lambda r: float(r["val_loss"]))["step"])
    assert "optimizer" not in best
    assert load_checkpoint(tmp_path)["best_val_loss"] == best["val_loss"]  # for --resume
    Trainer(tiny_corpus, tmp_path, TrainConfig(**{**TINY, "steps": 2, "eval_every": 5})).run()
    assert load_checkpoint(tmp_path / BEST)["step"] == 2  # a new run in the folder: its own


@pytest.mark.parametrize("previous_token", [False, True])
def test_resume_continues_bit_for_bit(tiny_corpus, tmp_path, previous_token) -> None:
    torch.set_num_threads(1)
    cfg = dict(steps=12, checkpoint_every=100, previous_token=previous_token, **TINY)
    straight = Trainer(tiny_corpus, tmp_path / "a", TrainConfig(**cfg)).run()
    Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**cfg)).run(stop_after=5)
    assert load_checkpoint(tmp_path / "b")["step"] == 5
    resumed = Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**cfg)).run(resume=True)
    assert resumed["step"] == straight["step"] == 12
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["rng"]["numpy"] == b["rng"]["numpy"]
    assert resumed["train_loss"] == straight["train_loss"]
    assert a["model_args"]["previous_token"] is previous_token
    assert previous_token == ("prev_embed.weight" in a["model"])
    if previous_token:  # it starts at zero and learns
        assert a["model"]["prev_embed.weight"].abs().max() > 1e-3


def torchrun_train(corpus, out, *args: str) -> subprocess.CompletedProcess:
    """``ostinato train CORPUS --out OUT`` (a tiny model on the CPU) in two processes under
    torchrun, on a free port; ``args``: the run's other flags."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(port), "-m", "ostinato", "train", str(corpus), "--out", str(out),
        "--size", "tiny", "--seq-len", "64", "--eval-batches", "1", "--device", "cpu", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_ddp_with_two_cpu_processes(tiny_corpus, tmp_path) -> None:
    result = torchrun_train(tiny_corpus, tmp_path, "--batch-size", "4", "--steps", "6",
                            "--eval-every", "3")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["step"] == 6
    assert len(ckpt["rng"]["numpy"]) == 2  # one data stream per rank, both saved
    assert ckpt["rng"]["numpy"][0] != ckpt["rng"]["numpy"][1]
    assert "2 process(es)" in result.stderr


def test_torchrun_ranks_train_to_the_same_timed_step(tiny_corpus, tmp_path) -> None:
    """--minutes under DDP: every rank takes rank 0's last step (else they would part at the
    end and the gathering of the last checkpoint would hang)."""
    result = torchrun_train(tiny_corpus, tmp_path, "--batch-size", "2", "--steps", "1000000",
                            "--minutes", "0.1", "--eval-every", "1000",
                            "--checkpoint-every", "1000000")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert 60 < ckpt["step"] == ckpt["timed_steps"] < 1000000
    assert len(ckpt["rng"]["numpy"]) == 2


def test_packed_windows_fill_with_whole_files_from_their_start(tiny_corpus) -> None:
    """Past its file's end a window goes on with other files, each from its start (BOS, its
    style, its first Bar), one transposition for the window; unpacked, it is PAD there."""
    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    longest = int(split.files[:, 1].max())
    L = longest * 3  # longer than any file: every window must pack
    plain = WindowSampler(split, vocab, L, transpose=0).batch(np.random.default_rng(3), 16)
    packed = WindowSampler(split, vocab, L, transpose=0, pack=True).batch(
        np.random.default_rng(3), 16
    )
    assert (plain == vocab.pad_id).mean() > 0.5
    starts = {int(s) for s in split.files[:, 0]}
    for p_row, row in zip(plain, packed, strict=True):
        kept = p_row != vocab.pad_id
        assert (row[kept] == p_row[kept]).all()  # the first file as without packing
        bos = np.flatnonzero(row == vocab.bos_id)
        assert len(bos) >= 3 and bos[0] == 0
        tail_pad = np.flatnonzero(row == vocab.pad_id)
        assert len(tail_pad) < WindowSampler.MIN_PACK  # no room worth a file is left
        for b in bos[1:]:  # BOS, Style_none (no styles given), then a file from its start
            assert row[b + 1] == vocab.style_ids["none"] and row[b + 2] == vocab.bar_id
            seg_end = next((int(x) for x in bos if x > b), len(row))
            seg = row[b + 2 : seg_end]
            seg = seg[seg != vocab.pad_id]
            assert any(np.array_equal(split.tokens[s : s + len(seg)], seg) for s in starts), (
                "a packed segment is not the start of a corpus file"
            )


def test_instruments_are_redrawn_within_their_role_one_per_part(tiny_corpus) -> None:
    """The instrument augmentation: every pitched part gets another program of its role
    (keys stay keys, bass stays bass), two parts never merge, drums and everything that is
    not a Program token are untouched."""
    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, 256, transpose=0, instruments=1.0)
    rng = np.random.default_rng(4)
    plain = WindowSampler(split, vocab, 256, transpose=0).batch(rng, 32)
    programs = vocab.types == TokenType.PROGRAM
    role = {f: k for k, families in enumerate(ROLES) for f in families}
    seen: set[int] = set()
    for row in plain:
        redrawn = sampler._redraw_instruments(row, rng)
        changed = redrawn != row
        assert programs[row[changed]].all()  # only Program tokens change
        parts = programs[row]
        pairs = {(int(a), int(b)) for a, b in zip(row[parts], redrawn[parts], strict=True)}
        assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})  # 1:1
        for a, b in pairs:
            pa, pb = int(vocab.values[a]), int(vocab.values[b])
            if pa == DRUM_PROGRAM:
                assert pb == DRUM_PROGRAM
            else:
                assert role[pb // 8] == role.get(pa // 8, 0)
                seen.add(pb)
    assert len(seen) > 10  # many instruments the corpus never played
    batch = sampler.batch(np.random.default_rng(5), 16)  # and batch() applies it
    tokens = np.asarray(split.tokens)
    corpus_programs = set(vocab.values[tokens[programs[tokens]]].tolist())
    assert set(vocab.values[batch[programs[batch]]].tolist()) - corpus_programs


def test_drums_are_redrawn_within_their_kind_toms_in_order(tiny_corpus) -> None:
    """The drum-kit augmentation: each drum a window plays becomes another of its kind, the
    same one wherever it plays; two drums never merge; toms keep their order from low to
    high; keys of no kind and every token that is not a drum's are untouched."""
    from ostinato.model.train import DRUM_KINDS, ORDERED_DRUM_KINDS

    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, 256, transpose=0, drum_kit=1.0)
    drum = vocab.types == TokenType.PITCH_DRUM
    kind_of = {key: k for k, kind in enumerate(DRUM_KINDS) for key in kind}
    keys = [36, 38, 42, 45, 48, 41, 49, 51, 56, 36, 42, 45]  # 56 (cowbell): of no kind
    ids = {int(vocab.values[t]): int(t) for t in np.flatnonzero(drum)}
    window = np.asarray([x for key in keys for x in (ids[key], 5)], dtype=np.int64)
    rng = np.random.default_rng(7)
    moved = set()
    for _ in range(200):
        redrawn = sampler._redraw_drums(window, rng)
        assert (redrawn[~drum[window]] == window[~drum[window]]).all()
        pairs = {(int(vocab.values[a]), int(vocab.values[b]))
                 for a, b in zip(window, redrawn, strict=True) if drum[a]}  # fmt: skip
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        for old, new in pairs:
            assert kind_of.get(new) == kind_of.get(old) and (old in kind_of or new == old)
            if new != old:
                moved.add((old, new))
        toms = sorted((old, new) for old, new in pairs if kind_of.get(old) in ORDERED_DRUM_KINDS)
        assert [new for _, new in toms] == sorted(new for _, new in toms)
    assert {old for old, _ in moved} == {36, 38, 42, 45, 48, 41, 49, 51}  # each one moves
    calls = []
    redraw = sampler._redraw_drums
    sampler._redraw_drums = lambda w, r: calls.append(len(w)) or redraw(w, r)  # type: ignore
    sampler.batch(np.random.default_rng(1), 8)
    assert len(calls) >= 8  # batch() applies it to every stretch at rate 1


def test_drums_are_remapped_to_any_key_one_to_one(tiny_corpus) -> None:
    """The drum-remap augmentation: each drum a window plays moves to a key drawn from every
    drum key (across kinds), the same one wherever it plays; two drums never merge; tokens
    that are not a drum's are untouched; batch() applies it, before the drum kit."""
    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, 256, transpose=0, drum_kit=1.0, drum_remap=1.0)
    drum = vocab.types == TokenType.PITCH_DRUM
    ids = {int(vocab.values[t]): int(t) for t in np.flatnonzero(drum)}
    keys = [36, 38, 42, 36, 42, 46, 38]
    window = np.asarray([x for key in keys for x in (ids[key], 5)], dtype=np.int64)
    rng = np.random.default_rng(3)
    landed: set[int] = set()
    for _ in range(200):
        moved = sampler._remap_drums(window, rng)
        assert (moved[~drum[window]] == window[~drum[window]]).all() and drum[moved[::2]].all()
        pairs = {(int(a), int(b)) for a, b in zip(window, moved, strict=True) if drum[a]}
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 4
        landed |= {int(vocab.values[b]) for _, b in pairs}
    assert len(landed) > 20  # any key, not one of the kick's or the snare's kind
    assert (sampler._remap_drums(window[1::2], rng) == window[1::2]).all()  # no drums: as is
    calls = []
    remap, redraw = sampler._remap_drums, sampler._redraw_drums
    sampler._remap_drums = lambda w, r: calls.append("remap") or remap(w, r)  # type: ignore
    sampler._redraw_drums = lambda w, r: calls.append("kit") or redraw(w, r)  # type: ignore
    sampler.batch(np.random.default_rng(1), 8)
    assert len(calls) >= 8 and set(calls) == {"remap"}  # at rate 1 it takes every stretch


def test_pitch_classes_are_put_in_one_new_order_for_every_part(tiny_corpus) -> None:
    """The pitch-remap augmentation: one permutation of the twelve pitch classes for the whole
    stretch, every pitched part alike, each note kept in its octave; drums, rhythm, accents and
    lengths stay; each onset's notes come back in the one order; batch() applies it."""
    from ostinato.evaluate.bars import parse_notes
    from ostinato.model.tokens import canonical_order

    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, 256, transpose=0, pitch_remap=1.0)
    window = np.asarray(split.tokens, dtype=np.int64)  # the loops' bands and the GMD drums
    before = parse_notes(vocab, window)

    def onsets(notes) -> dict[tuple[int, int, int], list[int]]:
        found: dict[tuple[int, int, int], list[int]] = {}
        for n in notes:
            if n.program != DRUM_PROGRAM:
                found.setdefault((n.bar, n.position, n.program), []).append(n.pitch)
        return found

    pitched = onsets(before)
    singles = {k: p[0] for k, p in pitched.items() if len(p) == 1}
    assert len({p % 12 for p in singles.values()}) >= 4  # enough to see an order
    unpitched = lambda notes: [(n.bar, n.position, n.program, n.velocity, n.duration)  # noqa: E731
                               for n in notes if n.program != DRUM_PROGRAM]  # fmt: skip
    drums = lambda notes: [n for n in notes if n.program == DRUM_PROGRAM]  # noqa: E731
    rng = np.random.default_rng(5)
    changed = 0
    for _ in range(20):
        moved = sampler._remap_pitch_classes(window, rng)
        assert (canonical_order(vocab, moved) == moved).all()
        assert (vocab.types[moved] == vocab.types[window]).all()
        assert (moved[~sampler.is_pitch[moved]] == window[~sampler.is_pitch[window]]).all()
        after = parse_notes(vocab, moved)
        assert drums(after) == drums(before)
        assert sorted(unpitched(after)) == sorted(unpitched(before))
        remapped = onsets(after)
        assert remapped.keys() == pitched.keys()
        for onset, pitches in remapped.items():
            assert pitches == sorted(pitches) and len(set(pitches)) == len(set(pitched[onset]))
        order: dict[int, set[int]] = {}  # read from the onsets where a part plays one note
        for onset, p in singles.items():
            (q,) = remapped[onset]
            assert q // 12 == p // 12 or abs(q - p) < 24  # its octave, or one in at the edge
            order.setdefault(p % 12, set()).add(q % 12)
        assert all(len(v) == 1 for v in order.values())  # one order for the whole stretch
        image = [next(iter(v)) for v in order.values()]
        assert len(set(image)) == len(image)  # two pitch classes never merged
        changed += any(k != q for k, q in zip(order, image, strict=True))
    assert changed >= 15
    calls = []
    remap = sampler._remap_pitch_classes
    sampler._remap_pitch_classes = lambda w, r: calls.append(1) or remap(w, r)  # type: ignore
    sampler.batch(np.random.default_rng(1), 8)
    assert len(calls) >= 8  # at rate 1 it takes every stretch


def test_a_shuffled_rhythm_moves_half_beats_alike_in_every_bar(tiny_corpus) -> None:
    """The rhythm augmentation: each bar's half beats after the first are put in one new order,
    the same in every bar; a note keeps its place within its half beat, its onset's other
    notes and its own tokens; the downbeat stays; positions still rise through each bar.
    batch() applies it at its rate."""
    from ostinato.evaluate.bars import parse_notes

    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, 256, transpose=0, rhythm=1.0)
    half = vocab.positions_per_beat // 2
    tokens = np.asarray(split.tokens, dtype=np.int64)
    kinds = vocab.types[tokens]
    first = int(np.flatnonzero(kinds == TokenType.POSITION)[0])
    head = tokens[int(np.flatnonzero(tokens[:first] == vocab.bar_id)[-1]) : first]  # Bar, TimeSig
    ids = lambda kind: {int(vocab.values[t]): int(t) for t in vocab.ids_of(kind)}  # noqa: E731
    position, pitch, program = ids(TokenType.POSITION), ids(TokenType.PITCH), ids(TokenType.PROGRAM)
    velocity, duration = int(vocab.ids_of(TokenType.VELOCITY)[0]), int(vocab.ids_of(
        TokenType.DURATION)[0])  # fmt: skip
    bar = list(head)
    for k, place in enumerate(range(1, vocab.positions_per_bar((4, 4)), 3)):  # a note per onset,
        bar += [position[place], program[0], pitch[40 + k], velocity, duration]  # its own pitch
        if k % 4 == 0:  # and now and then a second note with it
            bar += [program[33], pitch[30 + k], velocity, duration]
    window = np.asarray(bar * 3, dtype=np.int64)
    where = lambda notes: {(n.bar, n.program, n.pitch): n.position for n in notes}  # noqa: E731
    before = where(parse_notes(vocab, window))
    orders = set()
    rng = np.random.default_rng(4)
    for _ in range(20):
        shuffled = sampler._shuffle_rhythm(window, rng)
        after = parse_notes(vocab, shuffled)
        assert where(after).keys() == before.keys() and len(after) == len(before)
        for b in range(3):
            places = [n.position for n in after if n.bar == b]
            assert places == sorted(places)  # still in time order
        moves = {(p // half, after_p // half) for (b, prog, pit), p in before.items()
                 for after_p in [where(after)[(b, prog, pit)]]}  # fmt: skip
        assert len({old for old, _ in moves}) == len(moves)  # one new place per half beat
        assert (0, 0) in moves  # the downbeat stays
        for key, p in before.items():
            assert where(after)[key] % half == p % half
        by_pitch = {}  # an onset's notes stay together
        for n in after:
            by_pitch.setdefault((n.bar, n.position), set()).add(n.pitch)
        assert sorted(map(sorted, by_pitch.values())) == sorted(
            sorted(v) for v in _onsets(parse_notes(vocab, window)).values()
        )
        orders.add(frozenset(moves))
    assert len(orders) > 1
    calls = []
    shuffle = sampler._shuffle_rhythm
    sampler._shuffle_rhythm = lambda w, r: calls.append(len(w)) or shuffle(w, r)  # type: ignore
    sampler.batch(np.random.default_rng(1), 8)
    assert len(calls) >= 8


def _onsets(notes) -> dict:
    out: dict = {}
    for n in notes:
        out.setdefault((n.bar, n.position), set()).add(n.pitch)
    return out


def test_loops_are_played_over_and_over_at_their_rate(tiny_corpus) -> None:
    """With the loop augmentation a stretch starts with a phrase played 2 to 4 times: a loop
    (a file of at most LOOP_BARS bars) from the window's bar to its end, then whole passes;
    a longer file's 1, 2, 4 or 8 bars, then the file goes on. At rate 0 nothing repeats."""
    from ostinato.model.train import LOOP_BARS, PHRASE_BARS

    vocab = Vocab.from_tokenizer(load_tokenizer(tiny_corpus))
    split = CorpusSplit.load(tiny_corpus, "train")
    L = int(split.files[:, 1].max()) * 5
    looping = WindowSampler(split, vocab, L, transpose=0, loops=1.0)
    plain = WindowSampler(split, vocab, L, transpose=0)
    rng = np.random.default_rng(5)
    looped = phrases = 0
    for pick in range(len(split.bars)):
        start = int(split.bars[pick])
        file = int(split.file_of(split.bars[pick : pick + 1])[0])
        first, length = (int(x) for x in split.files[file][:2])
        whole = split.tokens[first : first + length]
        tail = split.tokens[start : first + length]
        window = looping._stretch(pick, start, L, rng)
        assert np.array_equal(plain._stretch(pick, start, L, rng), tail)
        n_bars = int((whole == vocab.bar_id).sum())
        if n_bars <= LOOP_BARS:
            assert np.array_equal(window[: len(tail)], tail)
            rest = window[len(tail) :]
            passes = len(rest) // len(whole)
            assert 1 <= passes <= 3 and len(rest) % len(whole) == 0
            assert np.array_equal(rest, np.tile(whole, passes))
            looped += 1
        else:
            bars = split_bars(tail, vocab.bar_id)
            found = False
            for n in PHRASE_BARS:
                phrase = np.concatenate(bars[:n])
                for passes in range(2, 5):
                    head = np.tile(phrase, passes)
                    if np.array_equal(window[: len(head)], head) and np.array_equal(
                        window[len(head) :], tail[len(phrase) :][: len(window) - len(head)]
                    ):
                        found = True
            assert found, "a long file's stretch is a phrase looped, then the file going on"
            phrases += 1
        assert len(looping._stretch(pick, start, 40, rng)) <= 40  # never past the room
    assert looped and phrases


def test_windows_drawn_by_worker_processes_train_the_same_way(tiny_corpus, tmp_path) -> None:
    """With loader workers the run trains, checkpoints and resumes; the same seed draws the
    same windows (each worker its own stream), so two runs agree."""
    cfg = dict(steps=8, checkpoint_every=4, workers=2, **TINY)
    first = Trainer(tiny_corpus, tmp_path / "a", TrainConfig(**cfg)).run()
    again = Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**cfg)).run()
    assert first["step"] == again["step"] == 8
    assert first["train_loss"] == again["train_loss"]
    inline = Trainer(tiny_corpus, tmp_path / "c", TrainConfig(**{**cfg, "workers": 0})).run()
    assert inline["train_loss"] != first["train_loss"]  # another stream of windows
    resumed = Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**{**cfg, "steps": 12}))
    assert resumed.run(resume=True)["step"] == 12
    with pytest.raises(ValueError, match="workers"):
        TrainConfig(workers=-1).validate()


def test_minutes_sets_the_steps_from_the_rate_and_resume_keeps_them(tiny_corpus, tmp_path) -> None:
    cfg = dict(steps=10**6, minutes=0.1, checkpoint_every=10**6, **TINY)
    first = Trainer(tiny_corpus, tmp_path, TrainConfig(**cfg)).run(stop_after=70)
    ckpt = load_checkpoint(tmp_path)
    last = ckpt["train_config"]["steps"]
    assert 60 < last < 10**6 and ckpt["timed_steps"] == last
    assert ckpt["train_config"]["minutes"] == 0.0
    assert first["step"] == ckpt["step"] == min(70, last)
    # the same command resumed: to the step the timing fixed, not timed again
    resumed = TrainConfig(**cfg)
    result = Trainer(tiny_corpus, tmp_path, resumed).run(resume=True)
    assert result["step"] == resumed.steps == last
    assert lr_at(last, resumed) == pytest.approx(resumed.min_lr_ratio)  # the cosine ran out
    assert load_checkpoint(tmp_path)["timed_steps"] == last


def test_minutes_times_the_steps_after_the_loaders_queue() -> None:
    assert timed_span(0) == (10, 60)
    assert timed_span(6) == (34, 84)  # 4 batches a worker drawn ahead while compiling


def test_steps_for_a_time_leaves_room_for_validation() -> None:
    cfg = TrainConfig(eval_every=100, eval_batches=30)
    # 60 s gone of 10 min at step 60, 0.1 s a step: 540 s left, each step 0.11 s with its
    # share of validation
    assert steps_for(10, 60.0, 60, 0.1, cfg) == 60 + int(540 / 0.11)
    assert steps_for(1, 120.0, 60, 0.1, cfg) == 61  # out of time: one more step


def test_training_needs_no_midi_backend(tiny_corpus, tmp_path) -> None:
    """A training machine (a GPU server) has no sound system: `ostinato train` runs with
    python-rtmidi unloadable."""
    code = (
        "import sys; sys.modules['rtmidi'] = None\n"
        "from ostinato.cli import main\n"
        f"sys.exit(main(['train', {str(tiny_corpus)!r}, '--out', {str(tmp_path)!r},"
        " '--size', 'tiny', '--seq-len', '64', '--batch-size', '2', '--steps', '2',"
        " '--eval-every', '2', '--eval-batches', '1', '--device', 'cpu']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path)["step"] == 2


def test_onset_places_are_written_into_the_model_and_need_the_bar_rotary(tiny_corpus, tmp_path):
    """``--onset-places``: the model's config counts places in music from the tokenizer's
    Position_0; without ``--bar-rotary`` there is nothing to count them for."""
    from ostinato.model.tokens import PlaceRule

    cfg = TrainConfig(steps=2, checkpoint_every=100, bar_rotary=True, onset_places=True,
                      place_stride=4, **TINY)  # fmt: skip
    Trainer(tiny_corpus, tmp_path / "a", cfg).run()
    args = load_checkpoint(tmp_path / "a")["model_args"]
    vocab = Vocab.from_tokenizer(load_tokenizer(tmp_path / "a" / "tokenizer.json"))
    rule = PlaceRule.of(args)
    assert rule is not None and rule.musical and rule.bar_id == vocab.bar_id
    assert vocab.types[rule.position_id] == TokenType.POSITION
    assert vocab.values[rule.position_id] == 0
    assert rule.positions == int((vocab.types == TokenType.POSITION).sum())
    assert rule.stride == 4
    with pytest.raises(ValueError, match="--bar-rotary"):
        Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**{**TINY, "onset_places": True})).run()


def test_bar_echo_is_written_into_the_model_and_needs_the_bar_rotary(tiny_corpus, tmp_path):
    """``--bar-echo``: the model's config hears each token's echo, which the training computes
    over each window (the embedding moves from zero); without ``--bar-rotary`` there are no
    places in the bar to hear it at."""
    cfg = TrainConfig(steps=2, checkpoint_every=100, bar_rotary=True, bar_echo=True, **TINY)
    Trainer(tiny_corpus, tmp_path / "a", cfg).run()
    ckpt = load_checkpoint(tmp_path / "a")
    assert ckpt["model_args"]["bar_echo"] is True
    heard = ckpt["model"]["echo_embed.weight"][1:]  # (row 0: "no echo", learnt in any case)
    assert heard.abs().sum() > 0  # it learnt from the echoes
    with pytest.raises(ValueError, match="--bar-rotary"):
        Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**{**TINY, "bar_echo": True})).run()


def test_layers_set_the_depth_and_a_resume_keeps_it(tiny_corpus, tmp_path) -> None:
    """``--layers N``: the network has N layers whatever its size's are; a resume keeps the
    run's; a negative count is refused."""
    cfg = TrainConfig(steps=2, checkpoint_every=100, layers=3, **TINY)
    trainer = Trainer(tiny_corpus, tmp_path, cfg)
    trainer.run(stop_after=1)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["model_args"]["n_layer"] == 3 != SIZES["tiny"]["n_layer"]
    assert any(k.startswith("blocks.2.") for k in ckpt["model"])
    Trainer(tiny_corpus, tmp_path, TrainConfig(**{**cfg.__dict__, "layers": 0})).run(resume=True)
    assert load_checkpoint(tmp_path)["model_args"]["n_layer"] == 3
    with pytest.raises(ValueError, match="layers"):
        TrainConfig(**{**TINY, "layers": -1}).validate()


def test_the_echo_can_learn_at_a_rate_of_its_own(tiny_corpus, tmp_path) -> None:
    """``--echo-lr``: the echo's embedding is a group of its own at that peak rate (its weight
    decay scaled down as much); the other weights keep ``--lr``. A run resumes with it and
    not without it; it needs ``--bar-echo``."""
    from ostinato.model.network import Decoder, config_for
    from ostinato.model.train import make_optimizer

    cfg = TrainConfig(steps=4, checkpoint_every=100, bar_rotary=True, bar_echo=True,
                      **{**TINY, "echo_lr": 3e-2})  # fmt: skip
    model = Decoder(config_for("tiny", 64, bar_token=3, bar_echo=True))
    groups = make_optimizer(model, cfg).param_groups
    echo = [g for g in groups if any(p is model.echo_embed.weight for p in g["params"])]
    assert len(echo) == 1 and len(echo[0]["params"]) == 1 and echo[0]["lr"] == 3e-2
    assert echo[0]["weight_decay"] == pytest.approx(cfg.weight_decay * TINY["lr"] / 3e-2)
    assert all(g["lr"] == TINY["lr"] for g in groups if g is not echo[0])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    one = make_optimizer(model, TrainConfig(**{**TINY, "bar_echo": True})).param_groups
    assert {g["lr"] for g in one} == {TINY["lr"]}  # without it, the echo learns at --lr
    trainer = Trainer(tiny_corpus, tmp_path, cfg)
    trainer.run(stop_after=2)
    with pytest.raises(ValueError, match="--echo-lr"):
        Trainer(tiny_corpus, tmp_path, TrainConfig(**{**cfg.__dict__, "echo_lr": 0.0})).run(
            resume=True
        )
    trainer.run(resume=True)
    assert load_checkpoint(tmp_path)["step"] == 4
    with pytest.raises(ValueError, match="--bar-echo"):
        TrainConfig(**{**TINY, "echo_lr": 1e-2}).validate()


def test_runs_from_one_model_average_into_one_that_exports(tmp_path) -> None:
    """``ostinato average``: the mean of each weight; an embedding one run added (the echo's,
    started at zero) counts as zeros in the runs without it; another network or tokenizer is
    refused; the result exports as any run does."""
    from ostinato.exporter.export import export_model
    from ostinato.model.tokens import legacy_tokenizer, new_tokenizer, save_tokenizer
    from ostinato.model.train import average_runs
    from tests.conftest import save_random_checkpoint

    bar = legacy_tokenizer().vocab["Bar_None"]
    a = save_random_checkpoint(tmp_path / "a", seed=1, bar_token=bar)
    b = save_random_checkpoint(tmp_path / "b", seed=2, bar_token=bar, bar_echo=True)
    saved = load_checkpoint(b)
    saved["model"]["echo_embed.weight"].normal_()  # (it starts at zero: as if trained)
    torch.save(saved, b)
    ckpt = average_runs([tmp_path / "a", b], tmp_path / "mean")
    A, B = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert ckpt["model_args"]["bar_echo"] is True
    for name, value in ckpt["model"].items():
        expected = (A[name] + B[name]) / 2 if name in A else B[name] / 2
        torch.testing.assert_close(value, expected)
    card = export_model(tmp_path / "mean", tmp_path / "model")
    assert card["parity"]["greedy_identical"] and card["model"]["bar_echo"] is True
    other = save_random_checkpoint(tmp_path / "c", seed=3, bar_token=-1)
    with pytest.raises(ValueError, match="bar_token"):
        average_runs([a, other], tmp_path / "no")
    other = save_random_checkpoint(tmp_path / "d", seed=3, bar_token=bar)
    save_tokenizer(new_tokenizer(), tmp_path / "d")
    with pytest.raises(ValueError, match="tokenizers differ"):
        average_runs([a, other], tmp_path / "no")
    with pytest.raises(ValueError, match="two"):
        average_runs([a], tmp_path / "no")
    with pytest.raises(ValueError, match="twice"):
        average_runs([a, tmp_path / "a"], tmp_path / "no")
    with pytest.raises(ValueError, match="holds a run"):  # it would be overwritten
        average_runs([a, b], tmp_path / "b")


def test_a_copy_head_learns_at_a_rate_of_its_own_and_joins_an_init_model(tiny_corpus, tmp_path):
    """``--copy-head``: written into the model's config; with ``--copy-lr`` its weights are
    groups of their own at that rate, a resume needs the same, and the rate needs the head.
    With ``--init`` from a model without one, the head is added (its gate nearly closed) and
    every other weight is the folder's."""
    from ostinato.exporter.export import export_model
    from ostinato.exporter.reload import load_into, model_config_of
    from ostinato.model.network import COPY_GATE_START, Decoder, config_for
    from ostinato.model.train import make_optimizer
    from tests.conftest import save_random_checkpoint

    cfg = TrainConfig(steps=4, checkpoint_every=100, copy_head=True, **{**TINY, "copy_lr": 3e-2})
    model = Decoder(config_for("tiny", 64, copy_head=True))
    groups = make_optimizer(model, cfg).param_groups
    own = [g for g in groups if g["lr"] == 3e-2]
    assert sum(len(g["params"]) for g in own) == len(list(model.copy.parameters())) == 4
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    trainer = Trainer(tiny_corpus, tmp_path / "a", cfg)
    trainer.run(stop_after=2)
    ckpt = load_checkpoint(tmp_path / "a")
    assert ckpt["model_args"]["copy_head"] is True and "copy.qk.weight" in ckpt["model"]
    with pytest.raises(ValueError, match="--copy-lr"):
        Trainer(tiny_corpus, tmp_path / "a", TrainConfig(**{**cfg.__dict__, "copy_lr": 0.0})).run(
            resume=True
        )
    trainer.run(resume=True)
    assert load_checkpoint(tmp_path / "a")["step"] == 4
    with pytest.raises(ValueError, match="--copy-head"):
        TrainConfig(**{**TINY, "copy_lr": 1e-2}).validate()

    export_model(save_random_checkpoint(tmp_path / "run", seed=4), tmp_path / "model")
    plain = model_config_of(tmp_path / "model")
    grown = Decoder(config_for("tiny", plain.vocab_size, copy_head=True))
    load_into(grown, tmp_path / "model")
    assert grown.copy.gate.bias.item() == COPY_GATE_START and grown.copy.qk.weight.any()
    before = Decoder(plain)
    load_into(before, tmp_path / "model")
    for name, value in before.state_dict().items():
        torch.testing.assert_close(grown.state_dict()[name], value)
    export_model(tmp_path / "a", tmp_path / "copying")
    with pytest.raises(ValueError, match="--copy-head"):  # a folder's head is not dropped
        load_into(Decoder(model_config_of(tmp_path / "model")), tmp_path / "copying")


def test_the_pointer_is_judged_where_the_next_token_was_heard_before() -> None:
    """pointer_loss: −log of the pointer's weight on the next token, only where that token is
    in the window up to the present one (and not padding)."""
    from ostinato.model.train import pointer_loss

    batch = torch.tensor([[5, 6, 5, 7, 0]])  # targets 6, 5, 7, 0(pad): only 5 was heard
    copied = torch.full((1, 4, 8), 1 / 8)
    copied[0, 1] = 0.0
    copied[0, 1, 5] = 0.5  # half the pointer's weight on the 5 heard at the start
    assert pointer_loss(copied, batch, pad_id=0).item() == pytest.approx(-math.log(0.5))
    copied[0, 1, 5] = 1.0
    assert pointer_loss(copied, batch, pad_id=0).item() == pytest.approx(0.0, abs=1e-6)
    assert pointer_loss(copied, torch.tensor([[1, 2, 3, 4, 0]]), pad_id=0).item() == 0.0
