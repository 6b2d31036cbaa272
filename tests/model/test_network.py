from __future__ import annotations

import pytest
import torch

from ostinato.model.network import UNKNOWN_FOLLOWER, Decoder, ModelConfig, config_for


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


@torch.no_grad()
def test_decoding_follows_the_choices_and_stops_where_told(model: Decoder) -> None:
    """``decode`` feeds each chosen token (its logits are the full forward's over the prompt
    and the tokens chosen so far) and stops at the first None."""
    prompt = torch.randint(0, 100, (1, 10))
    chosen: list[int] = []
    seen: list[torch.Tensor] = []

    def choose(logits: torch.Tensor) -> int | None:
        seen.append(logits.clone())
        if len(chosen) == 5:
            return None
        chosen.append(7 + 3 * len(chosen))
        return chosen[-1]

    assert model.decode(prompt, choose, 20) == chosen == [7, 10, 13, 16, 19]
    full, _, _ = model(torch.cat([prompt, torch.tensor([chosen])], dim=1))
    for i, logits in enumerate(seen):
        torch.testing.assert_close(logits, full[0, prompt.shape[1] - 1 + i], atol=1e-4, rtol=1e-4)
    assert len(model.decode(prompt, lambda logits: 3, 4)) == 4


@torch.no_grad()
def test_the_copy_head_gives_probabilities_and_its_cache_matches_the_full_forward() -> None:
    """With ``copy_head`` the output is log-probabilities (they sum to 1), the cache holds
    one more entry whose first value is the id of the token that followed each (the last
    one's unknown until the caller writes it), and a prefill then single steps, writing each
    follower as the engine does, give what one pass over the whole sequence gives; a slot
    whose follower is wrong changes the output (the pointer reads it)."""
    torch.manual_seed(1)
    cfg = config_for("tiny", vocab_size=60, copy_head=True, previous_token=True, bar_token=3)
    model = Decoder(cfg).eval()
    torch.nn.init.constant_(model.copy.gate.bias, 0.0)  # half the output is copied
    tokens = torch.randint(0, 60, (2, 30))
    full, k_all, v_all = model(tokens)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(2, 30))
    assert cfg.cache_layers == cfg.n_layer + 1 == k_all.shape[0] == v_all.shape[0]
    assert torch.equal(v_all[-1, :, 0, :-1, 0], tokens[:, 1:].float())
    assert (v_all[-1, :, :, -1, 0] == UNKNOWN_FOLLOWER).all()
    assert not v_all[-1, ..., 1:].any()
    from ostinato.model.network import note_follower, places_of, previous_tokens

    places, prev = places_of(cfg, tokens), previous_tokens(tokens)
    logits, pk, pv = model(tokens[:, :20])
    torch.testing.assert_close(logits, full[:, :20], atol=1e-5, rtol=1e-4)
    for t in range(20, 30):
        step = slice(t, t + 1)
        for b in range(2):
            note_follower(pv[:, b : b + 1], -1, int(tokens[b, t]))
        logits, k, v = model(tokens[:, step], torch.full((2, 1), t), pk, pv,
                             prev_tokens=prev[:, step], bar_places=places[:, step])  # fmt: skip
        torch.testing.assert_close(logits[:, 0], full[:, t], atol=1e-5, rtol=1e-4)
        pk, pv = torch.cat((pk, k), 3), torch.cat((pv, v), 3)
    wrong = pv.clone()
    wrong[-1, :, :, 5, 0] = (wrong[-1, :, :, 5, 0] + 1) % 60
    with torch.no_grad():
        moved = model(tokens[:, 29:30], torch.full((2, 1), 30), pk, wrong,
                      prev_tokens=tokens[:, 28:29], bar_places=places[:, 29:30])[0]  # fmt: skip
        right = model(tokens[:, 29:30], torch.full((2, 1), 30), pk, pv,
                      prev_tokens=tokens[:, 28:29], bar_places=places[:, 29:30])[0]  # fmt: skip
    assert (moved - right).abs().max() > 1e-4


def _phrase_loss(copy_head: bool, steps: int = 40) -> float:
    """A tiny model trained ``steps`` steps on phrases of 12 random tokens each played three
    times; its loss on the second and third playings of phrases it never saw."""
    torch.manual_seed(0)
    model = Decoder(config_for("tiny", vocab_size=40, copy_head=copy_head, previous_token=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n: int) -> torch.Tensor:
        return torch.randint(4, 40, (n, 12)).repeat(1, 3)

    for _ in range(steps):
        tokens = batch(16)
        logits = model(tokens[:, :-1])[0]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        tokens = batch(64)
        logits = model.eval()(tokens[:, :-1])[0][:, 12:]
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1),
                                                       tokens[:, 13:].flatten()))  # fmt: skip


def test_a_copy_head_plays_a_phrase_heard_before_sooner() -> None:
    """What the copy head is for: after the same short training, a model with it predicts a
    phrase's second and third playings far better than the same model without it."""
    with_head, without = _phrase_loss(True), _phrase_loss(False)
    assert with_head < 0.1 * without, (with_head, without)
