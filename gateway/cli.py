"""The ``rymi-gateway`` command line.

Subcommands are added by the layers that own them; this module only builds the parser
and dispatches, so that ``rymi-gateway --version`` stays instant (nothing heavy is
imported before a subcommand needs it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="rymi-gateway",
        description="Real-time voice media gateway for AI voice agents.",
    )
    parser.add_argument("--version", action="version", version=f"rymi-gateway {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
