"""The ``stormfusion`` command: one subcommand per pipeline step.

Each step lives in its own module ``stormfusion.cli.<module>`` that defines

- ``HELP``: a one-line summary,
- ``add_arguments(parser)``: its options,
- ``run(args)``: the step itself.

Modules are imported only when their subcommand runs, so ``stormfusion download`` does not
pay for importing torch. Snakemake rules call exactly these subcommands, each with
``--config-hash`` (the hash recorded in every output's provenance).

Failures end the same way in every step, here and only here: bad input
(:class:`~stormfusion.errors.StormFusionError`) and operating-system errors (no space left,
read-only or missing folder, permission) print one line naming the path and the cause and
exit non-zero; Ctrl-C (also while the step's modules are still importing) and SIGTERM exit
with 130 and 143 without a traceback. Temporaries of unfinished outputs are removed on the
way out (:func:`stormfusion.io.atomic_path`).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from types import FrameType, ModuleType
from typing import Any

from stormfusion.errors import StormFusionError, describe_os_error

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
    "lpips-weights": "lpips_weights",
}


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"stormfusion.cli.{COMMANDS[name]}")


def _summary(name: str) -> str:
    try:
        return str(_load(name).HELP)
    except ImportError as exc:  # a broken install should still list the commands
        return f"(unavailable: {exc})"


class _VersionAction(argparse.Action):
    """``--version``: the package version and the commit of the running code (the one baked
    into the image inside a container), looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from stormfusion.provenance import describe

        sys.stdout.write(describe() + "\n")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s options are loaded when it is given."""
    parser = argparse.ArgumentParser(
        prog="stormfusion",
        description="StormFusion-SEVIR pipeline steps. Run 'stormfusion STEP --help' for a step.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and git commit, then exit"
    )
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
            step = sub.add_parser(
                name, help=module.HELP, description=module.HELP, conflict_handler="resolve"
            )
            _add_common_arguments(step)
            module.add_arguments(step)  # a step's own definition of a common option wins
        else:
            sub.add_parser(name, help=_summary(name) if command is None else None)
    return parser


def _add_common_arguments(step: argparse.ArgumentParser) -> None:
    """Options every step takes."""
    step.add_argument(
        "--config-hash",
        default=None,
        help="hash of the workflow config this step runs under (recorded in provenance)",
    )


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that unfinished outputs are cleaned up."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _parse(command: str | None, args_list: list[str]) -> argparse.Namespace:
    """Parse the arguments (importing the step's module) and set up logging."""
    from stormfusion.provenance import set_config_hash

    parser = build_parser(command)
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    set_config_hash(getattr(args, "config_hash", None))
    return args


def _os_error_line(exc: OSError, args: argparse.Namespace | None) -> str:
    """The error line of an OSError; one that names no file (a library writing in the
    background) is put down to the step's outputs (its ``--out*`` options)."""
    if exc.filename is None and args is not None:
        outputs = [str(v) for k, v in sorted(vars(args).items()) if k.startswith("out") and v]
        if outputs:
            return describe_os_error(OSError(exc.errno, exc.strerror or str(exc), outputs[0]))
    return describe_os_error(exc)


def _release_quietly(exc: BaseException) -> None:
    """Free the interrupted step's frames now, with warnings off while they go: a library
    stopped mid-call warns about its half-done work as it is freed (zarr: "coroutine ...
    was never awaited"), noise after the one line an interrupted step prints."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traceback.clear_frames(exc.__traceback__)
        gc.collect()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stormfusion`` console script; returns the exit status.

    0 done, 2 bad input, 1 an operating-system error (disk full, read-only, permission,
    missing folder), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(args_list)
    name = f"stormfusion {command}" if command else "stormfusion"
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    args = None
    try:
        args = _parse(command, args_list)
        _load(args.command).run(args)
    except StormFusionError as exc:
        sys.stderr.write(f"{name}: error: {exc}\n")
        return 2
    except OSError as exc:
        logger.debug("where the error was raised", exc_info=True)  # --log-level DEBUG
        sys.stderr.write(f"{name}: error: {_os_error_line(exc, args)}\n")
        return 1
    except KeyboardInterrupt as exc:
        _release_quietly(exc)
        sys.stderr.write(f"{name}: interrupted\n")
        return 130
    except Terminated as exc:
        _release_quietly(exc)
        sys.stderr.write(f"{name}: terminated\n")
        return 143
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
