"""Helpers of the server and client tests: a small real model, a reference, server processes."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from client.localserver import LocalServer
from swingup import contract

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
    """A CLI's stderr, which must be one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def files_up_to_4_kib() -> None:
    """A `preexec_fn`: in the child, writing a file past 4 KiB fails (EFBIG; Python ignores
    SIGXFSZ). A real write failure after a run, where the check before it (an empty trial
    file) passes."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
