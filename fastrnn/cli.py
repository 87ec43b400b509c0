"""The `fastrnn` command line (also `python -m fastrnn`)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def _cmd_check(args: argparse.Namespace) -> int:
    from . import build_info, set_num_threads
    from .check import format_table, run_check

    if args.threads is not None:
        set_num_threads(args.threads)
    info = build_info()
    print(f"fastrnn {info['version']}: kernel {info['isa']} (best on this CPU: {info['best_isa']}), "
          f"OpenMP {'on' if info['openmp'] else 'off'}, {info['threads']} threads")
    rows = run_check(seed=args.seed)
    print(format_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(f"FAILED: {len(bad)} of {len(rows)} kernels differ from the reference", file=sys.stderr)
        return 1
    print(f"all {len(rows)} kernels match the reference")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastrnn", description="Fast CPU recurrent networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="verify every compiled kernel against the NumPy reference")
    check.add_argument("--seed", type=int, default=0, help="random seed for the test data")
    check.add_argument("--threads", type=_positive_int, default=None, help="kernel threads")
    check.set_defaults(run=_cmd_check)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
