"""The drain's count of calls in flight, and its quiet exit (the drain itself runs in the
SIGTERM tests)."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

import pytest

from server.drain import InFlight, hush_leftover_cancellations


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


def test_after_the_drain_only_cancellations_are_hushed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A CancelledError reported once the server has stopped (by asyncio, or by the garbage
    collector closing a coroutine) becomes a DEBUG line; any other error is reported as before."""
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    loop = asyncio.new_event_loop()
    try:
        hush_leftover_cancellations(loop)
        with caplog.at_level(logging.DEBUG):
            loop.call_exception_handler({"message": "gone", "exception": asyncio.CancelledError()})
            loop.call_exception_handler({"message": "broken", "exception": ValueError("bad")})
            cancelled = _Unraisable(asyncio.CancelledError(), "a coroutine")
            broken = _Unraisable(ValueError("bad"), "another")
            sys.unraisablehook(cancelled)  # type: ignore[arg-type]
            sys.unraisablehook(broken)  # type: ignore[arg-type]
    finally:
        loop.close()
    levels = {record.getMessage(): record.levelno for record in caplog.records}
    assert levels["after the drain: gone"] == logging.DEBUG
    assert levels["broken"] == logging.ERROR  # asyncio's own handler, with its traceback
    assert "after the drain: cancelled while closing 'a coroutine'" in levels
    assert unraisable == [broken]


@dataclass
class _Unraisable:
    exc_value: BaseException
    object: object
