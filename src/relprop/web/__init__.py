"""The interactive web app (``relprop serve``): upload an image, pick a rule, see the heatmap.

Needs the ``web`` extra (``pip install 'relprop[web]'``: FastAPI, uvicorn, python-multipart,
scikit-image for the sample photographs). ``create_app(WebSettings(...))`` builds the ASGI
application; ``relprop.web.command.serve`` is the click command that runs it.
"""

from __future__ import annotations

from .app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]
