"""Prometheus metrics (`--metrics-port`): calls, latencies, batches, queueing, model versions.

Every call on the server, whatever its service, is counted and timed by an interceptor; the
batcher reports its batches and refusals; the reloader reports versions. The text format is
served at http://HOST:PORT/metrics by prometheus-client's WSGI app (its content negotiation:
OpenMetrics, gzip, `name[]` filters), in a small threaded HTTP server of the standard library
that answers 404 for other paths and says nothing about peers that hang up or never speak.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from google.protobuf import descriptor_pool
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

from server import interceptors

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Latency buckets from 100 us (a lone Act on loopback) to 10 s (a long stream's lifetime is
# beyond them, in +Inf: a stream's duration is its session's, not a step's).
LATENCY_BUCKETS: tuple[float, ...] = (
    *(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0),
)
BATCH_BUCKETS = tuple(float(2**k) for k in range(17))  # 1 .. 65536 observations


class Metrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "swingup_grpc_calls",
            "gRPC calls by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "swingup_grpc_call_seconds",
            "gRPC call duration by method (a stream's: its whole session)",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "swingup_batch_size", "observations per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "swingup_queue_seconds",
            "time a request waited in the batching queue before its model call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "swingup_model_call_seconds",
            "duration of one model call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "swingup_requests_refused",
            "requests the batcher refused: queue_full (RESOURCE_EXHAUSTED) or deadline (expired "
            "while queued)",
            ["reason"],
            registry=r,
        )
        self.queued = Gauge(
            "swingup_queue_observations", "observations waiting in the batching queue", registry=r
        )
        self.model = Info("swingup_model", "the model version serving new requests", registry=r)
        self.reloads = Counter(
            "swingup_model_reloads", "model versions swapped in after start", registry=r
        )
        self.failed_reloads = Counter(
            "swingup_model_reload_failures",
            "model versions refused by a check (the old one kept serving)",
            registry=r,
        )

    # --- the batcher's observer (server.batching.BatchObserver) ---

    def batch(self, rows: int, queue_s: list[float], run_s: float) -> None:
        self.batch_size.observe(rows)
        self.model_seconds.observe(run_s)
        for wait in queue_s:
            self.queue_seconds.observe(wait)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    # --- the reloader's ---

    def serving(self, version: str, provider: str, path: str) -> None:
        self.model.info({"version": version, "provider": provider, "path": path})

    def reloaded(self) -> None:
        self.reloads.inc()

    def reload_failed(self) -> None:
        self.failed_reloads.inc()


UNKNOWN_METHOD = "unknown"


def known_methods(services: Iterable[str]) -> frozenset[str]:
    """The full paths (/package.Service/Method) of every method of these services, by their
    descriptors (each service's generated module must have been imported)."""
    pool = descriptor_pool.Default()
    return frozenset(
        f"/{name}/{method.name}"
        for name in services
        for method in pool.FindServiceByName(name).methods
    )


class CallMetrics(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Count and time every call by method and final status; outermost, so that refusals by
    the token check are counted too."""

    def __init__(self, metrics: Metrics, services: Iterable[str]) -> None:
        self.metrics = metrics
        self.methods = known_methods(services)

    async def intercept_service(  # type: ignore[override]  # gRPC takes None: no such method
        self, continuation: interceptors.Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> interceptors.Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, answered by gRPC itself
        # A method no service has (the token check answers those too) gets one label: a
        # label per name would let any caller grow /metrics without bound.
        method = handler_call_details.method
        if method not in self.methods:
            method = UNKNOWN_METHOD
        calls, seconds = self.metrics.calls, self.metrics.call_seconds.labels(method)

        def done(code: grpc.StatusCode, duration: float) -> None:
            calls.labels(method, code.name).inc()
            seconds.observe(duration)

        return interceptors.observed(handler, done)


METRICS_PATH = "/metrics"


def only_metrics(app: WSGIApplication) -> WSGIApplication:
    """`app` at /metrics and 404 elsewhere: prometheus-client's app answers every path, so a
    typo in a scrape config or a probe at / would look like a working endpoint."""

    def routed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {METRICS_PATH}\n".encode()]

    return routed


class _QuietHandler(WSGIRequestHandler):
    """One request per connection, nothing logged: malformed requests get their 4xx without a
    log line, and a peer that hangs up, or sends nothing for `timeout` seconds, is dropped
    without the traceback socketserver would print for each."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # reset, broken pipe, timeout: the peer is gone
            super().handle()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a connection's thread must not hold the process at exit


def serve_metrics(
    metrics: Metrics, host: str, port: int, idle_timeout_s: float
) -> tuple[Callable[[], None], int]:
    """Serve /metrics on host:port from a thread; (a function that stops it, the bound port).
    A connection idle for `idle_timeout_s` is closed: each holds a thread."""
    # As prometheus-client's start_http_server does: the family of the host's first address.
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_ThreadingServer):
        address_family = family

    class Handler(_QuietHandler):
        timeout = idle_timeout_s

    app = only_metrics(make_wsgi_app(metrics.registry))
    httpd = make_server(str(sockaddr[0]), port, app, Server, Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    return stop, int(httpd.server_port)
