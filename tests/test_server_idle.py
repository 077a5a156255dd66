"""A stream's idle limit on its own: a wait past the limit ends it, busy streams never do, and
a cancellation that is not the limit's stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import DeadlineExpired
from server.wire import IdleLimit


def test_a_wait_longer_than_the_limit_raises_deadline_expired() -> None:
    async def main() -> None:
        idle = IdleLimit(0.05)
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(DeadlineExpired, match=r"stream idle for 0\.05 s reading"):
            await idle.wait(never, "reading")
        idle.close()

    asyncio.run(main())


def test_many_short_waits_never_reach_the_limit() -> None:
    async def main() -> int:
        idle = IdleLimit(0.05)
        steps = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.3  # six limits in all, each wait far shorter than one
        while loop.time() < end:
            await idle.wait(asyncio.sleep(0.01), "sleeping")
            await asyncio.sleep(0.01)  # busy between waits: not idle
            steps += 1
        idle.close()
        return steps

    assert asyncio.run(main()) >= 5


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def stream() -> None:
        idle = IdleLimit(60)
        try:
            await idle.wait(asyncio.sleep(60), "sleeping")
        finally:
            idle.close()

    async def main() -> None:
        task = asyncio.ensure_future(stream())
        await asyncio.sleep(0.01)
        task.cancel()  # a hang-up
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
