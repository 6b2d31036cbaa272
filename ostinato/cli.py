"""The ``ostinato`` command. Each subcommand imports what it needs when it runs, so
``ostinato --help`` is quick and the runtime commands never import torch."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ostinato import __version__

log = logging.getLogger("ostinato")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _write_json(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _cmd_data_build(args: argparse.Namespace) -> int:
    from ostinato.model.corpus import build_corpus

    summary = build_corpus(
        args.src,
        args.out,
        tokenizer_path=args.tokenizer,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from ostinato.loops.generate import synth_loops

    styles = tuple(args.styles.split(",")) if args.styles else None
    summary = synth_loops(
        args.out,
        args.loops,
        seed=args.seed,
        gmd_dir=args.gmd,
        styles=styles,
        groove_share=args.groove_share,
        progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ostinato.model.train import Trainer, train_config_from_args

    result = Trainer(args.data_dir, args.out, train_config_from_args(args)).run(
        resume=args.resume, stop_after=args.stop_after
    )
    print(json.dumps(result, indent=2))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a built corpus (needs the train extra)")
    p.add_argument("data_dir", help="corpus folder made by `ostinato data build`")
    p.add_argument("--out", required=True, help="run folder: checkpoint, metrics.csv, loss.png")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument(
        "--stop-after", type=int, help="train this many more steps, checkpoint, and stop"
    )
    p.add_argument(
        "--size", choices=["tiny", "compact", "small", "base"], help="model size (default small)"
    )
    p.add_argument("--seq-len", type=int, help="window in tokens (default: the model's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, help="total optimizer steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--transpose", type=int, help="± semitones of random transposition")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-batches", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_train)


def _parse_programs(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(
            sorted({-1 if x.strip().lower() == "drums" else int(x) for x in text.split(",")})
        )
    except ValueError as exc:
        raise CommandError(
            f"--programs takes comma-separated GM programs and 'drums' (= -1): {text}"
        ) from exc


def _settings_from(args: argparse.Namespace):
    from ostinato.model.sampling import SamplingSettings

    return SamplingSettings(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )


def _add_generation_options(
    p: argparse.ArgumentParser,
    *,
    with_defaults: bool = True,
    programs_help: str | None = "enabled instruments, e.g. drums,33,4 (default: the input's)",
    seed: int | None = None,
) -> None:
    """The sampling options every generating command takes. ``with_defaults=False`` leaves
    unset options as None, so a config file's values are not overridden."""
    from ostinato.settings import GenerationSettings

    base = GenerationSettings()  # one set of defaults for the daemon and every command
    names = ("temperature", "top_k", "top_p", "repetition_penalty", "key_lock")
    defaults = {name: getattr(base, name) for name in names}
    d = defaults if with_defaults else dict.fromkeys(defaults)
    g = p.add_argument_group("generation")
    g.add_argument("--temperature", type=float, default=d["temperature"],
                   help="0 = greedy; low = repetitive, high = adventurous")  # fmt: skip
    g.add_argument("--top-k", type=int, default=d["top_k"],
                   help="sample among the k likeliest (0 = off)")  # fmt: skip
    g.add_argument("--top-p", type=float, default=d["top_p"], help="nucleus sampling mass")
    g.add_argument("--repetition-penalty", type=float, default=d["repetition_penalty"],
                   help="1 = off")  # fmt: skip
    g.add_argument("--key-lock", action=argparse.BooleanOptionalAction, default=d["key_lock"],
                   help="keep pitched notes to the key of the context plus the notes it used "
                   "(default on)")  # fmt: skip
    if programs_help:
        g.add_argument("--programs", help=programs_help)
    g.add_argument("--seed", type=int, default=seed)


def _cmd_export(args: argparse.Namespace) -> int:
    from ostinato.exporter.export import export_model

    card = export_model(args.checkpoint, args.out, fp16=args.fp16)
    print(json.dumps({k: card[k] for k in ("parameters", "window", "precision")} |
                     {"parity": card.get("parity")}, indent=2))  # fmt: skip
    return 0


def _cmd_continue(args: argparse.Namespace) -> int:
    from ostinato.daemon.engine import Engine
    from ostinato.daemon.offline import continue_file

    engine = Engine(args.model or default_model_dir(), device=args.device)
    result = continue_file(
        engine, args.input, args.output, args.bars, _settings_from(args),
        _parse_programs(args.programs), args.seed, key_lock=args.key_lock,
    )  # fmt: skip
    print(
        f"{args.output}: {result.input_bars} bars in, {args.bars} bars generated "
        f"({len(result.notes)} notes, context {result.context_bars} bars)"
    )
    return 0


