"""`swingup-serve` as a program: flags and variables, errors, devices, signals, workers.
(The lame duck, and what clients see of a replica stopping: test_lame_duck.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import psutil
import pytest
from support import observations, serve_and_fail, start_server, stopped, until_stopped

from client import PolicyClient, PolicyError
from client.localserver import LocalServer
from server.config import SHIPPED_MODEL

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    line = serve_and_fail("--model", str(tmp_path / "absent.onnx"))
    assert "model file not found" in line and "absent.onnx" in line


def test_a_file_that_is_not_a_model_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    assert "cannot load" in serve_and_fail("--model", str(junk))


def test_the_default_model_is_the_shipped_one() -> None:
    assert SHIPPED_MODEL.is_file(), "the repository ships it: run `make model`"
    with LocalServer() as server:
        server.wait_listening()
        assert any(str(SHIPPED_MODEL) in line for line in server.lines)


def test_without_the_shipped_model_the_default_is_one_line(tmp_path: Path) -> None:
    """A checkout without models/ (before `make model`): the server's own package, copied
    where no shipped model lies beside it, is what `python -m server` runs from there."""
    shutil.copytree(
        SHIPPED_MODEL.parent.parent / "server",
        tmp_path / "server",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    missing = tmp_path / "models" / SHIPPED_MODEL.name
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"swingup-serve: error: the shipped model {missing} is missing: run `make model` or pass"
        " --model"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--max-batch", "0"], "--max-batch 0"),
        (["--workers", "0"], "--workers 0"),
        (["--workers", "65"], "--workers 65: must be between 1 and 64"),
        (["--intra-op-threads", "0"], "--intra-op-threads 0: must be between 1 and 64"),
        (["--max-connection-age-s", "0.01"], "--max-connection-age-s 0.01: must be 0 (never) or"),
        (["--max-connection-age-s", "nan"], "--max-connection-age-s nan: must be 0 (never) or"),
        (["--max-connection-age-s", "-1"], "--max-connection-age-s -1.0: must be 0 (never) or"),
        (["--batch-window-us", "-5"], "--batch-window-us -5"),
        (["--lame-duck-s", "-1"], "--lame-duck-s -1.0: must be >= 0"),
        (["--port", "70000"], "--port 70000"),
        (["--port", "eighty"], "invalid int value"),
        (["--batch-window-us", "1000001"], "--batch-window-us 1000001: must be between 0 and"),
        (["--idle-timeout-s", "3e6"], "--idle-timeout-s 3000000.0: must be between 0.1 and"),
        (["--idle-timeout-s", "inf"], "--idle-timeout-s inf: must be between"),
        (["--idle-timeout-s", "nan"], "--idle-timeout-s nan: must be between"),
        (["--idle-timeout-s", "0.001"], "--idle-timeout-s 0.001: must be between 0.1"),
        (["--max-message-bytes", "2147483648"], "must be at most 2147483647"),
        (["--max-message-bytes", "2147483648", "--workers", "2"], "must be at most 2147483647"),
        (["--watch-s", "0.000001"], "--watch-s 1e-06: must be 0 (no polling) or at least 0.01"),
        (["--grace-s", "nan"], "--grace-s nan: must be >= 0"),
        (["--metrics-port", "65535", "--workers", "2"], "ports up to 65536, beyond 65535"),
    ],
)
def test_bad_flags_are_one_line(model_path: Path, args: list[str], message: str) -> None:
    assert message in serve_and_fail("--model", str(model_path), *args)


def test_the_largest_settings_serve(model_path: Path) -> None:
    """Each bound of the flags is one gRPC and the proto still take."""
    with start_server(
        model_path,
        "--batch-window-us", "1000000",
        "--idle-timeout-s", "2147483",
        "--max-message-bytes", "2147483647",
        "--watch-s", "0.01",
        "--intra-op-threads", "64",
        "--max-connection-age-s", "2147483",
    ) as server:  # fmt: skip
        assert server.target is not None
        with PolicyClient(server.target) as client:
            assert client.info().batching.window_us == 1_000_000
            assert client.act(observations(2)).shape == (2, 1)
        assert server.stop() == 0
    assert any("64 intra-op thread(s)" in line for line in server.lines)


def test_bad_environment_variables_are_one_line(model_path: Path) -> None:
    line = serve_and_fail("--model", str(model_path), env={"SWINGUP_MAX_BATCH": "many"})
    assert "SWINGUP_MAX_BATCH" in line


def test_a_busy_port_is_one_line(model_path: Path, target: str) -> None:
    port = target.rsplit(":", 1)[1]
    line = serve_and_fail("--model", str(model_path), "--port", port)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


def test_an_address_not_on_this_machine_is_one_line(model_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737), reserved for documentation: never a local address.
    line = serve_and_fail("--model", str(model_path), "--host", "192.0.2.1")
    assert "cannot listen on 192.0.2.1:0: Cannot assign requested address" in line


@pytest.mark.parametrize(
    ("port_file", "workers", "message"),
    [
        ("TMP", "1", "--port-file TMP: is a directory"),
        ("TMP", "2", "--port-file TMP: is a directory"),
        ("TMP/file/port", "1", "--port-file TMP/file/port: TMP/file is not a directory"),
        # Root may write anywhere, but not there: only trying tells.
        ("/proc/swingup-port", "1", "--port-file /proc/swingup-port: cannot write in /proc"),
    ],
)
def test_a_port_file_that_cannot_be_written_is_refused_before_serving(
    model_path: Path, tmp_path: Path, port_file: str, workers: str, message: str
) -> None:
    (tmp_path / "file").write_text("")
    args = ["--port-file", port_file.replace("TMP", str(tmp_path)), "--workers", workers]
    line = serve_and_fail("--model", str(model_path), *args)
    assert message.replace("TMP", str(tmp_path)) in line


def test_settings_come_from_environment_variables_and_the_port_file(
    model_path: Path, tmp_path: Path
) -> None:
    port_file = tmp_path / "run" / "swingup" / "port"  # its directories are created
    env = {**os.environ, "SWINGUP_MAX_BATCH": "8", "SWINGUP_PORT_FILE": str(port_file)}
    with LocalServer(["--model", str(model_path)], env=env) as server:
        target = server.wait_listening()
        assert port_file.read_text() == target.rsplit(":", 1)[1] + "\n"
        with PolicyClient(target) as client:
            assert client.info().batching.max_batch == 8
            assert client.act(observations(8)).shape == (8, 1)
            with pytest.raises(PolicyError, match="oversize batch: 9 observations"):
                client.act(observations(9))
        assert server.stop() == 0
    assert not port_file.exists()  # a script reusing the path never reads a dead port


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_port_file_goes_with_the_server_unless_another_wrote_it(
    model_path: Path, tmp_path: Path, workers: str
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for port_file, overwritten in ((ours, False), (theirs, True)):
        args = ["--model", str(model_path), "--port-file", str(port_file), "--workers", workers]
        with LocalServer(args) as server:
            server.wait_listening()
            if overwritten:  # another server's, since: not ours to remove
                port_file.write_text("1\n")
            assert server.stop() == 0
    assert not ours.exists() and theirs.read_text() == "1\n"


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA machine: test_server_gpu checks both devices")
def test_device_cuda_without_cuda_is_a_clear_error_and_auto_serves_on_cpu(
    model_path: Path,
) -> None:
    line = serve_and_fail("--model", str(model_path), "--device", "cuda")
    assert "--device cuda" in line and "CUDAExecutionProvider" in line
    with start_server(model_path, "--device", "auto") as server:
        assert server.target is not None
        with PolicyClient(server.target) as client:
            assert client.info().execution_provider == "CPUExecutionProvider"
    fallback = [line for line in server.lines if "execution provider" in line]
    assert len(fallback) == 1 and "device auto" in fallback[0] and "CPU" in fallback[0]


def test_sigint_drains_and_exits_zero(model_path: Path) -> None:
    with start_server(model_path) as server:
        assert server.target is not None
        with PolicyClient(server.target) as client:
            client.act(observations(2))
        assert server.stop(signal.SIGINT) == 0
    assert "SIGINT: not serving" in server.lines[-2]
    assert "stopped after 1 model calls for 2 observations" in server.lines[-1]


def test_one_line_per_event(own_server: LocalServer) -> None:
    # Everything it logged until it was stopped, read once it has exited.
    logged = until_stopped(own_server)
    events = [line.split(" INFO ", 1)[1].split(" ", 2)[:2] for line in logged]
    assert events == [
        ["starting", "swingup-serve"],
        ["model", "loaded:"],
        ["execution", "provider"],
        ["listening", "on"],
    ]


def test_a_non_loopback_address_warns_about_tls(model_path: Path) -> None:
    with start_server(model_path, "--host", "0.0.0.0") as server:
        assert server.target is not None
        port = server.target.rsplit(":", 1)[1]
        with PolicyClient(f"127.0.0.1:{port}") as client:
            assert client.act(observations(1)).shape == (1, 1)
    warnings = [line for line in server.lines if " WARNING " in line]
    assert len(warnings) == 1 and "without TLS" in warnings[0]


def test_workers_share_one_port(model_path: Path, tmp_path: Path) -> None:
    with start_server(
        model_path, "--workers", "2", "--port-file", str(tmp_path / "port")
    ) as server:
        assert server.target is not None
        children = psutil.Process(server.process.pid).children()
        workers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        assert len(workers) == 2
        assert [line for line in server.lines if "listening on" in line] == [
            line for line in server.lines if server.target in line
        ]
        obs = observations(16)
        # Each channel is its own connection, which the kernel hands to either worker.
        for _ in range(6):
            with PolicyClient(server.target) as client:
                assert client.info().batching.workers == 2
                client.act(obs)
        assert server.stop() == 0
    assert not any(worker.is_running() and worker.status() != "zombie" for worker in workers)
    counted = stopped(server)
    assert len(counted) == 2  # both workers served and drained
    assert sum(worker.observations for worker in counted) == 6 * 16
    assert server.lines[-1].endswith("all 2 workers stopped")


def test_a_worker_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    line = serve_and_fail("--model", str(junk), "--workers", "2")
    assert "cannot load" in line


def test_a_signal_while_workers_start_stops_them_cleanly(model_path: Path) -> None:
    with LocalServer(["--model", str(model_path), "--workers", "3"]) as server:
        # The first worker has only just started: it is still loading when the signal comes,
        # and the parent may not have started the others yet.
        server.wait_for_line("worker 1 of 3 started")
        assert server.stop() == 0, server.lines[-5:]
    assert not any("Traceback" in line or "Error" in line for line in server.lines), server.lines
    pids = [int(line.rsplit(" ", 1)[1]) for line in server.lines if " started: pid " in line]
    assert 1 <= len(pids) <= 3
    assert server.lines[-1].endswith(f"all {len(pids)} workers stopped")
    assert not any(psutil.pid_exists(pid) for pid in pids)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_while_starting_does_not_kill_the_server(model_path: Path, workers: int) -> None:
    with LocalServer(["--model", str(model_path), "--workers", str(workers)]) as server:
        # Started, not serving yet: the model (the workers: everything) still loading.
        server.wait_for_line(
            f"worker {workers} of {workers} started" if workers > 1 else "starting"
        )
        pids = [int(line.rsplit(" ", 1)[1]) for line in server.lines if " started: pid " in line]
        for pid in (server.pid, *pids):  # the parent forwards it; `pkill -HUP` reaches them all
            os.kill(pid, signal.SIGHUP)
        server.wait_listening()
        mark = len(server.lines)
        server.process.send_signal(signal.SIGHUP)  # serving: now it reloads
        server.wait_for_line("SIGHUP: reloading the model", start=mark)
        assert server.stop() == 0, server.lines[-5:]
    assert not any(" ERROR " in line or "Traceback" in line for line in server.lines)


def test_workers_refuse_a_port_taken_by_a_plain_socket(model_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = serve_and_fail("--model", str(model_path), "--workers", "2", "--port", port)
    assert f"cannot listen on 127.0.0.1:{port}" in line


@pytest.mark.parametrize("operator", [None, "0"])
def test_telemetry_and_grpc_info_logs_are_off_unless_the_operator_turns_them_on(
    operator: str | None,
) -> None:
    # Set in the server's entry module, before onnxruntime and gRPC read them; an operator's
    # own value stays. (onnxruntime's warning comes from a thread of its own and not in every
    # run, so a test cannot count on seeing it: the defaults are read where they are set.)
    ours = ("ORT_DISABLE_TELEMETRY", "GRPC_VERBOSITY")
    env = {key: value for key, value in os.environ.items() if key not in ours}
    if operator is not None:
        env |= {"ORT_DISABLE_TELEMETRY": operator, "GRPC_VERBOSITY": "INFO"}
    probe = f"import os, server.cli; print(*(os.environ[key] for key in {ours!r}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == (["1", "ERROR"] if operator is None else ["0", "INFO"])


def test_a_home_it_cannot_write_gets_no_telemetry_warning(model_path: Path) -> None:
    env = {**os.environ, "HOME": "/dev/null/home"}  # where onnxruntime's telemetry warns
    env.pop("ORT_DISABLE_TELEMETRY", None)
    with LocalServer(["--model", str(model_path)], env=env) as server:
        server.wait_listening()
        assert server.stop() == 0
    assert not any("telemetry" in line for line in server.lines), server.lines


# swingup-serve with Ctrl-C (a real SIGINT) at a chosen moment of its start: when the named
# module starts to import, or ("start") as gRPC's server starts.
INTERRUPT_WHILE_STARTING = """
import os, signal, sys

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)

class AtImport:
    def find_spec(self, name, path=None, target=None):
        if name == WHEN:
            sys.meta_path.remove(self)
            ctrl_c()
        return None

WHEN = sys.argv.pop(1)
if WHEN == "start":
    import grpc.aio._server as aio_server
    original = aio_server.Server.start

    async def start(self):
        ctrl_c()
        await original(self)

    aio_server.Server.start = start
else:
    sys.meta_path.insert(0, AtImport())
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("when", "code"), [("grpc", 130), ("onnxruntime", 130), ("start", 0)])
def test_ctrl_c_while_starting_is_one_line_or_a_clean_stop(
    model_path: Path, when: str, code: int
) -> None:
    argv = [sys.executable, "-c", INTERRUPT_WHILE_STARTING, when, "--port", "0"]
    done = subprocess.run(
        [*argv, "--model", str(model_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "never awaited" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    # Before the server exists: one line. Once it is being built: it serves, then drains.
    assert last == "swingup-serve: interrupted" if code else "stopped after 0 model calls" in last
