"""The server on CUDA: runs only where onnxruntime has the CUDA provider (onnxruntime-gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from support import Reference, observations, start_server

from client import PolicyClient

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="this onnxruntime has no CUDAExecutionProvider",
    ),
]


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_serves_on_cuda(model_path: Path, reference: Reference, device: str) -> None:
    with start_server(model_path, "--device", device) as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=30) as client:
            info = client.info()
            assert info.execution_provider == "CUDAExecutionProvider"
            obs = observations(1000)
            # GPU kernels round differently from the CPU reference, so a looser tolerance.
            np.testing.assert_allclose(client.act(obs), reference(obs)[0], rtol=0, atol=1e-5)
            sampled = client.act(obs, mode="sample", seed=1)
            np.testing.assert_array_equal(sampled, client.act(obs, mode="sample", seed=1))
        assert server.stop() == 0
    assert any("execution provider CUDAExecutionProvider" in line for line in server.lines)
