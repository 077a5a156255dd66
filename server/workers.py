"""`--workers N`: N serving processes on one port (SO_REUSEPORT), the kernel spreading
connections between them. The parent holds the port while they bind it, forwards SIGTERM,
SIGINT (as SIGTERM) and SIGHUP to them, and stops them all if one dies."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import cast

from server import ports
from server.app import announce, load_model, serve, setup_logging, withdraw
from server.config import ServeConfig
from server.errors import ModelError
from swingup.cli import UsageError

log = logging.getLogger("swingup.serve")

Message = tuple[str, object]


def _worker(config: ServeConfig, ready: Connection) -> None:
    """A worker process: load, serve with SO_REUSEPORT, report readiness to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards shutdown as SIGTERM
    setup_logging()
    try:
        reloader = load_model(config)
        asyncio.run(
            serve(
                config,
                reloader,
                reuse_port=True,
                on_ready=lambda port: ready.send(("ready", port)),
                signals=(signal.SIGTERM,),
            )
        )
    except (ModelError, UsageError) as exc:
        ready.send(("error", str(exc)))
        raise SystemExit(2) from None


def run_workers(config: ServeConfig) -> int:
    """Start config.workers serving processes and wait for them; 0 if all drained cleanly
    (a signal during start-up included: workers it caught still loading count as drained)."""
    context = multiprocessing.get_context("spawn")
    workers: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    def forward_hup(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Ignored while the workers are spawned, so that they start with it ignored (a handler
    # would reach them as the default action, which kills) until each serves and handles it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with ports.reserved(config.host, config.port) as port:
        worker_config = dataclasses.replace(config, port=port, port_file=None)
        pipes: list[Connection] = []
        for i in range(config.workers):
            if stopping:  # a signal mid start-up: start no more
                break
            receive, send = context.Pipe(duplex=False)
            own = worker_config
            if config.metrics_port:  # each worker its own metrics port: PORT + i
                own = dataclasses.replace(worker_config, metrics_port=config.metrics_port + i)
            process = context.Process(target=_worker, args=(own, send), name=f"swingup-serve-{i}")
            process.start()
            send.close()
            workers.append(process)
            pipes.append(receive)
            if stopping:  # the signal came while it started, before forward() could see it
                os.kill(cast(int, process.pid), signal.SIGTERM)
            log.info("worker %d of %d started: pid %d", i + 1, config.workers, process.pid)
        signal.signal(signal.SIGHUP, forward_hup)
        for worker, receive in zip(workers, pipes, strict=True):
            if stopping:
                break
            message = _first_word(worker, receive)
            if message[0] != "ready" and not stopping:
                forward(signal.SIGTERM, None)
                for other in workers:
                    other.join()
                raise UsageError(str(message[1]))
    if stopping:  # a signal during start-up: the workers are stopping already
        return _wait_for(workers, forward, lambda: stopping)
    try:
        announce(config, port)
    except UsageError:
        forward(signal.SIGTERM, None)
        _wait_for(workers, forward, lambda: stopping)
        raise
    try:
        return _wait_for(workers, forward, lambda: stopping)
    finally:
        withdraw(config, port)


def _first_word(worker: multiprocessing.process.BaseProcess, receive: Connection) -> Message:
    """What a starting worker reports: ("ready", port) or ("error", why)."""
    wait([receive, worker.sentinel])
    try:
        if receive.poll():
            return cast(Message, receive.recv())
    except EOFError:  # poll() is true at end of file too: it closed the pipe without a word
        pass
    return ("error", "a worker died starting up")


def _wait_for(
    workers: list[multiprocessing.process.BaseProcess],
    forward: Callable[[int, FrameType | None], None],
    stopping: Callable[[], bool],
) -> int:
    """Wait until every worker has exited, stopping the rest if one fails; the exit code."""
    pending = {worker.sentinel: worker for worker in workers}
    failed = False
    while pending:
        for sentinel in wait(list(pending)):
            worker = pending.pop(cast(int, sentinel))
            worker.join()
            # Killed by our SIGTERM before it could catch it (still loading): stopped as asked.
            clean = worker.exitcode == 0 or (stopping() and worker.exitcode == -signal.SIGTERM)
            if not clean and not stopping():
                log.error(
                    "worker %s exited with %s; stopping the others", worker.pid, worker.exitcode
                )
                forward(signal.SIGTERM, None)
            failed = failed or not clean
    log.info("all %d workers stopped", len(workers))
    return 1 if failed else 0
