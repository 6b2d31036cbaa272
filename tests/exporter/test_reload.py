"""A model folder's weights back into PyTorch (``ostinato train --init``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ostinato.engine.engine import Engine
from ostinato.exporter.reload import load_into, model_config_of
from ostinato.model.network import Decoder
from ostinato.model.tokens import score_to_ids
from tests.conftest import make_band_score


def _compare(model_dir) -> tuple[float, bool]:
    torch.manual_seed(123)  # other weights than the folder's
    model = Decoder(model_config_of(model_dir))
    before = model.blocks[0].attn.qkv.weight.detach().clone()
    load_into(model, model_dir)
    assert not torch.equal(before, model.blocks[0].attn.qkv.weight)
    engine = Engine(model_dir, device="cpu")
    ids = score_to_ids(engine.tokenizer, make_band_score(bars=2)).astype(np.int64)[:120]
    engine.reset()
    logits = engine.feed(ids)
    tokens = torch.from_numpy(np.concatenate((engine.prefix, ids)))[None]
    with torch.no_grad():
        out = model.eval()(tokens)
    out = out[0] if isinstance(out, tuple) else out
    ours = out[0, -1].numpy()
    return float(np.abs(ours - logits).max()), int(ours.argmax()) == int(logits.argmax())


def test_fp32_model_folder_reloads_exactly(tiny_model_dir):
    diff, same = _compare(tiny_model_dir)
    assert diff < 1e-3 and same


def test_int8_bundled_model_reloads_close():
    from ostinato.config import default_model_dir

    diff, same = _compare(str(default_model_dir()))
    assert diff < 0.5 and same  # dequantized 8-bit weights against the 8-bit graph


def test_a_model_that_hears_the_previous_token_starts_as_the_folder_it_is_loaded_from(
    tiny_model_dir,
):
    """``train --init MODEL --previous-token``: the new embedding starts at zero, so the model
    computes what the folder's does until training moves it; a folder that has the embedding
    gives it back."""
    from dataclasses import replace

    from ostinato.exporter.export import export_model
    from ostinato.model.train import CHECKPOINT

    config = replace(model_config_of(tiny_model_dir), previous_token=True)
    torch.manual_seed(7)
    model = Decoder(config)
    load_into(model, tiny_model_dir)
    assert not model.prev_embed.weight.any()
    plain = Decoder(model_config_of(tiny_model_dir))
    load_into(plain, tiny_model_dir)
    tokens = torch.randint(0, config.vocab_size, (1, 60))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens)[0], plain.eval()(tokens)[0])
        model.prev_embed.weight.normal_()
    run = tiny_model_dir.parent / "run-previous"
    run.mkdir()
    (run / "tokenizer.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    torch.save({"model_args": config.to_dict(), "model": model.state_dict(), "step": 1},
               run / CHECKPOINT)  # fmt: skip
    export_model(run / CHECKPOINT, tiny_model_dir.parent / "model-previous")
    again = Decoder(config)
    load_into(again, tiny_model_dir.parent / "model-previous")
    torch.testing.assert_close(again.prev_embed.weight, model.prev_embed.weight)
    with pytest.raises(ValueError, match="--previous-token"):  # it would be lost
        load_into(plain, tiny_model_dir.parent / "model-previous")


def test_a_model_that_counts_places_in_the_bar_reloads_and_is_not_taken_without(tmp_path):
    from dataclasses import replace

    from ostinato.exporter.export import export_model
    from tests.conftest import legacy_tokenizer, save_random_checkpoint

    bar = legacy_tokenizer().vocab["Bar_None"]
    ckpt = save_random_checkpoint(tmp_path / "run", seed=2, bar_token=bar)
    export_model(ckpt, tmp_path / "model", int8=True)
    config = model_config_of(tmp_path / "model")
    assert config.bar_token == bar
    diff, same = _compare(tmp_path / "model")
    assert diff < 0.5 and same
    with pytest.raises(ValueError, match="--bar-rotary"):
        load_into(Decoder(replace(config, bar_token=-1)), tmp_path / "model")
    # one that counts them in music is not taken by a model that counts in tokens; the other
    # way round is a new count to learn (as --bar-rotary on a model without it)
    first = legacy_tokenizer().vocab["Position_0"]
    ckpt = save_random_checkpoint(tmp_path / "music", seed=2, bar_token=bar,
                                  position_token=first, positions=32)  # fmt: skip
    export_model(ckpt, tmp_path / "music-model")
    music = model_config_of(tmp_path / "music-model")
    assert (music.position_token, music.positions) == (first, 32)
    with pytest.raises(ValueError, match="--onset-places"):
        load_into(Decoder(replace(music, position_token=-1, positions=0)), tmp_path / "music-model")
    load_into(Decoder(music), tmp_path / "model")


def test_a_model_that_hears_echoes_starts_as_the_folder_and_reloads_int8(tmp_path):
    """``train --init MODEL --bar-echo``: the echo's embedding starts at zero (the same
    function as the folder's); exported with it (int8, whose agreement check feeds the
    echoes), the folder gives it back and is not taken by a model without it."""
    from dataclasses import replace

    from ostinato.exporter.export import export_model
    from ostinato.model.train import CHECKPOINT
    from tests.conftest import legacy_tokenizer, save_random_checkpoint

    bar = legacy_tokenizer().vocab["Bar_None"]
    ckpt = save_random_checkpoint(tmp_path / "run", seed=3, bar_token=bar, previous_token=True)
    export_model(ckpt, tmp_path / "model")
    config = replace(model_config_of(tmp_path / "model"), bar_echo=True)
    model = Decoder(config)
    load_into(model, tmp_path / "model")
    assert not model.echo_embed.weight.any()
    plain = Decoder(model_config_of(tmp_path / "model"))
    load_into(plain, tmp_path / "model")
    tokens = torch.randint(0, config.vocab_size, (1, 80))
    tokens[0, ::20] = bar  # bars, so there are echoes
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens)[0], plain.eval()(tokens)[0])
        model.echo_embed.weight.normal_()
    run = tmp_path / "run-echo"
    run.mkdir()
    (run / "tokenizer.json").write_bytes((tmp_path / "run" / "tokenizer.json").read_bytes())
    torch.save({"model_args": config.to_dict(), "model": model.state_dict(), "step": 1},
               run / CHECKPOINT)  # fmt: skip
    card = export_model(run / CHECKPOINT, tmp_path / "model-echo", int8=True)
    assert card["inputs"][-1] == "echoes" and card["int8"]["greedy_agreement"] > 0.9
    again = Decoder(config)
    load_into(again, tmp_path / "model-echo")
    pair = torch.stack((again.echo_embed.weight.flatten(), model.echo_embed.weight.flatten()))
    assert torch.corrcoef(pair)[0, 1] > 0.99  # (its 8-bit weights, dequantized)
    with pytest.raises(ValueError, match="--bar-echo"):  # it would be lost
        load_into(plain, tmp_path / "model-echo")
    with pytest.raises(ValueError, match="bar_token"):
        replace(config, bar_token=-1)


def test_a_model_grown_by_layers_starts_as_the_folder_and_its_new_layers_learn(tmp_path):
    """``train --init MODEL --layers N``: the layers added on top of the folder's start with
    their outputs at zero (the same function as the folder's, however their other weights
    are drawn), a step of training moves them, and a model with fewer layers than the
    folder's is refused by name."""
    from dataclasses import replace

    from ostinato.exporter.export import export_model
    from tests.conftest import save_random_checkpoint

    export_model(save_random_checkpoint(tmp_path / "run", seed=4), tmp_path / "model")
    config = model_config_of(tmp_path / "model")
    plain = Decoder(config)
    load_into(plain, tmp_path / "model")
    grown = Decoder(replace(config, n_layer=config.n_layer + 2))
    load_into(grown, tmp_path / "model")
    new = grown.layers()[config.n_layer :]
    assert len(new) == 2 and all(b.attn.qkv.weight.any() for b in new)  # drawn, not zero
    tokens = torch.randint(0, config.vocab_size, (2, 60))
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(tokens)[0], plain.eval()(tokens)[0])
    optimizer = torch.optim.AdamW(grown.parameters(), lr=1e-3)
    logits = grown.train()(tokens[:, :-1])[0]
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    assert all(b.attn.proj.weight.any() and b.mlp[2].weight.any() for b in new)
    with pytest.raises(ValueError, match="--layers"):
        load_into(Decoder(replace(config, n_layer=config.n_layer - 1)), tmp_path / "model")
