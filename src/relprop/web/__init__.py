"""The interactive web app (``relprop serve``): upload an image, pick a rule, see the heatmap.

Needs the ``web`` extra (``pip install 'relprop[web]'``: FastAPI, uvicorn, python-multipart,
scikit-image for the sample photographs). ``create_app(WebSettings(...))`` builds the ASGI
application; ``relprop.web.command.serve`` is the click command that runs it.

``create_app`` and ``WebSettings`` are imported on first use, so that the command line can
register ``serve`` without importing FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
