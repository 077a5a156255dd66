"""The running server: gRPC around the data plane, health and reflection, signals.

One process serves with one event loop (`--workers N` starts N such processes on one port:
server.workers). On SIGTERM or SIGINT health turns NOT_SERVING (after a lame duck period, if
asked for, in which it still serves and ends its streams: server.streams), new calls are
refused, and calls and streams in flight get `grace_s` to finish (server.drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import swingup
from server import drain, reflection, security
from server.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from server.admin import AdminServicer
from server.auth import TokenAuth, TokenFile
from server.batching import Batcher
from server.config import ServeConfig, address
from server.dataplane import DataPlane
from server.drain import InFlight
from server.metrics import CallMetrics, Metrics, serve_metrics
from server.models import Reloader
from server.oip_servicer import SERVICE_NAME as OIP_SERVICE_NAME
from server.oip_servicer import OipServicer
from server.runtime import Runtime
from server.servicer import SERVICE_NAME, PolicyServicer
from server.streams import Leaving
from swingup import atomic
from swingup.cli import UsageError
from swingup.tokens import TokenFileError

log = logging.getLogger("swingup.serve")

# Every service the server has: listed by reflection, and the methods metrics name.
SERVICES = (
    SERVICE_NAME,
    OIP_SERVICE_NAME,
    ADMIN_SERVICE_NAME,
    health.SERVICE_NAME,
    *reflection.SERVICE_NAMES,
)


def setup_logging() -> None:
    """One line per event on stderr; the pid tells workers apart."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s swingup-serve[%(process)d] %(levelname)s %(message)s",
    )


def starting(config: ServeConfig) -> None:
    """The first log lines: what is served, and a warning for plaintext beyond loopback."""
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


def run(config: ServeConfig) -> int:
    """Serve in this process until SIGTERM or SIGINT; 0 once everything in flight has drained.
    (`--workers N` runs N of these: server.workers.)"""
    reloader = load_model(config)
    announced: list[int] = []

    def ready(port: int) -> None:
        announce(config, port)
        announced.append(port)

    try:
        asyncio.run(serve(config, reloader, reuse_port=False, on_ready=ready))
    finally:
        for port in announced:
            withdraw(config, port)
    return 0


def load_model(config: ServeConfig) -> Reloader:
    """The highest valid version of --model, loaded and checked (ModelError if none is)."""
    path = config.model_path()
    reloader = Reloader(
        path, config.device, on_swap=lambda runtime: None, threads=config.intra_op_threads
    )
    runtime = reloader.load_first()
    log.info(
        "model loaded: %s, version %s, %d metadata keys",
        path,
        runtime.version,
        len(runtime.metadata),
    )
    note = f" ({runtime.note})" if runtime.note else ""
    threads = config.intra_op_threads
    log.info("execution provider %s, %d intra-op thread(s)%s", runtime.provider, threads, note)
    return reloader


def announce(config: ServeConfig, port: int) -> None:
    """The parseable line tests and scripts wait for, and the optional port file."""
    if config.port_file is not None:
        try:  # config.check() refused the likely mistakes; this is what it cannot foresee
            atomic.write_text(config.port_file, f"{port}\n")
        except OSError as exc:
            raise UsageError(f"--port-file {config.port_file}: {exc.strerror}") from None
    log.info(
        "listening on %s (max batch %d, %s, %d worker(s))",
        address(config.host, port),
        config.max_batch,
        f"window {config.batch_window_us} us" if config.batching else "batching off",
        config.workers,
    )


def withdraw(config: ServeConfig, port: int) -> None:
    """Remove the port file once the server has stopped, so that a script reusing its path never
    reads a port nothing listens on; but not one another server has written since."""
    if config.port_file is None:
        return
    with contextlib.suppress(OSError):
        if config.port_file.read_text() == f"{port}\n":
            config.port_file.unlink()


