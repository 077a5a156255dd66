"""`swingup-serve`'s settings: one dataclass, each field a flag and a `SWINGUP_` variable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swingup import contract
from swingup.cli import UsageError, option

ENV_PREFIX = "SWINGUP_"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO_ROOT / contract.SHIPPED_MODEL

Device = Literal["auto", "cpu", "cuda"]

# A request's observations travel as one protobuf message; this keeps the largest allowed batch
# far below gRPC's default 4 MiB message limit (4096 x 3 float32 is 48 KiB).
MAX_BATCH_LIMIT = 65_536


@dataclass
class ServeConfig:
    model: Path | None = option(None, f"ONNX model to serve (none: {contract.SHIPPED_MODEL})")
    host: str = option("127.0.0.1", "address to bind; anything but loopback is served without TLS")
    port: int = option(50051, "TCP port; 0 picks a free one (see the 'listening on' log line)")
    device: Device = option("auto", "onnxruntime execution provider: auto falls back to CPU")
    max_batch: int = option(
        4096, "largest batch of observations per inference call, and so per request"
    )
    batch_window_us: int = option(
        0,
        "how long the batcher holds a request for others to join; 0 adds no delay to a lone "
        "caller and still coalesces requests that arrive together",
    )
    workers: int = option(1, "server processes sharing the port via SO_REUSEPORT")
    grace_s: float = option(
        10.0, "on SIGTERM/SIGINT, how long in-flight calls and streams may take to finish"
    )
    port_file: Path | None = option(None, "once serving, write the bound port here atomically")

    def model_path(self) -> Path:
        return self.model if self.model is not None else SHIPPED_MODEL

    def check(self) -> None:
        """Refuse settings that cannot work, as one-line usage errors."""
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: must be between 0 and 65535")
        if not 1 <= self.max_batch <= MAX_BATCH_LIMIT:
            raise UsageError(
                f"--max-batch {self.max_batch}: must be between 1 and {MAX_BATCH_LIMIT}"
            )
        if self.batch_window_us < 0:
            raise UsageError(f"--batch-window-us {self.batch_window_us}: must be >= 0")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be >= 1")
        if not self.grace_s >= 0:
            raise UsageError(f"--grace-s {self.grace_s}: must be >= 0")
        if not self.host:
            raise UsageError("--host: must not be empty")
        if self.model is None and not SHIPPED_MODEL.is_file():
            raise UsageError(
                f"the shipped model {SHIPPED_MODEL} is missing: run `make model` or pass --model"
            )
        if self.model is not None and not self.model.is_file():
            raise UsageError(f"model file not found: {self.model}")


def address(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
