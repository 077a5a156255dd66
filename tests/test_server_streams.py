"""A stream's guard on its own: a wait past the idle limit ends the stream, busy streams never
do, a lame duck ends each stream before it takes another request, and a cancellation that is
neither stays a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support import run_on_virtual_clock

from server.errors import DeadlineExpired, ServerLeaving
from server.streams import Leaving, StreamGuard


def test_a_wait_longer_than_the_limit_raises_deadline_expired() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        idle = StreamGuard(0.05, Leaving())
        never: asyncio.Future[None] = loop.create_future()
        start = loop.time()
        with pytest.raises(DeadlineExpired, match=r"stream idle for 0\.05 s reading"):
            await idle.wait(never, "reading")
        idle.close()
        return loop.time() - start

    # On a virtual clock: it ends at the limit exactly, neither before nor at some later check.
    assert run_on_virtual_clock(main()) == pytest.approx(0.05)


def test_many_short_waits_never_reach_the_limit() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        idle = StreamGuard(0.05, Leaving())
        start = loop.time()
        steps = 0
        while steps < 30:  # 0.6 s in all, twelve limits; each wait a fifth of one
            await idle.wait(asyncio.sleep(0.01), "sleeping")
            await asyncio.sleep(0.01)  # busy between waits: not idle
            steps += 1
        idle.close()
        return steps, loop.time() - start

    # On a virtual clock, so that no pause of a busy machine can stretch a wait past the limit.
    steps, took = run_on_virtual_clock(main())
    assert steps == 30 and took == pytest.approx(0.6)


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def parked(waiting: asyncio.Event) -> None:
        waiting.set()  # the stream is inside the guard's wait now
        await asyncio.sleep(60)

    async def stream(waiting: asyncio.Event) -> None:
        idle = StreamGuard(60, Leaving())
        try:
            await idle.wait(parked(waiting), "sleeping")
        finally:
            idle.close()

    async def main() -> None:
        waiting = asyncio.Event()
        task = asyncio.ensure_future(stream(waiting))
        await waiting.wait()
        task.cancel()  # a hang-up
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


async def _requests(queue: asyncio.Queue[int]) -> AsyncIterator[int]:
    while True:
        yield await queue.get()


def test_a_lame_duck_ends_a_stream_waiting_for_a_request_at_once() -> None:
    async def stream(leaving: Leaving, queue: asyncio.Queue[int], taken: list[int]) -> None:
        guard = StreamGuard(60, leaving)
        try:
            async for request in guard.requests(_requests(queue)):
                taken.append(request)
        finally:
            guard.close()

    async def main() -> list[int]:
        leaving = Leaving()
        queue: asyncio.Queue[int] = asyncio.Queue()
        taken: list[int] = []
        task = asyncio.ensure_future(stream(leaving, queue, taken))
        for request in (1, 2):
            queue.put_nowait(request)
        for _ in range(100):  # yield until the stream has taken both and waits for a third
            if len(taken) == 2:
                break
            await asyncio.sleep(0)
        assert taken == [1, 2]
        leaving.begin()
        with pytest.raises(ServerLeaving, match="the stream ends after 2 steps"):
            await task
        assert not leaving._streams  # closed streams are forgotten
        return taken

    assert asyncio.run(main()) == [1, 2]


def test_a_lame_duck_lets_a_busy_stream_finish_its_step_and_take_no_more() -> None:
    async def main() -> None:
        leaving = Leaving()
        guard = StreamGuard(60, leaving)
        queue: asyncio.Queue[int] = asyncio.Queue()
        requests = guard.requests(_requests(queue))
        queue.put_nowait(1)
        queue.put_nowait(2)
        assert await anext(requests) == 1
        written: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        writing = asyncio.ensure_future(guard.wait(written, "waiting for the client to read"))
        await asyncio.sleep(0)  # yields once: the write is now waiting inside the guard
        leaving.begin()  # mid-write: the write goes on
        written.set_result("read")
        assert await writing == "read"
        with pytest.raises(ServerLeaving, match="the stream ends after 1 steps"):
            await anext(requests)  # request 2 is waiting, but is not taken
        guard.close()

    asyncio.run(main())
