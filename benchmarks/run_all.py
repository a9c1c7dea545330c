"""Run every benchmark in turn: ``python -m benchmarks.run_all [NAME ...]``.

Each benchmark prints its own Markdown-ready numbers; copy them, with the date and the
machine, into ``docs/benchmarks.md``. Run on a quiet machine: every goal is a ratio against
a yardstick measured in the same run, but other load still skews both sides unevenly.
"""

from __future__ import annotations

import argparse
import runpy
import sys

BENCHMARKS = (
    "bench_synthesize",
    "bench_download",
    "bench_archive",
    "bench_models",
    "bench_training",
    "bench_verification",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"default: all of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; valid: {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        print(f"\n# ===== {name} =====", flush=True)
        saved = sys.argv
        sys.argv = [f"benchmarks.{name}"]
        try:
            runpy.run_module(f"benchmarks.{name}", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (0, None):
                return int(exc.code) if isinstance(exc.code, int) else 1
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
