"""Helpers of the server and client tests: a small real model, a reference, server processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from client.localserver import LocalServer
from client.policy_client import PolicyClient
from swingup import contract

NO_RETRIES = [("grpc.enable_retries", 0)]

TEST_METADATA = {
    contract.META_FORMAT_VERSION: contract.FORMAT_VERSION,
    contract.META_ENV_ID: contract.ENV_ID,
    contract.META_OBS_SHAPE: f"[{contract.OBS_DIM}]",
    contract.META_ACTION_SHAPE: f"[{contract.ACTION_DIM}]",
    contract.META_ACTION_LOW: str(contract.ACTION_LOW),
    contract.META_ACTION_HIGH: str(contract.ACTION_HIGH),
    contract.META_PRESET: "test",
}


def export_test_model(path: Path, seed: int = 0) -> Path:
    import torch

    from trainer.networks import Actor
    from trainer.onnx_graph import export_actor

    torch.manual_seed(seed)
    export_actor(Actor(hidden=16, std_param="softplus", head_init=0.3), path, TEST_METADATA)
    return path


class Reference:
    """The model run directly by onnxruntime: what the server must reproduce."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.session.run(None, {contract.INPUT_NAME: obs.astype(np.float32)})
        return mean, std


def observations(count: int, seed: int = 0) -> np.ndarray:
    """Pendulum observations spread over the whole space."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, count)
    theta_dot = rng.uniform(-8.0, 8.0, count)
    return np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=1).astype(np.float32)


def start_server(model: Path, *args: str) -> LocalServer:
    """A server process on a free port, started and listening (stop it, or use `with`)."""
    server = LocalServer(["--model", str(model), *args])
    try:
        server.wait_listening()
    except RuntimeError:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def replicas(model: Path, *args: str) -> Iterator[tuple[LocalServer, LocalServer]]:
    """Two servers of `model` with /metrics (to tell which answered), stopped at the end; the
    round-robin target naming both is `f"ipv4:{first.target},{second.target}"`."""
    with (
        start_server(model, "--metrics-port", "0", *args) as first,
        start_server(model, "--metrics-port", "0", *args) as second,
    ):
        yield first, second


@contextlib.contextmanager
def frozen(server: LocalServer) -> Iterator[None]:
    """The server stopped (SIGSTOP): its connections stay open and nothing answers."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


