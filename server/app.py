"""The running server: gRPC around the data plane, health and reflection, signals, workers.

One process serves with one event loop; `--workers N` starts N such processes on one port
(SO_REUSEPORT), the kernel spreading connections between them. On SIGTERM or SIGINT health turns
NOT_SERVING (after a lame duck period, if asked for, in which it still serves), new calls are
refused, and calls and streams in flight get `grace_s` to finish (server.drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import swingup
from server import drain, security
from server.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from server.admin import AdminServicer
from server.auth import TokenAuth, TokenFile
from server.batching import Batcher
from server.config import ServeConfig, address
from server.dataplane import DataPlane
from server.drain import InFlight
from server.errors import ModelError
from server.metrics import CallMetrics, Metrics, serve_metrics
from server.models import Reloader
from server.oip_servicer import SERVICE_NAME as OIP_SERVICE_NAME
from server.oip_servicer import OipServicer
from server.runtime import Runtime
from server.servicer import SERVICE_NAME, PolicyServicer
from server.streams import Leaving
from swingup import atomic
from swingup.cli import UsageError

log = logging.getLogger("swingup.serve")


def setup_logging() -> None:
    """One line per event on stderr; the pid tells workers apart."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s swingup-serve[%(process)d] %(levelname)s %(message)s",
    )


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM or SIGINT; 0 once everything in flight has drained."""
    log.info(
        "starting swingup-serve %s: model %s, device %s, %d worker(s)",
        swingup.__version__,
        config.model_path(),
        config.device,
        config.workers,
    )
    if not _is_loopback(config.host) and not config.tls:
        log.warning(
            "binding %s without TLS: anyone who can reach this port can query the policy%s",
            config.host,
            ", and read the bearer tokens of its callers" if config.auth_token_file else "",
        )
    if config.workers == 1:
        reloader = load_model(config)
        asyncio.run(
            serve(config, reloader, reuse_port=False, on_ready=lambda p: announce(config, p))
        )
        return 0
    return _run_workers(config)


def load_model(config: ServeConfig) -> Reloader:
    """The highest valid version of --model, loaded and checked (ModelError if none is)."""
    path = config.model_path()
    reloader = Reloader(path, config.device, on_swap=lambda runtime: None)
    runtime = reloader.load_first()
    log.info(
        "model loaded: %s, version %s, %d metadata keys",
        path,
        runtime.version,
        len(runtime.metadata),
    )
    note = f" ({runtime.note})" if runtime.note else ""
    log.info("execution provider %s%s", runtime.provider, note)
    return reloader


def announce(config: ServeConfig, port: int) -> None:
    """The parseable line tests and scripts wait for, and the optional port file."""
    if config.port_file is not None:
        atomic.write_text(config.port_file, f"{port}\n")
    log.info(
        "listening on %s (max batch %d, %s, %d worker(s))",
        address(config.host, port),
        config.max_batch,
        f"window {config.batch_window_us} us" if config.batching else "batching off",
        config.workers,
    )


async def serve(
    config: ServeConfig,
    reloader: Reloader,
    *,
    reuse_port: bool,
    on_ready: Callable[[int], None],
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Serve `reloader`'s model on config's address until one of `signals`, then drain and
    return. SIGHUP reloads the model and the token file."""
    metrics = Metrics() if config.metrics_port is not None else None
    batcher = Batcher(
        config.max_batch,
        config.batch_window_us / 1e6,
        config.max_queue,
        observer=metrics,
        batching=config.batching,
    )
    plane = DataPlane(reloader.runtime, batcher)
    reloader.on_swap = plane.use
    tokens = _load_tokens(config)
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if metrics is not None:  # outermost: it counts the token check's refusals too
        _observe(metrics, reloader, plane)
        interceptors.append(CallMetrics(metrics))
    if tokens is not None:
        interceptors.append(TokenAuth(tokens))
    credentials = security.server_credentials(config)
    server = grpc.aio.server(
        options=security.channel_options(config, reuse_port), interceptors=interceptors
    )
    in_flight = InFlight()
    leaving = Leaving()
    PolicyServicer(plane, config.workers, config.idle_timeout_s, leaving).add_to_server(
        server, in_flight
    )
    AdminServicer(reloader).add_to_server(server, in_flight)
    OipServicer(plane, config.model_name, config.idle_timeout_s, leaving).add_to_server(
        server, in_flight
    )
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # not in the stubs
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in (health.OVERALL_HEALTH, SERVICE_NAME, OIP_SERVICE_NAME, ADMIN_SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            OIP_SERVICE_NAME,
            ADMIN_SERVICE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    where = address(config.host, config.port)
    try:
        if credentials is None:
            port = server.add_insecure_port(where)
        else:
            port = server.add_secure_port(where, credentials)
    except RuntimeError:
        raise UsageError(f"cannot listen on {where}: address in use or not available") from None
    stop_metrics = None
    if metrics is not None and config.metrics_port is not None:
        try:
            stop_metrics, metrics_port = serve_metrics(metrics, config.host, config.metrics_port)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port: cannot listen on "
                f"{address(config.host, config.metrics_port)}: {exc.strerror}"
            ) from None
        log.info("metrics on http://%s/metrics", address(config.host, metrics_port))
    await server.start()
    background = _start_background(config, reloader, tokens)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, reloader, tokens, background)
    on_ready(port)
    await stop.wait()
    if config.lame_duck_s > 0:
        await _lame_duck(config.lame_duck_s, health_servicer, in_flight, leaving, stop, received)
    log.info(
        "%s: not serving, draining calls and streams for up to %g s", received[0], config.grace_s
    )
    # The stop task starts first, so that by the time a watcher hears NOT_SERVING (if no lame
    # duck told it before) the server already refuses new calls; calls in flight run on until
    # done or grace, and once ours are done, what gRPC still holds (a watch, a call it never
    # handed over) is cancelled.
    stopping = asyncio.create_task(server.stop(config.grace_s))
    await health_servicer.enter_graceful_shutdown()
    await drain.finish(server, stopping, in_flight)
    drain.hush_leftover_cancellations(loop)
    for task in background:
        task.cancel()
    batcher.close()
    if stop_metrics is not None:
        stop_metrics()
    log.info(
        "stopped after %d model calls for %d observations (%d of %d accepted requests answered)",
        batcher.calls,
        batcher.rows,
        plane.answered,
        plane.accepted,
    )