def _settle_heap() -> None:
    """Put what start-up built, which lives as long as the server (modules, the model, the
    services: ~45 000 objects), out of the cyclic collector's sight. Each full collection then
    walks only what serving made since: under load it took 12-35 ms, a pause every call in
    flight waited out, and under 1 ms after (gc.freeze, as long-running Python servers do).
    The cost: a cycle among these objects is never collected; the first model, once a reload
    replaced it, is all that could hold one, once."""
    gc.collect()
    gc.freeze()


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
    # First of all: a signal while gRPC starts must not raise inside its start-up (a
    # KeyboardInterrupt there left a half-built server to a closed loop). It is kept, and the
    # server stops as soon as it serves.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
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
    if metrics is not None:
        _observe(metrics, reloader, plane)
    server = grpc.aio.server(
        options=security.channel_options(config, reuse_port),
        interceptors=_interceptors(metrics, tokens, SERVICES),
    )
    in_flight, leaving = InFlight(), Leaving()
    health_servicer = await _add_services(server, config, plane, reloader, in_flight, leaving)
    port = _listen(server, config)
    stop_metrics = _start_metrics(config, metrics)
    await server.start()
    background = _start_background(config, reloader, tokens)
    loop.add_signal_handler(signal.SIGHUP, _on_sighup, reloader, tokens, background)
    _settle_heap()
    try:
        on_ready(port)
    except BaseException:  # the port file could not be written: stop what has started
        await server.stop(None)
        _stop_the_rest(background, batcher, stop_metrics)
        raise
    await stop.wait()
    if config.lame_duck_s > 0:
        await _lame_duck(config.lame_duck_s, health_servicer, in_flight, leaving, stop, received)
    stop.clear()  # a further signal cuts the drain short
    await _drain(config, server, health_servicer, in_flight, received[0], stop)
    _stop_the_rest(background, batcher, stop_metrics)
    log.info(
        "stopped after %d model calls for %d observations (%d of %d accepted requests answered)",
        batcher.calls,
        batcher.rows,
        plane.answered,
        plane.accepted,
    )


def _stop_the_rest(
    background: set[asyncio.Task[None]],
    batcher: Batcher,
    stop_metrics: Callable[[], None] | None,
) -> None:
    """What runs beside the gRPC server: the pollers, the model thread, /metrics."""
    for task in background:
        task.cancel()
    batcher.close()
    if stop_metrics is not None:
        stop_metrics()


def _interceptors(
    metrics: Metrics | None, tokens: TokenFile | None, services: tuple[str, ...]
) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if metrics is not None:  # outermost: it counts the token check's refusals too
        interceptors.append(CallMetrics(metrics, services))
    if tokens is not None:
        interceptors.append(TokenAuth(tokens))
    return interceptors


async def _add_services(
    server: grpc.aio.Server,
    config: ServeConfig,
    plane: DataPlane,
    reloader: Reloader,
    in_flight: InFlight,
    leaving: Leaving,
) -> health.aio.HealthServicer:  # type: ignore[name-defined]
    """Our three services, counted in flight; health (every service SERVING) and reflection."""
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
    reflection.enable(SERVICES, server)
    return health_servicer


def _listen(server: grpc.aio.Server, config: ServeConfig) -> int:
    """Bind config's address (TLS if configured); the port, chosen by the kernel for 0."""
    credentials = security.server_credentials(config)
    where = address(config.host, config.port)
    try:
        if credentials is None:
            return server.add_insecure_port(where)
        return server.add_secure_port(where, credentials)
    except RuntimeError:
        raise UsageError(f"cannot listen on {where}: address in use or not available") from None


def _start_metrics(config: ServeConfig, metrics: Metrics | None) -> Callable[[], None] | None:
    """Serve /metrics if asked for; the function that stops it."""
    if metrics is None or config.metrics_port is None:
        return None
    try:
        stop_metrics, metrics_port = serve_metrics(
            metrics, config.host, config.metrics_port, config.idle_timeout_s
        )
    except OSError as exc:
        raise UsageError(
            f"--metrics-port: cannot listen on "
            f"{address(config.host, config.metrics_port)}: {exc.strerror}"
        ) from None
    log.info("metrics on http://%s/metrics", address(config.host, metrics_port))
    return stop_metrics


async def _drain(
    config: ServeConfig,
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,  # type: ignore[name-defined]
    in_flight: InFlight,
    signal_name: str,
    interrupted: asyncio.Event,
) -> None:
    """Refuse new calls, turn NOT_SERVING, and return once the calls in flight have ended (or
    at once, cancelling them, on `interrupted`)."""
    log.info(
        "%s: not serving, draining calls and streams for up to %g s", signal_name, config.grace_s
    )
    # The stop task starts first, so that by the time a watcher hears NOT_SERVING (if no lame
    # duck told it before) the server already refuses new calls; calls in flight run on until
    # done or grace, and once ours are done, what gRPC still holds (a watch, a call it never
    # handed over) is cancelled.
    grace_ends = asyncio.get_running_loop().time() + config.grace_s
    stopping = asyncio.create_task(server.stop(config.grace_s))
    await health_servicer.enter_graceful_shutdown()
    await drain.finish(server, stopping, in_flight, interrupted, grace_ends)
    drain.hush_leftover_cancellations(asyncio.get_running_loop())


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
    except TokenFileError as exc:
        raise UsageError(f"--auth-token-file {exc}") from None
    if count == 0:
        raise UsageError(f"--auth-token-file {tokens.path}: holds no token")
    tokens.report(logging.INFO, "auth: %d token(s) loaded from %s", count, tokens.path)
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
        try:
            tokens.refresh()
        except Exception:  # a bug of ours: the watcher must outlive it
            log.exception("auth: rereading %s failed", tokens.path)


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
