"""The ``relprop`` console command's first code, kept outside the ``relprop`` package on purpose.

Importing anything from ``relprop`` imports torch first (a second or more). A Ctrl-C in that
time would print a traceback from deep inside the import system; started from here, it ends
the command like a Ctrl-C at any later moment: one line, exit status 130. (Once the command
runs, :func:`relprop.clitools.stopping_quietly` takes over, and also removes temporary files.)
"""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    """Import relprop's command line and run it; a Ctrl-C while importing exits quietly with 130."""
    try:
        from relprop.cli import run as relprop_command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    relprop_command()


if __name__ == "__main__":
    run()
