"""The limits of an open stream: how long each wait may take, and when its server is leaving.

Both stream handlers (`StreamAct`, `ModelStreamInfer`) read their requests and write their
replies through a `StreamGuard`. It ends a stream whose client stays silent, or stops reading,
past `--idle-timeout-s` (DEADLINE_EXCEEDED), and, once the replica's lame duck has begun
(`Leaving`), it ends every stream before it takes another request (UNAVAILABLE), so that the
client reopens it on a replica that stays: at once for a stream waiting for its next request,
after the step it is on for one that is busy.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from server.errors import ClientGone, DeadlineExpired, ServerLeaving

T = TypeVar("T")

NEXT_REQUEST = "waiting for the next request"
CLIENT_READ = "waiting for the client to read"


# What a send on a call that has ended raises (grpc's stubs do not declare it).
_WRITE_FAILED: type[Exception] = getattr(
    importlib.import_module("grpc._cython.cygrpc"), "ExecuteBatchError", RuntimeError
)


class Writer(Protocol):
    """What a stream writes through: a servicer context."""

    async def write(self, message: Any) -> None: ...


class Leaving:
    """Whether this replica has begun its lame duck, and the streams open on it."""

    def __init__(self) -> None:
        self.begun = False
        self._streams: set[StreamGuard] = set()

    def begin(self) -> None:
        """From now on every stream ends before it takes another request."""
        self.begun = True
        for stream in list(self._streams):
            stream.leave()

    def error(self, steps: int) -> ServerLeaving:
        return ServerLeaving(
            f"this server is stopping: the stream ends after {steps} steps; "
            "open a new one to go on (on another replica)"
        )

    def opened(self, stream: StreamGuard) -> None:
        self._streams.add(stream)

    def closed(self, stream: StreamGuard) -> None:
        self._streams.discard(stream)


class StreamGuard:
    """A stream's limit on each wait (for the next request, for the client to read a reply),
    and its end when the server leaves.

    One timer per stream, re-armed only when it fires: a wait costs a clock read, not the
    timer and the extra task and loop pass of `asyncio.wait_for`. When the timer finds the
    current wait older than the limit, or the lame duck begins while the stream waits for a
    request, it cancels the stream's task, and `wait` turns that cancellation, and only that
    one, into `DeadlineExpired` or `ServerLeaving`. Create it inside the stream's task;
    `close` it when the stream ends.
    """

    def __init__(self, limit_s: float, leaving: Leaving) -> None:
        self.limit_s = limit_s
        self.taken = 0  # requests taken: each is answered before the next is taken
        self._leaving = leaving
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a StreamGuard belongs to the task of a stream"
        self._task = task
        self._since: float | None = None  # when the current wait began; None: not waiting
        self._doing = ""
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False
        self._left = False
        leaving.opened(self)

    async def wait(self, step: Awaitable[T], doing: str) -> T:
        """`step`, or DeadlineExpired once it has taken longer than the limit."""
        self._since = since = self._loop.time()
        self._doing = doing
        if self._timer is None:
            self._timer = self._loop.call_at(since + self.limit_s, self._check)
        try:
            return await step
        except asyncio.CancelledError:
            if not (self._expired or self._left):
                raise  # a hang-up, a shutdown: not ours to turn into a status
            if sys.version_info >= (3, 11):
                self._task.uncancel()
            if self._left:
                raise self._leaving.error(self.taken) from None
            raise DeadlineExpired(
                f"stream idle for {self.limit_s:g} s {self._doing}: closed by the server"
            ) from None
        finally:
            self._since = None

    async def write(self, context: Writer, reply: Any) -> None:
        """`context.write(reply)` under the limit. A write the client's hang-up broke raises
        ClientGone: a client that stops reading and then goes away fails the pending write in
        gRPC's core (cygrpc's ExecuteBatchError: the send found the call ended) before the
        hang-up reaches the stream's task, and that is no error of the server's."""
        try:
            await self.wait(context.write(reply), CLIENT_READ)
        except _WRITE_FAILED as exc:
            raise ClientGone(f"the client went away {CLIENT_READ}") from exc

    async def requests(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """The stream's requests, each awaited under the limit, until the client half-closes
        or the server leaves."""
        requests = aiter(stream)
        while True:
            if self._leaving.begun:
                raise self._leaving.error(self.taken)
            try:
                request = await self.wait(anext(requests), NEXT_REQUEST)
            except StopAsyncIteration:
                return
            self.taken += 1
            yield request

    def leave(self) -> None:
        """The lame duck has begun: a stream waiting for its next request ends now (one busy
        with a step ends before it takes the next)."""
        if self._since is not None and self._doing == NEXT_REQUEST:
            self._left = True
            self._task.cancel()

    def close(self) -> None:
        self._since = None
        self._leaving.closed(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        since = self._since
        if since is None:
            return  # between waits: the next wait arms the timer again
        due = since + self.limit_s
        if self._loop.time() >= due:
            self._expired = True
            self._task.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)
