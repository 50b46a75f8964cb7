"""A Ray cluster of several nodes on this machine (127.0.0.1), each one a ``ray start --block`` process.

Used by bench_dataset.py and the dataset tests to show the multi-node path: a head node and
worker nodes, each with its own raylet and CPUs, joined by address exactly as on separate
machines. Every process runs in its own session, and the cluster is stopped by signalling those
process groups only (never ``ray stop``, which would stop every Ray instance on the machine).
The cluster gets its own random authentication token (Ray ≥ 2.59 requires one), passed in the
environment; the driver that joins it needs the same environment (:attr:`LocalCluster.env`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalCluster:
    """A running cluster: its ``address`` (host:port) and the environment a driver joins it with."""

    address: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]


def _ray(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    ray = str(Path(sys.executable).with_name("ray"))
    with open(log, "wb") as out:
        return subprocess.Popen([ray, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _nodes(address: str, env: dict[str, str], log: Path) -> int:
    """Live nodes, or 0 when the cluster does not answer yet.

    A probe can hang rather than fail while the head is still starting on a loaded machine (seen
    on a 2-core CI runner: "failed to connect to the observability pubsub"), so each probe has
    its own time limit and a hung one counts as "not ready yet"; its output goes to ``log``.
    """
    probe = "import ray; ray.init(address=%r, log_to_driver=False); print(len([n for n in ray.nodes() if n['Alive']]))"
    try:
        result = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired as hung:
        log.write_text(f"probe timed out after 60 s\n{hung.stderr!r}\n")
        return 0
    log.write_text(result.stdout + result.stderr)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 and result.stdout.strip() else 0


@contextlib.contextmanager
def local_cluster(
    nodes: int, cpus_per_node: int, pythonpath: str, logs: Path, timeout: float = 420.0
) -> Iterator[LocalCluster]:
    """Start ``nodes`` Ray nodes on 127.0.0.1 and stop them afterwards (logs in ``logs``)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=pythonpath, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    # The Ray Client server (default port 10001) is started only where ray[client] is installed; give it a
    # free port then, and leave it out otherwise (asking for it without grpcio makes the head exit at once).
    client = [f"--ray-client-server-port={_free_port()}"] if importlib.util.find_spec("grpc") else []
    processes = [_ray(env, "start", "--head", f"--port={port}", *client, "--include-dashboard=false", *common,
                      log=logs / "head.log")]  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        probe_log = logs / "probe.log"
        while not _accepts(address) or _nodes(address, env, probe_log) < 1:
            if time.monotonic() > deadline or processes[0].poll() is not None:
                raise RuntimeError(f"the Ray head did not start; see {logs / 'head.log'} and {probe_log}")
            time.sleep(1)
        for k in range(1, nodes):
            processes.append(_ray(env, "start", f"--address={address}", *common, log=logs / f"node{k}.log"))
        while _nodes(address, env, probe_log) < nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only some Ray nodes joined; see the logs in {logs}")
            time.sleep(1)
        yield LocalCluster(address, env, processes)
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left
            process.wait(30)
