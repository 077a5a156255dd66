"""`swingup-serve`'s settings: one dataclass, each field a flag and a `SWINGUP_` variable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from swingup import atomic, contract
from swingup.cli import UsageError, option

ENV_PREFIX = "SWINGUP_"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPO_ROOT / contract.SHIPPED_MODEL

Device = Literal["auto", "cpu", "cuda"]

# A request's observations travel as one protobuf message; this keeps the largest allowed batch
# far below gRPC's default 4 MiB message limit (4096 x 3 float32 is 48 KiB).
MAX_BATCH_LIMIT = 65_536
# Each worker is a process with its own model session and onnxruntime threads, all sharing the
# machine's cores: far beyond one per core more workers only add memory and contention.
MAX_WORKERS = 64
# onnxruntime threads per session (each worker has its own): as with workers, far beyond the
# cores they only contend.
MAX_THREADS = 64
# A window is a delay every lone request pays; past a second it outlasts any sensible deadline
# (and GetModelInfo reports it as a uint32).
MAX_WINDOW_US = 1_000_000
# gRPC takes message sizes, and the idle timeout in milliseconds, as C ints (int32).
INT32_MAX = 2**31 - 1
MAX_IDLE_TIMEOUT_S = INT32_MAX // 1000  # about 24.8 days
# Below this a stream dies between two requests of a healthy client, and a TLS handshake fails.
MIN_IDLE_TIMEOUT_S = 0.1
# Each poll stats the model and token files: polled faster, the polling is the server's load.
MIN_WATCH_S = 0.01


@dataclass
class ServeConfig:
    model: Path | None = option(
        None,
        "ONNX model to serve, or a directory of numbered versions (N/model.onnx, as in a Triton "
        f"model repository) to serve the highest valid one of (none: {contract.SHIPPED_MODEL})",
    )
    host: str = option("127.0.0.1", "address to bind; beyond loopback, serve with --tls-cert")
    port: int = option(50051, "TCP port; 0 picks a free one (see the 'listening on' log line)")
    device: Device = option("auto", "onnxruntime execution provider: auto falls back to CPU")
    model_name: str = option(
        contract.MODEL_NAME, "the model's name in the Open Inference Protocol (KServe v2) service"
    )
    max_batch: int = option(
        4096, "largest batch of observations per inference call, and so per request"
    )
    batch_window_us: int = option(
        0,
        "how long the batcher holds a request for others to join; 0 adds no delay to a lone "
        "caller and still coalesces requests that arrive together. asyncio's timers tick in "
        "whole milliseconds, so any window from 1 to 1000 us holds a request about 1 ms. At "
        f"most {MAX_WINDOW_US} (1 s): every lone request waits the window out",
    )
    batching: bool = option(
        True,
        "coalesce concurrent requests into one model call (--no-batching: every request runs "
        "alone, in arrival order; --max-batch still bounds a request)",
    )
    intra_op_threads: int = option(
        1,
        "onnxruntime threads per model call, at most "
        f"{MAX_THREADS}: 1 keeps the call on one core beside the event loop, best for the "
        "shipped actor; more speed up a large model's big batches, taking cores from the loop",
    )
    workers: int = option(
        1,
        f"server processes sharing the port via SO_REUSEPORT, at most {MAX_WORKERS}: each holds "
        "its own model, and more processes than cores only add memory and contention",
    )
    grace_s: float = option(
        10.0,
        "on SIGTERM/SIGINT, how long in-flight calls and streams may take to finish; a second "
        "signal cancels them at once",
    )
    lame_duck_s: float = option(
        0.0,
        "on SIGTERM/SIGINT, first turn health NOT_SERVING and go on serving for up to this "
        "long, until no new call has come for 0.25 s: clients that watch health (PolicyClient "
        "does) move their calls to other replicas before this one refuses any, and open "
        "streams end (UNAVAILABLE) so that their clients reopen them there. A second signal "
        "ends it",
    )
    port_file: Path | None = option(
        None, "once serving, write the bound port here atomically; removed when the server stops"
    )
    # --- hardening: security, limits, reloads, metrics (README: security model, reloads) ---
    tls_cert: Path | None = option(None, "serve TLS with this PEM certificate (chain)")
    tls_key: Path | None = option(None, "the PEM private key of --tls-cert")
    tls_client_ca: Path | None = option(
        None, "mutual TLS: require client certificates signed by this PEM CA bundle"
    )
    auth_token_file: Path | None = option(
        None,
        "require 'authorization: Bearer <token>' on every call but health; one token per line, "
        "reread when the file changes",
    )
    max_message_bytes: int = option(
        1 << 20,
        "largest request or response message, in bytes; must hold a --max-batch request, and "
        f"at most {INT32_MAX} (gRPC's limit)",
    )
    idle_timeout_s: float = option(
        30.0,
        "a stream idle this long (no request, or a reply left unread) is ended; also bounds a "
        "connection's TLS handshake and closes connections idle this long (on --metrics-port "
        "too). From "
        f"{MIN_IDLE_TIMEOUT_S} to {MAX_IDLE_TIMEOUT_S} (gRPC takes it in int32 milliseconds)",
    )
    max_connection_age_s: float = option(
        0.0,
        "close each client connection after this long (a GOAWAY, with jitter; calls on it "
        "finish): clients then resolve the name again and spread over replicas added since, "
        "as round robin over a headless Service needs. 0: never",
    )
    max_queue: int | None = option(
        None,
        "most observations waiting for the model; a request beyond it gets RESOURCE_EXHAUSTED "
        "at once (none: 4 x --max-batch)",
    )
    watch_s: float = option(
        1.0,
        "how often to look for a new model version or token file (0: only on SIGHUP/admin); "
        f"at least {MIN_WATCH_S}, as each look reads the files",
    )
    metrics_port: int | None = option(
        None,
        "serve Prometheus metrics at http://HOST:PORT/metrics (0 picks a free port; worker i of "
        "--workers uses PORT+i, so PORT+N-1 must be a port too)",
    )

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
        if not 0 <= self.batch_window_us <= MAX_WINDOW_US:
            raise UsageError(
                f"--batch-window-us {self.batch_window_us}: must be between 0 and "
                f"{MAX_WINDOW_US} (1 s): every lone request waits the window out"
            )
        if not 1 <= self.intra_op_threads <= MAX_THREADS:
            raise UsageError(
                f"--intra-op-threads {self.intra_op_threads}: must be between 1 and {MAX_THREADS}"
            )
        if not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(
                f"--workers {self.workers}: must be between 1 and {MAX_WORKERS} (each worker is "
                "a process with its own model; more than the cores only add memory and contention)"
            )
        if not self.grace_s >= 0:
            raise UsageError(f"--grace-s {self.grace_s}: must be >= 0")
        if not self.lame_duck_s >= 0:
            raise UsageError(f"--lame-duck-s {self.lame_duck_s}: must be >= 0")
        if not self.host:
            raise UsageError("--host: must not be empty")
        if not self.model_name:
            raise UsageError("--model-name: must not be empty")
        if self.model is None and not SHIPPED_MODEL.is_file():
            raise UsageError(
                f"the shipped model {SHIPPED_MODEL} is missing: run `make model` or pass --model"
            )
        if self.model is not None and not self.model.exists():
            raise UsageError(f"model file not found: {self.model}")
        if self.model is not None and self.model.is_file():  # a directory: a model repository
            _check_readable("--model", self.model)
        self._check_hardening()

    def _check_hardening(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        for flag, path in (
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
            ("--tls-client-ca", self.tls_client_ca),
            ("--auth-token-file", self.auth_token_file),
        ):
            if path is not None:
                _check_readable(flag, path)
        if self.port_file is not None:
            _check_port_file(self.port_file)
        self._check_limits()
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise UsageError(f"--metrics-port {self.metrics_port}: must be between 0 and 65535")
        if self.metrics_port and self.metrics_port + self.workers - 1 > 65535:
            raise UsageError(
                f"--metrics-port {self.metrics_port}: --workers {self.workers} would use ports "
                f"up to {self.metrics_port + self.workers - 1}, beyond 65535"
            )

    def _check_limits(self) -> None:
        largest = self.max_batch * contract.OBS_DIM * 4 + 64  # packed floats and a few fields
        if self.max_message_bytes < largest:
            raise UsageError(
                f"--max-message-bytes {self.max_message_bytes}: a request of --max-batch "
                f"{self.max_batch} observations takes up to {largest} bytes"
            )
        if self.max_message_bytes > INT32_MAX:
            raise UsageError(
                f"--max-message-bytes {self.max_message_bytes}: must be at most {INT32_MAX} "
                "(gRPC's limit)"
            )
        age = self.max_connection_age_s
        if not (age == 0 or MIN_IDLE_TIMEOUT_S <= age <= MAX_IDLE_TIMEOUT_S):  # and not nan
            raise UsageError(
                f"--max-connection-age-s {age}: must be 0 (never) or between "
                f"{MIN_IDLE_TIMEOUT_S} and {MAX_IDLE_TIMEOUT_S} (gRPC takes int32 milliseconds)"
            )
        if not MIN_IDLE_TIMEOUT_S <= self.idle_timeout_s <= MAX_IDLE_TIMEOUT_S:  # and not nan
            raise UsageError(
                f"--idle-timeout-s {self.idle_timeout_s}: must be between {MIN_IDLE_TIMEOUT_S} "
                f"and {MAX_IDLE_TIMEOUT_S} (gRPC takes it in int32 milliseconds, about 24.8 days)"
            )
        if self.max_queue is not None and self.max_queue < self.max_batch:
            raise UsageError(
                f"--max-queue {self.max_queue}: must be at least --max-batch {self.max_batch}"
            )
        if not (self.watch_s == 0 or self.watch_s >= MIN_WATCH_S):  # and not nan
            raise UsageError(
                f"--watch-s {self.watch_s}: must be 0 (no polling) or at least {MIN_WATCH_S}"
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def _check_readable(flag: str, path: Path) -> None:
    """A file flag's file: one this user can read, said in one line if not."""
    problem = atomic.unreadable(path)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}")


def _check_port_file(path: Path) -> None:
    """--port-file is written once the port is open: refuse now what would fail then."""
    problem = atomic.unwritable(path)
    if problem:
        raise UsageError(f"--port-file {path}: {problem}")


def address(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
