from __future__ import annotations

import pytest
import torch

from ostinato.model.network import Decoder, ModelConfig, config_for


@pytest.fixture(scope="module")
def model() -> Decoder:
    torch.manual_seed(0)
    return Decoder(config_for("tiny", vocab_size=100)).eval()


def test_named_sizes_build() -> None:
    small = Decoder(config_for("small", vocab_size=396))
    base = Decoder(config_for("base", vocab_size=396))
    assert 2e6 < small.num_parameters() < 5e6
    assert 24e6 < base.num_parameters() < 27e6  # the ~25M config: 8 layers, d=512
    assert base.config.n_layer == 8 and base.config.d_model == 512
    assert small.head.weight.data_ptr() == small.embed.weight.data_ptr()  # tied


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(vocab_size=10, d_model=100, n_head=3)
    with pytest.raises(ValueError, match="unknown model size"):
        config_for("huge", vocab_size=10)


@torch.no_grad()
def test_kv_cache_matches_full_forward(model: Decoder) -> None:
    tokens = torch.randint(0, 100, (2, 40))
    full, k_all, _ = model(tokens)
    assert full.shape == (2, 40, 100)
    cfg = model.config
    assert k_all.shape == (cfg.n_layer, 2, cfg.n_head, 40, cfg.head_dim)
    # prefill 25, then extend by 10 (incremental prefill), then 5 single-token steps
    logits, pk, pv = model(tokens[:, :25])
    torch.testing.assert_close(logits, full[:, :25], atol=1e-5, rtol=1e-4)
    logits, k, v = model(tokens[:, 25:35], past_k=pk, past_v=pv)
    torch.testing.assert_close(logits, full[:, 25:35], atol=1e-5, rtol=1e-4)
    pk, pv = torch.cat((pk, k), 3), torch.cat((pv, v), 3)
    for t in range(35, 40):
        logits, k, v = model(tokens[:, t : t + 1], past_k=pk, past_v=pv)
        torch.testing.assert_close(logits[:, 0], full[:, t], atol=1e-5, rtol=1e-4)
        pk, pv = torch.cat((pk, k), 3), torch.cat((pv, v), 3)


@torch.no_grad()
def test_fixed_buffer_with_mask_is_order_free(model: Decoder) -> None:
    """Keys carry their absolute position, so a slot's place in the buffer is irrelevant:
    shuffled slots plus an additive mask over empty ones give the same logits."""
    tokens = torch.randint(0, 100, (1, 12))
    full, _, _ = model(tokens)
    _, pk, pv = model(tokens[:, :11])
    window = 16
    perm = torch.randperm(window)[:11]  # scatter 11 cached entries into a 16-slot buffer
    shape = list(pk.shape)
    shape[3] = window
    bk, bv = torch.zeros(shape), torch.zeros(shape)
    bk[:, :, :, perm], bv[:, :, :, perm] = pk, pv
    mask = torch.full((1, 1, 1, window + 1), float("-inf"))
    mask[..., perm] = 0.0
    mask[..., window] = 0.0  # the new token sees itself
    logits, _, _ = model(tokens[:, 11:12], torch.tensor([[11]]), bk, bv, mask)
    torch.testing.assert_close(logits[:, 0], full[:, 11], atol=1e-5, rtol=1e-4)


def test_greedy_generation_is_deterministic(model: Decoder) -> None:
    prompt = torch.randint(0, 100, (1, 10))
    a = model.generate_greedy(prompt, 8)
    b = model.generate_greedy(prompt, 8)
    assert a.shape == (1, 8) and torch.equal(a, b)
