"""Dynamic batching inside the event loop: concurrent requests share one model call.

Triton's dynamic batcher is the model. A request appends its observations to a bounded queue and
awaits a future; a flush, scheduled when the queue stops being empty, runs ONE model call over
the requests at its head that use the same model (up to `max_batch` rows) and hands each request
back exactly its own rows. With no window the flush is scheduled with `call_soon`, so a lone
caller waits for nothing, while requests that arrive together, or while the model is busy, are
coalesced anyway. A window holds the first request that long for others to join. A request that
finds the batcher idle and nothing else ready to run in this turn of the loop could only ever be
flushed alone: with no window it runs at once, inline, without the future and the loop pass.
With batching off every request runs alone, in arrival order, through the same queue.

Where the model runs: a call the model's own estimate puts under `INLINE_S` runs inline on the
loop, because handing it to a thread costs more (~65 us) than it does; so does a lone request
up to `LONE_INLINE_S`, as no other work waits for the loop then. A longer one runs on the
one model thread (onnxruntime releases the GIL), so that the loop goes on accepting, validating
and queueing requests, and refusing them once the queue is full, while the model works. One
batch runs at a time: the next forms while it runs.

Overload: past `max_queue` queued observations a request is refused at once (`Overloaded`)
instead of waiting without bound, and a request whose deadline passes while it is queued is
dropped without running (`DeadlineExpired`). This module knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import weakref
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.errors import DeadlineExpired, Overloaded

Outputs = tuple[np.ndarray, np.ndarray]

# The longest model call that runs on the loop itself; longer ones go to the model thread.
INLINE_S = 100e-6
# ...except for a lone request (nothing queued or running, nothing else ready on the loop):
# no other work waits for the loop then, and the hand-off to the thread and back costs more
# than the loop being busy (1024 pendulums: ~210 us inline against ~380 us through the thread,
# timed inside the server).
LONE_INLINE_S = 2e-3


class Model(Protocol):
    def predict(self, obs: np.ndarray) -> Outputs: ...

    def cost_s(self, rows: int) -> float:
        """The expected duration of one call over `rows` observations."""
        ...


class BatchObserver(Protocol):
    """What the batcher reports, for metrics; it must not raise."""

    def batch(self, rows: int, queue_s: list[float], run_s: float) -> None: ...

    def refused(self, reason: str) -> None: ...


@dataclass
class _Pending:
    model: Model
    obs: np.ndarray
    future: asyncio.Future[Outputs]
    queued_at: float  # loop time
    deadline: float | None  # loop time


class Batcher:
    """Coalesce `run` calls into model calls of at most `max_batch` rows, one at a time."""

    def __init__(
        self,
        max_batch: int,
        window_s: float = 0.0,
        max_queue: int | None = None,
        observer: BatchObserver | None = None,
        batching: bool = True,
    ) -> None:
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = 4 * max_batch if max_queue is None else max_queue
        self.observer = observer
        self.batching = batching  # False: every request runs alone, in arrival order
        self._pending: list[_Pending] = []
        # id(model): (the model, weakly: a reload lets an old one go; its inline row limits)
        self._inline_rows: dict[int, tuple[weakref.ref[Model], tuple[int, int]]] = {}
        self._rows = 0  # queued rows, cancelled requests included until a flush drops them
        self._flush_handle: asyncio.Handle | None = None
        self._busy = False  # a batch is running on the model thread
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self.calls = 0  # model calls made
        self.rows = 0  # observations through the model
        self.refused = 0  # requests refused because the queue was full
        self.expired = 0  # requests dropped because their deadline passed while queued

    @property
    def queued_rows(self) -> int:
        return self._rows

    async def run(self, model: Model, obs: np.ndarray, deadline: float | None = None) -> Outputs:
        """`model`'s outputs for `obs` (at most max_batch rows), computed with whatever else is
        queued for it. `deadline` is in the loop's time. Cancelling the caller (a deadline, a
        hang-up) drops its rows unseen."""
        if self._rows + len(obs) > self.max_queue:
            self.refused += 1
            if self.observer is not None:
                self.observer.refused("queue_full")
            raise Overloaded(
                f"overloaded: {self._rows} observations are queued, the limit is "
                f"{self.max_queue}; retry later"
            )
        loop = asyncio.get_running_loop()
        if (
            not self._pending
            and not self._busy
            and (not self.batching or self.window_s == 0)
            and self._may_run_alone(model, len(obs), _nothing_else_ready(loop))
        ):
            # Nothing could join this request before a flush would run (see
            # _nothing_else_ready): run it now, without the future and the loop pass.
            return self._run_alone(model, obs, deadline, loop.time())
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append(_Pending(model, obs, future, loop.time(), deadline))
        self._rows += len(obs)
        # While a batch runs on the model thread, its end flushes again.
        if not self._busy and self._rows >= self.max_batch:
            self._flush()
        elif not self._busy and self._flush_handle is None:
            self._flush_handle = (
                loop.call_later(self.window_s, self._flush)
                if self.window_s > 0 and self.batching
                else loop.call_soon(self._flush)
            )
        return await future

    def _run_alone(
        self, model: Model, obs: np.ndarray, deadline: float | None, now: float
    ) -> Outputs:
        """One request's model call, inline, as a flush of it alone would make it."""
        if deadline is not None and deadline <= now:
            self.expired += 1
            if self.observer is not None:
                self.observer.refused("deadline")
            raise DeadlineExpired("deadline expired while queued")
        if self.observer is None:
            outputs = model.predict(obs)
        else:
            start = time.perf_counter()
            outputs = model.predict(obs)
            self.observer.batch(len(obs), [0.0], time.perf_counter() - start)
        self.calls += 1
        self.rows += len(obs)
        return outputs

    def _may_run_alone(self, model: Model, rows: int, loop_idle: bool) -> bool:
        """Whether a request that finds the batcher empty runs inline now: with nothing else
        ready on the loop, up to LONE_INLINE_S; otherwise only with batching off (a request
        runs alone anyway) and up to INLINE_S."""
        short, lone = self._inline_limits(model)
        return rows <= lone if loop_idle else (not self.batching and rows <= short)

    def _inline_limits(self, model: Model) -> tuple[int, int]:
        """The most rows of `model` that run inline, within INLINE_S and LONE_INLINE_S: its
        cost estimate, asked once per model (and taken to grow with rows), not once per call."""
        known = self._inline_rows.get(id(model))
        if known is not None and known[0]() is model:
            return known[1]
        limits = (self._rows_within(model, INLINE_S), self._rows_within(model, LONE_INLINE_S))
        if len(self._inline_rows) >= 8:  # old versions come and go with reloads
            self._inline_rows.clear()
        self._inline_rows[id(model)] = (weakref.ref(model), limits)
        return limits

    def _rows_within(self, model: Model, budget_s: float) -> int:
        low, high = 0, self.max_batch
        while low < high:
            middle = (low + high + 1) // 2
            if model.cost_s(middle) <= budget_s:
                low = middle
            else:
                high = middle - 1
        return low

    def close(self) -> None:
        """Stop the model thread (after the batch it runs, if any)."""
        if self._thread is not None:
            self._thread.shutdown(wait=False)

    def _take(self, now: float) -> list[_Pending]:
        """The next batch: queued requests for the head's model, in order, up to max_batch."""
        batch: list[_Pending] = []
        rest: list[_Pending] = []
        rows = 0
        full = False
        for item in self._pending:
            if item.future.done():  # cancelled while it waited
                continue
            if item.deadline is not None and item.deadline <= now:
                self.expired += 1
                if self.observer is not None:
                    self.observer.refused("deadline")
                item.future.set_exception(DeadlineExpired("deadline expired while queued"))
                continue
            same = not batch or item.model is batch[0].model
            fits = rows + len(item.obs) <= self.max_batch and (self.batching or not batch)
            if same and not full and fits:
                batch.append(item)
                rows += len(item.obs)
            else:
                full = full or same  # later requests for this model wait their turn
                rest.append(item)
        self._pending = rest
        self._rows = sum(len(item.obs) for item in rest) if rest else 0
        return batch

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._busy:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        batch = self._take(now)
        if not batch:
            return
        model = batch[0].model
        obs = batch[0].obs if len(batch) == 1 else np.concatenate([item.obs for item in batch])
        waits = None if self.observer is None else [now - item.queued_at for item in batch]
        if len(obs) <= self._inline_limits(model)[0]:
            start = 0.0 if waits is None else time.perf_counter()
            try:
                outputs = model.predict(obs)
            except Exception as exc:
                self._fail(batch, exc)
            else:
                run_s = 0.0 if waits is None else time.perf_counter() - start
                self._deliver(batch, outputs, waits, run_s)
            if self._pending:
                # Full batches go now; the remainder is next in line, not held for a window.
                self._flush_handle = loop.call_soon(self._flush)
            return
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, "swingup-model")
        self._busy = True
        start = time.perf_counter()
        running = loop.run_in_executor(self._thread, model.predict, obs)

        def done(result: asyncio.Future[Outputs]) -> None:
            self._busy = False
            if result.cancelled():
                self._fail(batch, RuntimeError("the model thread stopped"))
            elif (exc := result.exception()) is not None:
                self._fail(batch, exc)
            else:
                self._deliver(batch, result.result(), waits, time.perf_counter() - start)
            if self._pending and self._flush_handle is None:
                self._flush_handle = loop.call_soon(self._flush)

        running.add_done_callback(done)

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _deliver(
        self, batch: list[_Pending], outputs: Outputs, waits: list[float] | None, run_s: float
    ) -> None:
        mean, std = outputs
        rows = len(mean)
        self.calls += 1
        self.rows += rows
        if self.observer is not None and waits is not None:
            self.observer.batch(rows, waits, run_s)
        if len(batch) == 1:
            item = batch[0]
            if not item.future.done():
                item.future.set_result(outputs)
            return
        start = 0
        for item in batch:
            stop = start + len(item.obs)
            if not item.future.done():  # its caller may have gone while the model ran
                item.future.set_result((mean[start:stop], std[start:stop]))
            start = stop


def _nothing_else_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether nothing but the running callback is ready in this turn of the loop.

    Then a flush scheduled with call_soon would find this request alone: whatever the loop
    polls next (new requests included) is queued behind that flush. Only asyncio's own loop
    shows its ready queue; on any other loop a request takes the queue, as before.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready
