"""``ostinato bench``: speed of the engine against PyTorch, and the bar budget, in one run.

All paths run the same model configuration on the same 512-token prompt:

(a) the engine (ONNX Runtime, bound fixed KV window; CPU, and CUDA when present);
(b) PyTorch eager with a KV cache;
(c) PyTorch eager without a cache (the whole sequence again for every token).

PyTorch runs a decoder of the model's configuration; weights do not change its timing. Without
torch installed only the engine is measured. The bar budget times a realistic 4-track bar:
from handing the engine the bar that just ended (incremental prefill of its tokens only) to
the first generated note, and to the whole next bar, as a share of a bar at 120 and 180 BPM.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from ostinato.engine.engine import Engine
from ostinato.model.grammar import GrammarConfig
from ostinato.model.sampling import SamplingSettings
from ostinato.model.tokens import DRUM_PROGRAM, score_to_ids, split_bars

PROMPT_TOKENS = 512


def _stats_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "tokens_per_s": round(float(1e3 / np.percentile(ms, 50)), 1),
    }


def band_bars(tokenizer, count: int = 40, seed: int = 0) -> list[np.ndarray]:
    """Token bars of 4-track loops from the loop generator (drums, bass, chords, lead)."""
    from ostinato.loops.generate import make_loop

    bars: list[np.ndarray] = []
    index = 0
    while len(bars) < count:
        loop = make_loop(seed, index)
        index += 1
        if len(loop.score.tracks) == 4:
            bars.extend(
                split_bars(score_to_ids(tokenizer, loop.score), tokenizer.vocab["Bar_None"])
            )
    return bars[:count]


def bench_engine(engine: Engine, prompt: np.ndarray, steps: int) -> dict:
    prefill = []
    for _ in range(5):
        engine.reset()
        t0 = time.perf_counter()
        engine.feed(prompt)
        prefill.append(time.perf_counter() - t0)
    step_times = []
    for _ in range(steps):
        token = int(np.argmax(engine.last_logits))
        t0 = time.perf_counter()
        engine.feed([token])
        step_times.append(time.perf_counter() - t0)
    return {"prefill_ms": round(float(np.median(prefill)) * 1e3, 2), **_stats_ms(step_times)}


def bench_bar_budget(engine: Engine, bars: list[np.ndarray], trials: int) -> dict:
    """Context of 3 bars; for each trial hand over one more real bar, then generate a bar."""
    settings = SamplingSettings(temperature=1.0, top_p=0.95)
    programs = tuple(sorted({DRUM_PROGRAM, 33, 34, 38, 39, 0, 4, 5, 11, 24, 32, 40, 73, 80, 81}))
    grammar = GrammarConfig(programs=programs)
    engine.reset()
    engine.feed(np.concatenate(bars[:3]))
    first_note, whole_bar, handover, notes, tokens = [], [], [], [], []
    for trial in range(trials):
        sampler = engine.sampler(settings, seed=trial)
        new_bar = bars[3 + trial % (len(bars) - 3)]
        t0 = time.perf_counter()
        engine.feed(new_bar)  # the bar the musician just played
        t1 = time.perf_counter()
        count, first = 0, None
        before = engine.context_length
        for _ in engine.generate(1, sampler, grammar):
            count += 1
            if first is None:
                first = time.perf_counter()
        t2 = time.perf_counter()
        handover.append(t1 - t0)
        first_note.append((first or t2) - t0)
        whole_bar.append(t2 - t0)
        notes.append(count)
        tokens.append(engine.context_length - before)
    result = {
        "trials": trials,
        "handover_prefill_ms_p50": round(float(np.median(handover)) * 1e3, 2),
        "first_note_ms_p50": round(float(np.median(first_note)) * 1e3, 2),
        "first_note_ms_max": round(float(np.max(first_note)) * 1e3, 2),
        "whole_bar_ms_p50": round(float(np.median(whole_bar)) * 1e3, 2),
        "whole_bar_ms_max": round(float(np.max(whole_bar)) * 1e3, 2),
        "notes_per_bar_mean": round(float(np.mean(notes)), 1),
        "context_bar_tokens_mean": round(float(np.mean([len(b) for b in bars])), 1),
    }
    for bpm in (120, 180):
        bar_ms = 4 * 60_000 / bpm
        result[f"bar_share_{bpm}bpm_p50"] = round(result["whole_bar_ms_p50"] / bar_ms, 4)
        result[f"bar_share_{bpm}bpm_max"] = round(result["whole_bar_ms_max"] / bar_ms, 4)
    return result


def bench_torch(card: dict, prompt: np.ndarray, steps: int, naive_steps: int) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    from ostinato.model.network import Decoder, ModelConfig, next_places, places_of
    from ostinato.model.tokens import BarEcho

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Decoder(ModelConfig(**card["model"])).eval()
    tokens = torch.from_numpy(prompt.astype(np.int64))[None]
    out: dict = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits, pk, pv = model(tokens)
        out["prefill_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        times, position, before = [], tokens.shape[1], tokens[:, -1:]
        cfg = model.config
        places = places_of(cfg, tokens)
        place = places[:, -1:]
        echo = BarEcho(cfg.bar_token)
        if cfg.bar_echo:
            echo.steps(tokens[0].numpy(), places[0].numpy())
        for _ in range(steps):
            token = logits[:, -1].argmax(-1, keepdim=True)
            place = next_places(cfg, place, token)
            t0 = time.perf_counter()
            heard = torch.tensor([[echo.step(int(token), int(place))]]) if cfg.bar_echo else None
            logits, k, v = model(token, torch.tensor([[position]]), pk, pv, prev_tokens=before,
                                 bar_places=place, echoes=heard)  # fmt: skip
            before = token
            pk, pv = torch.cat((pk, k), 3), torch.cat((pv, v), 3)
            times.append(time.perf_counter() - t0)
            position += 1
        out["with_cache"] = _stats_ms(times)
        seq, times = tokens, []
        for _ in range(naive_steps):
            t0 = time.perf_counter()
            logits, _, _ = model(seq)
            token = logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - t0)
            seq = torch.cat((seq, token), 1)
        out["no_cache"] = _stats_ms(times)
    out["torch_version"] = torch.__version__
    return out


def run_bench(model_dir: str | Path, steps: int = 256, threads: int = 1, trials: int = 24) -> dict:
    import onnxruntime as ort

    probe = Engine(model_dir, device="cpu", threads=threads)
    window = max(probe.window, PROMPT_TOKENS + steps + 8)
    bars = band_bars(probe.tokenizer, 40)
    stream = np.concatenate(bars)
    prompt = stream[:PROMPT_TOKENS]
    report: dict = {
        "model": str(model_dir),
        "parameters": probe.card.get("parameters"),
        "config": probe.card["model"],
        "precision": probe.card.get("precision", "fp32"),
        "window": probe.window,
        "prompt_tokens": PROMPT_TOKENS,
        "decode_steps": steps,
        "threads": threads,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(),
        },
        "engine": {},
    }
    devices = ["cpu"] + (
        ["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else []
    )
    for device in devices:
        engine = Engine(model_dir, device=device, threads=threads, window=window)
        report["engine"][device] = bench_engine(engine, prompt, steps)
        live = Engine(model_dir, device=device, threads=threads)  # the daemon's own window
        report["engine"][device]["bar_budget"] = bench_bar_budget(live, bars, trials)
    torch_report = bench_torch(probe.card, prompt, steps, naive_steps=24)
    if torch_report is not None:
        report["pytorch"] = torch_report
        a = report["engine"]["cpu"]["p50_ms"]
        report["speedup_vs_pytorch_kv"] = round(torch_report["with_cache"]["p50_ms"] / a, 2)
        report["speedup_vs_pytorch_no_cache"] = round(torch_report["no_cache"]["p50_ms"] / a, 2)
    return report


def format_markdown(report: dict) -> str:
    """The decode table and the bar budget as docs/benchmarks/README.md shows them."""
    m = report["config"]
    size = f"d={m['d_model']}×{m['n_layer']}, {report['parameters'] / 1e6:.2f} M"
    lines = [
        f"Model `{Path(report['model']).name}` ({size}, {report.get('precision', 'fp32')}, "
        f"window {report.get('window')}), prompt {report['prompt_tokens']} tokens, "
        f"{report['threads']} thread; onnxruntime {report['machine']['onnxruntime']}.",
        "",
        "| path | prefill ms | p50 ms/token | p99 ms/token | tokens/s |",
        "|---|---|---|---|---|",
    ]
    for device, r in report["engine"].items():
        lines.append(
            f"| engine (ONNX Runtime, {device}) | {r['prefill_ms']:.1f} | "
            f"**{r['p50_ms']:.3f}** | **{r['p99_ms']:.3f}** | {r['tokens_per_s']:.0f} |"
        )
    if "pytorch" in report:
        pt = report["pytorch"]
        for name, key in (("PyTorch eager, KV cache", "with_cache"),
                          ("PyTorch eager, no cache", "no_cache")):  # fmt: skip
            r = pt[key]
            pre = f"{pt['prefill_ms']:.1f}" if key == "with_cache" else ""
            lines.append(f"| {name} | {pre} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['tokens_per_s']:.0f} |")  # fmt: skip
        lines += ["", f"Engine speed-up (same run): {report['speedup_vs_pytorch_kv']}× PyTorch "
                  f"with KV cache, {report['speedup_vs_pytorch_no_cache']}× without."]  # fmt: skip
    for device, r in report["engine"].items():
        b = r["bar_budget"]
        lines += ["", f"Bar budget ({device}; a 4-track bar after {b['trials']} real ones, the "
                  f"daemon's window): hand-over prefill {b['handover_prefill_ms_p50']:.1f} ms, "
                  f"first note {b['first_note_ms_p50']:.1f} ms (max {b['first_note_ms_max']:.1f}),"
                  f" whole bar {b['whole_bar_ms_p50']:.1f} ms (max {b['whole_bar_ms_max']:.1f}; "
                  f"{b['notes_per_bar_mean']} notes) = {100 * b['bar_share_120bpm_p50']:.1f}% of "
                  f"a bar at 120 BPM, {100 * b['bar_share_180bpm_p50']:.1f}% at 180 BPM (max "
                  f"{100 * b['bar_share_180bpm_max']:.1f}%)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def format_report(report: dict) -> str:
    lines = [
        f"model {report['model']} ({report['parameters']:,} parameters), "
        f"prompt {report['prompt_tokens']} tokens, {report['threads']} thread(s)",
        f"{'path':34s} {'prefill ms':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'tok/s':>9s}",
    ]
    for device, r in report["engine"].items():
        lines.append(
            f"{'engine (ONNX Runtime, ' + device + ')':34s} {r['prefill_ms']:10.2f} "
            f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['tokens_per_s']:9.0f}"
        )
    if "pytorch" in report:
        pt = report["pytorch"]
        for name, key in (
            ("PyTorch eager, KV cache", "with_cache"),
            ("PyTorch eager, no cache", "no_cache"),
        ):
            r = pt[key]
            pre = f"{pt['prefill_ms']:10.2f}" if key == "with_cache" else f"{'':10s}"
            lines.append(
                f"{name:34s} {pre} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['tokens_per_s']:9.0f}"
            )
        lines.append(
            f"engine speed-up: {report['speedup_vs_pytorch_kv']}× vs PyTorch with cache, "
            f"{report['speedup_vs_pytorch_no_cache']}× vs no cache"
        )
    for device, r in report["engine"].items():
        b = r["bar_budget"]
        lines.append(
            f"bar budget ({device}): hand-over {b['handover_prefill_ms_p50']:.1f} ms, first note "
            f"{b['first_note_ms_p50']:.1f} ms (max {b['first_note_ms_max']:.1f}), whole bar "
            f"{b['whole_bar_ms_p50']:.1f} ms (max {b['whole_bar_ms_max']:.1f}; "
            f"{b['notes_per_bar_mean']} notes) = {100 * b['bar_share_120bpm_p50']:.1f}% of a bar "
            f"at 120 BPM, {100 * b['bar_share_180bpm_p50']:.1f}% at 180 "
            f"(max {100 * b['bar_share_180bpm_max']:.1f}%)"
        )
    return "\n".join(lines)
