"""Server processes under test: ours (`python -m server`) and the echo floor, on loopback port 0.

Each is a child process whose address comes from its "listening on HOST:PORT" log line, as
`client.localserver` does it; this one also takes a working directory and environment (so a
scratch copy of the server can be measured the same way) and exposes the pid for RSS and py-spy.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on (\S+)")


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM if the benchmark dies without stopping it
    (PR_SET_PDEATHSIG), so that no server outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Served:
    """A server process started from `argv`; `wait()` returns its host:port once it serves."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.lines: list[str] = []
        self.target: str | None = None
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and self.target is None:
                self.target = match.group(1)
                self._listening.set()
        self._listening.set()

    def wait(self, timeout: float = 60.0) -> str:
        if not self._listening.wait(timeout) or self.target is None:
            self.stop()
            last = self.lines[-3:] if self.lines else ["(no output)"]
            raise RuntimeError(f"{self.name} did not start: {' | '.join(last)}")
        return self.target

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout)
        return code

    def __enter__(self) -> Served:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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


def echo(kind: str = "aio", name: str | None = None) -> Served:
    argv = [sys.executable, "-m", "bench.echo_server", "--kind", kind, "--port", "0"]
    return Served(name or f"echo-{kind}", argv, cwd=ROOT)
