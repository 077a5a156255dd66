"""What a fleet of controllers sees when a replica of several fails without a lame duck: killed
(SIGKILL), hung (SIGSTOP), restarted on its port, or every replica down at once. Real servers
on 127.0.0.1, round robin over `ipv4:A,B`, unary callers and stream sessions side by side.
Behaviour only: how long each recovery takes is measured by hand (README, "Scaling out")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from support import (
    Callers,
    Reference,
    act_until_each_answers,
    acts_answered,
    frozen,
    observations,
    replicas,
    start_server,
)

from client import AsyncPolicyClient, PolicyClient, PolicyError
from client.localserver import LocalServer

SEED = 7  # every seeded session here draws the same noise at the same step
# Actions within this of each other are the same step's: concurrent steps share model calls,
# and a batch's size moves the last bit; two steps' noise differs by far more.
SAME_STEP = 1e-6


def killed(server: LocalServer) -> None:
    """SIGKILL: the process is gone at once, its connections reset, nothing drains."""
    server.process.kill()
    server.process.wait(timeout=30)


def restarted(model: Path, server: LocalServer) -> LocalServer:
    """A new server on the port the (exited) `server` listened on."""
    assert server.target is not None and server.process.poll() is not None
    return start_server(model, "--metrics-port", "0", "--port", server.target.rsplit(":", 1)[1])


def act_until_answered_by(client: PolicyClient, replica: LocalServer, within_s: float) -> set[str]:
    """Call `client.act` until `replica` has answered one of the calls; the codes of the calls
    that failed meanwhile. AssertionError if it answers none within `within_s` seconds (a bound
    on the loop, not a timing under test)."""
    failed = set()
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        for _ in range(10):
            try:
                client.act(observations(1))
            except PolicyError as exc:
                failed.add(exc.code.name)
        if acts_answered(replica) >= 1:
            return failed
    raise AssertionError(f"{replica.target} answered no call within {within_s:g} s: {failed}")


def expected_sequence(client: PolicyClient, steps: int, obs: np.ndarray) -> list[np.ndarray]:
    """A seeded session's actions, step by step, on a stream nothing interrupts."""
    with client.stream("sample", seed=SEED) as whole:
        return [whole.act(obs) for _ in range(steps)]


@pytest.mark.timeout(120)
def test_a_killed_replica_fails_no_call_and_loses_no_step(model_path: Path) -> None:
    """Two replicas; four unary callers and four seeded sampling sessions spread over both;
    one replica is killed mid-traffic. The unary calls in flight on it had no reply begun, so
    gRPC retries them on the other replica; the sessions on it reopen there and send their
    step again, which the new stream numbers where the session was (first_step): every
    session's actions are those of a session nothing interrupted, no step lost or doubled."""
    with (
        replicas(model_path) as (first, second),
        PolicyClient(f"ipv4:{first.target},{second.target}") as client,
    ):
        act_until_each_answers(client, (first, second), at_least=1)  # sessions go to both
        obs = observations(2)
        sessions = [client.stream("sample", seed=SEED) for _ in range(4)]
        got: list[list[np.ndarray]] = [[] for _ in sessions]

        def call(index: int) -> None:
            if index < len(sessions):
                got[index].append(sessions[index].act(obs))
            else:
                client.act(obs)

        callers = Callers(2 * len(sessions), call)
        try:
            callers.wait_each(20)
            killed(first)
            callers.wait_each(20)
        finally:
            callers.stop()
        assert callers.failures == []
        assert sum(session.reopened for session in sessions) >= 1
        expected = expected_sequence(client, max(map(len, got)), obs)
        for session, actions in zip(sessions, got, strict=True):
            assert session.steps == len(actions)
            np.testing.assert_allclose(actions, expected[: len(actions)], atol=SAME_STEP)
            session.close()


