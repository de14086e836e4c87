"""`astctc <command>`: each command is a thin wrapper over one module."""

# Start-up time: building the parser imports only the standard library. Each handler imports its
# job's module (torch, numpy, the rest of astctc) inside the handler, when the command runs: the
# sanctioned lazy import that keeps `astctc --help` and `astctc <cmd> --help` fast.
from __future__ import annotations

import argparse
import os
import sys

from . import data, decode, export, hub, infer, train
from .common import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="astctc", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="<command>")
    for group in (data, train, decode, infer, export, hub):
        group.register(sub)
    return p


def error_text(e: BaseException) -> str:
    """What follows "astctc <cmd>: error: ": the message (a KeyError's without the quotes its
    str() adds), or the exception's type when it has none."""
    if isinstance(e, KeyError) and len(e.args) == 1:
        return str(e.args[0])
    return str(e) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting turn any competition for the cores (a DataLoader
    # worker, another job) into 10-200x slower steps on CPU; sleeping waits cost ~nothing.
    # Must be set before torch loads; an explicit value in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    try:
        args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, OSError, KeyError) as e:
        if args.debug or os.environ.get("ASTCTC_DEBUG"):
            raise
        print(f"astctc {args.command}: error: {error_text(e)}", file=sys.stderr)
        return 1
    return 0
