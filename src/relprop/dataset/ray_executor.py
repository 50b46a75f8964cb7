"""The Ray executor: actors that each hold the model and an explainer and write whole blocks.

The driver (the process that holds the store's lock) hands out block numbers; each actor
loads its block from the source, explains it, writes its rows into the shared store and
commits it (status last), then reports counts back. Blocks are disjoint, so actors never
write the same file. When an actor dies (its process killed, its node lost) the blocks it
had in hand come back as errors: a new actor takes its place and those blocks are redone
from scratch, overwriting whatever part of them the dead actor had written.

``ray_address=None`` starts a local Ray instance for the run (on 127.0.0.1, stopped after
it); an address joins an existing cluster; a process where Ray is already initialised uses
that. The store path and the source's files must be visible to every node at the same path.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..composites import Composite
from ..errors import ConfigurationError, StoreError, first_line
from .context import RunContext, write_error
from .settings import RunSettings
from .sources import Source
from .store import StoreLayout, StoreWriter
from .work import BlockExplainer, make_runner

__all__ = ["import_ray", "run_ray"]

#: Blocks queued per actor: one running, one waiting, so an actor never idles between blocks.
_PER_ACTOR = 2
#: Times one block may be lost with its actor before the run gives up.
_MAX_ATTEMPTS = 3
_START_TIMEOUT_S = 300.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "the Ray executor needs Ray, which is not installed; run pip install 'relprop[distributed]' (or drop --ray "
            "to explain on this machine)."
        ) from None
    return ray


class BlockActor:
    """One Ray worker: a model, an explainer and a store writer (``ray.remote`` is applied at run time)."""

    def __init__(
        self,
        model: nn.Module,
        composite: str | Composite | None,
        source: Source,
        settings: RunSettings,
        layout: StoreLayout,
        path: Path,
        threads: int,
        device: str | None,
    ) -> None:
        torch.set_num_threads(threads)
        if device is not None:
            model = model.to(device)
        self.work = BlockExplainer(make_runner(model, settings, composite), source, settings, layout)
        self.writer = StoreWriter(path)

    def where(self) -> str:
        """``pid@host node=ID`` of this worker (the Ray node ID tells nodes on one host apart)."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        return f"{os.getpid()}@{socket.gethostname()} node={node[:12]}"

    def run(self, block: int) -> tuple[int, list[tuple[int, str]], float]:
        """Explain, write and commit ``block``; return (explained, failures, CPU seconds of this process)."""
        cpu = time.process_time()
        result = self.work(block)
        self.writer.write(result)
        return result.ok, result.failures, time.process_time() - cpu


