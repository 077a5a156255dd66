"""Dynamic batching inside the event loop: concurrent requests share one model call.

Triton's dynamic batcher is the model. A request appends its observations to a pending list and
awaits a future; a flush, scheduled when the list stops being empty, runs ONE model call over
everything pending (up to `max_batch` rows) and hands each request back exactly its own rows.
The flush runs inline on the loop: the model call takes microseconds, less than handing it to a
thread would. With no window the flush is scheduled with `call_soon`, so a lone caller waits for
nothing, while requests that arrive together, or while the loop is busy, are coalesced anyway.
A window holds the first request that long for others to join. This module knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Outputs = tuple[np.ndarray, np.ndarray]
Model = Callable[[np.ndarray], Outputs]


@dataclass
class _Pending:
    obs: np.ndarray
    future: asyncio.Future[Outputs]


class Batcher:
    """Coalesce `run` calls into calls of `model` of at most `max_batch` rows."""

    def __init__(self, model: Model, max_batch: int, window_s: float = 0.0) -> None:
        self.model = model
        self.max_batch = max_batch
        self.window_s = window_s
        self._pending: list[_Pending] = []
        self._rows = 0
        self._flush_handle: asyncio.Handle | None = None
        self.calls = 0  # model calls made, for tests and a later metrics endpoint
        self.rows = 0  # observations through the model

    async def run(self, obs: np.ndarray) -> Outputs:
        """The model's outputs for `obs` (at most max_batch rows), computed with whatever else
        is pending. Cancelling the caller (a deadline, a hang-up) drops its rows unseen."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append(_Pending(obs, future))
        self._rows += len(obs)
        if self._rows >= self.max_batch:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = (
                loop.call_later(self.window_s, self._flush)
                if self.window_s > 0
                else loop.call_soon(self._flush)
            )
        return await future

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch: list[_Pending] = []
        rows = 0
        rest: list[_Pending] = []
        for item in self._pending:
            if item.future.done():  # cancelled while it waited
                continue
            if rest or (batch and rows + len(item.obs) > self.max_batch):
                rest.append(item)
            else:
                batch.append(item)
                rows += len(item.obs)
        self._pending = rest
        self._rows = sum(len(item.obs) for item in rest)
        if rest:
            # Full batches go now; the remainder is next in line, not held for another window.
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        if batch:
            self._run_model(batch, rows)

    def _run_model(self, batch: list[_Pending], rows: int) -> None:
        obs = batch[0].obs if len(batch) == 1 else np.concatenate([item.obs for item in batch])
        try:
            mean, std = self.model(obs)
        except Exception as exc:
            for item in batch:
                item.future.set_exception(exc)
            return
        self.calls += 1
        self.rows += rows
        start = 0
        for item in batch:
            stop = start + len(item.obs)
            item.future.set_result((mean[start:stop], std[start:stop]))
            start = stop
