"""Security and limits: TLS and mutual TLS, bearer tokens, message sizes, idle streams."""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from certs import Authority, Pair
from cryptography.hazmat.primitives import serialization
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import (
    client_cli,
    observations,
    scrape,
    serve_and_fail,
    start_server,
    until_stopped,
    value,
)

from client import PolicyClient, PolicyError
from client.credentials import Credentials
from client.localserver import LocalServer
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb

TOKENS = ("first-token-6f1d2a", "second-token-93be07")
Metadata = tuple[tuple[str, str], ...] | None


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = Authority.create(root / "ca")
    other = Authority.create(root / "other", "Some other CA")
    return Pki(
        ca,
        ca.issue("server", server=True),
        ca.issue("controller-1", server=False),
        other.issue("intruder", server=False),
    )


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# controllers\n{TOKENS[0]}\n\n  {TOKENS[1]}  \n")
    return path


@pytest.fixture(scope="module")
def guarded(model_path: Path, pki: Pki, token_file: Path) -> Iterator[LocalServer]:
    """TLS and tokens together, as a server beyond loopback would run."""
    with start_server(
        model_path,
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--auth-token-file",
        str(token_file),
    ) as server:
        yield server
        assert server.stop() == 0


def client_of(
    server: LocalServer, token: str | None = None, ca: Path | None = None
) -> PolicyClient:
    assert server.target is not None
    return PolicyClient(server.target, timeout=10, credentials=Credentials(ca=ca, token=token))


# --- TLS ---------------------------------------------------------------------------------


