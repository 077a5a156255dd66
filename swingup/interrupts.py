"""Ctrl-C at any moment of a program's life, its imports too: one line, `PROG: interrupted`, and
exit 130, never a traceback.

Each program's command-line module wraps its imports in `exit_on_interrupt(PROG)`, and
`swingup.cli.run` reports an interrupt while it parses the flags or runs a command. The
programs import this module before gRPC, numpy, onnxruntime or torch, so it imports nothing but
`sys` itself.
"""

from __future__ import annotations

import sys
from types import TracebackType

EXIT_INTERRUPTED = 130


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also as the ImportError an extension module makes of one that came while it
    loaded (onnxruntime's does)."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, ImportError) and isinstance(exc.__cause__, KeyboardInterrupt)
    )


def interrupted(prog: str) -> int:
    """Say that `prog` was interrupted; the exit code to end it with."""
    print(f"{prog}: interrupted", file=sys.stderr)
    forget_unhandled_interrupt()
    return EXIT_INTERRUPTED


def forget_unhandled_interrupt() -> None:
    """CPython ends the process by SIGINT, whatever the program returns or exits with, once a
    KeyboardInterrupt has left code run through PyRun_String (pybind11 runs some while torch
    imports: Ctrl-C there would exit -2, not 130). A PyRun_String call that succeeds clears that
    mark."""
    import ctypes

    ctypes.pythonapi.PyRun_SimpleString(b"pass")


class exit_on_interrupt:  # lower case, as contextlib.suppress: it reads as a statement
    """`with exit_on_interrupt(PROG):` around a program's imports: Ctrl-C while they load (gRPC,
    numpy, onnxruntime take a few hundred ms) ends it as an interrupt anywhere else does, with
    one line and SystemExit(130). Anything else passes through."""

    def __init__(self, prog: str) -> None:
        self.prog = prog

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and is_interrupt(exc):
            raise SystemExit(interrupted(self.prog)) from None
