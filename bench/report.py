"""docs/benchmarks.md from the JSON results each benchmark leaves in docs/bench/."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from swingup import atomic

TRAINING_JSON = "training.json"
SERVING_JSON = "serving.json"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import grpc
    import numpy
    import onnxruntime

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "grpcio": grpc.__version__}
    versions["onnxruntime"] = onnxruntime.__version__
    versions["numpy"] = numpy.__version__
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
        **versions,
    }


def save(out_dir: Path, name: str, result: dict[str, Any]) -> None:
    atomic.write_text(
        out_dir / "bench" / name, json.dumps({**result, "machine": machine()}, indent=1)
    )


def load(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = out_dir / "bench" / name
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write(out_dir: Path) -> Path:
    """Render every section whose results exist into benchmarks.md."""
    from bench import report_serving, report_training

    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench`; every figure is measured in the same run as its floor.",
        "",
    ]
    training = load(out_dir, TRAINING_JSON)
    if training is not None:
        parts += report_training.render(training, out_dir)
    serving = load(out_dir, SERVING_JSON)
    if serving is not None:
        parts += report_serving.render(serving, out_dir)
    path = out_dir / "benchmarks.md"
    atomic.write_text(path, "\n".join(parts) + "\n")
    return path


def machine_lines(info: dict[str, str]) -> list[str]:
    keys = ("cpu", "cores", "os", "date", "python", "torch", "onnxruntime", "grpcio", "numpy")
    return ["Machine: " + "; ".join(f"{k} {info[k]}" for k in keys if k in info), ""]
