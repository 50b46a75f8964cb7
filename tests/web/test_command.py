"""``relprop serve``: options, user errors as one line with exit status 2, loopback by default."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from click.testing import CliRunner

from relprop.web import command
from relprop.web.command import serve


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the blocking server loop; record what it would have served."""
    calls: list[dict[str, Any]] = []

    def fake_run(app: Any, sock: socket.socket, log_level: str, limit_concurrency: int) -> None:
        calls.append({"app": app, "address": sock.getsockname(), "log_level": log_level, "limit": limit_concurrency})

    monkeypatch.setattr(command, "run_server", fake_run)
    return calls


def test_help_names_the_options_and_the_loopback_default() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--model", "--weights", "--max-upload-mb", "--max-pixels", "--concurrency",
                   "--queue", "--temp-dir", "--device"):  # fmt: skip
        assert option in result.output
    assert "[default: 127.0.0.1]" in result.output


def test_serves_the_digits_model_on_loopback_by_default(started: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(serve, ["--port", "0", "--concurrency", "3", "--queue", "5", "--max-upload-mb", "2"])
    assert result.exit_code == 0, result.output
    (call,) = started
    host, port = call["address"]
    assert host == "127.0.0.1" and port > 0
    assert result.stdout.startswith(f"relprop web app on http://127.0.0.1:{port}/ (models: digits)")
    settings = call["app"].state.settings
    assert (settings.max_concurrent, settings.max_queue, settings.max_upload_bytes) == (3, 5, 2 * 2**20)
    assert settings.models == ("digits",)
    assert call["limit"] >= 8
    assert result.stderr == ""


def test_another_host_is_allowed_with_a_warning(started: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(serve, ["--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: listening on 0.0.0.0 makes the app reachable from other machines")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet5000"], "error: unknown model 'resnet5000'; use 'digits', a torchvision name"),
        (["--model", "digits", "--weights", "a.pt", "--weights", "b.pt"], "error: got 2 --weights for 1 --model"),
        (["--device", "cuda"], "error: device 'cuda' was requested but CUDA is not available here"),
        (["--host", "no-such-host.invalid"], "error: --host 'no-such-host.invalid' is not an address of this machine"),
        (["--weights", "missing.pt"], "error: weights file missing.pt does not exist"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(started: list[dict[str, Any]], args: list[str], message: str) -> None:
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = CliRunner().invoke(serve, ["--port", "0", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert started == []


def test_a_port_in_use_is_one_line(started: list[dict[str, Any]]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(serve, ["--port", str(port)])
    finally:
        taken.close()
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port} (")
    assert result.stderr.strip().endswith("choose another --port")


@pytest.mark.parametrize(("args", "bad"), [(["--port", "70000"], "--port"), (["--concurrency", "0"], "--concurrency")])
def test_out_of_range_options_are_refused_by_click(args: list[str], bad: str) -> None:
    result = CliRunner().invoke(serve, args)
    assert result.exit_code == 2 and f"Invalid value for '{bad}'" in result.output


def test_the_command_imports_without_the_web_stack() -> None:
    """relprop's CLI registers ``serve``; listing commands must not need FastAPI installed."""
    import subprocess
    import sys

    code = "import sys, relprop.web.command; print(sorted(m for m in ('fastapi', 'uvicorn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_connection_limits_reach_the_app_and_the_server(started: list[dict[str, Any]]) -> None:
    args = ["--port", "0", "--max-uploads", "5", "--body-timeout", "7", "--header-timeout", "3",
            "--max-connections", "99"]  # fmt: skip
    result = CliRunner().invoke(serve, args)
    assert result.exit_code == 0, result.output
    (call,) = started
    settings = call["app"].state.settings
    assert (settings.max_uploads, settings.body_timeout, settings.body_idle_timeout) == (5, 7.0, 7.0)
    assert (settings.header_timeout, settings.max_connections, call["limit"]) == (3.0, 99, 99)
    assert call["app"].state.service.max_uploads == 5
    from relprop.web.server import HeaderTimeoutProtocol, server_config

    config = server_config(call["app"], "warning")
    assert issubclass(config.http, HeaderTimeoutProtocol) and config.http.header_timeout == 3.0  # type: ignore[arg-type,union-attr]
    assert (config.limit_concurrency, config.timeout_keep_alive) == (99, 5.0)