# A program run with Ctrl-C (a real SIGINT) delivered when the named module starts to import:
# `python -c INTERRUPT_AT_IMPORT MODULE PROGRAM_MODULE ARGS...` runs PROGRAM_MODULE's main(ARGS).
INTERRUPT_AT_IMPORT = """
import importlib, os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == WHEN:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

WHEN, PROGRAM = sys.argv.pop(1), sys.argv.pop(1)
sys.meta_path.insert(0, CtrlC())
sys.exit(importlib.import_module(PROGRAM).main(sys.argv[1:]))
"""


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """A CLI's stderr, which must be one line, no traceback, and name no temporary file."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and ".tmp" not in err, err
    return err


def exit_code(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """`main(argv)`'s exit code, also when argparse exits from inside parse_args."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def serve_and_fail(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> str:
    """`python -m server --port 0 ARGS` expecting a usage error: its single error line. Stdin is
    closed (it must never prompt); no traceback and no gRPC core log line."""
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else {**os.environ, **env},
        preexec_fn=preexec_fn,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert not re.search(r"^[EWF]\d{4} ", result.stderr, re.MULTILINE), "a gRPC core log line"
    errors = [line for line in result.stderr.splitlines() if "swingup-serve: error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def client_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`swingup-client ARGS` (as `python -m client`), run to its end; `env` adds variables."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def health_of(target: str, service: str = "") -> str:
    """The health service's status name for `service` ("" is the server as a whole)."""
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


_STOPPED = re.compile(
    r"stopped after (\d+) model calls for (\d+) observations "
    r"\((\d+) of (\d+) accepted requests answered\)"
)


@dataclass(frozen=True)
class Stopped:
    """What a server (one worker) counted, from its closing log line."""

    calls: int
    observations: int
    answered: int
    accepted: int


def stopped(server: LocalServer) -> list[Stopped]:
    """The closing line of each of the server's workers (one without --workers)."""
    found = [_STOPPED.search(line) for line in server.lines]
    return [Stopped(*(int(n) for n in match.groups())) for match in found if match]


def until_stopped(server: LocalServer, start: int = 0) -> list[str]:
    """Stop the server (it must exit 0): every line it logged from `start` on but for its
    signal's line and its closing one. Read once it has exited, so no line is still on its way."""
    assert server.stop() == 0, server.lines[-5:]
    shutdown = re.compile(r"SIG[A-Z]+: not serving|" + _STOPPED.pattern)
    return [line for line in server.lines[start:] if not shutdown.search(line)]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_url(server: LocalServer) -> str:
    """http://HOST:PORT/metrics, as the server logs it."""
    line = server.wait_for_line(r"metrics on http://")
    url = re.search(r"(http://\S+/metrics)", line)
    assert url is not None
    return url.group(1)


def scrape(server: LocalServer) -> Samples:
    """Every sample of the server's /metrics, keyed by name and sorted labels."""
    with urllib.request.urlopen(metrics_url(server), timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape_until(
    server: LocalServer, done: Callable[[Samples], bool], timeout: float = 30.0
) -> Samples:
    """The server's /metrics once `done` holds of them: what a call still ending on the server
    (a cancelled stream, say) counts when it has. Scraped again at once until then (a scrape
    is a round trip: no sleep); AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples):
            return samples
        assert time.monotonic() < end, f"/metrics never got there within {timeout:g} s"


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if absent, as a counter nothing has counted yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


ACT = "/swingup.v1.PolicyService/Act"


def acts_answered(server: LocalServer) -> float:
    """How many Act calls the server (started with --metrics-port 0) answered OK."""
    return value(scrape(server), "swingup_grpc_calls_total", method=ACT, code="OK")


def act_until_each_answers(
    client: PolicyClient, replicas: Sequence[LocalServer], at_least: int
) -> None:
    """Call `client.act` until every replica has answered `at_least` of its calls: round robin
    reaches a replica once its connection and health watch are up, which takes a moment. The
    bound (500 calls) keeps a client that never reaches one from looping forever."""
    for calls in range(1, 501):
        client.act(observations(1))
        if calls % 10 == 0 and all(acts_answered(r) >= at_least for r in replicas):
            return
    counts = [acts_answered(replica) for replica in replicas]
    raise AssertionError(f"500 calls did not reach every replica {at_least} times: {counts}")


class Callers:
    """Threads calling `act(index)` in a loop until told to stop, counting answers and
    failures (any exception: an assertion inside `act` counts too)."""

    def __init__(self, count: int, act: Callable[[int], object]) -> None:
        self.answered = [0] * count
        self.failures: list[str] = []
        self._act = act
        self._done = threading.Event()
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        while not self._done.is_set():
            try:
                self._act(index)
            except Exception as exc:  # a failure is what the test counts
                with self._changed:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    self._changed.notify_all()
                return
            with self._changed:
                self.answered[index] += 1
                self._changed.notify_all()

    def wait_each(self, more: int, timeout: float = 60.0) -> None:
        """Wait until every caller has `more` answers beyond what it has now (or one failed)."""
        with self._changed:
            target = [n + more for n in self.answered]
            reached = self._changed.wait_for(
                lambda: (
                    self.failures or all(n >= t for n, t in zip(self.answered, target, strict=True))
                ),
                timeout,
            )
        assert reached, f"callers stalled at {self.answered}"

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)


def files_up_to_4_kib() -> None:
    """A `preexec_fn`: in the child, writing a file past 4 KiB fails (EFBIG; Python ignores
    SIGXFSZ). A real write failure after a run, where the check before it (an empty trial
    file) passes."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; where the loop would sleep until its next timer, the clock jumps
    there instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout is not None else super().select(None)
        self.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a clock of its own, which moves only when every task waits for a timer,
    and then straight to the next one: the timings of loop code (timers, `asyncio.sleep`,
    `loop.time()`) come out exactly as written, however slow or busy the machine."""

    def __init__(self) -> None:
        self._clock = _JumpingSelector()
        super().__init__(self._clock)

    def time(self) -> float:
        return self._clock.now


def run_on_virtual_clock(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on a VirtualClockLoop."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def signalled_after_first_checkpoint(run: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start a seed-preset run of a million frames in `run`, send `sig` once it has written its
    first checkpoint, and return its exit code and stderr. The run is never left behind,
    whatever fails."""
    argv = [sys.executable, "-m", "trainer", "train", "--preset", "seed", "--frames", "1000000"]
    argv += ["--out", str(run), "--no-progress", "--checkpoint-interval", "200"]
    argv += ["--log-checkpoints"]
    proc = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the first checkpoint, then the signal
            if line.startswith("checkpoint"):
                break
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, err
