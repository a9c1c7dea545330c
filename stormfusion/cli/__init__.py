"""The ``stormfusion`` command: one subcommand per pipeline step.

Each step lives in its own module ``stormfusion.cli.<module>`` that defines

- ``HELP``: a one-line summary,
- ``add_arguments(parser)``: its options,
- ``run(args)``: the step itself.

Modules are imported only when their subcommand runs, so ``stormfusion download`` does not
pay for importing torch. Snakemake rules call exactly these subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from stormfusion import __version__
from stormfusion.errors import StormFusionError

logger = logging.getLogger(__name__)

#: subcommand name -> module under ``stormfusion.cli``, in pipeline order.
COMMANDS: dict[str, str] = {
    "synthesize": "synthesize",
    "download": "download",
    "select-events": "select_events",
    "convert": "convert",
    "split": "split",
    "train": "train",
    "predict": "predict",
    "score": "score",
    "report": "report",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"stormfusion.cli.{COMMANDS[name]}")


def _summary(name: str) -> str:
    try:
        return str(_load(name).HELP)
    except ImportError as exc:  # a broken install should still list the commands
        return f"(unavailable: {exc})"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s options are loaded when it is given."""
    parser = argparse.ArgumentParser(
        prog="stormfusion",
        description="StormFusion-SEVIR pipeline steps. Run 'stormfusion STEP --help' for a step.",
    )
    parser.add_argument("--version", action="version", version=f"stormfusion {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    for name in COMMANDS:
        if command is not None and name == command:
            module = _load(name)
            step = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(step)
        else:
            sub.add_parser(name, help=_summary(name) if command is None else None)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stormfusion`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(args_list))
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    try:
        _load(args.command).run(args)
    except StormFusionError as exc:
        sys.stderr.write(f"stormfusion {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"stormfusion {args.command}: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
