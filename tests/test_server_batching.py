"""The dynamic batcher on its own: coalescing, the max-batch bound, windows, cancellation,
the bounded queue, deadlines, the model thread, and one model per call."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from support import run_on_virtual_clock

from server.batching import Batcher, Outputs
from server.errors import DeadlineExpired, Overloaded


class Model:
    """Records the batch size of every call; output rows are functions of their input rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail = False

    def predict(self, obs: np.ndarray) -> Outputs:
        self.calls.append(len(obs))
        if self.fail:
            raise RuntimeError("model failed")
        return obs[:, :1] * 2.0, obs[:, 1:2] + 1.0

    def cost_s(self, rows: int) -> float:
        return 0.0  # runs inline on the loop


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start * 3, (start + count) * 3, dtype=np.float32).reshape(count, 3)


def check_own_rows(obs: np.ndarray, outputs: Outputs) -> None:
    mean, std = outputs
    np.testing.assert_array_equal(mean, obs[:, :1] * 2.0)
    np.testing.assert_array_equal(std, obs[:, 1:2] + 1.0)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)
    inputs = [rows(10 * i, 1 + i % 4) for i in range(8)]

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(batcher.run(model, obs) for obs in inputs))

    results = asyncio.run(main())
    assert model.calls == [sum(len(obs) for obs in inputs)]
    for obs, outputs in zip(inputs, results, strict=True):
        check_own_rows(obs, outputs)
    assert (batcher.calls, batcher.rows) == (1, sum(len(obs) for obs in inputs))


def test_max_batch_bounds_every_call_and_keeps_requests_whole() -> None:
    model = Model()
    batcher = Batcher(max_batch=4)
    sizes = [1, 2, 1, 3, 4, 2]
    inputs = [rows(10 * i, n) for i, n in enumerate(sizes)]

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(batcher.run(model, obs) for obs in inputs))

    results = asyncio.run(main())
    assert model.calls == [4, 3, 4, 2]
    for obs, outputs in zip(inputs, results, strict=True):
        check_own_rows(obs, outputs)


def test_without_a_window_requests_in_separate_loop_turns_are_not_held() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.run(model, rows(0, 1)))
        await first  # done without any other request coming along
        await batcher.run(model, rows(1, 1))

    asyncio.run(main())
    assert model.calls == [1, 1]


def test_a_window_gathers_requests_that_arrive_later() -> None:
    model = Model()
    batcher = Batcher(max_batch=100, window_s=0.05)

    async def late(start: int, delay: float) -> Outputs:
        await asyncio.sleep(delay)  # arrives this long after the first (on the loop's clock)
        return await batcher.run(model, rows(start, 2))

    async def main() -> tuple[list[Outputs], float]:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        results = await asyncio.gather(*(late(10 * i, 0.01 * i) for i in range(5)))
        return results, loop.time() - begun

    # On a virtual clock: the requests arrive 10 ms apart, exactly, and all within the window.
    results, took = run_on_virtual_clock(main())
    assert model.calls == [10]
    assert took == pytest.approx(0.05)  # held for the window from the first, not from the last
    for i, outputs in enumerate(results):
        check_own_rows(rows(10 * i, 2), outputs)


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    model = Model()
    batcher = Batcher(max_batch=4, window_s=3600.0)

    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(batcher.run(model, rows(0, 2)), batcher.run(model, rows(2, 2))),
            timeout=10,
        )

    asyncio.run(main())
    assert model.calls == [4]


def test_cancelled_requests_are_dropped_before_the_model_sees_them() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> Outputs:
        doomed = asyncio.ensure_future(batcher.run(model, rows(0, 5)))
        await asyncio.sleep(0)  # it is pending now
        doomed.cancel()
        return await batcher.run(model, rows(5, 2))

    check_own_rows(rows(5, 2), asyncio.run(main()))
    assert model.calls == [2]


def test_a_model_error_reaches_every_request_of_its_batch_and_no_other() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> tuple[list[Outputs | BaseException], Outputs]:
        model.fail = True
        failed = list(
            await asyncio.gather(
                batcher.run(model, rows(0, 1)),
                batcher.run(model, rows(1, 1)),
                return_exceptions=True,
            )
        )
        model.fail = False
        return failed, await batcher.run(model, rows(2, 1))

    failed, after = asyncio.run(main())
    assert [str(result) for result in failed] == ["model failed", "model failed"]
    check_own_rows(rows(2, 1), after)


def test_requests_get_disjoint_rows_of_the_batch() -> None:
    # Each request gets slices of its own rows: writing to one cannot show in another.
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> tuple[Outputs, Outputs]:
        return await asyncio.gather(batcher.run(model, rows(0, 2)), batcher.run(model, rows(2, 2)))

    first, second = asyncio.run(main())
    first[0][:] = -1.0
    check_own_rows(rows(2, 2), second)


@pytest.mark.parametrize("window_s", [0.0, 0.001])
def test_many_callers_many_rounds(window_s: float) -> None:
    model = Model()
    batcher = Batcher(max_batch=16, window_s=window_s)

    async def caller(i: int) -> None:
        for step in range(5):
            obs = rows(1000 * i + 10 * step, 1 + (i + step) % 3)
            check_own_rows(obs, await batcher.run(model, obs))

    async def main() -> None:
        await asyncio.gather(*(caller(i) for i in range(64)))

    asyncio.run(main())
    assert max(model.calls) <= 16
    assert len(model.calls) < 64 * 5  # coalesced


