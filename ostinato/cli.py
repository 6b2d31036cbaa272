"""The ``ostinato`` command. Each subcommand imports what it needs when it runs, so
``ostinato --help`` is quick and the runtime commands never import torch."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from ostinato import __version__

log = logging.getLogger("ostinato")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        print(f"ostinato {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