def _tempos(text: str) -> tuple[int, ...]:
    try:
        tempos = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tempos are whole BPM, e.g. 120,180: {text!r}") from None
    if not tempos or not all(20 <= t <= 400 for t in tempos):
        raise argparse.ArgumentTypeError(f"tempos must be 20..400 BPM: {text!r}")
    return tempos


def _periods(text: str) -> tuple[int, ...]:
    try:
        periods = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"periods are frames, e.g. 64,1024: {text!r}") from None
    if not periods or not all(16 <= p <= 8192 and p & (p - 1) == 0 for p in periods):
        raise argparse.ArgumentTypeError(f"JACK periods are powers of two, 16..8192: {text!r}")
    return periods


def _cmd_bench(args: argparse.Namespace) -> int:
    from ostinato.bench import format_report, run_bench

    if args.realtime:
        from ostinato.bench_realtime import format_realtime, run_realtime_bench

        model = Path(args.model) if args.model else Path(str(default_model_dir()))
        report = run_realtime_bench(model, bars=args.bars, png=args.png, tempos=args.tempos,
                                    periods=args.periods)  # fmt: skip
        print(format_realtime(report))
    else:
        report = run_bench(
            args.model or default_model_dir(), steps=args.steps, threads=args.threads,
            trials=args.trials,
        )  # fmt: skip
        print(format_report(report))
    if args.json:
        _write_json(report, args.json)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ostinato.model.evaluate import evaluate, format_table

    report = evaluate(
        args.model, args.data_dir, windows=args.windows, nll_windows_count=args.nll_windows,
        seed=args.seed, settings=_settings_from(args), key_lock=args.key_lock,
        progress=not args.quiet,
    )  # fmt: skip
    print(format_table(report))
    if args.json:
        _write_json(report, args.json)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ostinato.daemon.daemon import DaemonConfig, parse_meter, run_daemon
    from ostinato.settings import GenerationSettings

    file_settings: dict = {}
    config_path = Path(args.config) if args.config else default_config_path()
    if args.config or config_path.exists():
        file_settings = _read_config(str(config_path))
    cc_map = _parse_cc_table(file_settings.get("cc", {}), config_path)
    settings = GenerationSettings().replace(
        **{k: v for k, v in file_settings.items() if k in GenerationSettings.__dataclass_fields__}
    )
    cli = {
        "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty, "mode": args.mode, "bars": args.bars,
        "phrase_bars": args.phrase_bars, "seed": args.seed, "key_lock": args.key_lock,
        "programs": _parse_programs(args.programs),
    }  # fmt: skip
    settings = settings.replace(**{k: v for k, v in cli.items() if v is not None})
    daemon_keys = {"backend", "in_port", "out_port", "clock", "bpm", "device", "latency_ms",
                   "stats_json", "osc_host", "osc_port", "osc_allow_remote",
                   "rt_priority"}  # fmt: skip
    options = {k: v for k, v in file_settings.items() if k in daemon_keys}
    for key in daemon_keys:
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    if args.no_osc:
        options["osc_port"] = None
    rt = options.get("rt_priority", 5)
    if type(rt) is not int or not 0 <= rt <= 98:
        raise CommandError(f"rt_priority must be a whole number from 0 (off) to 98, got {rt!r}")
    config = DaemonConfig(
        model_dir=Path(args.model) if args.model else Path(str(default_model_dir())),
        beats_per_bar=parse_meter(args.meter),
        settings=settings,
        config_path=config_path,
        cc_map=cc_map,
        **options,
    )
    from ostinato.daemon.clock import validate_bpm

    validate_bpm(config.bpm)
    return run_daemon(config)


def default_config_path() -> Path:
    """$XDG_CONFIG_HOME/ostinato/config.toml (~/.config/… when unset): read by `ostinato run`
    when it exists, and where MIDI CC learn saves its map when no --config is given."""
    import os

    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ostinato" / "config.toml"


def _parse_cc_table(table, path: Path) -> dict[int, str]:
    from ostinato.daemon.control import KNOBS

    if not isinstance(table, dict):
        raise CommandError(f"{path}: [cc] must be a table of CC number = setting")
    out = {}
    for key, name in table.items():
        if not str(key).isdigit() or not 0 <= int(key) <= 127:
            raise CommandError(f"{path}: [cc] key {key!r} is not a CC number 0..127")
        if name not in KNOBS:
            raise CommandError(f"{path}: [cc] {key} = {name!r}: a CC can drive {', '.join(KNOBS)}")
        out[int(key)] = name
    return out


