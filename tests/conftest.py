"""Fixtures for the server and client tests: a small real model and real server processes.

The model is a freshly initialised actor with a wide head, so means and stds vary across the
observation space (a trained model is not needed to check that the server serves it exactly).
Servers run as child processes on 127.0.0.1 port 0; readiness is their "listening on" log line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Reference, export_test_model, start_server

from client import PolicyClient
from client.localserver import LocalServer


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_test_model(tmp_path_factory.mktemp("model") / "actor.onnx")


@pytest.fixture(scope="session")
def reference(model_path: Path) -> Reference:
    return Reference(model_path)


@pytest.fixture(scope="session")
def server(model_path: Path) -> Iterator[LocalServer]:
    """One server shared by the tests that only call it; it must still exit 0 at the end."""
    with start_server(model_path) as running:
        yield running
        code = running.stop()
    assert code == 0, running.lines[-5:]


@pytest.fixture(scope="session")
def target(server: LocalServer) -> str:
    assert server.target is not None
    return server.target


@pytest.fixture
def own_server(model_path: Path) -> Iterator[LocalServer]:
    """A server of the test's own, for tests that freeze or stop it."""
    with start_server(model_path) as running:
        yield running


@pytest.fixture
def client(target: str) -> Iterator[PolicyClient]:
    with PolicyClient(target, timeout=10.0) as policy_client:
        yield policy_client
