"""A Triton model repository: `DIR/<name>/config.pbtxt` and `DIR/<name>/<version>/model.onnx`.

NVIDIA Triton loads the directory as it is (onnxruntime backend, dynamic batching), and the Swingup
server serves the same layout, picking the highest valid version. A new export adds the next
version; the version directory appears whole (written beside, then renamed), so a server watching
the repository never sees half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from swingup import atomic, contract

DEFAULT_NAME = contract.MODEL_NAME
MODEL_FILE = "model.onnx"
MAX_BATCH = 4096


def config_pbtxt(name: str, max_batch: int = MAX_BATCH) -> str:
    """Triton's ModelConfig in text format for our actor."""
    return f"""# Written by swingup-train export --triton-repo. Triton's ModelConfig, text format.
name: "{name}"
backend: "onnxruntime"
max_batch_size: {max_batch}
input [
  {{
    name: "{contract.INPUT_NAME}"
    data_type: TYPE_FP32
    dims: [ {contract.OBS_DIM} ]
  }}
]
output [
  {{
    name: "{contract.MEAN_NAME}"
    data_type: TYPE_FP32
    dims: [ {contract.ACTION_DIM} ]
  }},
  {{
    name: "{contract.STD_NAME}"
    data_type: TYPE_FP32
    dims: [ {contract.ACTION_DIM} ]
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 100
}}
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def add_version(repo: Path, onnx_bytes: bytes, name: str = DEFAULT_NAME) -> Path:
    """Write `onnx_bytes` as the next version of `name` in `repo`; return the model file's path."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config = model_dir / "config.pbtxt"
    if not config.exists():
        atomic.write_text(config, config_pbtxt(name))
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        atomic.write_bytes(staging / MODEL_FILE, onnx_bytes)
        existing = versions(model_dir)
        version = (existing[-1] + 1) if existing else 1
        target = model_dir / str(version)
        os.rename(staging, target)  # fails rather than merges if another export took the number
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / MODEL_FILE
