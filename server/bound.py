"""onnxruntime calls through input and output buffers bound once per batch size.

`InferenceSession.run` wraps the numpy input in a new OrtValue and each output in a new numpy
array on every call. For the actor that is most of the call: one observation ~26 us through
`run` against ~15 us bound, timed from cold caches as a server's calls run (~10 against ~6
warm); 1024 observations 162 against 145 us. An IOBinding fixes the buffers once; a call then
copies the observations in, runs, and copies the two outputs out (the buffers are reused, so a
caller must never hold them).

The bindings of one session are used by one thread at a time; a call that finds them in use
(the model thread and the event loop never run the model together, but nothing here relies on
that) takes `run` instead, as does a session on any provider but the CPU's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

# A batch size gets its own buffers the BIND_AFTER-th time it is seen, up to MAX_SHAPES sizes
# for the session's life (a reload starts afresh); other sizes take run(). Binding costs ~20 us,
# more than a bound call saves (~4-10 us), so a stream of ever-new sizes must not rebind: cycling
# a 64-size cache through sizes 1-512 took 58 us a call against run()'s 34.
MAX_SHAPES = 64
BIND_AFTER = 3


class _Binding:
    """One batch size: the input buffer and the two output buffers, bound to the session."""

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_names: Sequence[str],
        rows: int,
        dims: tuple[int, int],
    ) -> None:
        obs_dim, action_dim = dims
        self.obs = np.zeros((rows, obs_dim), np.float32)
        self.mean = np.zeros((rows, action_dim), np.float32)
        self.std = np.zeros((rows, action_dim), np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input(input_name, self.obs)  # the buffer itself, not a copy
        for name, buffer in zip(output_names, (self.mean, self.std), strict=True):
            binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
        self.binding = binding


class BoundSession:
    """`run(obs) -> (mean, std)` of a session whose graph takes one float32 [batch, obs_dim]
    input and gives two float32 [batch, action_dim] outputs."""

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_names: Sequence[str],
        dims: tuple[int, int],
    ) -> None:
        self.session = session
        self._input = input_name
        self._outputs = list(output_names)
        self._dims = dims
        self._row = (dims[0],)
        self._bindings: dict[int, _Binding] = {}
        self._seen: dict[int, int] = {}  # calls of each size not bound yet (<= max batch)
        self._lock = threading.Lock()
        self.enabled = session.get_providers()[0] == "CPUExecutionProvider"

    @property
    def sizes(self) -> list[int]:
        """The batch sizes with buffers bound."""
        return sorted(self._bindings)

    def run(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's two outputs for float32 observations [batch, obs_dim], fresh arrays."""
        if self.enabled and self._lock.acquire(blocking=False):
            try:
                bound = self._bound_for(obs)
                if bound is not None:
                    bound.obs[...] = obs
                    # No RunOptions: given some, the wrapper looks up a config entry that is
                    # not there and catches the C++ exception: 31 us a call, even warm
                    # (onnxruntime 1.32).
                    self.session.run_with_iobinding(bound.binding)
                    return bound.mean.copy(), bound.std.copy()
            finally:
                self._lock.release()
        mean, std = self.session.run(self._outputs, {self._input: obs})
        return mean, std

    def _bound_for(self, obs: np.ndarray) -> _Binding | None:
        """The buffers bound for obs's batch size, binding them if it is due; None for a size
        not bound, and for anything but float32 [rows >= 1, obs_dim]: run() refuses that as
        onnxruntime does, where the copy into a buffer would cast or broadcast it."""
        if obs.dtype != np.float32 or obs.shape[1:] != self._row or len(obs) == 0:
            return None
        rows = len(obs)
        bound = self._bindings.get(rows)
        if bound is not None or len(self._bindings) >= MAX_SHAPES:
            return bound
        seen = self._seen[rows] = self._seen.get(rows, 0) + 1
        if seen < BIND_AFTER:
            return None
        del self._seen[rows]
        bound = _Binding(self.session, self._input, self._outputs, rows, self._dims)
        self._bindings[rows] = bound
        return bound