def _read_config(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise CommandError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"config file {path} is not valid TOML: {exc}") from exc


def _cmd_gui(args: argparse.Namespace) -> int:
    import os

    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not os.environ.get("QT_QPA_PLATFORM")
    ):
        raise CommandError(
            "no display (DISPLAY and WAYLAND_DISPLAY are unset): the panel needs a desktop "
            "session; the daemon runs headless with `ostinato run` and takes OSC on port 9000"
        )
    try:
        from ostinato.gui.panel import main
    except ImportError as exc:
        raise CommandError(f"the panel needs PyQt6 ({exc}): pip install 'ostinato[gui]'") from exc
    extra = [a for a in args.daemon_args if a != "--"]
    return main(args.host, args.port, start=not args.no_start, daemon_args=extra)


def _cmd_ports(args: argparse.Namespace) -> int:
    from ostinato.daemon.ports import BACKENDS, PortError, list_ports

    for backend in [args.backend] if args.backend else list(BACKENDS):
        try:
            inputs, outputs = list_ports(backend)
        except PortError as exc:
            print(f"{backend}: unavailable ({exc})")
            continue
        print(f"{backend}:")
        print("  inputs:  " + (", ".join(inputs) or "none"))
        print("  outputs: " + (", ".join(outputs) or "none"))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ostinato.doctor import run_doctor

    model = Path(args.model) if args.model else Path(str(default_model_dir()))
    checks, status = run_doctor(model, args.config)
    for check in checks:
        print(check.line())
    print("ready to run" if status == 0 else "something blocks `ostinato run` (see FAIL above)")
    return status


