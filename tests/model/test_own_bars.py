"""Training windows with bars the model plays itself (``--own-bars``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ostinato.engine.accompany import programs_held
from ostinato.model.corpus import CorpusSplit
from ostinato.model.network import Decoder, config_for
from ostinato.model.own_bars import bar_config, with_own_bars
from ostinato.model.parts import PartRates
from ostinato.model.tokens import TokenType, Vocab, load_tokenizer, split_bars, with_header
from ostinato.model.train import TrainConfig, Trainer, WindowSampler, load_checkpoint, loss_on

SEQ = 512


@pytest.fixture(scope="module")
def windows(tiny_corpus):
    vocab = Vocab.from_tokenizer(with_header(load_tokenizer(tiny_corpus)))  # as a run's
    split = CorpusSplit.load(tiny_corpus, "train")
    sampler = WindowSampler(split, vocab, SEQ, 0, pack=True, parts=PartRates(0.0, 0.0, 0.0))
    batch = torch.from_numpy(sampler.batch(np.random.default_rng(3), 8))
    torch.manual_seed(0)
    model = Decoder(config_for("tiny", vocab.size, previous_token=True))
    return vocab, batch, model


class EndingDecoder(Decoder):
    """An untrained decoder whose bars end: the Bar token's logit raised (an untrained
    model's bars run past their limit, and those windows stay real)."""

    bar_id = -1

    def forward(self, *args, **kwargs):
        logits, k, v = super().forward(*args, **kwargs)
        logits[..., self.bar_id] += 3.0
        return logits, k, v


def ending_model(vocab: Vocab, full: bool) -> Decoder:
    """A tiny such model; ``full``: with every input the engine feeds and the copy head (all
    of decode's paths)."""
    torch.manual_seed(1)
    positions = np.flatnonzero(vocab.types == TokenType.POSITION)
    extra = dict(
        bar_token=vocab.bar_id, bar_echo=True, position_token=int(positions[0]),
        positions=len(positions), place_stride=32, copy_head=True,
    ) if full else {}  # fmt: skip
    model = EndingDecoder(config_for("tiny", vocab.size, previous_token=True, **extra))
    model.bar_id = vocab.bar_id
    return model


def header_of(vocab: Vocab, bar: np.ndarray) -> list[int]:
    """The tokens of a bar (from its Bar) before its first Position."""
    return bar[: int(np.argmax(vocab.types[bar] == TokenType.POSITION))].tolist()


@pytest.mark.parametrize("full", [False, True])
def test_a_bar_played_keeps_its_header_and_the_song_goes_on_after_it(windows, full) -> None:
    vocab, batch, _ = windows
    model = ending_model(vocab, full)
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
        # each bar played begins as the real one did (meter and header) and its notes are of
        # the instruments its header names; then the window goes on with the song's real bars,
        # from the bar line after as many real bars as it played
        own = row[a - 1 : b]
        assert row[b] == vocab.bar_id and row[b - 1] != vocab.bar_id
        starts = list(np.flatnonzero(real == vocab.bar_id))
        first = starts.index(a - 1)
        own_bars = split_bars(own, vocab.bar_id)
        assert len(own_bars) in (1, 2)
        for k, bar in enumerate(own_bars):
            real_bar = real[starts[first + k] : starts[first + k + 1]]
            assert header_of(vocab, bar) == header_of(vocab, real_bar)
            config = bar_config(vocab, real, starts[first + k], starts[first + k + 1])
            assert set(config.header or ()) == set(programs_held(vocab, [real_bar]))
            notes = vocab.types[bar] == TokenType.PROGRAM
            assert set(vocab.values[bar[notes]].tolist()) <= set(config.header or ())
        end = starts[first + len(own_bars)]
        rest = row[b:][row[b:] != pad]
        assert len(rest) > 0 and (rest == real[end : end + len(rest)]).all()
    assert changed >= len(batch) // 2


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
