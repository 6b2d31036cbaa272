"""Training windows with bars the model plays itself (``--own-bars``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ostinato.model.corpus import CorpusSplit
from ostinato.model.network import Decoder, config_for
from ostinato.model.own_bars import bar_config, with_own_bars
from ostinato.model.parts import PartRates
from ostinato.model.tokens import TokenType, Vocab, load_tokenizer, with_header
from ostinato.model.train import TrainConfig, Trainer, WindowSampler, load_checkpoint, loss_on

SEQ = 256


@pytest.fixture(scope="module")
def windows(tiny_corpus):
    vocab = Vocab.from_tokenizer(with_header(load_tokenizer(tiny_corpus)))  # as a run's
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, SEQ, 0, pack=True, parts=PartRates(0.0, 0.0, 0.0))
    batch = torch.from_numpy(sampler.batch(np.random.default_rng(3), 8))
    torch.manual_seed(0)
    model = Decoder(config_for("tiny", vocab.size, previous_token=True))
    return vocab, batch, model


def header_of(vocab: Vocab, bar: np.ndarray) -> list[int]:
    """The tokens of a bar (from its Bar) before its first Position."""
    return bar[: int(np.argmax(vocab.types[bar] == TokenType.POSITION))].tolist()


def test_a_bar_played_keeps_its_header_and_the_song_goes_on_after_it(windows) -> None:
    vocab, batch, model = windows
    pad = vocab.pad_id
    rows, targets = with_own_bars(model, batch, vocab, 1.0, np.random.default_rng(0))
    assert rows.shape == batch.shape and targets.shape == (len(batch), SEQ)
    assert model.training  # given back as it was
    changed = 0
    for r in range(len(batch)):
        real, row, target = batch[r].numpy(), rows[r].numpy(), targets[r].numpy()
        played = (target == pad) & (row[1:] != pad)  # targets left out: the bar(s) played
        if not played.any():
            assert (row == real).all() and (target == real[1:]).all()
            continue
        changed += 1
        a = int(np.argmax(played)) + 1  # the first token played (after its Bar)
        b = len(played) - int(np.argmax(played[::-1])) + 1  # one past the last
        assert (row[:a] == real[:a]).all() and row[a - 1] == vocab.bar_id
        assert (target[~played] == row[1:][~played]).all()  # every other token is a target
        # the bars played begin as the real ones did: meter and header
        real_bar = real[a - 1 : a - 1 + int(np.argmax(real[a:] == vocab.bar_id)) + 1]
        own = row[a - 1 : b]
        assert header_of(vocab, own) == header_of(vocab, real_bar)
        allowed = set(bar_config(vocab, real_bar).header or ())
        for i in np.flatnonzero(vocab.types[own] == TokenType.PROGRAM):
            assert int(vocab.values[own[i]]) in allowed
        # after them the window goes on with the song's real bars, from a bar line
        assert row[b] == vocab.bar_id
        rest = row[b:][row[b:] != pad]
        starts = np.flatnonzero(real == vocab.bar_id)
        assert any((real[s : s + len(rest)] == rest).all() for s in starts if s >= a)
    assert changed >= 2  # (an untrained model's bars run long: those windows stay real)


def test_at_rate_zero_the_batch_and_its_targets_are_the_real_ones(windows) -> None:
    vocab, batch, model = windows
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    rows, targets = with_own_bars(model, batch, vocab, 0.0, rng)
    assert torch.equal(rows, batch) and torch.equal(targets, batch[:, 1:])
    assert rng.bit_generator.state != state  # one draw a window: a run's stream stays fixed


def test_the_loss_leaves_out_the_tokens_played(windows) -> None:
    vocab, batch, model = windows
    rows, targets = with_own_bars(model, batch, vocab, 1.0, np.random.default_rng(1))
    keep = targets != vocab.pad_id
    assert (~keep & (rows[:, 1:] != vocab.pad_id)).any()
    with torch.no_grad():
        logits, _, _ = model(rows[:, :-1])
        expected = F.cross_entropy(logits[keep], targets[keep])
        assert float(loss_on(model, rows, vocab.pad_id, targets=targets)) == pytest.approx(
            float(expected), rel=1e-5
        )
        assert float(loss_on(model, rows, vocab.pad_id)) != pytest.approx(float(expected))


def test_a_run_with_own_bars_trains_and_resumes_bit_for_bit(tiny_corpus, tmp_path) -> None:
    torch.set_num_threads(1)
    cfg = dict(size="tiny", seq_len=SEQ, batch_size=4, warmup_steps=2, eval_every=4,
               eval_batches=1, dropout=0.0, lr=3e-3, steps=8, checkpoint_every=100,
               own_bars=0.5)  # fmt: skip
    straight = Trainer(tiny_corpus, tmp_path / "a", TrainConfig(**cfg)).run()
    Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**cfg)).run(stop_after=3)
    resumed = Trainer(tiny_corpus, tmp_path / "b", TrainConfig(**cfg)).run(resume=True)
    assert resumed["train_loss"] == straight["train_loss"]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["train_config"]["own_bars"] == 0.5


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_the_share_is_checked(rate) -> None:
    with pytest.raises(ValueError, match="own_bars"):
        TrainConfig(own_bars=rate).validate()
