"""Run `swingup-serve` as a child process on a free port and learn its address from its log.

The server logs "listening on HOST:PORT" once it serves; waiting for that line (never a sleep)
is how the demo and the tests know it is up. Shutdown is a signal and a wait for exit.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

_LISTENING = re.compile(r"listening on (\S+)")


class LocalServer:
    """`python -m server --port 0 ARGS...`, its stderr lines collected in `lines`."""

    def __init__(
        self, args: Sequence[str] = (), *, echo: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.args = ["--port", "0", *args]
        self.echo = echo
        self.lines: list[str] = []
        self.target: str | None = None
        self._listening = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, name="server-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if self.echo:
                sys.stderr.write(line)
            match = _LISTENING.search(line)
            if match and self.target is None:
                self.target = match.group(1)
                self._listening.set()
        self._listening.set()  # the server exited: whoever waits must look at why

    def wait_listening(self, timeout: float = 60.0) -> str:
        """The server's host:port once it serves; RuntimeError if it exits or hangs instead."""
        if not self._listening.wait(timeout):
            raise RuntimeError(f"the server did not start within {timeout:g} s")
        if self.target is None:
            code = self.process.wait()
            last = self.lines[-1] if self.lines else "(no output)"
            raise RuntimeError(f"the server exited with {code}: {last}")
        return self.target

    def log_since(self, start: int) -> list[str]:
        return self.lines[start:]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it to exit; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout)
        return code

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
