"""The onnxruntime side: load an exported actor, check it honours the contract, run it.

Provider choice is a pure function of what onnxruntime offers and what the session ended up
using, because onnxruntime silently falls back to CPU when the CUDA provider cannot load.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from server.bound import BoundSession
from server.config import Device
from server.errors import ModelError
from swingup import contract, model_contract

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def choose_providers(device: Device, available: Sequence[str]) -> tuple[list[str], str]:
    """The providers to request for `device` given onnxruntime's, and a note for the log."""
    if device == "cpu":
        return [CPU], ""
    if CUDA in available:
        return [CUDA, CPU], ""
    if device == "cuda":
        raise ModelError(
            f"--device cuda: this onnxruntime has no {CUDA} (it offers {', '.join(available)}); "
            "install onnxruntime-gpu on a CUDA machine, or use --device auto or cpu"
        )
    return [CPU], "device auto: onnxruntime has no CUDA provider, serving on CPU"


def confirm_providers(device: Device, requested: Sequence[str], active: Sequence[str]) -> str:
    """Check the session's actual providers against the request; return a note for the log.

    onnxruntime does not fail when the CUDA provider cannot load: it quietly runs on CPU.
    """
    if requested[0] != CUDA or (active and active[0] == CUDA):
        return ""
    reason = (
        f"the {CUDA} is installed but failed to load (no GPU, or CUDA/cuDNN libraries missing); "
        f"onnxruntime fell back to {active[0] if active else 'nothing'}"
    )
    if device == "cuda":
        raise ModelError(f"--device cuda: {reason}")
    return f"device auto: {reason}"


def session_options(threads: int = 1) -> ort.SessionOptions:
    """One thread by default, and no spinning: a call of the shipped actor is microseconds and
    the event loop must keep its core. A large model's big batches gain from more threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: our own log says which provider runs
    return options


def check_metadata(metadata: dict[str, str]) -> None:
    """The exported model's metadata must describe the contract this server speaks."""
    problem = model_contract.metadata_problem(metadata)
    if problem:
        raise ModelError(problem)


def _check_graph(session: ort.InferenceSession) -> None:
    problem = model_contract.graph_problem(session)
    if problem:
        raise ModelError(problem)


def _first_line(exc: Exception) -> str:
    """An exception's message for a one-line error: its first line, or its type's name."""
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


def check_onnx(data: bytes, path: Path) -> None:
    """The ONNX checker with full shape inference, as the exporter runs it."""
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:  # DecodeError, ValidationError, InferenceError...
        reason = _first_line(exc)
        raise ModelError(f"{path}: the ONNX checker rejected the model: {reason}") from None


def smoke_observations() -> np.ndarray:
    """Observations over the whole space: the circle of angles at the speed limits and at rest."""
    theta = np.linspace(-np.pi, np.pi, 16, endpoint=False)
    rows = [
        np.stack([np.cos(theta), np.sin(theta), np.full_like(theta, speed)], axis=1)
        for speed in (-contract.OBS_HIGH[2], 0.0, contract.OBS_HIGH[2])
    ]
    return np.concatenate(rows).astype(np.float32)


@dataclass(frozen=True)
class Cost:
    """A model call's duration as fixed + per-row time, measured at load."""

    fixed_s: float = 0.0
    per_row_s: float = 0.0

    def __call__(self, rows: int) -> float:
        return self.fixed_s + self.per_row_s * rows


COST_PROBE_ROWS = 256


# Named once: session.run(None, ...) lists the graph's outputs again on every call.
_OUTPUTS = [contract.MEAN_NAME, contract.STD_NAME]


@dataclass
class Runtime:
    """A loaded, checked model: `predict(obs) -> (mean, std)` on the chosen provider."""

    session: ort.InferenceSession
    path: Path
    version: str
    metadata: dict[str, str]
    providers: list[str]
    note: str
    sha256: str = ""
    cost: Cost = field(default_factory=Cost)
    bound: BoundSession = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.bound = BoundSession(
            self.session,
            contract.INPUT_NAME,
            _OUTPUTS,
            (contract.OBS_DIM, contract.ACTION_DIM),
        )

    @property
    def provider(self) -> str:
        return self.providers[0]

    @classmethod
    def load(
        cls, path: Path, device: Device, version: str | None = None, threads: int = 1
    ) -> Runtime:
        """Load and check `path`: the ONNX checker, the graph and metadata of the contract, and a
        smoke inference. `version` names it (default: the first 12 hex digits of its SHA-256);
        `threads` are onnxruntime's intra-op threads."""
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror}") from None
        requested, note = choose_providers(device, ort.get_available_providers())
        try:
            options = session_options(threads)
            session = ort.InferenceSession(data, options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            reason = _first_line(exc)
            raise ModelError(f"cannot load {path} as an ONNX model: {reason}") from None
        active = session.get_providers()
        note = confirm_providers(device, requested, active) or note
        _check_graph(session)
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        check_metadata(metadata)
        check_onnx(data, path)
        sha256 = hashlib.sha256(data).hexdigest()
        runtime = cls(
            session=session,
            path=path,
            version=sha256[:12] if version is None else version,
            metadata=metadata,
            providers=list(active),
            note=note,
            sha256=sha256,
        )
        runtime.warm_up()
        return runtime

    def predict(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the actor on float32 [batch, obs_dim]; outputs are [batch, action_dim] each."""
        return self.bound.run(obs)

    def cost_s(self, rows: int) -> float:
        return self.cost(rows)

    def warm_up(self) -> None:
        """A smoke inference at load, so the first client does not pay for allocations and a
        model that breaks the contract's bounds is refused; it also times the model."""
        obs = smoke_observations()
        # Checked through run(): the bound buffers take the contract's shapes for granted.
        try:
            mean, std = self.session.run(_OUTPUTS, {contract.INPUT_NAME: obs})
        except Exception as exc:  # onnxruntime's own types: a graph that cannot run
            reason = _first_line(exc)
            raise ModelError(f"model failed its smoke inference: {reason}") from None
        if mean.shape != (len(obs), contract.ACTION_DIM) or std.shape != mean.shape:
            raise ModelError(
                f"model returned shapes {mean.shape} and {std.shape} for {len(obs)} observations"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ModelError("model returned non-finite outputs for observations in the space")
        if not (np.all(std > 0) and np.all(np.abs(mean) <= contract.ACTION_HIGH)):
            raise ModelError(
                "model broke the contract's bounds: std must be > 0 and |mean| <= "
                f"{contract.ACTION_HIGH}"
            )
        one = self._time(obs[:1])
        many = self._time(np.resize(obs, (COST_PROBE_ROWS, contract.OBS_DIM)))
        per_row = max(0.0, (many - one) / (COST_PROBE_ROWS - 1))
        self.cost = Cost(max(0.0, one - per_row), per_row)

    def _time(self, obs: np.ndarray) -> float:
        """The best of three calls: the model's own time, not the machine's hiccups."""
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            self.predict(obs)
            best = min(best, time.perf_counter() - start)
        return best