async def step_until(
    tasks: int, step: Callable[[int], Awaitable[object]], fault: Callable[[], object]
) -> list[str]:
    """`tasks` tasks each awaiting `step(index)` in a loop; after 20 steps each, `fault()`,
    then 20 steps more each. The failures (any exception), one at most a task."""
    done = [0] * tasks
    failures: list[str] = []
    reached = asyncio.Event()
    target = 20

    async def run(index: int) -> None:
        while target:
            try:
                await step(index)
            except Exception as exc:  # a failure is what the test counts
                failures.append(f"{type(exc).__name__}: {exc}")
                reached.set()
                return
            done[index] += 1
            if all(n >= target for n in done):
                reached.set()

    running = [asyncio.ensure_future(run(i)) for i in range(tasks)]
    try:
        await asyncio.wait_for(reached.wait(), 60)
        reached.clear()
        fault()
        target = min(done) + 20
        await asyncio.wait_for(reached.wait(), 60)
    finally:
        target = 0
        await asyncio.gather(*running)
    return failures


@pytest.mark.timeout(120)
def test_the_async_client_loses_nothing_to_a_killed_replica(model_path: Path) -> None:
    with replicas(model_path) as (first, second):
        with PolicyClient(f"ipv4:{first.target},{second.target}") as blocking:
            act_until_each_answers(blocking, (first, second), at_least=1)
        obs = observations(2)

        async def main() -> tuple[list[str], list[int], list[list[np.ndarray]]]:
            async with AsyncPolicyClient(f"ipv4:{first.target},{second.target}") as client:
                for _ in range(4):  # connected to both: the sessions are spread over them
                    await client.act(obs)
                sessions = [client.stream("sample", seed=SEED) for _ in range(4)]
                got: list[list[np.ndarray]] = [[] for _ in sessions]

                async def step(index: int) -> None:
                    if index < len(sessions):
                        got[index].append(await sessions[index].act(obs))
                    else:
                        await client.act(obs)

                failures = await step_until(2 * len(sessions), step, lambda: killed(first))
                for session in sessions:
                    await session.close()
                return failures, [session.reopened for session in sessions], got

        failures, reopened, got = asyncio.run(main())
        assert failures == []
        assert sum(reopened) >= 1, reopened
        with PolicyClient(second.target or "") as client:
            expected = expected_sequence(client, max(map(len, got)), obs)
        for actions in got:
            np.testing.assert_allclose(actions, expected[: len(actions)], atol=SAME_STEP)


@pytest.mark.timeout(120)
def test_sessions_on_a_hung_replica_move_once_keepalive_drops_it(
    model_path: Path, reference: Reference
) -> None:
    """A replica hangs (SIGSTOP) under unary callers and open sessions. The client's pings
    find it before the steps' and calls' 5 s deadline (keepalive 1 s: dropped within 2 s), so
    its calls are retried and its sessions reopen on the other replica: nothing fails. (With
    keepalive past half the deadline the steps end DEADLINE_EXCEEDED first: the session is
    over, as test_client_library's frozen-server tests show.)"""
    with (
        replicas(model_path) as (hung, healthy),
        PolicyClient(f"ipv4:{hung.target},{healthy.target}", keepalive_s=1.0) as client,
    ):
        act_until_each_answers(client, (hung, healthy), at_least=1)
        obs = observations(2)
        expected = reference(obs)[0]
        sessions = [client.stream("mean") for _ in range(4)]

        def call(index: int) -> None:
            if index < len(sessions):
                np.testing.assert_allclose(sessions[index].act(obs), expected, atol=1e-6)
            else:
                client.act(obs)

        callers = Callers(2 * len(sessions), call)
        try:
            callers.wait_each(20)
            with frozen(hung):
                callers.wait_each(20)
                callers.stop()  # before the hung replica wakes: all served by the other
        finally:
            callers.stop()
        assert callers.failures == []
        assert sum(session.reopened for session in sessions) >= 1
        for session in sessions:
            session.close()


