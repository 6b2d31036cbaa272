"""A model folder's weights back into the PyTorch decoder: ``ostinato train --init MODEL``.

A training run can start from a model that was shipped rather than from random weights, when
the checkpoint it was exported from is not at hand (checkpoints stay outside git): the ONNX
prefill graph (``model.onnx``) holds every weight. Layer norms and the tied embedding keep
their PyTorch names in the graph; the linear layers are its matrix products, in the order the
decoder runs them (per block: ``attn.qkv``, ``attn.proj``, ``mlp.0``, ``mlp.2``; then a copy
head's query/key and gate products), stored transposed, and with 8-bit weights (``export
--int8``) as integers with a scale and a zero point, which are dequantized here (the training
that follows washes out the rounding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ostinato.model.network import Decoder, ModelConfig

LINEARS = ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")
PREFIX = "model."  # the exporter's wrapper holds the decoder as ``model``
BUFFERS = ("inv_freq", "bar_pairs")  # rebuilt from the configuration, not weights


def model_config_of(model_dir: str | Path) -> ModelConfig:
    """The decoder's configuration from a model folder's ``card.json``."""
    card = json.loads((Path(model_dir) / "card.json").read_text())
    names = ModelConfig.__dataclass_fields__
    return ModelConfig(**{k: v for k, v in card["model"].items() if k in names})


def state_dict_from_onnx(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every parameter of the decoder in ``model_dir/model.onnx``, by its PyTorch name."""
    graph = onnx.load(str(Path(model_dir) / "model.onnx")).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        if name.startswith(PREFIX) and name[len(PREFIX) :] not in BUFFERS:
            state[name[len(PREFIX) :]] = torch.from_numpy(np.array(value, dtype=np.float32))
    if "head.weight" in state:  # tied: the output layer is the embedding
        state["embed.weight"] = state["head.weight"]
    matrices = []
    for node in graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in weights:
            base = node.input[1].removesuffix("_quantized")
            q = weights[node.input[1]].astype(np.float32)
            zero = weights.get(node.input[3], np.zeros(())).astype(np.float32)
            matrices.append((q - zero) * weights[base + "_scale"].astype(np.float32))
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            w = weights[node.input[1]]
            if w.ndim == 2:
                matrices.append(np.array(w, dtype=np.float32))
    if model_config_of(model_dir).copy_head:  # its two products run after the blocks'
        if len(matrices) < 2:
            raise ValueError(f"{model_dir}: no copy head's matrix products in model.onnx")
        (qk, gate), matrices = matrices[-2:], matrices[:-2]
        state["copy.qk.weight"] = torch.from_numpy(qk.T.copy())
        state["copy.gate.weight"] = torch.from_numpy(gate.T.copy())
    n_layer = len(matrices) // len(LINEARS)
    if n_layer * len(LINEARS) != len(matrices) or n_layer == 0:
        raise ValueError(f"{model_dir}: found {len(matrices)} matrix products, not 4 per block")
    # Layer norms by the order they run in (an exporter may store equal tensors once, under
    # one name, as in an untrained model whose norms are all ones)
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    names = [f"blocks.{b}.{ln}" for b in range(n_layer) for ln in ("ln1", "ln2")] + ["ln_f"]
    if len(norms) == len(names):
        for node, name in zip(norms, names, strict=True):
            for suffix, index in (("weight", 1), ("bias", 2)):
                if len(node.input) > index and node.input[index] in weights:
                    value = np.array(weights[node.input[index]], dtype=np.float32)
                    state[f"{name}.{suffix}"] = torch.from_numpy(value)
    for k, matrix in enumerate(matrices):
        block, layer = divmod(k, len(LINEARS))
        state[f"blocks.{block}.{LINEARS[layer]}.weight"] = torch.from_numpy(matrix.T.copy())
    return state


def load_into(model: Decoder, model_dir: str | Path) -> None:
    """Overwrite ``model``'s parameters with the weights of ``model_dir`` (ValueError if the
    shapes or names differ: the folder is of another architecture). ``model`` may add what the
    folder's model lacks — the previous token's and the echo's embeddings (kept at zero),
    places in the bar (those rotary pairs relearnt) and layers on top of the folder's (each
    with its attention's and its MLP's output at zero: it adds nothing until trained, so the
    grown model starts as the folder's) — but not lack what it has."""
    theirs = model_config_of(model_dir)
    ours = model.config
    if theirs.n_layer > ours.n_layer:
        raise ValueError(f"{model_dir} has {theirs.n_layer} layers: train with --layers "
                         f"{theirs.n_layer} or more")  # fmt: skip
    if theirs.previous_token and not ours.previous_token:
        raise ValueError(f"{model_dir} hears the previous token: train with --previous-token")
    if theirs.bar_echo and not ours.bar_echo:
        raise ValueError(f"{model_dir} hears each token's echo: train with --bar-echo")
    if theirs.copy_head and not ours.copy_head:
        raise ValueError(f"{model_dir} has a copy head: train with --copy-head")
    if theirs.bar_token >= 0 and theirs.bar_token != ours.bar_token:
        raise ValueError(f"{model_dir} turns rotary pairs with the place in the bar: train "
                         "with --bar-rotary (and its tokenizer)")  # fmt: skip
    counted = (theirs.position_token, theirs.positions, theirs.place_stride)
    if theirs.position_token >= 0 and counted != (
        ours.position_token, ours.positions, ours.place_stride
    ):  # fmt: skip
        raise ValueError(f"{model_dir} counts places in the bar in music: train with "
                         "--onset-places (and its tokenizer)")  # fmt: skip
    state = state_dict_from_onnx(model_dir)
    own = model.state_dict()
    added = set() if theirs.previous_token else {"prev_embed.weight"}  # stays at zero
    added |= set() if theirs.bar_echo else {"echo_embed.weight"}
    added |= set() if theirs.copy_head else {k for k in own if k.startswith("copy.")}
    grown = tuple(f"blocks.{i}." for i in range(theirs.n_layer, ours.n_layer))
    added |= {k for k in own if k.startswith(grown)}  # (an empty tuple matches nothing)
    missing = [k for k in own if k not in state and not k.endswith("inv_freq") and k not in added]
    unknown = [k for k in state if k not in own]
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or wrong or unknown:
        raise ValueError(
            f"{model_dir} does not fit this model: missing {missing[:4]}, other shapes "
            f"{wrong[:4]}, not in this model {unknown[:4]}"
        )
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value)
        for block in model.layers()[theirs.n_layer :]:  # grown: a residual that adds nothing
            torch.nn.init.zeros_(block.attn.proj.weight)
            torch.nn.init.zeros_(cast(torch.nn.Linear, block.mlp[2]).weight)
