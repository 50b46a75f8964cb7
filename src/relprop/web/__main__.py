"""``python -m relprop.web`` — the same as ``relprop serve``."""

from __future__ import annotations

from .command import serve

if __name__ == "__main__":
    serve(prog_name="relprop serve")