def default_model_dir():
    from importlib.resources import files

    return files("ostinato") / "assets" / "default"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ostinato",
        description="Real-time MIDI continuation: listens to your loop, plays what comes next.",
    )
    parser.add_argument("--version", action="version", version=f"ostinato {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="build training corpora from MIDI files")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = data_sub.add_parser(
        "build", help="tokenize a folder of MIDI files into train/validation arrays"
    )
    build.add_argument("src", help="folder scanned recursively for .mid/.midi files")
    build.add_argument("out", help="output folder (arrays, tokenizer.json, summary.json)")
    build.add_argument("--tokenizer", help="tokenizer.json to use (default: a new REMI+ one)")
    build.add_argument("--validation-fraction", type=float, default=0.1)
    build.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    build.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_cmd_data_build)
    synth = data_sub.add_parser(
        "synth", help="generate multi-track loops (drums, bass, chords, lead) by musical rules"
    )
    synth.add_argument("out", help="output folder (MIDI files per style, loops.csv)")
    synth.add_argument("--loops", type=int, default=1000, help="how many loops")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--gmd", help="Groove MIDI Dataset folder: real grooves for some loops")
    synth.add_argument("--groove-share", type=float, default=0.5, help="share of GMD drums")
    synth.add_argument("--styles", help="comma-separated subset of the styles")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_data_synth)
    _add_train(sub)

    export = sub.add_parser("export", help="export a checkpoint to an ONNX model folder")
    export.add_argument("checkpoint", help="checkpoint.pt or its run folder")
    export.add_argument("--out", required=True, help="model folder to write")
    export.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    export.set_defaults(func=_cmd_export)

    cont = sub.add_parser("continue", help="continue a MIDI file offline")
    cont.add_argument("input", help="MIDI file to continue")
    cont.add_argument("-o", "--output", required=True, help="MIDI file to write")
    cont.add_argument("--bars", type=int, default=4, help="bars to generate")
    cont.add_argument("--model", help="model folder (default: the bundled model)")
    cont.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_generation_options(cont)
    cont.set_defaults(func=_cmd_continue)

    run = sub.add_parser("run", help="start the daemon (virtual ports Ostinato In / Out)")
    run.add_argument("--model", help="model folder (default: the bundled model)")
    run.add_argument("--backend", choices=["alsa", "jack", "coremidi", "winmm"],
                     help="MIDI backend (default: the platform's)")  # fmt: skip
    run.add_argument("--in", dest="in_port", help="open this existing input port instead")
    run.add_argument("--out", dest="out_port", help="open this existing output port instead")
    run.add_argument("--clock", choices=["midi", "auto", "internal"],
                     help="tempo source: midi (only the DAW's clock; default), auto (--bpm "
                     "until MIDI clock comes), internal (--bpm)")  # fmt: skip
    run.add_argument("--bpm", type=float, help="internal tempo (default 120)")
    run.add_argument("--meter", default="4/4", help="4/4, 3/4, 6/8, 7/8 …")
    run.add_argument("--mode", choices=["continue", "jam", "loop"])
    run.add_argument("--bars", type=int, help="bars of answer in continue mode")
    run.add_argument("--phrase-bars", type=int, help="answer a phrase after this many bars")
    run.add_argument("--latency-ms", type=float, help="output offset (may be negative)")
    run.add_argument("--device", choices=["auto", "cuda", "cpu"])
    run.add_argument("--rt-priority", type=int, help="real-time (SCHED_FIFO) priority of "
                     "the note sender, below JACK's 10 (default 5; 0 = off)")  # fmt: skip
    run.add_argument("--config", help="TOML file with any of these settings (default: "
                     "~/.config/ostinato/config.toml when it exists)")  # fmt: skip
    run.add_argument("--stats-json", type=Path, help="write timing statistics here on exit")
    run.add_argument("--osc-port", type=int, help="OSC control port (default 9000)")
    run.add_argument("--osc-host", help="OSC address to listen on (default 127.0.0.1)")
    run.add_argument("--osc-allow-remote", action="store_true", default=None,
                     help="allow --osc-host to be reachable from other machines")  # fmt: skip
    run.add_argument("--no-osc", action="store_true", help="no OSC control server")
    _add_generation_options(
        run, with_defaults=False,
        programs_help="instruments Ostinato plays, e.g. drums,33 (GM programs; drums = -1)",
    )  # fmt: skip
    run.set_defaults(func=_cmd_run)

    gui = sub.add_parser("gui", help="the control panel (starts a daemon if none answers)")
    gui.add_argument("--host", help="the daemon's OSC host (default 127.0.0.1)")
    gui.add_argument("--port", type=int, help="the daemon's OSC port (default 9000)")
    gui.add_argument("--no-start", action="store_true", help="never start a daemon")
    gui.add_argument(
        "daemon_args",
        nargs=argparse.REMAINDER,
        help="after --: options for the daemon it starts (as for `ostinato run`)",
    )
    gui.set_defaults(func=_cmd_gui)

    ports = sub.add_parser("ports", help="list MIDI ports per backend")
    ports.add_argument("--backend", choices=["alsa", "jack", "coremidi", "winmm"])
    ports.set_defaults(func=_cmd_ports)

    doctor = sub.add_parser("doctor", help="check this machine, one line each, with fixes")
    doctor.add_argument("--model", help="model folder (default: the bundled model)")
    doctor.add_argument("--config", help="TOML config file to validate")
    doctor.set_defaults(func=_cmd_doctor)

    ev = sub.add_parser("eval", help="likelihood and continuation metrics against baselines")
    ev.add_argument("model", help="model folder")
    ev.add_argument("data_dir", help="corpus folder made by `ostinato data build`")
    ev.add_argument("--windows", type=int, default=48, help="held-out continuation windows")
    ev.add_argument("--nll-windows", type=int, default=32, help="likelihood windows")
    ev.add_argument("--json", help="also write the report to this JSON file")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_generation_options(ev, programs_help=None, seed=0)
    ev.set_defaults(func=_cmd_eval)

    bench = sub.add_parser("bench", help="measure the engine against PyTorch and the bar budget")
    bench.add_argument("--model", help="model folder (default: the bundled model)")
    bench.add_argument("--json", help="also write the full report to this JSON file")
    bench.add_argument("--steps", type=int, default=256, help="decode steps to time")
    bench.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    bench.add_argument("--trials", type=int, default=24, help="bars for the bar budget")
    bench.add_argument(
        "--realtime",
        action="store_true",
        help="the daemon through a private JACK server, jam mode, 120 and 180 BPM",
    )
    bench.add_argument("--bars", type=int, default=200, help="bars per tempo with --realtime")
    bench.add_argument("--tempos", type=_tempos, default=(120, 180), metavar="BPM[,BPM…]",
                       help="tempos with --realtime (default 120,180)")  # fmt: skip
    bench.add_argument("--periods", type=_periods, default=(64, 1024),
                       metavar="FRAMES[,FRAMES…]",
                       help="JACK periods with --realtime (default 64,1024)")  # fmt: skip
    bench.add_argument("--png", help="lateness histogram with --realtime")  # fmt: skip
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from ostinato.daemon.engine import ModelError
    from ostinato.daemon.ports import PortError

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CommandError, FileNotFoundError, ValueError, ModelError, PortError) as exc:
        print(f"ostinato {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
