"""What clients see of a replica stopping with `--lame-duck-s`: health turns NOT_SERVING, unary
calls move to the other replicas, streams end and `PolicyStream` reopens them elsewhere, and
nothing fails. Real servers, real clients, SIGTERM."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import (
    NO_RETRIES,
    Callers,
    Reference,
    act_until_each_answers,
    observations,
    replicas,
    start_server,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from client import AsyncPolicyClient, PolicyClient
from swingup import contract
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc

LAME_DUCK_BEGUN = "health NOT_SERVING, serving on for up to 20 s; ending open streams"


def test_a_replica_stopped_after_a_lame_duck_loses_no_call(model_path: Path) -> None:
    """Two replicas behind one name and four `PolicyClient` callers; one replica gets SIGTERM
    mid-load with --lame-duck-s. Its health turns NOT_SERVING, the clients (which watch health)
    move their calls to the other, it stops once no new call has come for 0.25 s, and no call
    fails. Without the lame duck, 1-6 calls a stop came back CANCELLED here: gRPC core cancels
    the calls still queued inside it when the server stops."""
    with (
        start_server(model_path, "--lame-duck-s", "20") as first,
        start_server(model_path, "--lame-duck-s", "20") as second,
    ):
        with PolicyClient(f"ipv4:{first.target},{second.target}") as client:
            obs = observations(1)
            callers = Callers(4, lambda _: client.act(obs))
            try:
                callers.wait_each(20)
                first.process.terminate()
                assert first.process.wait(timeout=60) == 0
                callers.wait_each(20)  # all on the second replica now
            finally:
                callers.stop()
        assert callers.failures == []
        lame = first.wait_for_line("lame duck over")
        assert "no new call for 0.25 s" in lame, lame  # the clients moved; not the 20 s limit
        assert second.process.poll() is None


STAYING = ("--lame-duck-s", "20", "--grace-s", "60")


def test_streams_move_to_the_replica_that_stays(model_path: Path, reference: Reference) -> None:
    """Two replicas, four mean-action `PolicyStream` sessions spread over both; one replica
    gets SIGTERM with --lame-duck-s. Its streams end, the sessions reopen on
    the other replica and send the step again, every step gets the model's actions, and the
    stopped replica exits without waiting out its lame duck or its grace (a stream would
    otherwise hold it there and then be cancelled)."""
    with replicas(model_path, *STAYING) as (first, second):
        with PolicyClient(f"ipv4:{first.target},{second.target}") as client:
            obs = observations(2)
            expected = reference(obs)[0]
            # Both replicas connected and healthy, so round robin alternates the sessions.
            act_until_each_answers(client, (first, second), at_least=1)
            sessions = [client.stream("mean") for _ in range(4)]

            def step(index: int) -> None:
                np.testing.assert_allclose(sessions[index].act(obs), expected, atol=1e-6)

            callers = Callers(len(sessions), step)
            try:
                callers.wait_each(20)
                first.process.terminate()
                assert first.process.wait(timeout=60) == 0
                callers.wait_each(20)
            finally:
                callers.stop()
            for session in sessions:
                session.close()
        assert callers.failures == []
        assert sum(session.reopened for session in sessions) >= 1
        lame = first.wait_for_line("lame duck over")
        assert "no new call for 0.25 s" in lame, lame
        assert second.process.poll() is None


def test_the_async_client_moves_its_streams_too(model_path: Path, reference: Reference) -> None:
    with (
        start_server(model_path, "--lame-duck-s", "20") as first,
        start_server(model_path, "--lame-duck-s", "20") as second,
    ):
        obs = observations(3)
        expected = reference(obs)[0]

        async def main() -> list[int]:
            async with AsyncPolicyClient(f"ipv4:{first.target},{second.target}") as client:
                for _ in range(4):
                    await client.act(obs)
                sessions = [client.stream("sample") for _ in range(2)]  # unseeded: movable
                means = [client.stream("mean") for _ in range(2)]
                for _ in range(5):
                    for session in sessions + means:
                        await session.act(obs)
                first.process.terminate()
                await asyncio.to_thread(first.wait_for_line, "lame duck over")
                for _ in range(5):
                    for session in sessions:
                        assert np.all(np.abs(await session.act(obs)) <= contract.ACTION_HIGH)
                    for session in means:
                        np.testing.assert_allclose(await session.act(obs), expected, atol=1e-6)
                for session in sessions + means:
                    await session.close()
                return [session.reopened for session in sessions + means]

        reopened = asyncio.run(main())
        assert first.process.wait(timeout=60) == 0
        assert sum(reopened) >= 1, reopened


def test_a_lame_duck_ends_a_waiting_stream_at_once(model_path: Path) -> None:
    """With bare stubs (nothing reopens): a stream waiting for its next request when the lame
    duck begins ends at once with UNAVAILABLE and a message that says why; the same for the
    Open Inference Protocol's stream. The server then exits without waiting for its 60 s
    grace. (A stream busy with a step finishes it first: test_server_streams.py.)"""
    with start_server(model_path, "--lame-duck-s", "20", "--grace-s", "60") as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target, options=NO_RETRIES) as channel:
            obs = observations(2)
            policy_requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
            policy = iter(
                policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(
                    iter(policy_requests.get, None), timeout=60
                )
            )
            oip_requests: queue.SimpleQueue[service_pb2.ModelInferRequest | None]
            oip_requests = queue.SimpleQueue()
            oip = iter(
                service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(
                    iter(oip_requests.get, None), timeout=60
                )
            )
            request = pb.StreamActRequest(obs=obs.ravel().tolist())
            policy_requests.put(request)
            assert next(policy).step == 0
            oip_requests.put(_infer_request(obs))
            assert next(oip).error_message == ""
            server.process.terminate()
            server.wait_for_line(LAME_DUCK_BEGUN)
            # Both streams were waiting for their next request: they end at once.
            for replies in (policy, oip):
                with pytest.raises(grpc.RpcError) as raised:
                    next(replies)
                assert isinstance(raised.value, grpc.Call)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                assert raised.value.details() == (
                    "this server is stopping: the stream ends after 1 steps; "
                    "open a new one to go on (on another replica)"
                )
            policy_requests.put(None)
            oip_requests.put(None)
        assert server.process.wait(timeout=30) == 0


def test_a_seeded_sampling_session_moves_and_keeps_its_sequence(model_path: Path) -> None:
    """Two seeded sampling sessions, one on each replica; one replica stops mid-session. Both
    sessions end with the very actions an uninterrupted session with that seed gives: the one
    that moved told its new stream where it was (first_step), and the noise depends on the
    seed and the step alone."""
    with (
        start_server(model_path, "--lame-duck-s", "20") as first,
        start_server(model_path, "--lame-duck-s", "20") as second,
    ):
        with PolicyClient(f"ipv4:{first.target},{second.target}") as client:
            batches = [observations(3, seed=k) for k in range(30)]
            for _ in range(4):
                client.act(batches[0])
            with client.stream("sample", seed=21) as whole:
                expected = [whole.act(obs) for obs in batches]
            sessions = [client.stream("sample", seed=21) for _ in range(2)]
            got: list[list[np.ndarray]] = [[], []]
            for k, obs in enumerate(batches):
                if k == 10:
                    first.process.terminate()
                    first.wait_for_line("lame duck over")
                for session, actions in zip(sessions, got, strict=True):
                    actions.append(session.act(obs))
            for session in sessions:
                session.close()
        assert first.process.wait(timeout=30) == 0
        assert sum(session.reopened for session in sessions) >= 1
        for actions in got:
            for one, other in zip(actions, expected, strict=True):
                np.testing.assert_array_equal(one, other)


def _infer_request(obs: np.ndarray) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=contract.MODEL_NAME)
    tensor = request.inputs.add(name=contract.INPUT_NAME, datatype="FP32", shape=list(obs.shape))
    tensor.contents.fp32_contents.extend(obs.ravel().tolist())
    return request


def test_a_lame_duck_serves_on_until_a_second_signal(model_path: Path) -> None:
    """A client that does not watch health (a bare stub) is still served through the lame
    duck, which lasts while new calls come; health says NOT_SERVING meanwhile, and a second
    SIGTERM ends it and the server drains and exits 0."""
    with start_server(model_path, "--lame-duck-s", "60") as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target, options=NO_RETRIES) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            request = pb.ActRequest(obs=observations(1).ravel().tolist())
            callers = Callers(2, lambda _: stub.Act(request, timeout=10))
            try:
                callers.wait_each(5)
                server.process.terminate()
                server.wait_for_line("health NOT_SERVING, serving on for up to 60 s")
                check = health_pb2.HealthCheckRequest(service="swingup.v1.PolicyService")
                health = health_pb2_grpc.HealthStub(channel).Check(check, timeout=10)
                assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
                callers.wait_each(20)  # served after NOT_SERVING
                assert callers.failures == []
                server.process.terminate()
                assert server.process.wait(timeout=30) == 0
            finally:
                callers.stop()
    assert "a second signal" in server.wait_for_line("lame duck over")
