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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

_LISTENING = re.compile(r"listening on (\S+)")


class LocalServer:
    """`python -m server --port 0 ARGS...`, its stderr lines collected in `lines`."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        echo: bool = False,
        env: dict[str, str] | None = None,
        argv: Sequence[str] | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """`argv` replaces the whole command (any server that logs its 'listening on' line);
        `preexec_fn` runs in the child before exec."""
        self.args = ["--port", "0", *args]
        command = list(argv) if argv is not None else [sys.executable, "-m", "server", *self.args]
        self.echo = echo
        self.lines: list[str] = []
        self.target: str | None = None
        self._listening = threading.Event()
        self._new_line = threading.Condition()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, name="server-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
            if self.echo:
                sys.stderr.write(line)
            match = _LISTENING.search(line)
            if match and self.target is None:
                self.target = match.group(1)
                self._listening.set()
        self._listening.set()  # the server exited: whoever waits must look at why
        with self._new_line:
            self._new_line.notify_all()

    def wait_listening(self, timeout: float = 60.0) -> str:
        """The server's host:port once it serves; RuntimeError if it exits or hangs instead."""
        if not self._listening.wait(timeout):
            raise RuntimeError(f"the server did not start within {timeout:g} s")
        if self.target is None:
            code = self.process.wait()
            last = self.lines[-1] if self.lines else "(no output)"
            raise RuntimeError(f"the server exited with {code}: {last}")
        return self.target

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_since(self, start: int) -> list[str]:
        return self.lines[start:]

    def wait_for_line(self, pattern: str, start: int = 0, timeout: float = 30.0) -> str:
        """The first log line from index `start` on that matches the regex `pattern`, waiting
        for the server to write it; RuntimeError if the server exits or the time runs out."""
        regex = re.compile(pattern)
        with self._new_line:
            if self._new_line.wait_for(
                lambda: (
                    any(regex.search(line) for line in self.lines[start:])
                    or not self._reader.is_alive()
                ),
                timeout,
            ):
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
        last = self.lines[-1] if self.lines else "(no output)"
        raise RuntimeError(f"no log line matching {pattern!r} within {timeout:g} s; last: {last}")

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
