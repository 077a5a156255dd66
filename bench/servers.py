"""Server processes under test: ours (`python -m server`) and the echo floor, on loopback port 0.

Each is a child process whose address comes from its "listening on HOST:PORT" log line, as
`client.localserver.LocalServer` does it, which these extend with a name, extra environment
variables (so a scratch copy of the server can be measured the same way) and death with the
benchmark; the pid is there for RSS and py-spy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from client.localserver import LocalServer

ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM if the benchmark dies without stopping it
    (PR_SET_PDEATHSIG), so that no server outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Served(LocalServer):
    """A server process started from `argv` (ours or the echo), in `cwd`, with `env` added to
    the environment; it dies with the benchmark. `wait()` returns its host:port once it serves."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        super().__init__(
            argv=argv,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    def wait(self, timeout: float = 60.0) -> str:
        try:
            return self.wait_listening(timeout)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}") from None


def ours(
    model: Path,
    *args: str,
    name: str = "swingup-serve",
    source: Path | None = None,
    env: dict[str, str] | None = None,
) -> Served:
    """`python -m server` on the given model, from this checkout or from a copy at `source`."""
    argv = [sys.executable, "-m", "server", "--port", "0", "--model", str(model), *args]
    return Served(name, argv, cwd=source or ROOT, env=env)


def echo(kind: str = "aio", name: str | None = None, model: Path | None = None) -> Served:
    """The echo floor (`bench.echo_server`); kind "model" answers with `model`'s mean action."""
    argv = [sys.executable, "-m", "bench.echo_server", "--kind", kind, "--port", "0"]
    if model is not None:
        argv += ["--model", str(model)]
    return Served(name or f"echo-{kind}", argv, cwd=ROOT)
