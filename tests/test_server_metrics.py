"""`--metrics-port`: Prometheus text at /metrics, for every service, batches, queues, versions."""

from __future__ import annotations

import gzip
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from support import metrics_url, observations, scrape, start_server, value

from client import PolicyClient, PolicyError
from client.credentials import Credentials
from client.localserver import LocalServer
from trainer import triton_repo

ACT = "/swingup.v1.PolicyService/Act"


def test_metrics_count_calls_batches_queueing_versions_and_reloads(
    model_path: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "repo" / "pendulum-a2c"
    triton_repo.add_version(model_dir.parent, model_path.read_bytes(), model_dir.name)
    tokens = tmp_path / "tokens"
    tokens.write_text("metrics-test-token\n")
    with start_server(
        model_dir,
        "--metrics-port",
        "0",
        "--auth-token-file",
        str(tokens),
        "--watch-s",
        "0",
    ) as server:
        assert server.target is not None
        allowed = Credentials(token="metrics-test-token")
        with PolicyClient(server.target, timeout=10, credentials=allowed) as client:
            for _ in range(3):
                client.act(observations(5))
            with pytest.raises(PolicyError):
                client.act(np.full((1, 3), np.nan, np.float32))  # INVALID_ARGUMENT
            with client.stream() as session:
                for _ in range(4):
                    session.act(observations(2))
            assert client.health() == "SERVING"
        with PolicyClient(server.target, timeout=10) as anonymous, pytest.raises(PolicyError):
            anonymous.act(observations(1))  # UNAUTHENTICATED
        with grpc.insecure_channel(server.target) as channel:
            for name in ("/x.Y/M1", "/x.Y/M2", "/swingup.v1.PolicyService/Nope"):
                with pytest.raises(grpc.RpcError) as refused:
                    channel.unary_unary(name, None, None)(b"", timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        samples = scrape(server)
        # Methods no service has share one label: callers cannot grow /metrics at will.
        names = {dict(labels).get("method") for _, labels in samples}
        assert not names & {"/x.Y/M1", "/x.Y/M2", "/swingup.v1.PolicyService/Nope"}
        refusals = {"method": "unknown", "code": "UNAUTHENTICATED"}
        assert value(samples, "swingup_grpc_calls_total", **refusals) == 3
        assert value(samples, "swingup_grpc_calls_total", method=ACT, code="OK") == 3
        assert value(samples, "swingup_grpc_calls_total", method=ACT, code="INVALID_ARGUMENT") == 1
        assert value(samples, "swingup_grpc_calls_total", method=ACT, code="UNAUTHENTICATED") == 1
        stream = "/swingup.v1.PolicyService/StreamAct"
        assert value(samples, "swingup_grpc_calls_total", method=stream, code="OK") == 1
        health = "/grpc.health.v1.Health/Check"
        assert value(samples, "swingup_grpc_calls_total", method=health, code="OK") == 1
        assert value(samples, "swingup_grpc_call_seconds_count", method=ACT) == 5
        # 3 unary calls of 5 observations and 4 stream steps of 2: 7 requests, 23 observations.
        assert value(samples, "swingup_batch_size_sum") == 23
        assert 1 <= value(samples, "swingup_batch_size_count") <= 7
        assert value(samples, "swingup_queue_seconds_count") == 7
        assert value(samples, "swingup_model_call_seconds_count") >= 1
        assert value(samples, "swingup_queue_observations") == 0
        info = {
            "version": "1",
            "provider": "CPUExecutionProvider",
            "path": str(model_dir / "1" / "model.onnx"),
        }
        assert value(samples, "swingup_model_info", **info) == 1
        assert value(samples, "swingup_model_reloads_total") == 0
        assert value(samples, "swingup_model_reload_failures_total") == 0

        # A corrupt version is refused (counted), a good one is swapped in (counted, info moves).
        with PolicyClient(server.target, timeout=10, credentials=allowed) as client:
            triton_repo.add_version(model_dir.parent, b"corrupt", model_dir.name)
            assert client.reload_model().model_version == "1"
            triton_repo.add_version(model_dir.parent, model_path.read_bytes(), model_dir.name)
            assert client.reload_model().model_version == "3"
        samples = scrape(server)
        assert value(samples, "swingup_model_reload_failures_total") == 1
        assert value(samples, "swingup_model_reloads_total") == 1
        info = {**info, "version": "3", "path": str(model_dir / "3" / "model.onnx")}
        assert value(samples, "swingup_model_info", **info) == 1
        reload = "/swingup.v1.AdminService/ReloadModel"
        assert value(samples, "swingup_grpc_calls_total", method=reload, code="OK") == 2
        assert server.stop() == 0


def test_no_metrics_port_no_metrics(server: LocalServer) -> None:
    # The shared server runs without --metrics-port: the gRPC port is all it listens on.
    assert server.target is not None
    listening = {
        connection.laddr.port
        for connection in psutil.Process(server.pid).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    assert listening == {int(server.target.rsplit(":", 1)[1])}
    assert not any("metrics on" in line for line in server.lines)


def test_a_refused_call_is_counted_with_its_status(model_path: Path) -> None:
    with start_server(model_path, "--metrics-port", "0", "--max-batch", "4") as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target) as channel:
            call = channel.unary_unary(ACT, None, None)
            with pytest.raises(grpc.RpcError):
                call(b"\xff\xff", timeout=10)  # not an ActRequest
        samples = scrape(server)
        assert value(samples, "swingup_grpc_calls_total", method=ACT, code="INVALID_ARGUMENT") == 1
        assert server.stop() == 0


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET `url`: the status, headers and body, of an error status too."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_only_the_metrics_path_answers_as_prometheus_client_does(model_path: Path) -> None:
    with start_server(model_path, "--metrics-port", "0") as server:
        url = metrics_url(server)
        root = url.removesuffix("/metrics")
        code, headers, body = get(url)
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        assert b"swingup_model_info" in body
        code, headers, body = get(url, **{"Accept-Encoding": "gzip"})
        assert headers.get("Content-Encoding") == "gzip"
        assert b"swingup_model_info" in gzip.decompress(body)
        code, headers, body = get(url, Accept="application/openmetrics-text; version=1.0.0")
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        code, _, body = get(f"{url}?name[]=swingup_model_info")
        assert code == 200 and b"swingup_model_info" in body and b"swingup_grpc" not in body
        for path in ("/", "/anything", "/metrics/", "/favicon.ico", "/metricsx"):
            code, headers, body = get(root + path)
            assert code == 404, path
            assert b"swingup_" not in body
        assert server.stop() == 0


def test_bad_and_silent_metrics_clients_cost_no_log_line_and_no_thread(model_path: Path) -> None:
    with start_server(model_path, "--metrics-port", "0", "--idle-timeout-s", "0.5") as server:
        host, port = metrics_url(server).split("/")[2].rsplit(":", 1)
        mark = len(server.lines)
        # A garbage request line (a TLS hello, say): an error page, and nothing in the log.
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"\x16\x03\x01 garbage\r\n\r\n")
            assert b"Error code: 400" in sock.makefile("rb").read()
        # A client that resets the connection mid-request (socketserver printed a traceback).
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # A client that connects and says nothing is closed after the idle timeout, not kept
        # (with its thread) for as long as it likes.
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            assert sock.recv(1) == b""
        assert value(scrape(server), "swingup_model_reloads_total") == 0
        assert server.stop() == 0
    after = server.lines[mark:]
    assert len(after) == 2 and "SIGTERM: not serving" in after[0], after