def test_tls_serves_and_a_plaintext_client_fails_with_a_clear_error(
    guarded: LocalServer, pki: Pki
) -> None:
    with client_of(guarded, TOKENS[0], pki.ca.cert) as client:
        assert client.act(observations(3)).shape == (3, 1)
    with client_of(guarded, TOKENS[0]) as plaintext, pytest.raises(PolicyError) as raised:
        plaintext.act(observations(1))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "if the server serves TLS, pass --tls-ca" in str(raised.value)
    assert guarded.target is not None
    refused = client_cli("info", "--target", guarded.target, "--timeout", "5")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "pass --tls-ca" in refused.stderr
    served = client_cli(
        "info", "--target", guarded.target, "--tls-ca", str(pki.ca.cert),
        env={"SWINGUP_TOKEN": TOKENS[1]},
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert '"execution_provider": "CPUExecutionProvider"' in served.stdout


def test_a_client_that_does_not_trust_the_server_says_so_in_one_line(
    guarded: LocalServer, pki: Pki
) -> None:
    # The system's CAs do not know the test CA. gRPC core would log its own "Handshake failed"
    # lines at INFO before the client's error, unless told otherwise (as the user did not).
    assert guarded.target is not None
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    untrusting = subprocess.run(
        [sys.executable, "-m", "client", "info", "--target", guarded.target, "--tls"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert untrusting.returncode == 1
    assert untrusting.stderr.startswith("swingup-client: error: ")
    assert untrusting.stderr.count("\n") == 1, untrusting.stderr


def test_failed_handshakes_leave_no_log_line_per_connection(model_path: Path, pki: Pki) -> None:
    # gRPC core logs "Handshake failed" at INFO for each: any peer could fill the log.
    tls = ("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    with start_server(model_path, *tls) as server:
        for _ in range(3):
            with client_of(server) as plaintext, pytest.raises(PolicyError):
                plaintext.act(observations(1))
        with client_of(server, ca=pki.ca.cert) as client:
            client.act(observations(1))
        assert server.stop() == 0  # its stderr is read to the end
    assert not [line for line in server.lines if "Handshake failed" in line], server.lines


def test_a_tls_client_against_a_plaintext_server_fails_clearly(target: str, pki: Pki) -> None:
    credentials = Credentials(ca=pki.ca.cert)
    with (
        PolicyClient(target, timeout=5, credentials=credentials) as client,
        pytest.raises(PolicyError) as raised,
    ):
        client.act(observations(1))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "no TLS handshake succeeded" in str(raised.value)


def test_mutual_tls_admits_only_clients_the_ca_signed(model_path: Path, pki: Pki) -> None:
    with start_server(
        model_path,
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--tls-client-ca",
        str(pki.ca.cert),
    ) as server:
        assert server.target is not None

        def act_as(pair: Pair | None) -> None:
            cert, key = (pair.cert, pair.key) if pair else (None, None)
            credentials = Credentials(ca=pki.ca.cert, cert=cert, key=key)
            with PolicyClient(server.target or "", timeout=5, credentials=credentials) as c:
                c.act(observations(1))

        act_as(pki.client)
        for stranger in (None, pki.stranger):
            with pytest.raises(PolicyError) as raised:
                act_as(stranger)
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        done = client_cli(
            "info", "--target", server.target, "--tls-ca", str(pki.ca.cert),
            "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "CERT", "--tls-key", "OTHER_KEY"], "not a matching PEM certificate"),
        (["--tls-cert", "CA", "--tls-key", "CA"], "not a matching PEM certificate"),
        (["--auth-token-file", "MISSING"], "--auth-token-file"),
        (["--auth-token-file", "EMPTY"], "holds no token"),
        (["--auth-token-file", "BINARY"], "not UTF-8 text"),
        # A token no client could send (a space; a PEM file's BEGIN line has one too).
        (["--auth-token-file", "SPACED"], "line 2: a token must be visible ASCII characters"),
        (["--auth-token-file", "CA"], "line 1: a token must be visible ASCII characters"),
        (["--max-batch", "4096", "--max-message-bytes", "1000"], "--max-message-bytes 1000"),
        (["--max-batch", "64", "--max-queue", "10"], "--max-queue 10"),
        (["--idle-timeout-s", "0"], "--idle-timeout-s 0"),
        (["--tls-cert", "DIR", "--tls-key", "KEY"], "--tls-cert DIR: is a directory"),
        (["--tls-cert", "CERT", "--tls-key", "DIR"], "--tls-key DIR: is a directory"),
        (["--auth-token-file", "DIR"], "--auth-token-file DIR: is a directory"),
        (
            ["--tls-cert", "CERT", "--tls-key", "KEY", "--tls-client-ca", "DIR"],
            "--tls-client-ca DIR: is a directory",
        ),
        (["--tls-cert", "CERT", "--tls-key", "PKCS8_ENCRYPTED"], "encrypted private keys are not"),
        (["--tls-cert", "CERT", "--tls-key", "PEM_ENCRYPTED"], "encrypted private keys are not"),
    ],
)
def test_bad_security_settings_are_one_line(
    model_path: Path, pki: Pki, tmp_path: Path, flags: list[str], message: str
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# no tokens yet\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe token\n")
    spaced = tmp_path / "spaced"
    spaced.write_text("good-token\nsecret with a space\n")
    names = {
        "BINARY": binary,
        "SPACED": spaced,
        "CERT": pki.server.cert,
        "CA": pki.ca.cert,
        "OTHER_KEY": pki.client.key,
        "MISSING": tmp_path / "missing",
        "EMPTY": empty,
        "DIR": tmp_path,
        "KEY": pki.server.key,
    }
    names.update(encrypted_keys(pki.server.key, tmp_path))
    args = [str(names.get(flag, flag)) for flag in flags]
    line = serve_and_fail("--model", str(model_path), *args)
    assert message.replace("DIR", str(tmp_path)) in line


def encrypted_keys(key: Path, directory: Path) -> dict[str, Path]:
    """`key` encrypted as PKCS#8 and as traditional OpenSSL PEM (a Proc-Type header)."""
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    keys = {}
    for name, form in (
        ("PKCS8_ENCRYPTED", serialization.PrivateFormat.PKCS8),
        ("PEM_ENCRYPTED", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        keys[name] = directory / f"{name.lower()}.key"
        encryption = serialization.BestAvailableEncryption(b"pass phrase")
        keys[name].write_bytes(private.private_bytes(serialization.Encoding.PEM, form, encryption))
    return keys


PR_CAPBSET_DROP = 24  # <linux/prctl.h>
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2  # <linux/capability.h>


def _bound_by_file_modes() -> None:
    """A `preexec_fn` for a child of root: it execs without the two capabilities by which root
    reads any file, so a file's mode binds it as it binds any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_key_or_model_is_reported_as_such(
    model_path: Path, pki: Pki, tmp_path: Path
) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(pki.server.key.read_bytes())
    key.chmod(0)
    model = tmp_path / "model.onnx"
    model.write_bytes(model_path.read_bytes())
    model.chmod(0)
    tls = ("--tls-cert", str(pki.server.cert), "--tls-key", str(key))
    as_anyone = _bound_by_file_modes if os.geteuid() == 0 else None
    line = serve_and_fail("--model", str(model_path), *tls, preexec_fn=as_anyone)
    assert f"--tls-key {key}: cannot read (Permission denied)" in line
    line = serve_and_fail("--model", str(model), *tls, preexec_fn=as_anyone)
    assert f"--model {model}: cannot read (Permission denied)" in line


# --- tokens ------------------------------------------------------------------------------


def test_every_service_but_health_needs_a_valid_token(guarded: LocalServer, pki: Pki) -> None:
    assert guarded.target is not None
    credentials = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes())
    obs = observations(2).ravel().tolist()
    with grpc.secure_channel(guarded.target, credentials) as channel:
        policy = policy_pb2_grpc.PolicyServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        calls: dict[str, Callable[[Metadata], object]] = {
            "Act": lambda md: policy.Act(pb.ActRequest(obs=obs), timeout=10, metadata=md),
            "StreamAct": lambda md: list(
                policy.StreamAct(iter([pb.StreamActRequest(obs=obs)]), timeout=10, metadata=md)
            ),
            "GetModelInfo": lambda md: policy.GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10, metadata=md
            ),
            "ListVersions": lambda md: admin.ListVersions(
                admin_pb2.ListVersionsRequest(), timeout=10, metadata=md
            ),
            "ReloadModel": lambda md: admin.ReloadModel(
                admin_pb2.ReloadModelRequest(), timeout=10, metadata=md
            ),
            "reflection": lambda md: list(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=10,
                    metadata=md,
                )
            ),
            "unknown": lambda md: channel.unary_unary("/no.Such/Method", None, None)(
                b"", timeout=10, metadata=md
            ),
        }
        refused: list[Metadata] = [
            None,
            (("authorization", "Bearer wrong-token"),),
            (("authorization", f"Basic {TOKENS[0]}"),),
            (("authorization", f"Bearer {TOKENS[0][:-1]}"),),
            (("authorization", "Bearer "),),
        ]
        for name, call in calls.items():
            for metadata in refused:
                with pytest.raises(grpc.RpcError) as raised:
                    call(metadata)
                assert isinstance(raised.value, grpc.Call)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
                assert "bearer token" in (raised.value.details() or "")
            if name != "unknown":
                for token in TOKENS:
                    call((("authorization", f"Bearer {token}"),))
    with client_of(guarded, None, pki.ca.cert) as anonymous:
        assert anonymous.health() == "SERVING"  # probes need no token


def test_tokens_are_never_logged(model_path: Path, token_file: Path) -> None:
    with start_server(model_path, "--auth-token-file", str(token_file)) as server:
        with client_of(server, "an-intruders-guess") as guess, pytest.raises(PolicyError):
            guess.act(observations(1))
        with client_of(server, TOKENS[0]) as client:
            client.act(observations(1))
        server.process.send_signal(signal.SIGHUP)  # the file is read again
        server.wait_for_line(r"SIGHUP: reloading")
        logged = until_stopped(server)  # all of it: read once the server has exited
    log = "\n".join(logged)
    for secret in (*TOKENS, "an-intruders-guess"):
        assert secret not in log
    assert any("auth: 2 token(s) loaded" in line for line in logged)


def test_the_token_file_is_reread_when_it_changes(model_path: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    with start_server(model_path, "--auth-token-file", str(tokens), "--watch-s", "0.05") as server:
        with client_of(server, "old-token") as old, client_of(server, "new-token") as new:
            old.act(observations(1))
            mark = len(server.lines)
            # Replaced as secrets managers do: a new file renamed over the old one.
            (tmp_path / "tokens.new").write_text("new-token\n")
            os.replace(tmp_path / "tokens.new", tokens)
            server.wait_for_line(r"auth: 1 token\(s\) loaded", start=mark)
            new.act(observations(1))
            with pytest.raises(PolicyError) as raised:
                old.act(observations(1))
            assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
            # SIGHUP rereads it at once, without waiting for the poll.
            mark = len(server.lines)
            tokens.write_text("old-token\nnew-token\n")
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line(r"auth: 2 token\(s\) loaded", start=mark)
            old.act(observations(1))
            new.act(observations(1))
            # A file that is not text keeps the tokens, and the watcher goes on: the fixed
            # file is read at the next poll.
            mark = len(server.lines)
            (tmp_path / "tokens.new").write_bytes(b"\xff\xfenew-token\n")
            os.replace(tmp_path / "tokens.new", tokens)
            server.wait_for_line(r"not UTF-8 text; keeping the 2 token\(s\)", start=mark)
            old.act(observations(1))
            (tmp_path / "tokens.new").write_text("new-token\n")
            os.replace(tmp_path / "tokens.new", tokens)
            server.wait_for_line(r"auth: 1 token\(s\) loaded", start=mark)
            with pytest.raises(PolicyError):
                old.act(observations(1))
            new.act(observations(1))
        assert server.stop() == 0


def test_a_token_file_with_a_byte_order_mark_serves_its_first_token(
    model_path: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_bytes(b"\xef\xbb\xbfbom-token\r\n")  # as Windows' Notepad saves it
    with start_server(model_path, "--auth-token-file", str(tokens)) as server:
        with client_of(server, "bom-token") as client:
            client.act(observations(1))
        assert server.stop() == 0


def test_a_token_file_replaced_by_a_pipe_is_not_read(model_path: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("kept-token\n")
    with start_server(model_path, "--auth-token-file", str(tokens), "--watch-s", "0.05") as server:
        mark = len(server.lines)
        tokens.unlink()
        os.mkfifo(tokens)  # nothing ever writes to it: reading it would never return
        server.wait_for_line(r"not a regular file; keeping the 1 token\(s\)", start=mark)
        with client_of(server, "kept-token") as client:
            client.act(observations(1))
            assert client.health() == "SERVING"
        assert server.stop() == 0


def line_index(server: LocalServer, pattern: str, start: int) -> int:
    """The index of the first log line from `start` on that matches `pattern` (waiting for it)."""
    return server.lines.index(server.wait_for_line(pattern, start=start), start)


def test_sighup_after_the_poller_does_not_report_a_token_file_again(
    model_path: Path, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("kept-token\n")

    def replace(data: bytes | None) -> None:
        if data is None:
            tokens.unlink()
        else:
            (tmp_path / "tokens.new").write_bytes(data)
            os.replace(tmp_path / "tokens.new", tokens)

    cases = [
        (b"\xff\xfenew-token\n", r"not UTF-8 text; keeping the 1 token\(s\)"),
        (None, r"No such file or directory; keeping the 1 token\(s\)"),
        (b"kept-token\nno\ttab\n", r"line 2: a token must .*; keeping the 1 token\(s\)"),
        (b"# none\n", r"holds no token"),
        (b"kept-token\nnew-token\n", r"auth: 2 token\(s\) loaded"),
    ]
    with start_server(model_path, "--auth-token-file", str(tokens), "--watch-s", "0.05") as server:
        with client_of(server, "kept-token") as client:
            for data, said in cases:
                mark = len(server.lines)
                replace(data)
                server.wait_for_line(said, start=mark)  # the poller read it first
                server.process.send_signal(signal.SIGHUP)
                hup = line_index(server, "SIGHUP: reloading the model and the token file", mark)
                # A second SIGHUP's line comes after all the first one logged.
                server.process.send_signal(signal.SIGHUP)
                line_index(server, "SIGHUP: reloading", hup + 1)
                lines = server.log_since(mark)
                assert sum(bool(re.search(said, line)) for line in lines) == 1, lines
                if data is None or data.startswith(b"\xff") or b"\t" in data:
                    client.act(observations(1))  # the token read before is still in force
        assert server.stop() == 0


def test_the_client_cli_reads_the_token_file(
    guarded: LocalServer, pki: Pki, tmp_path: Path
) -> None:
    assert guarded.target is not None
    mine = tmp_path / "my-token"
    mine.write_text(f"{TOKENS[0]}\n")
    common = ["--target", guarded.target, "--tls-ca", str(pki.ca.cert), "--timeout", "10"]
    done = client_cli("drive", *common, "--token-file", str(mine), "--episodes", "1", "--stream")
    assert done.returncode == 0, done.stderr
    refused = client_cli("versions", *common, env={"SWINGUP_TOKEN": "not-a-token"})
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


# --- limits ------------------------------------------------------------------------------


def test_messages_beyond_the_size_limit_are_refused(model_path: Path) -> None:
    with start_server(
        model_path, "--max-batch", "64", "--max-queue", "64", "--max-message-bytes", "2048"
    ) as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            huge = pb.ActRequest(obs=[0.5] * 3 * 1000)  # 12 kB
            with pytest.raises(grpc.RpcError) as raised:
                stub.Act(huge, timeout=10)
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            reply = stub.Act(pb.ActRequest(obs=observations(64).ravel().tolist()), timeout=10)
            assert reply.batch_size == 64
        assert server.stop() == 0


def test_a_silent_stream_is_ended_after_the_idle_timeout(model_path: Path) -> None:
    with start_server(model_path, "--idle-timeout-s", "0.5") as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target) as channel:
            requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            replies = iter(stub.StreamAct(iter(requests.get, None), timeout=30))
            requests.put(pb.StreamActRequest(obs=observations(1).ravel().tolist()))
            assert next(replies).step == 0
            with pytest.raises(grpc.RpcError) as raised:
                next(replies)  # the client goes silent; the server ends the stream
            # The server's idle limit ended it (its words), not the client's 30 s deadline.
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            details = raised.value.details() or ""
            assert "stream idle for 0.5 s waiting for the next request" in details, details
            requests.put(None)
        with PolicyClient(server.target, timeout=10) as client:
            assert client.act(observations(1)).shape == (1, 1)  # the server goes on
        assert server.stop() == 0
    assert not any("Traceback" in line or " ERROR " in line for line in server.lines)


def test_a_client_that_stops_reading_is_cut_off(model_path: Path) -> None:
    async def flood(target: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(target) as channel:
            call = policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(None)
            request = pb.StreamActRequest(obs=observations(100).ravel().tolist())
            # Write and never read: the replies fill the flow-control windows, the server's
            # write stalls, and the idle limit ends the stream. Bounded by count and time.
            try:
                for _ in range(200_000):
                    await asyncio.wait_for(call.write(request), 10)
            except grpc.RpcError:
                pass
            code: grpc.StatusCode = await asyncio.wait_for(call.code(), 30)
            return code

    with start_server(model_path, "--idle-timeout-s", "0.5", "--metrics-port", "0") as server:
        assert server.target is not None
        # What the client hears of it depends on gRPC core (the status cannot pass the full
        # window; the idle connection's GOAWAY follows): the server's count says who ended it.
        assert asyncio.run(flood(server.target)) != grpc.StatusCode.OK
        stream = "/swingup.v1.PolicyService/StreamAct"
        calls = "swingup_grpc_calls_total"
        samples = scrape(server)
        assert value(samples, calls, method=stream, code="DEADLINE_EXCEEDED") == 1, samples
        with PolicyClient(server.target, timeout=10) as client:
            assert client.health() == "SERVING"
            assert client.act(observations(1)).shape == (1, 1)
        assert server.stop() == 0
    assert not any("Traceback" in line for line in server.lines)


def test_a_connection_that_never_handshakes_is_closed(model_path: Path, pki: Pki) -> None:
    with start_server(
        model_path,
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--idle-timeout-s",
        "0.5",
    ) as server:
        assert server.target is not None
        host, port = server.target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as silent:
            silent.settimeout(10)  # the server, not this bound, must end it (else: timeout)
            assert silent.recv(1) == b""  # closed by the server, nothing sent
        assert server.stop() == 0


def client_connections(server: LocalServer) -> set[int]:
    """The client-side ports of the TCP connections the server holds open now."""
    assert server.target is not None
    port = int(server.target.rsplit(":", 1)[1])
    held = psutil.Process(server.pid).net_connections("tcp")
    return {c.raddr.port for c in held if c.laddr.port == port and c.status == "ESTABLISHED"}


@pytest.mark.timeout(120)
def test_connections_are_renewed_past_their_age_and_no_call_fails(model_path: Path) -> None:
    """--max-connection-age-s: the server sends each connection GOAWAY once it is that old, so
    that clients resolve the name again (new replicas behind it get calls); the client moves to
    a new connection between calls, and calls and a session's steps go on without a failure."""
    with start_server(model_path, "--max-connection-age-s", "0.5") as server:
        assert server.target is not None
        seen: set[int] = set()
        with PolicyClient(server.target) as client, client.stream() as session:
            for _ in range(2000):  # bounded; 0.5 s ages make a new connection every few dozen
                client.act(observations(1))
                session.act(observations(1))
                seen |= client_connections(server)
                if len(seen) >= 4:
                    break
        assert server.stop() == 0
    assert len(seen) >= 4  # the first connection and three renewals, every call answered