def _start(ray: Any, ctx: RunContext) -> bool:
    """Connect to Ray; ``True`` if this run started the instance (and must stop it)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if ctx.ray_address is None:
        pythonpath = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), _package_root()) if p)
        ray.init(
            address="local",
            num_cpus=max(ctx.workers, os.cpu_count() or 1),
            _node_ip_address="127.0.0.1",
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            **options,
        )
        return True
    try:
        ray.init(address=ctx.ray_address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot join the Ray cluster at {ctx.ray_address!r} ({first_line(exc)}); start one with "
            "`ray start --head` or pass --ray without an address for a local instance."
        ) from None
    return True


def _package_root() -> str:
    """The folder holding the ``relprop`` package (workers import it from there too)."""
    return str(Path(__file__).resolve().parents[2])


def _put(ray: Any, value: Any, what: str) -> Any:
    """``ray.put(value)``, or a one-line error when it cannot be sent to the workers."""
    try:
        return ray.put(value)
    except Exception as exc:  # pickling errors come as many types (TypeError, PicklingError, AttributeError ...)
        raise ConfigurationError(
            f"{what} cannot be sent to Ray workers ({type(exc).__name__}: {first_line(exc)}); make it picklable "
            "(define classes at module level) or run without --ray."
        ) from None


class _Pool:
    """The actors, replaced one by one when they die; tracks the blocks each has in hand."""

    def __init__(self, ray: Any, ctx: RunContext) -> None:
        self.ray = ray
        self.ctx = ctx
        resources: dict[str, Any] = {"num_cpus": 1}
        if ctx.device is not None and str(ctx.device).startswith("cuda"):
            resources["num_gpus"] = 1
        self.actor_class = ray.remote(**resources)(BlockActor)
        self.args = (
            _put(ray, ctx.model, "the model"), ctx.composite, _put(ray, ctx.source, "the source"), ctx.settings,
            ctx.layout, ctx.path, ctx.threads or 1, ctx.device,
        )  # fmt: skip
        self.actors = [self._new() for _ in range(ctx.workers)]
        self.generation = [0] * ctx.workers
        self.load = [0] * ctx.workers

    def _new(self) -> Any:
        return self.actor_class.remote(*self.args)

    def wait_ready(self) -> list[str]:
        refs = [actor.where.remote() for actor in self.actors]
        try:
            return list(self.ray.get(refs, timeout=_START_TIMEOUT_S))
        except self.ray.exceptions.GetTimeoutError:
            raise StoreError(
                f"Ray did not start {len(self.actors)} workers within {_START_TIMEOUT_S:.0f} s; does the cluster have "
                f"{len(self.actors)} free CPUs? (ray status shows them)"
            ) from None
        except self.ray.exceptions.RayError as exc:
            raise StoreError(f"a Ray worker failed to start ({first_line(exc)})") from None

    def replace(self, slot: int, generation: int) -> None:
        """Put a new actor in ``slot`` unless that was done already for this death."""
        if self.generation[slot] != generation:
            return
        self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self._new()
        self.generation[slot] += 1
        self.load[slot] = 0

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # an actor that is already gone
                continue


def run_ray(ctx: RunContext) -> None:
    """Explain ``ctx.blocks`` on ``ctx.workers`` Ray actors writing into the shared store."""
    ray = import_ray()
    begin = time.monotonic()
    started = _start(ray, ctx)
    try:
        pool = _Pool(ray, ctx)
        try:
            ctx.info["workers"] = pool.wait_ready()
            # Starting Ray and the workers (each loads torch and the model) is a fixed cost, kept apart from the rate.
            ctx.info["startup_seconds"] = round(time.monotonic() - begin, 3)
            _schedule(ray, ctx, pool)
        finally:
            pool.shutdown()
    finally:
        if started:
            ray.shutdown()


def _schedule(ray: Any, ctx: RunContext, pool: _Pool) -> None:
    pending = deque(ctx.blocks)
    attempts: dict[int, int] = {}
    in_hand: dict[Any, tuple[int, int, int]] = {}  # ref -> (block, slot, generation)
    while in_hand or (pending and not ctx.stop.requested):
        # Deal one block per worker per pass: with few blocks (two chunks, two workers) filling one worker's queue
        # first would leave the other idle.
        for _ in range(_PER_ACTOR):
            for slot in range(len(pool.actors)):
                if pending and not ctx.stop.requested and pool.load[slot] < _PER_ACTOR:
                    block = pending.popleft()
                    in_hand[pool.actors[slot].run.remote(block)] = (block, slot, pool.generation[slot])
                    pool.load[slot] += 1
        ready, _ = ray.wait(list(in_hand), num_returns=1, timeout=1.0)
        ctx.progress.update()
        for ref in ready:
            block, slot, generation = in_hand.pop(ref)
            if pool.generation[slot] == generation:
                pool.load[slot] -= 1
            try:
                explained, failures, cpu_seconds = ray.get(ref)
            except ray.exceptions.RayActorError:
                attempts[block] = attempts.get(block, 0) + 1
                if attempts[block] >= _MAX_ATTEMPTS:
                    raise StoreError(
                        f"chunk {block} of store {ctx.path} was lost with its Ray worker {attempts[block]} times; "
                        "check the workers' logs (ray logs) and run again with --resume"
                    ) from None
                ctx.stats.redone_chunks += 1
                ctx.progress.message(f"note: a Ray worker died; chunk {block} is redone by a new worker")
                pending.appendleft(block)
                pool.replace(slot, generation)
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                if isinstance(cause, OSError):
                    raise write_error(ctx.path, cause) from None
                if isinstance(cause, ConfigurationError | StoreError):
                    raise cause from None
                raise StoreError(f"a Ray worker failed on chunk {block} ({first_line(cause)})") from None
            ctx.committed(explained, failures, cpu_seconds)
