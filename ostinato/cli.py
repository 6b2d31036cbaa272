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