async def _lame_duck(
    limit_s: float,
    health_servicer: health.aio.HealthServicer,  # type: ignore[name-defined]
    in_flight: InFlight,
    leaving: Leaving,
    stop: asyncio.Event,
    received: list[str],
) -> None:
    """Health NOT_SERVING while the server serves on, so health-watching clients move away;
    open streams end (server.streams), so their clients reopen them elsewhere."""
    leaving.begin()  # before NOT_SERVING: a watcher that hears it finds the streams ended
    await health_servicer.enter_graceful_shutdown()
    log.info(
        "%s: health NOT_SERVING, serving on for up to %g s; ending open streams",
        received[0],
        limit_s,
    )
    stop.clear()  # a second signal ends the lame duck
    start = asyncio.get_running_loop().time()
    why = await drain.lame_duck(limit_s, in_flight, stop)
    took = asyncio.get_running_loop().time() - start
    log.info("lame duck over after %.2f s: %s", took, why)


def _load_tokens(config: ServeConfig) -> TokenFile | None:
    if config.auth_token_file is None:
        return None
    tokens = TokenFile(config.auth_token_file)
    try:
        count = tokens.load()
    except OSError as exc:
        raise UsageError(f"--auth-token-file {tokens.path}: {exc.strerror}") from None
    if count == 0:
        raise UsageError(f"--auth-token-file {tokens.path}: holds no token")
    log.info("auth: %d token(s) loaded from %s", count, tokens.path)
    return tokens


def _observe(metrics: Metrics, reloader: Reloader, plane: DataPlane) -> None:
    """Metrics of the queue and of the model versions (the batcher and the calls report
    theirs through the batcher's observer and the interceptor)."""
    metrics.queued.set_function(lambda: plane.batcher.queued_rows)
    runtime = reloader.runtime
    metrics.serving(runtime.version, runtime.provider, str(runtime.path))

    def swapped(runtime: Runtime) -> None:
        plane.use(runtime)
        metrics.reloaded()
        metrics.serving(runtime.version, runtime.provider, str(runtime.path))

    reloader.on_swap = swapped
    reloader.on_refused = lambda refusal: metrics.reload_failed()


def _start_background(
    config: ServeConfig, reloader: Reloader, tokens: TokenFile | None
) -> set[asyncio.Task[None]]:
    """The poller for new model versions and token files (a background task, every watch_s)."""
    tasks: set[asyncio.Task[None]] = set()
    if config.watch_s > 0:
        tasks.add(asyncio.create_task(reloader.watch(config.watch_s)))
        if tokens is not None:
            tasks.add(asyncio.create_task(_watch_tokens(tokens, config.watch_s)))
    return tasks


async def _watch_tokens(tokens: TokenFile, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        tokens.refresh()


def _on_sighup(
    reloader: Reloader, tokens: TokenFile | None, background: set[asyncio.Task[None]]
) -> None:
    log.info("SIGHUP: reloading the model%s", " and the token file" if tokens else "")
    if tokens is not None:
        tokens.refresh(force=True)

    async def reload() -> None:
        await reloader.reload()

    task = asyncio.get_running_loop().create_task(reload())
    background.add(task)
    task.add_done_callback(background.discard)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- workers: N processes, one port ---------------------------------------------------------


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


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold host:port (choosing one for port 0) with SO_REUSEPORT while the workers bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {address(host, port)}: {exc.strerror}") from None
        yield int(sock.getsockname()[1])


def _run_workers(config: ServeConfig) -> int:
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
    signal.signal(signal.SIGHUP, forward_hup)
    with _reserved_port(config.host, config.port) as port:
        worker_config = dataclasses.replace(config, port=port, port_file=None)
        pipes: list[Connection] = []
        for i in range(config.workers):
            receive, send = context.Pipe(duplex=False)
            own = worker_config
            if config.metrics_port:  # each worker its own metrics port: PORT + i
                own = dataclasses.replace(worker_config, metrics_port=config.metrics_port + i)
            process = context.Process(target=_worker, args=(own, send), name=f"swingup-serve-{i}")
            process.start()
            send.close()
            workers.append(process)
            pipes.append(receive)
        for worker, receive in zip(workers, pipes, strict=True):
            wait([receive, worker.sentinel])
            message = receive.recv() if receive.poll() else ("error", "a worker died starting up")
            if message[0] != "ready" and not stopping:
                forward(signal.SIGTERM, None)
                for other in workers:
                    other.join()
                raise UsageError(str(message[1]))
    if not stopping:  # a signal during start-up: the workers are stopping already
        announce(config, port)
    pending = {worker.sentinel: worker for worker in workers}
    failed = False
    while pending:
        for sentinel in wait(list(pending)):
            worker = pending.pop(cast(int, sentinel))
            worker.join()
            if worker.exitcode != 0 and not stopping:
                log.error(
                    "worker %s exited with %s; stopping the others", worker.pid, worker.exitcode
                )
                failed = True
                forward(signal.SIGTERM, None)
            failed = failed or worker.exitcode != 0
    log.info("all %d workers stopped", len(workers))
    return 1 if failed else 0
