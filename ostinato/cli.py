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
from ostinato.config import default_model_dir

log = logging.getLogger("ostinato")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _write_json(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _cmd_data_build(args: argparse.Namespace) -> int:
    from ostinato.model.corpus import build_corpus, read_hold_out

    try:
        hold_out = read_hold_out(args.hold_out) if args.hold_out else None
    except OSError as exc:
        raise CommandError(f"cannot read the hold-out list {args.hold_out}: {exc}") from exc
    summary = build_corpus(
        args.src,
        args.out,
        tokenizer_path=args.tokenizer,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        workers=args.workers,
        progress=not args.quiet,
        musicxml_cache=None if args.no_cache else args.cache,
        hold_out=hold_out,
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


def _cmd_data_loops(args: argparse.Namespace) -> int:
    from ostinato.loops.heldout import write_held_out

    summary = write_held_out(args.held_out, args.count, seed=args.seed, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ostinato.model.train import Trainer, end_rank, train_config_from_args

    trainer = Trainer(args.data_dir, args.out, train_config_from_args(args))
    try:
        result = trainer.run(resume=args.resume, stop_after=args.stop_after)
    finally:
        ranked = trainer.close()
    print(json.dumps(result, indent=2))
    if ranked:  # a torchrun rank: its process group's threads outlive it (see end_rank)
        end_rank(0)
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
    p.add_argument("--style-dropout", type=float,
                   help="share of windows whose style token is 'none' (default 0.15)")  # fmt: skip
    p.add_argument("--no-pack", dest="pack", action="store_const", const=False,
                   help="PAD windows past their file's end (default: pack more files)")  # fmt: skip
    p.add_argument("--instruments", type=float,
                   help="share of files in a window whose instruments are redrawn within "
                   "their role (default 0.5; 0 = off)")  # fmt: skip
    p.add_argument("--no-header", dest="header", action="store_const", const=False,
                   help="bars without the instrument header (the language before it)")  # fmt: skip
    p.add_argument("--partial", type=float,
                   help="share of files in a window whose last bars keep only some of their "
                   "instruments (default 0.3)")  # fmt: skip
    p.add_argument("--entering", type=float,
                   help="share of files in a window with an instrument entering part-way "
                   "(default 0.2)")  # fmt: skip
    p.add_argument("--cut", type=float,
                   help="share of files in a window whose last bar keeps a subset of its "
                   "instruments after a position (default 0.15)")  # fmt: skip
    p.add_argument("--loops", type=float,
                   help="share of a window's files that start with a phrase looped 2 to 4 "
                   "times, as a DAW loops it: a loop file (at most 8 bars) whole, else 1, 2, "
                   "4 or 8 bars (default 0: off)")  # fmt: skip
    p.add_argument("--drum-kit", type=float,
                   help="share of a window's files whose drums are redrawn, each to another "
                   "of its kind (a kick to a kick, toms in their order): the drums to play "
                   "are read from the context, not remembered from a song "
                   "(default 0)")  # fmt: skip
    p.add_argument("--drum-remap", type=float,
                   help="share of a window's files whose drums are each moved to any other "
                   "drum key (two never merged), before --drum-kit: with no kit to "
                   "remember, a loop's drums can only be copied from the bars before "
                   "(default 0)")  # fmt: skip
    p.add_argument("--rhythm", type=float,
                   help="share of a window's files whose bars' half beats after the downbeat "
                   "are put in another order, the same in every bar, every part alike: a "
                   "rhythm no song has, read from the bars before (default 0)")  # fmt: skip
    p.add_argument("--pitch-remap", type=float,
                   help="share of a window's files whose twelve pitch classes are put in a "
                   "random order, one for every part, each note kept in its octave: no scale "
                   "or chord shape to recall, so a riff or a voicing is copied from the bars "
                   "before (default 0)")  # fmt: skip
    p.add_argument("--weights", metavar="SRC=W,…",
                   help="sampling weight per source folder of the corpus, e.g. "
                   "freedoom-midi=4,synth=0.5 (default 1 each)")  # fmt: skip
    p.add_argument("--init", metavar="MODEL",
                   help="start a new run from the weights of this model folder")  # fmt: skip
    p.add_argument("--previous-token", action="store_const", const=True,
                   help="a new model's tokens also enter with an embedding of the token before "
                   "each, which copying a bar needs (starts at zero: with --init, the same "
                   "model at step 0)")  # fmt: skip
    p.add_argument("--bar-rotary", action="store_const", const=True,
                   help="a new model turns every other rotary pair of its heads with each "
                   "token's place in its bar, not in the sequence: a head finds the same place "
                   "in an earlier bar")  # fmt: skip
    p.add_argument("--onset-places", action="store_const", const=True,
                   help="with --bar-rotary: count that place in music (the position of the "
                   "token's onset), not in tokens, so the same onset in another bar is at the "
                   "same place however many notes came before it there")  # fmt: skip
    p.add_argument("--place-stride", type=int,
                   help="with --onset-places: onsets this many places apart, a note's tokens "
                   "counted from its onset within them (default 1: all at the onset's "
                   "place)")  # fmt: skip
    p.add_argument("--bar-echo", action="store_const", const=True,
                   help="with --bar-rotary: a new model's tokens also enter with their echo, "
                   "the token that followed the same place in the bar before, so repeating "
                   "that bar is one input away (starts at zero: with --init, the same model "
                   "at step 0)")  # fmt: skip
    p.add_argument("--echo-lr", type=float,
                   help="with --bar-echo: the peak learning rate of the echo's embedding "
                   "(default: --lr), higher so one added to an --init model grows in a short "
                   "run")  # fmt: skip
    p.add_argument("--copy-head", action="store_const", const=True,
                   help="a new model mixes a pointer over the context into its output (a "
                   "copy head that plays what followed moments like this one): the next "
                   "note of a riff or a groove heard before is one attention away; with "
                   "--init, added to that model with its gate nearly closed")  # fmt: skip
    p.add_argument("--copy-lr", type=float,
                   help="with --copy-head: the peak learning rate of the copy head "
                   "(default: --lr), higher so one added to an --init model opens in a short "
                   "run")  # fmt: skip
    p.add_argument("--copy-aux", type=float,
                   help="with --copy-head: the weight of the pointer's own loss (default 0.3), "
                   "so it learns where to look while its gate is still nearly closed")  # fmt: skip
    p.add_argument("--own-bars", type=float,
                   help="share of windows in which the model plays one or two bars itself "
                   "(at the daemon's temperature, under their header) and is trained on the "
                   "real bars after them: it learns to come back to the song after its own "
                   "bars, as when it plays on alone (default 0)")  # fmt: skip
    p.add_argument("--layers", type=int,
                   help="a new model's layers (default: its --size's); with --init from a model "
                   "with fewer, the layers added on top start adding nothing (the same model "
                   "at step 0)")  # fmt: skip
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-batches", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int,
                   help="processes drawing the training windows beside the steps (default 0: "
                   "drawn between them, --resume goes on bit for bit; a GPU: 4-8)")  # fmt: skip
    p.add_argument("--compile", action="store_const", const=True,
                   help="torch.compile the network for the training steps (on a GPU)")  # fmt: skip
    p.add_argument("--minutes", type=float,
                   help="train about this long: --steps is set from the rate of 50 steps "
                   "(from step 10 + 4 a worker; a longer warm-up keeps the schedule smooth) "
                   "and kept for --resume with the same command")  # fmt: skip
    p.set_defaults(func=_cmd_train)


def _settings_from(args: argparse.Namespace):
    from ostinato.model.sampling import SamplingSettings

    return SamplingSettings(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )


def _setting_type(name: str) -> Callable[[str], object]:
    """argparse ``type=`` for a setting: the schema reads and checks the text."""
    from ostinato.settings import SETTINGS, SettingError

    def read(text: str) -> object:
        try:
            return SETTINGS[name].from_text(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    read.__name__ = name
    return read


def _add_setting(
    group, name: str, *, default: object = argparse.SUPPRESS, help: str | None = None
) -> None:
    """One option of the schema's setting ``name``. With the default SUPPRESS an option not
    given is absent from the namespace, so it overrides nothing from a config file."""
    from ostinato.settings import SETTINGS, shown

    s = SETTINGS[name]
    text = help or s.help
    if s.default is not None and s.kind not in ("out_channels", "in_channels"):  # (in the help)
        value = f"{s.default:g}" if s.kind == "float" else shown(s.default).strip("'")
        unit = s.unit[:-1] if s.unit.endswith("s") and s.default == 1 else s.unit  # 1 beat
        text += f" (default {value}{' ' + unit if unit else ''})"
    elif s.auto or s.bar:
        text += f" (default {'auto' if s.auto else 'bar'})"
    if s.kind == "bool":
        group.add_argument(s.flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=default, help=text)  # fmt: skip
        return
    metavar = "{" + ",".join(s.choices) + "}" if s.choices else name.upper()
    if s.auto:
        metavar += "|auto"
    if s.bar:
        metavar = f"bar|{s.unit.upper() or metavar}"
    group.add_argument(s.flag, dest=name, type=_setting_type(name), default=default,
                       metavar=metavar, help=text)  # fmt: skip


def _add_generation_options(
    p: argparse.ArgumentParser,
    *,
    programs_help: str | None = "enabled instruments, e.g. drums,33,4 (default: the input's)",
    seed: int | None = None,
) -> None:
    """The sampling options every offline generating command takes, from the schema."""
    from ostinato.settings import SETTINGS

    g = p.add_argument_group("generation")
    for name in ("temperature", "top_k", "top_p", "repetition_penalty", "key_lock", "style",
                 "guidance", "density"):  # fmt: skip
        _add_setting(g, name, default=SETTINGS[name].default)
    if programs_help:
        _add_setting(g, "programs", default=None, help=programs_help)
    seed_help = "random seed" + (f" (default {seed})" if seed is not None else "")
    _add_setting(g, "seed", default=seed, help=seed_help)


def _cmd_average(args: argparse.Namespace) -> int:
    from ostinato.model.train import average_runs

    ckpt = average_runs(args.runs, args.out)
    print(json.dumps({"runs": ckpt["averaged"], "model": ckpt["model_args"]}, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ostinato.exporter.export import export_model

    card = export_model(args.checkpoint, args.out, fp16=args.fp16, int8=args.int8,
                        context=args.context)  # fmt: skip
    print(json.dumps({k: card[k] for k in ("parameters", "window", "context", "precision")} |
                     {"parity": card.get("parity"), "int8": card.get("int8")},
                     indent=2))  # fmt: skip
    return 0


def _cmd_continue(args: argparse.Namespace) -> int:
    from ostinato.engine.engine import Engine
    from ostinato.engine.offline import continue_file

    engine = Engine(args.model or default_model_dir(), device=args.device)
    result = continue_file(
        engine, args.input, args.output, bars=args.bars, settings=_settings_from(args),
        programs=args.programs, seed=args.seed, key_lock=args.key_lock,
        variation=args.variation, style=args.style, guidance=args.guidance,
        density=args.density,
    )  # fmt: skip
    answer = "an answer as long as the phrase" if args.bars is None else f"{args.bars} bars"
    print(
        f"{args.output}: {result.input_bars} bars in, {answer} generated "
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


def _bench_commit(text: str) -> str:
    """The commit setting as the daemon's command line takes it, checked as the daemon would."""
    from ostinato.settings import format_commit

    return format_commit(_setting_type("commit")(text))  # type: ignore[arg-type]


def _cmd_bench(args: argparse.Namespace) -> int:
    from ostinato.bench import format_report, run_bench

    if not args.accompany and (args.changing or args.daemon_args):
        raise CommandError("--changing and --daemon-args are for --accompany")
    if args.keys and not args.realtime:
        raise CommandError("--keys is for --realtime")
    if args.commit and not (args.accompany or args.realtime):
        raise CommandError("--commit is for --accompany and --realtime")
    if args.accompany:
        import shlex

        from ostinato.bench_accompany import format_accompany, run_accompany_bench

        model = Path(args.model) if args.model else Path(str(default_model_dir()))
        report = run_accompany_bench(model, bpm=args.tempos[0], bars=args.accompany_bars,
                                     programs=args.programs, changing=args.changing,
                                     commit=args.commit,
                                     extra_args=tuple(shlex.split(args.daemon_args)))  # fmt: skip
        print(format_accompany(report))
        report["runs"] = [{k: v for k, v in r.items() if not k.startswith("_")}
                          for r in report["runs"]]  # fmt: skip
    elif args.soak is not None:
        from ostinato.bench_soak import format_soak, run_soak

        model = Path(args.model) if args.model else Path(str(default_model_dir()))
        report = run_soak(model, args.soak, png=args.png)
        print(format_soak(report))
    elif args.realtime:
        from ostinato.bench_realtime import format_realtime, run_realtime_bench

        model = Path(args.model) if args.model else Path(str(default_model_dir()))
        # with --commit N each run is made with the bar committed whole too: the cost compared
        commits = ("bar",) if args.commit in (None, "bar") else ("bar", args.commit)
        report = run_realtime_bench(model, bars=args.bars, png=args.png, tempos=args.tempos,
                                    periods=args.periods, commits=commits,
                                    keys=args.keys)  # fmt: skip
        print(format_realtime(report))
    else:
        report = run_bench(
            args.model or default_model_dir(), steps=args.steps, threads=args.threads,
            trials=args.trials,
        )  # fmt: skip
        print(format_report(report))
        if args.markdown:
            from ostinato.bench import format_markdown

            Path(args.markdown).write_text(format_markdown(report))
    if args.json:
        _write_json(report, args.json)
    return 0


def _variations(text: str) -> tuple[float, ...]:
    try:
        variations = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"variations are numbers, e.g. 0,0.3: {text!r}") from None
    if not all(0.0 <= v <= 1.0 for v in variations):
        raise argparse.ArgumentTypeError(f"variations must be in [0, 1]: {text!r}")
    return variations


def _cmd_eval(args: argparse.Namespace) -> int:
    from ostinato.evaluate.continuation import evaluate, format_table

    mode = args.mode
    if args.windows is None:
        args.windows = 4 if mode == "jam" else 48
    if args.corpus and mode != "loop":
        raise CommandError("--corpus is for --mode loop")
    if args.variation and mode not in ("continuation", "loop", "accompany"):
        raise CommandError("--variation is for --mode continuation, loop and accompany")
    if args.variation and mode == "accompany" and len(args.variation) != 1:
        raise CommandError("--mode accompany takes one --variation (the jam's, default 0.3)")
    if mode != "accompany" and (args.programs is not None or args.context_parts is not None
                                or hasattr(args, "commit")):  # fmt: skip
        raise CommandError("--programs, --context-parts and --commit are for --mode accompany")
    if args.rolls and mode == "jam":
        raise CommandError("--rolls is for --mode continuation, loop and accompany")
    sampling = dict(
        seed=args.seed, settings=_settings_from(args), key_lock=args.key_lock,
        progress=not args.quiet, style=args.style, guidance=args.guidance, density=args.density,
    )  # fmt: skip
    if mode == "jam":
        from ostinato.evaluate.jam import evaluate_jam, format_jam

        report = evaluate_jam(args.model, args.data_dir, split=args.split, jams=args.windows,
                              bars=args.bars or 200, **sampling)  # fmt: skip
        text = format_jam(report)
    elif mode == "accompany":
        from ostinato.evaluate.accompany import DEFAULT_BARS, evaluate_accompany, format_accompany

        report = evaluate_accompany(
            args.model, args.data_dir, split=args.split, windows=args.windows,
            bars=args.bars or DEFAULT_BARS, programs=args.programs,
            context=args.context_parts or "all", rolls=args.rolls,
            **({"variation": args.variation[0]} if args.variation else {}),
            **({"commit": args.commit} if hasattr(args, "commit") else {}), **sampling,
        )  # fmt: skip
        text = format_accompany(report)
    elif mode == "loop":
        from ostinato.evaluate.loop import DEFAULT_VARIATIONS, evaluate_loop

        report = evaluate_loop(
            args.model, args.data_dir, corpus=args.corpus, windows=args.windows,
            nll_windows_count=args.nll_windows, variations=args.variation or DEFAULT_VARIATIONS,
            rolls=args.rolls, **sampling,
        )  # fmt: skip
        text = format_table(report)
    else:
        groups = [g for g in (args.groups or "").split(",") if g]
        report = evaluate(args.model, args.data_dir, split=args.split, windows=args.windows,
                          nll_windows_count=args.nll_windows, variations=args.variation or (),
                          rolls=args.rolls, groups=groups or None, **sampling)  # fmt: skip
        text = format_table(report)
    print(text)
    if args.json:
        _write_json(report, args.json)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """Defaults, then the config file, then the options given: each checked by the schema."""
    from ostinato.config import default_config_path, load_config
    from ostinato.daemon.daemon import DaemonConfig, run_daemon
    from ostinato.settings import (
        DAEMON,
        GENERATION,
        SETTINGS,
        GenerationSettings,
        meter_pair,
        parse_meter,
    )

    config_path = Path(args.config) if args.config else default_config_path()
    config = load_config(config_path, missing_ok=not args.config)
    given = {k: v for k, v in vars(args).items() if k in SETTINGS}
    values = {name: s.default for name, s in SETTINGS.items()} | config.values | given
    daemon = {k: values[k] for k in DAEMON if k not in ("model", "meter", "osc")}
    if not values["osc"]:
        daemon["osc_port"] = None
    daemon_config = DaemonConfig(
        model_dir=values["model"] or Path(str(default_model_dir())),
        beats_per_bar=parse_meter(values["meter"]),
        meter=meter_pair(values["meter"]),
        settings=GenerationSettings(**{k: values[k] for k in GENERATION}),
        config_path=config_path,
        cc_map=config.cc_map,
        **daemon,
    )
    return run_daemon(daemon_config)


def _cmd_sessions(args: argparse.Namespace) -> int:
    from ostinato.config import default_config_path, load_config
    from ostinato.daemon.session_file import list_sessions
    from ostinato.settings import SETTINGS

    setting = SETTINGS["record"]
    if args.record:
        folder = setting.from_text(args.record)
    else:
        config_path = Path(args.config) if args.config else default_config_path()
        config = load_config(config_path, missing_ok=not args.config)
        folder = config.values.get("record", setting.check(setting.default))
    if folder is None:
        raise CommandError("recording is off (record = off): there is no sessions folder")
    folder = Path(folder).expanduser()
    rows = list_sessions(folder) if folder.is_dir() else []
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no sessions in {folder}")
        return 0
    print(f"sessions in {folder} (newest first):")
    for r in rows:
        if "error" in r:
            print(f"  {r['file']}  cannot be read: {r['error']}")
            continue
        minutes, seconds = divmod(round(r["seconds"]), 60)
        print(f"  {r['file']}  {minutes}:{seconds:02d}  {r['input_notes']} notes in, "
              f"{r['ostinato_notes']} out, {r['tracks']} tracks, {r['markers']} markers, "
              f"{r['bytes'] / 1024:.0f} KiB")  # fmt: skip
    return 0


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

    checks, status = run_doctor(Path(args.model) if args.model else None, args.config)
    for check in checks:
        print(check.line())
    print("ready to run" if status == 0 else "something blocks `ostinato run` (see FAIL above)")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ostinato",
        description="Real-time MIDI continuation: listens to your loop, plays what comes next.",
    )
    parser.add_argument("--version", action="version", version=f"ostinato {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = sub.add_parser("data", help="build training corpora from MIDI and MusicXML files")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = data_sub.add_parser(
        "build", help="tokenize a folder of MIDI and MusicXML files into train/validation arrays"
    )
    build.add_argument("src", help="folder scanned recursively for .mid/.midi and MusicXML "
                       "(.mxl/.musicxml/.xml) files")  # fmt: skip
    build.add_argument("out", help="output folder (arrays, tokenizer.json, summary.json)")
    build.add_argument("--tokenizer", help="tokenizer.json to use (default: a new REMI+ one)")
    build.add_argument("--validation-fraction", type=float, default=0.1)
    build.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    build.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    build.add_argument("--cache", default="build/cache/musicxml", metavar="DIR",
                       help="converted MusicXML by content (default: %(default)s)")  # fmt: skip
    build.add_argument("--no-cache", action="store_true", help="convert MusicXML every time")
    build.add_argument("--hold-out", metavar="LIST",
                       help="file of paths (globs relative to SRC) or composer:NAME lines kept "
                       "out of training, written as the heldout split for evaluation")  # fmt: skip
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
    loops = data_sub.add_parser(
        "loops", help="write a held-out loop set (progressions, instruments and tempos the "
        "synth generator never uses) for `ostinato eval --mode loop`",
    )  # fmt: skip
    loops.add_argument("--held-out", required=True, metavar="OUT_DIR",
                       help="output folder (16-bar MIDI files, heldout.csv)")  # fmt: skip
    loops.add_argument("--count", type=int, default=24, help="how many loops (default 24)")
    loops.add_argument("--seed", type=int, default=0)
    loops.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    loops.set_defaults(func=_cmd_data_loops)
    _add_train(sub)

    average = sub.add_parser(
        "average", help="average the weights of runs that started from one model (a new run "
        "folder to export)")  # fmt: skip
    average.add_argument("runs", nargs="+", help="checkpoint.pt files or their run folders")
    average.add_argument("--out", required=True, help="run folder to write")
    average.set_defaults(func=_cmd_average)

    export = sub.add_parser("export", help="export a checkpoint to an ONNX model folder")
    export.add_argument("checkpoint", help="checkpoint.pt or its run folder")
    export.add_argument("--out", required=True, help="model folder to write")
    export.add_argument("--fp16", action="store_true", help="half precision (CUDA only)")
    export.add_argument("--int8", action="store_true",
                        help="8-bit weights (ONNX Runtime dynamic quantization); the card "
                             "records their greedy agreement with fp32")  # fmt: skip
    export.add_argument("--context", type=int, metavar="TOKENS",
                        help="tokens the engine attends to by default (default: the training "
                             "window; fewer cost less per note)")  # fmt: skip
    export.set_defaults(func=_cmd_export)

    from ostinato.settings import DAEMON, GENERATION, SETTINGS

    cont = sub.add_parser("continue", help="continue a MIDI file offline")
    cont.add_argument("input", help="MIDI file to continue")
    cont.add_argument("-o", "--output", required=True, help="MIDI file to write")
    cont.add_argument("--model", help="model folder (default: the bundled model)")
    cont.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_generation_options(cont)
    answer = cont.add_argument_group("answer")
    _add_setting(answer, "bars", default=SETTINGS["bars"].default,
                 help="bars to generate (auto: as long as the phrase it continues)")  # fmt: skip
    _add_setting(answer, "variation", default=SETTINGS["variation"].default,
                 help="how much the answer varies the phrase it continues: 0 = the phrase "
                 "again, 1 = free continuation")  # fmt: skip
    cont.set_defaults(func=_cmd_continue)

    run = sub.add_parser(
        "run",
        help="start the daemon (virtual ports Ostinato In / Out)",
        description="Every option can also be set in the config file, under its name with "
        "underscores (top_k = 40); an option given here wins over the file.",
    )
    run.add_argument("--config", help="TOML file with any of these settings (default: "
                     "~/.config/ostinato/config.toml when it exists)")  # fmt: skip
    for title, names in (("daemon", DAEMON), ("generation", GENERATION)):
        group = run.add_argument_group(title)
        for name in names:
            _add_setting(group, name)
        if title == "daemon":
            group.add_argument("--no-record", dest="record", action="store_const", const=None,
                               default=argparse.SUPPRESS,
                               help="record nothing (the same as --record off)")  # fmt: skip
    run.set_defaults(func=_cmd_run)

    sessions = sub.add_parser("sessions", help="list the recorded sessions (MIDI files)")
    sessions.add_argument("--record", metavar="DIR",
                          help="the sessions folder (default: the config's, else "
                          "~/.local/share/ostinato/sessions)")  # fmt: skip
    sessions.add_argument("--config", help="TOML config file to read the folder from")
    sessions.add_argument("--json", action="store_true", help="print JSON")
    sessions.set_defaults(func=_cmd_sessions)

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
    ev.add_argument("data_dir", help="corpus folder made by `ostinato data build` (loop "
                    "mode: or MIDI files, e.g. from `ostinato data loops --held-out`)")  # fmt: skip
    ev.add_argument("--mode", choices=["continuation", "loop", "jam", "accompany"],
                    default="continuation",
                    help="continuation: 4 bars → the next 4; loop: one pass of each loop → "
                    "the next pass, varied by the copy prior; jam: 4 bars → BARS bars played "
                    "self-fed (density over time), and bars in every meter of the model; "
                    "accompany: the musician's parts of multi-track music as heard, the asked-"
                    "for parts (bass and drums) generated bar by bar under them "
                    "(default continuation)")  # fmt: skip
    ev.add_argument("--bars", type=int, help="jam mode: bars per jam (default 200); accompany "
                    "mode: bars generated per window (default 8)")  # fmt: skip
    ev.add_argument("--corpus", help="loop mode, MIDI files as DATA_DIR: corpus folder whose "
                    "train split fits the n-gram (default: the model's, if known)")  # fmt: skip
    ev.add_argument("--variation", type=_variations, metavar="V[,V…]",
                    help="copy-prior variations: loop mode (default 0,0.3,0.6,1), or "
                    "continuation rows beside the free model's (continue mode: 0.3), or "
                    "accompany mode's one (varying the bar before; default 0.3)")  # fmt: skip
    ev.add_argument("--windows", type=int,
                    help="windows (continuation, loop and accompany modes), or jams in jam "
                         "mode (default 48; jam: 4)")  # fmt: skip
    ev.add_argument("--nll-windows", type=int, default=32, help="likelihood windows")
    ev.add_argument("--split", choices=("validation", "heldout"), default="validation",
                    help="continuation, jam and accompany modes: the corpus split (heldout: "
                         "what `data build --hold-out` kept out) (default validation)")  # fmt: skip
    ev.add_argument("--groups", metavar="GROUP[,GROUP…]",
                    help="continuation mode: windows only from files of these groups (the "
                         "first folder of a file's source path, e.g. freedoom-midi), several "
                         "from a file where there are fewer files than --windows")  # fmt: skip
    ev.add_argument("--context-parts", choices=("all", "musician"),
                    help="accompany mode: the context bars before the first generated bar hold "
                         "all parts (Ostinato had been playing along) or the musician's alone "
                         "(Ostinato joins) (default all)")  # fmt: skip
    _add_setting(ev, "commit", help="accompany mode: as the daemon's jam, Ostinato's bar is "
                 "planned again from each commit point on, hearing what the musician played "
                 "of it so far")  # fmt: skip
    ev.add_argument("--rolls", metavar="DIR",
                    help="write piano rolls (PNG) of the first windows here: the context, the "
                         "real continuation and each continuer's (needs matplotlib)")  # fmt: skip
    ev.add_argument("--json", help="also write the report to this JSON file")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_generation_options(ev, programs_help="accompany mode: the parts Ostinato plays, e.g. "
                            "drums,33 (default: each window's bass and drums)", seed=0)  # fmt: skip
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
    bench.add_argument(
        "--markdown",
        metavar="FILE",
        help="the decode table and bar budget as markdown (docs/benchmarks)",
    )
    bench.add_argument("--png", help="lateness histogram with --realtime, plot with --soak")
    bench.add_argument("--accompany", action="store_true",
                       help="jam mode under a keyboard player's chord progressions through a "
                       "private JACK server: bass and drum bars, bass chord tones (at the first "
                       "of --tempos)")  # fmt: skip
    bench.add_argument(
        "--accompany-bars",
        type=int,
        help="bars per progression with --accompany (default 12, three passes; 24 changing)",
    )
    bench.add_argument(
        "--changing",
        action="store_true",
        help="with --accompany: chords that never loop (a new chord each bar, then two a bar) "
        "instead of the looped progressions: bass chord tones on beats 2-4 and on beat 1, and "
        "whether the bass follows each change from the next commit point",
    )
    bench.add_argument(
        "--commit",
        type=_bench_commit,
        metavar="bar|BEATS",
        help="the daemon's --commit (re-plan the rest of the bar every N beats): with "
        "--accompany the one run (default: the daemon's own); with --realtime each run is made "
        "with bar and with N, the CPU per bar side by side",
    )
    bench.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="the daemon for MINUTES at 240 BPM (jam on drums, bass and keys, recording, a "
        "keyboard player, through a private JACK server): memory and CPU over time, late and "
        "fallback bars, the clock listeners' longest wait, the session file's rewrite time, "
        "position renumbering; --png for a plot",
    )
    bench.add_argument(
        "--keys",
        action="store_true",
        help="with --realtime: a keyboard player changes chords on beats 1 and 3 (chords that "
        "never loop), so that re-plans have something new to follow",
    )
    bench.add_argument(
        "--daemon-args",
        default="",
        metavar="ARGS",
        help="with --accompany: more arguments for the daemon, one string "
        "(--daemon-args='--temperature 0.9')",
    )
    bench.add_argument(
        "--programs",
        default="drums,33",
        help="what Ostinato plays with --accompany (default drums,33)",
    )
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
    from ostinato.daemon.errors import PortError
    from ostinato.engine.engine import ModelError

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CommandError, FileNotFoundError, ValueError, ModelError, PortError) as exc:
        print(f"ostinato {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
