"""The in-process floor: onnxruntime's own time per call, nothing of gRPC or of ours."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import load
from swingup import contract


def ort_floor(model: Path, batches: tuple[int, ...], calls: int) -> list[dict[str, Any]]:
    """onnxruntime's own time per call, with its default options and with ours."""
    import onnxruntime as ort

    def ours() -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    rows = []
    for name, options in (("default", ort.SessionOptions()), ("1 thread, no spinning", ours())):
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        for batch in batches:
            obs = np.array(load.observations(batch, 0), dtype=np.float32).reshape(batch, -1)
            n = max(10, calls if batch == 1 else calls // 10)
            for _ in range(min(n, 50)):
                session.run(None, {contract.INPUT_NAME: obs})
            times = np.empty(n)
            for i in range(n):
                start = time.perf_counter()
                session.run(None, {contract.INPUT_NAME: obs})
                times[i] = time.perf_counter() - start
            rows.append(
                {
                    "options": name,
                    "batch": batch,
                    "p50_us": float(np.median(times) * 1e6),
                    "p99_us": float(np.percentile(times, 99) * 1e6),
                    "actions_per_s": batch / float(np.mean(times)),
                }
            )
    return rows