class SlowModel(Model):
    """A model the batcher must run on its thread: each call waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def predict(self, obs: np.ndarray) -> Outputs:
        assert self.release.wait(30), "the test never released the model"
        return super().predict(obs)

    def cost_s(self, rows: int) -> float:
        return 1.0  # far beyond INLINE_S: runs on the model thread


def test_past_max_queue_a_request_is_refused_at_once_and_the_queue_drains() -> None:
    model = SlowModel()
    batcher = Batcher(max_batch=4, max_queue=8)

    async def main() -> None:
        running = asyncio.ensure_future(batcher.run(model, rows(0, 4)))
        await asyncio.sleep(0)  # the first batch is on the model thread now
        queued = [asyncio.ensure_future(batcher.run(model, rows(10 * i, 4))) for i in (1, 2)]
        await asyncio.sleep(0)  # yields once: both are queued behind it now
        assert batcher.queued_rows == 8
        with pytest.raises(Overloaded, match="8 observations are queued, the limit is 8"):
            await batcher.run(model, rows(50, 1))  # refused without waiting for the model
        assert batcher.refused == 1
        model.release.set()
        for obs, outputs in zip(
            [rows(0, 4), rows(10, 4), rows(20, 4)],
            await asyncio.gather(running, *queued),
            strict=True,
        ):
            check_own_rows(obs, outputs)
        check_own_rows(rows(60, 2), await batcher.run(model, rows(60, 2)))  # room again

    try:
        asyncio.run(main())
    finally:  # the model thread is never left waiting, whatever failed
        model.release.set()
        batcher.close()
    assert model.calls == [4, 4, 4, 2]  # the refused request never reached the model


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_unrun() -> None:
    model = SlowModel()
    batcher = Batcher(max_batch=4)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        running = asyncio.ensure_future(batcher.run(model, rows(0, 4)))
        await asyncio.sleep(0)  # yields once: the first batch is on the model thread now
        doomed = asyncio.ensure_future(batcher.run(model, rows(10, 1), deadline=loop.time()))
        kept = asyncio.ensure_future(batcher.run(model, rows(20, 1), deadline=loop.time() + 60))
        await asyncio.sleep(0)  # yields once: both are queued behind it now
        model.release.set()
        await running
        with pytest.raises(DeadlineExpired):
            await doomed
        check_own_rows(rows(20, 1), await kept)

    try:
        asyncio.run(main())
    finally:  # the model thread is never left waiting, whatever failed
        model.release.set()
        batcher.close()
    assert model.calls == [4, 1] and batcher.expired == 1


def test_requests_for_different_models_never_share_a_call() -> None:
    old, new = Model(), Model()
    batcher = Batcher(max_batch=100)

    async def main() -> list[Outputs]:
        jobs = [batcher.run(old if i % 2 else new, rows(10 * i, 1)) for i in range(6)]
        return await asyncio.gather(*jobs)

    for i, outputs in enumerate(asyncio.run(main())):
        check_own_rows(rows(10 * i, 1), outputs)
    assert old.calls == [3] and new.calls == [3]


def test_a_lone_request_runs_at_once_without_a_loop_pass() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> None:
        call = batcher.run(model, rows(0, 2))
        with pytest.raises(StopIteration) as finished:
            call.send(None)  # done in the first step: it never waited on the loop
        check_own_rows(rows(0, 2), finished.value.value)

    asyncio.run(main())
    assert model.calls == [2] and (batcher.calls, batcher.rows) == (1, 2)


def test_a_lone_request_past_its_deadline_is_not_run() -> None:
    model = Model()
    batcher = Batcher(max_batch=100)

    async def main() -> None:
        with pytest.raises(DeadlineExpired):
            await batcher.run(model, rows(0, 1), deadline=asyncio.get_running_loop().time())

    asyncio.run(main())
    assert model.calls == [] and batcher.expired == 1


class MidCostModel(Model):
    """A model whose calls are estimated between INLINE_S and LONE_INLINE_S; records where
    each ran."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def predict(self, obs: np.ndarray) -> Outputs:
        self.threads.append(threading.current_thread().name)
        return super().predict(obs)

    def cost_s(self, rows: int) -> float:
        return 1e-3


def test_a_lone_request_runs_on_the_loop_and_a_crowd_on_the_model_thread() -> None:
    """Alone, a call too long for the loop by INLINE_S still runs there (nothing waits for
    the loop, and the thread's hand-off would cost more); requests arriving together go to the
    model thread, so the loop goes on accepting while the model works."""
    model = MidCostModel()
    batcher = Batcher(max_batch=100)

    async def main() -> None:
        check_own_rows(rows(0, 2), await batcher.run(model, rows(0, 2)))
        together = [rows(10 * i, 1) for i in range(1, 4)]
        results = await asyncio.gather(*(batcher.run(model, obs) for obs in together))
        for obs, outputs in zip(together, results, strict=True):
            check_own_rows(obs, outputs)

    asyncio.run(main())
    batcher.close()
    assert model.calls == [2, 3]
    assert model.threads[0] == threading.current_thread().name
    assert model.threads[1].startswith("swingup-model")


@pytest.mark.parametrize("model", [Model(), SlowModel()], ids=["inline", "model thread"])
def test_with_batching_off_every_request_runs_alone_in_order(model: Model) -> None:
    batcher = Batcher(max_batch=8, batching=False)
    sizes = [2, 3, 1, 8, 4]
    inputs = [rows(10 * i, n) for i, n in enumerate(sizes)]
    if isinstance(model, SlowModel):
        model.release.set()

    async def main() -> list[Outputs]:
        return await asyncio.gather(*(batcher.run(model, obs) for obs in inputs))

    for obs, outputs in zip(inputs, asyncio.run(main()), strict=True):
        check_own_rows(obs, outputs)
    assert model.calls == sizes
    batcher.close()
