"""The drain's count of calls in flight (the drain itself runs in the SIGTERM tests)."""

from __future__ import annotations

import asyncio

import pytest

from server.drain import InFlight


def test_in_flight_counts_a_handler_while_it_runs_and_refuses_a_sync_one() -> None:
    in_flight = InFlight()
    seen: list[int] = []

    async def handler(request: int, context: object) -> int:
        seen.append(in_flight.running)
        if request < 0:
            raise ValueError("refused")
        return request * 2

    counted = in_flight.counting(handler)

    async def main() -> None:
        assert await counted(21, None) == 42  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="refused"):
            await counted(-1, None)  # type: ignore[arg-type]
        await in_flight.quiet(0.0)  # nothing running: returns

    asyncio.run(main())
    assert seen == [1, 1]
    assert (in_flight.running, in_flight.started) == (0, 2)
    with pytest.raises(TypeError, match="coroutine function"):
        in_flight.counting(lambda request, context: request)
