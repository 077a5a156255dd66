"""Shutdown: a lame duck period if asked for, then a drain that ends when every call of ours
has, not when gRPC says all calls have.

Lame duck (`--lame-duck-s`): health turns NOT_SERVING while the server goes on serving.
Clients that watch health (gRPC's client-side health checking, which `PolicyClient` turns on)
stop picking this replica within milliseconds and send their calls to the others; once no new
call has come for `QUIET_S`, or the period is up, the server stops taking calls. Without it,
calls that a client sent just before the stop and that were still queued inside gRPC core are
cancelled by core (CANCELLED, which no retry policy retries): 1-6 calls lost per replica
stopped under load in a test here, none with a 1 s lame duck and health-checking clients.

`grpc.aio.Server.stop(grace)` refuses new calls and waits until gRPC core holds no live call.
Core can hold one we will never see: a call that arrives as shutdown starts is, now and then,
neither handed to the server nor cancelled (grpcio 1.85; one SIGTERM in ~15 under load on
loopback here). stop() then waits for that call's deadline, or the whole grace, and its client
waits with it. A health Watch, which never ends by itself, holds stop() the same way.

So the server counts the calls its own handlers are running (`InFlight`, wrapped around every
handler it registers), and once that count has stayed at zero for `QUIET_S` after shutdown
began, it cancels whatever core still holds: such a client gets UNAVAILABLE ("Cancelling all
calls") about 0.3 s after the signal instead of its deadline, and the process exits when its
work is done, not at the end of its grace.

A lame duck moves streams too: a stream is a single call that would otherwise stay on this
replica until the grace runs out and then be cancelled. Once the lame duck begins
(`server.streams.Leaving`), each open stream ends with UNAVAILABLE before it takes another
request: at once if it is waiting for one, after the step it is on if not; `PolicyStream`
reopens it on a replica that is staying and sends the step again. Without a lame duck,
streams are served on to their end or the grace, as before: a lone server has nowhere to send
them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("swingup.serve")

# How long the count must stay at zero: a call core handed over just before shutdown reaches
# our handler a few event-loop passes later, well inside this.
QUIET_S = 0.25
# How long before gRPC's grace runs out the drain counts the calls it is about to cut.
GRACE_MARGIN_S = 0.01

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class InFlight:
    """How many calls our handlers are running, and how many have ever started."""

    def __init__(self) -> None:
        self.running = 0
        self.started = 0

    def counting(self, behaviour: Behaviour) -> Behaviour:
        """`behaviour`, counted while it runs. Every handler of ours is a coroutine (streams
        write with context.write()), so one wrapper shape serves them all."""
        if not inspect.iscoroutinefunction(behaviour):
            raise TypeError(f"{behaviour!r}: a handler to count must be a coroutine function")

        async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.running += 1
            self.started += 1
            try:
                return await behaviour(request, context)
            finally:
                self.running -= 1

        return counted

    async def no_new_calls(self, quiet_s: float) -> None:
        """Return once no call has started for `quiet_s` seconds (running ones may go on)."""
        while True:
            started = self.started
            await asyncio.sleep(quiet_s)
            if self.started == started:
                return

    async def quiet(self, quiet_s: float) -> None:
        """Return once no call is running and none has started for `quiet_s` seconds."""
        while True:
            await self.no_new_calls(quiet_s)
            if self.running == 0:
                return


async def finish(
    server: grpc.aio.Server,
    stopping: asyncio.Task[None],
    in_flight: InFlight,
    interrupted: asyncio.Event,
    grace_ends: float,
) -> None:
    """Wait for `stopping` (`server.stop(grace)`, started just after the loop time
    `grace_ends` less the grace); once every call of ours has ended, cancel core's leftovers
    rather than wait for them. `interrupted` (a second signal, as an impatient operator's second
    Ctrl-C) ends the grace at once."""
    loop = asyncio.get_running_loop()
    idle = asyncio.create_task(in_flight.quiet(QUIET_S))
    cut = asyncio.create_task(interrupted.wait())
    ends = (stopping, idle, cut)
    try:
        # Until just before gRPC's own grace runs out: it cancels what still runs without a
        # word (a stream reads the end of its requests and returns), so say it first.
        margin_s = grace_ends - loop.time() - GRACE_MARGIN_S
        done, _ = await asyncio.wait(
            ends, timeout=max(0.0, margin_s), return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            if in_flight.running:
                log.warning(
                    "grace over: cancelling %d call(s) and stream(s) still running",
                    in_flight.running,
                )
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            if idle.done():
                log.info("every call of ours has ended: cancelling the calls gRPC still holds")
            else:
                log.warning(
                    "a second signal: cancelling %d call(s) and stream(s) still running",
                    in_flight.running,
                )
            await server.stop(None)
        await stopping
    finally:
        idle.cancel()
        cut.cancel()


async def lame_duck(limit_s: float, in_flight: InFlight, interrupted: asyncio.Event) -> str:
    """Serve on (health already NOT_SERVING) for up to `limit_s`: until no new call has come
    for QUIET_S, or `interrupted` is set. Why it ended, for the log."""
    moved = asyncio.create_task(in_flight.no_new_calls(QUIET_S))
    cut = asyncio.create_task(interrupted.wait())
    try:
        done, _ = await asyncio.wait(
            (moved, cut), timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        moved.cancel()
        cut.cancel()
    if moved in done:
        return f"no new call for {QUIET_S:g} s"
    return "a second signal" if cut in done else "its time is up"


def hush_leftover_cancellations(loop: asyncio.AbstractEventLoop) -> None:
    """Report, at DEBUG only, the cancellations of tasks that outlive the drain.

    Once the server has stopped, gRPC's own per-call tasks that core never completed are
    cancelled as the event loop closes. Now and then (one SIGTERM-under-load run in ~150 here)
    one of them surfaced after the server's last line as a bare `CancelledError` traceback from
    gRPC's `_schedule_rpc_coro`: through asyncio's exception handler, or through the garbage
    collector closing a coroutine mid-await. Nothing of ours is lost by then; a traceback there
    would only alarm whoever reads the log.
    """

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError):
            log.debug("after the drain: %s", context.get("message", "a task was cancelled"))
            return
        loop.default_exception_handler(context)

    default_hook = sys.unraisablehook

    def on_unraisable(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, asyncio.CancelledError):
            log.debug("after the drain: cancelled while closing %r", unraisable.object)
            return
        default_hook(unraisable)

    loop.set_exception_handler(on_loop_error)
    sys.unraisablehook = on_unraisable