@pytest.mark.timeout(120)
def test_async_sessions_on_a_hung_replica_move_too(model_path: Path) -> None:
    with replicas(model_path) as (hung, healthy):
        target = f"ipv4:{hung.target},{healthy.target}"
        with PolicyClient(target) as blocking:
            act_until_each_answers(blocking, (hung, healthy), at_least=1)
        obs = observations(2)

        async def main() -> tuple[list[str], list[int]]:
            async with AsyncPolicyClient(target, keepalive_s=1.0) as client:
                for _ in range(4):
                    await client.act(obs)
                sessions = [client.stream("mean") for _ in range(4)]

                async def step(index: int) -> None:
                    if index < len(sessions):
                        await sessions[index].act(obs)
                    else:
                        await client.act(obs)

                with contextlib.ExitStack() as stack:  # hung mid-traffic, woken at the end

                    def freeze() -> None:
                        stack.enter_context(frozen(hung))

                    failures = await step_until(2 * len(sessions), step, freeze)
                    for session in sessions:
                        session.cancel()
                return failures, [session.reopened for session in sessions]

        failures, reopened = asyncio.run(main())
        assert failures == []
        assert sum(reopened) >= 1, reopened


@pytest.mark.timeout(120)
def test_a_replica_restarted_on_its_port_gets_calls_again(model_path: Path) -> None:
    """Killed, a replica leaves the rotation and the other answers every call; started again
    on the same address, the client redials it (its reconnect backoff, at most
    channel.MAX_RECONNECT_BACKOFF_S apart) and round robin sends it calls, with nothing done by
    the caller and no call failing."""
    with (
        replicas(model_path) as (first, second),
        PolicyClient(f"ipv4:{first.target},{second.target}") as client,
    ):
        act_until_each_answers(client, (first, second), at_least=1)
        killed(first)
        for _ in range(20):
            client.act(observations(1))
        with restarted(model_path, first) as again:
            assert act_until_answered_by(client, again, within_s=60) == set()


@pytest.mark.timeout(120)
def test_with_every_replica_down_calls_fail_naming_the_target_until_one_is_back(
    model_path: Path,
) -> None:
    """Both replicas killed: `act`, a session's step and the async `act` fail UNAVAILABLE,
    saying which target reached no server (gRPC's own words name one address of it). One
    replica started again: calls are answered again, the client having done nothing."""
    with replicas(model_path) as (first, second):
        target = f"ipv4:{first.target},{second.target}"
        with PolicyClient(target) as client:
            act_until_each_answers(client, (first, second), at_least=1)
            session = client.stream()
            session.act(observations(1))

            async def all_down() -> list[PolicyError]:
                """Every replica killed under an open async session too: each way of calling
                fails, in the same words."""
                async with AsyncPolicyClient(target, keepalive_s=None) as aio:
                    aio_session = aio.stream(reopen=False)
                    await aio_session.act(observations(1))
                    killed(first)
                    killed(second)
                    with pytest.raises(PolicyError) as unary:
                        client.act(observations(1))
                    with pytest.raises(PolicyError) as step:
                        session.act(observations(1))
                    with pytest.raises(PolicyError) as awaited:
                        await aio.act(observations(1))
                    with pytest.raises(PolicyError) as async_step:  # the stream ended unasked
                        await aio_session.act(observations(1))
                    aio_session.cancel()
                return [r.value for r in (unary, step, awaited, async_step)]

            for error in asyncio.run(all_down()):
                assert error.code == grpc.StatusCode.UNAVAILABLE, error
                assert error.details.startswith(f"{target}: "), error
                assert "TLS" not in error.details, error  # a server gone, not a TLS mismatch
            with restarted(model_path, second) as again:
                assert act_until_answered_by(client, again, within_s=60) <= {"UNAVAILABLE"}
                with client.stream() as fresh:
                    assert fresh.act(observations(1)).shape == (1, 1)
