"""The dynamic batcher on its own: coalescing, the max-batch bound, windows, cancellation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.batching import Batcher, Outputs


class Model:
    """Records the batch size of every call; output rows are functions of their input rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail = False

    def __call__(self, obs: np.ndarray) -> Outputs:
        self.calls.append(len(obs))
        if self.fail:
            raise RuntimeError("model failed")
        return obs[:, :1] * 2.0, obs[:, 1:2] + 1.0


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start * 3, (start + count) * 3, dtype=np.float32).reshape(count, 3)


def check_own_rows(obs: np.ndarray, outputs: Outputs) -> None:
    mean, std = outputs
    np.testing.assert_array_equal(mean, obs[:, :1] * 2.0)
    np.testing.assert_array_equal(std, obs[:, 1:2] + 1.0)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=100)
    inputs = [rows(10 * i, 1 + i % 4) for i in range(8)]

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(batcher.run(obs) for obs in inputs))

    results = asyncio.run(main())
    assert model.calls == [sum(len(obs) for obs in inputs)]
    for obs, outputs in zip(inputs, results, strict=True):
        check_own_rows(obs, outputs)
    assert (batcher.calls, batcher.rows) == (1, sum(len(obs) for obs in inputs))


def test_max_batch_bounds_every_call_and_keeps_requests_whole() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=4)
    sizes = [1, 2, 1, 3, 4, 2]
    inputs = [rows(10 * i, n) for i, n in enumerate(sizes)]

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(batcher.run(obs) for obs in inputs))

    results = asyncio.run(main())
    assert model.calls == [4, 3, 4, 2]
    for obs, outputs in zip(inputs, results, strict=True):
        check_own_rows(obs, outputs)


def test_without_a_window_requests_in_separate_loop_turns_are_not_held() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=100)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.run(rows(0, 1)))
        await first  # done without any other request coming along
        await batcher.run(rows(1, 1))

    asyncio.run(main())
    assert model.calls == [1, 1]


def test_a_window_gathers_requests_that_arrive_later() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=100, window_s=0.05)

    async def late(start: int, turns: int) -> Outputs:
        for _ in range(turns):
            await asyncio.sleep(0)  # yield the loop: arrive some turns after the first
        return await batcher.run(rows(start, 2))

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(late(10 * i, 3 * i) for i in range(5)))

    results = asyncio.run(main())
    assert model.calls == [10]
    for i, outputs in enumerate(results):
        check_own_rows(rows(10 * i, 2), outputs)


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=4, window_s=3600.0)

    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(batcher.run(rows(0, 2)), batcher.run(rows(2, 2))), timeout=10
        )

    asyncio.run(main())
    assert model.calls == [4]


def test_cancelled_requests_are_dropped_before_the_model_sees_them() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=100)

    async def main() -> Outputs:
        doomed = asyncio.ensure_future(batcher.run(rows(0, 5)))
        await asyncio.sleep(0)  # it is pending now
        doomed.cancel()
        return await batcher.run(rows(5, 2))

    check_own_rows(rows(5, 2), asyncio.run(main()))
    assert model.calls == [2]


def test_a_model_error_reaches_every_request_of_its_batch_and_no_other() -> None:
    model = Model()
    batcher = Batcher(model, max_batch=100)

    async def main() -> tuple[list[Outputs | BaseException], Outputs]:
        model.fail = True
        failed = list(
            await asyncio.gather(
                batcher.run(rows(0, 1)), batcher.run(rows(1, 1)), return_exceptions=True
            )
        )
        model.fail = False
        return failed, await batcher.run(rows(2, 1))

    failed, after = asyncio.run(main())
    assert [str(result) for result in failed] == ["model failed", "model failed"]
    check_own_rows(rows(2, 1), after)


def test_requests_get_disjoint_rows_of_the_batch() -> None:
    # Each request gets slices of its own rows: writing to one cannot show in another.
    batcher = Batcher(Model(), max_batch=100)

    async def main() -> tuple[Outputs, Outputs]:
        return await asyncio.gather(batcher.run(rows(0, 2)), batcher.run(rows(2, 2)))

    first, second = asyncio.run(main())
    first[0][:] = -1.0
    check_own_rows(rows(2, 2), second)


@pytest.mark.parametrize("window_s", [0.0, 0.001])
def test_many_callers_many_rounds(window_s: float) -> None:
    model = Model()
    batcher = Batcher(model, max_batch=16, window_s=window_s)

    async def caller(i: int) -> None:
        for step in range(5):
            obs = rows(1000 * i + 10 * step, 1 + (i + step) % 3)
            check_own_rows(obs, await batcher.run(obs))

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(64)))

    asyncio.run(main())
    assert max(model.calls) <= 16
    assert len(model.calls) < 64 * 5  # coalesced
