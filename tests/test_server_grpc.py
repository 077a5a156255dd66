"""The server as its clients see it: a real process on 127.0.0.1, called through the stubs."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from support import (
    NO_RETRIES,
    Reference,
    health_of,
    observations,
    start_server,
    stopped,
    until_stopped,
)

from client import AsyncPolicyClient, PolicyClient, PolicyError
from client.localserver import LocalServer
from swingup import contract
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc

MAX_BATCH = 4096  # the server's default


@pytest.fixture
def stub(target: str) -> Iterator[policy_pb2_grpc.PolicyServiceStub]:
    with grpc.insecure_channel(target) as channel:
        yield policy_pb2_grpc.PolicyServiceStub(channel)


def flat(obs: np.ndarray) -> list[float]:
    values: list[float] = obs.ravel().tolist()
    return values


def test_mean_actions_equal_onnxruntime(
    client: PolicyClient, reference: Reference, model_path: Path
) -> None:
    for batch in (1, 7, 256, MAX_BATCH):
        obs = observations(batch, seed=batch)
        actions = client.act(obs)
        assert actions.shape == (batch, 1) and actions.dtype == np.float32
        np.testing.assert_allclose(actions, reference(obs)[0], rtol=0, atol=1e-6)


def test_replies_name_the_model_version(
    stub: policy_pb2_grpc.PolicyServiceStub, model_path: Path
) -> None:
    reply = stub.Act(pb.ActRequest(obs=flat(observations(3)), mode=pb.MODE_MEAN), timeout=10)
    assert reply.batch_size == 3 and len(reply.actions) == 3
    assert reply.model_version == hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]


def test_unspecified_mode_is_mean(
    stub: policy_pb2_grpc.PolicyServiceStub, reference: Reference
) -> None:
    obs = observations(5)
    reply = stub.Act(pb.ActRequest(obs=flat(obs)), timeout=10)
    np.testing.assert_allclose(np.reshape(reply.actions, (5, 1)), reference(obs)[0], atol=1e-6)


def test_seeded_sampling_is_reproducible(client: PolicyClient) -> None:
    obs = observations(64)
    first = client.act(obs, mode="sample", seed=11)
    np.testing.assert_array_equal(first, client.act(obs, mode="sample", seed=11))
    assert not np.array_equal(first, client.act(obs, mode="sample", seed=12))
    # Without a seed every call draws fresh noise.
    assert not np.array_equal(client.act(obs, mode="sample"), client.act(obs, mode="sample"))


def test_samples_follow_the_models_mean_and_std(client: PolicyClient, reference: Reference) -> None:
    # Observations whose samples are (almost) never clipped, so the Gaussian is seen whole.
    candidates = observations(400, seed=3)
    mean, std = reference(candidates)
    inside = np.flatnonzero((np.abs(mean) + 4.5 * std < contract.ACTION_HIGH).ravel())
    assert len(inside) >= 2, "the test model should have unclipped observations"
    chosen = candidates[inside[:2]]
    n = 2000
    actions = client.act(np.repeat(chosen, n, axis=0), mode="sample", seed=2024).reshape(2, n)
    for k in range(2):
        m, s = float(mean[inside[k], 0]), float(std[inside[k], 0])
        # 5 standard errors: a false alarm about once in two million runs.
        assert abs(actions[k].mean() - m) < 5 * s / np.sqrt(n)
        assert abs(actions[k].std() - s) < 5 * s / np.sqrt(2 * n)


def test_64_concurrent_callers_under_batching_get_their_own_answers(
    model_path: Path, reference: Reference
) -> None:
    # A 2 ms window makes the server hold requests so that the callers' requests share calls.
    callers, rounds = 64, 3
    with start_server(model_path, "--batch-window-us", "2000") as server:
        assert server.target is not None
        target = server.target

        async def caller(client: AsyncPolicyClient, i: int) -> list[tuple[np.ndarray, np.ndarray]]:
            answers = []
            for step in range(rounds):
                obs = observations(1 + i % 5, seed=1000 * i + step)
                if i % 2:
                    answers.append((obs, await client.act(obs, mode="sample", seed=i)))
                else:
                    answers.append((obs, await client.act(obs)))
            return answers

        async def everyone() -> list[list[tuple[np.ndarray, np.ndarray]]]:
            async with AsyncPolicyClient(target, timeout=30) as client:
                return await asyncio.gather(*(caller(client, i) for i in range(callers)))

        results = asyncio.run(everyone())
        with PolicyClient(target, timeout=10) as alone:
            for i, answers in enumerate(results):
                for obs, actions in answers:
                    if i % 2:  # the same seed alone gives the same noise: nothing leaked in
                        # (to 1e-6: onnxruntime's float rounding depends on the batch it ran in)
                        alone_actions = alone.act(obs, "sample", seed=i)
                        np.testing.assert_allclose(actions, alone_actions, rtol=0, atol=1e-6)
                    else:
                        np.testing.assert_allclose(actions, reference(obs)[0], atol=1e-6)
        assert server.stop() == 0
    (counted,) = stopped(server)
    calls, rows = counted.calls, counted.observations
    assert rows == sum((1 + i % 5) * rounds * (1 + i % 2) for i in range(callers))
    assert calls < callers * rounds, "concurrent requests were not coalesced"


def test_with_batching_off_every_request_runs_alone_and_equals_onnxruntime(
    model_path: Path, reference: Reference
) -> None:
    sizes = [7, 1, 256, 3]  # several pendulums per request: batching off still takes batches
    with start_server(model_path, "--no-batching") as server:
        assert server.target is not None
        target = server.target
        with PolicyClient(target, timeout=10) as client:
            for k, size in enumerate(sizes):
                obs = observations(size, seed=k)
                np.testing.assert_allclose(client.act(obs), reference(obs)[0], rtol=0, atol=1e-6)

        async def caller(client: AsyncPolicyClient, i: int) -> None:
            obs = observations(5, seed=100 + i)
            np.testing.assert_allclose(await client.act(obs), reference(obs)[0], rtol=0, atol=1e-6)

        async def everyone() -> None:
            async with AsyncPolicyClient(target, timeout=10) as client:
                await asyncio.gather(*(caller(client, i) for i in range(16)))

        asyncio.run(everyone())
        assert "batching off" in "\n".join(server.lines)
        assert server.stop() == 0
    (counted,) = stopped(server)
    assert (counted.calls, counted.observations) == (len(sizes) + 16, sum(sizes) + 16 * 5)


def test_a_stream_answers_in_order(
    stub: policy_pb2_grpc.PolicyServiceStub, reference: Reference
) -> None:
    steps = [observations(1 + k % 4, seed=k) for k in range(30)]
    requests = [pb.StreamActRequest(obs=flat(obs)) for obs in steps]
    requests[0].mode = pb.MODE_MEAN
    replies = list(stub.StreamAct(iter(requests), timeout=30))
    assert [r.step for r in replies] == list(range(30))
    for obs, reply in zip(steps, replies, strict=True):
        assert reply.batch_size == len(obs)
        np.testing.assert_allclose(
            np.reshape(reply.actions, (-1, 1)), reference(obs)[0], rtol=0, atol=1e-6
        )


def test_a_seeded_stream_is_reproducible(client: PolicyClient) -> None:
    obs = observations(8)

    def session(seed: int) -> list[np.ndarray]:
        with client.stream(mode="sample", seed=seed) as stream:
            return [stream.act(obs) for _ in range(5)]

    first = session(3)
    for a, b in zip(first, session(3), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], session(4)[0])
    assert not np.array_equal(first[0], first[1])  # each step draws noise of its own


def test_a_seeded_session_goes_on_where_it_was_on_a_new_stream(
    stub: policy_pb2_grpc.PolicyServiceStub,
) -> None:
    """A seeded session's step k depends on its seed and k alone: steps 0-3 on one stream and
    4-9 on another that starts with first_step 4 give what one stream of ten steps gives,
    and the second stream's replies count on from 4."""
    batches = [observations(1 + k % 3, seed=k) for k in range(10)]

    def steps(first_step: int, count: int) -> list[pb.StreamActResponse]:
        requests = [
            pb.StreamActRequest(obs=flat(obs)) for obs in batches[first_step : first_step + count]
        ]
        requests[0].mode, requests[0].seed = pb.MODE_SAMPLE, 11
        if first_step:
            requests[0].first_step = first_step
        return list(stub.StreamAct(iter(requests), timeout=10))

    whole = steps(0, 10)
    moved = steps(0, 4) + steps(4, 6)
    assert [reply.step for reply in moved] == list(range(10))
    for one, other in zip(whole, moved, strict=True):
        assert list(one.actions) == list(other.actions)
    fresh = pb.StreamActRequest(obs=flat(batches[4]), mode=pb.MODE_SAMPLE, seed=11)
    restarted = next(iter(stub.StreamAct(iter([fresh]), timeout=10)))
    assert list(restarted.actions) != list(whole[4].actions)  # without first_step: step 0's noise
    too_late = pb.StreamActRequest(obs=flat(batches[0]), first_step=2**64 - 1)
    with pytest.raises(grpc.RpcError) as raised:
        next(iter(stub.StreamAct(iter([too_late]), timeout=10)))
    assert_invalid(raised.value, "first_step 18446744073709551615: must be below 2^63")


BAD_OBS = [
    ([0.0] * 4, "wrong observation width"),
    ([1.0, 0.0, float("nan")], "non-finite value nan"),
    ([1.0, 0.0, float("inf")], "non-finite value inf"),
    ([], "empty batch"),
    ([0.0] * 3 * (MAX_BATCH + 1), f"oversize batch: {MAX_BATCH + 1} observations"),
]


@pytest.mark.parametrize(("values", "message"), BAD_OBS)
def test_bad_act_requests_are_invalid_argument(
    stub: policy_pb2_grpc.PolicyServiceStub, target: str, values: list[float], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Act(pb.ActRequest(obs=values, mode=pb.MODE_MEAN), timeout=10)
    assert_invalid(raised.value, message)
    assert health_of(target) == "SERVING"


@pytest.mark.parametrize(("values", "message"), BAD_OBS)
def test_bad_stream_requests_are_invalid_argument(
    stub: policy_pb2_grpc.PolicyServiceStub, values: list[float], message: str
) -> None:
    good = pb.StreamActRequest(obs=flat(observations(2)), mode=pb.MODE_SAMPLE, seed=1)
    replies = iter(stub.StreamAct(iter([good, pb.StreamActRequest(obs=values)]), timeout=10))
    assert next(replies).step == 0
    with pytest.raises(grpc.RpcError) as raised:
        next(replies)
    assert_invalid(raised.value, message)


def test_unknown_modes_are_invalid_argument(
    stub: policy_pb2_grpc.PolicyServiceStub, target: str
) -> None:
    obs = flat(observations(1))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Act(pb.ActRequest(obs=obs, mode=7), timeout=10)  # type: ignore[arg-type]
    assert_invalid(raised.value, "unknown mode 7")
    with pytest.raises(grpc.RpcError) as raised:
        bad_mode = pb.StreamActRequest(obs=obs, mode=9)  # type: ignore[arg-type]
        list(stub.StreamAct(iter([bad_mode]), timeout=10))
    assert_invalid(raised.value, "unknown mode 9")
    assert health_of(target) == "SERVING"


def test_bytes_that_are_not_a_request_are_invalid_argument(own_server: LocalServer) -> None:
    target = own_server.target
    assert target is not None
    mark = len(own_server.lines)
    with grpc.insecure_channel(target) as channel:
        for method in ("Act", "StreamAct", "GetModelInfo"):
            path = f"/swingup.v1.PolicyService/{method}"
            with pytest.raises(grpc.RpcError) as raised:
                if method == "StreamAct":
                    stream = channel.stream_stream(path, None, None)  # raw bytes either way
                    list(stream(iter([b"\xff\xff\xff"]), timeout=10))
                else:
                    channel.unary_unary(path, None, None)(b"\x0a\x05abc", timeout=10)
            assert_invalid(raised.value, "malformed request: not a valid swingup.v1.")
            assert health_of(target) == "SERVING"
    # Nothing in the log, no traceback: read once the server has exited, so nothing is late.
    assert until_stopped(own_server, mark) == []


def test_huge_finite_observations_still_get_actions_in_bounds(client: PolicyClient) -> None:
    extreme = np.array([[3e38, -3e38, 3e38], [-1.0, 0.0, -3e38]], dtype=np.float32)
    for mode in ("mean", "sample"):
        actions = client.act(extreme, mode=mode)  # type: ignore[arg-type]
        assert np.all(np.abs(actions) <= contract.ACTION_HIGH)


def test_a_stream_cannot_change_its_mode_or_seed_or_where_it_began(
    stub: policy_pb2_grpc.PolicyServiceStub,
) -> None:
    obs = flat(observations(1))
    first = pb.StreamActRequest(obs=obs, mode=pb.MODE_SAMPLE, seed=5)
    for later, message in [
        (pb.StreamActRequest(obs=obs, mode=pb.MODE_MEAN), "the session's mode is sample"),
        (pb.StreamActRequest(obs=obs, seed=6), "the session's seed is 5"),
        (pb.StreamActRequest(obs=obs, first_step=2), "first_step belongs on a stream's first"),
    ]:
        repeat = pb.StreamActRequest(obs=obs, mode=pb.MODE_SAMPLE, seed=5)
        replies = iter(stub.StreamAct(iter([first, repeat, later]), timeout=10))
        assert [next(replies).step, next(replies).step] == [0, 1]
        with pytest.raises(grpc.RpcError) as raised:
            next(replies)
        assert_invalid(raised.value, message)


def assert_invalid(error: grpc.RpcError, message: str) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert message in (error.details() or "")


def test_deadlines_are_honoured_and_expired_requests_are_not_computed(model_path: Path) -> None:
    # A long window holds the request past its deadline; the server drops it unseen.
    with start_server(model_path, "--batch-window-us", "300000") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=0.05) as hasty:
            hasty.wait_ready(timeout=30)  # connected: the request reaches the server in time
            with pytest.raises(PolicyError) as raised:
                hasty.act(observations(5))
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with PolicyClient(server.target, timeout=10) as patient:
            assert patient.act(observations(2)).shape == (2, 1)
        assert server.stop() == 0
    (counted,) = stopped(server)
    assert (counted.calls, counted.observations) == (1, 2)


def test_model_info_describes_model_provider_and_batching(
    client: PolicyClient, model_path: Path
) -> None:
    info = client.info()
    assert list(info.obs_shape) == [contract.OBS_DIM]
    assert list(info.action_shape) == [contract.ACTION_DIM]
    assert tuple(info.obs_low) == contract.OBS_LOW and tuple(info.obs_high) == contract.OBS_HIGH
    assert (info.action_low, info.action_high) == (contract.ACTION_LOW, contract.ACTION_HIGH)
    assert info.model_version == hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    assert info.metadata[contract.META_PRESET] == "test"
    assert info.metadata[contract.META_FORMAT_VERSION] == contract.FORMAT_VERSION
    assert info.execution_provider == "CPUExecutionProvider"
    assert info.providers[0] == info.execution_provider
    assert (info.batching.max_batch, info.batching.window_us, info.batching.workers) == (
        MAX_BATCH,
        0,
        1,
    )
    assert info.server_version


def test_health_overall_and_per_service(target: str) -> None:
    assert health_of(target) == "SERVING"
    assert health_of(target, "swingup.v1.PolicyService") == "SERVING"
    with pytest.raises(grpc.RpcError) as raised:
        health_of(target, "no.such.Service")
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_and_describes_the_services(target: str, version: str) -> None:
    # v1 (what grpcurl and Postman ask for first) speaks v1alpha's messages, field for field:
    # the v1alpha classes serve as v1's on the wire.
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="swingup.v1.PolicyService"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"grpc.reflection.{version}.ServerReflection"
        ),
    ]
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        listed, policy, itself = list(call(iter(requests), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {
        "swingup.v1.PolicyService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    for reply, package in ((policy, "swingup.v1"), (itself, f"grpc.reflection.{version}")):
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        assert package in {file.package for file in files}, reply


def test_requests_are_not_logged(own_server: LocalServer) -> None:
    assert own_server.target is not None
    mark = len(own_server.lines)
    with PolicyClient(own_server.target, timeout=10) as client:
        obs = observations(4)
        for _ in range(50):
            client.act(obs)
        with pytest.raises(PolicyError):
            client.act(np.full((1, 3), np.nan, dtype=np.float32))
    assert until_stopped(own_server, mark) == []  # read once it has exited: nothing is late


def test_sigterm_drains_an_open_stream(model_path: Path, reference: Reference) -> None:
    with start_server(model_path, "--grace-s", "60") as server:
        target = server.target
        assert target is not None
        channel = grpc.insecure_channel(target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        statuses = iter(watch)
        assert next(statuses).status == health_pb2.HealthCheckResponse.SERVING
        requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
        replies = iter(
            policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests.get, None))
        )
        obs = observations(3)
        requests.put(pb.StreamActRequest(obs=flat(obs), mode=pb.MODE_MEAN))
        assert next(replies).step == 0

        server.process.terminate()
        assert next(statuses).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # No new calls: a fresh connection is refused...
        with grpc.insecure_channel(target, options=NO_RETRIES) as fresh:
            with pytest.raises(grpc.RpcError) as raised:
                policy_pb2_grpc.PolicyServiceStub(fresh).Act(
                    pb.ActRequest(obs=flat(obs)), timeout=10
                )
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # ...while the open stream goes on being served until its client ends it.
        for step in range(1, 6):
            requests.put(pb.StreamActRequest(obs=flat(obs)))
            reply = next(replies)
            assert reply.step == step
            np.testing.assert_allclose(np.reshape(reply.actions, (3, 1)), reference(obs)[0])
        requests.put(None)
        assert list(replies) == []
        assert server.process.wait(timeout=30) == 0  # well within the 60 s grace
        channel.close()
    assert any("SIGTERM: not serving" in line for line in server.lines)
    # It ended when the stream did: the grace did not run out, nothing was cut.
    assert not any("cancelling" in line for line in server.lines), server.lines


def _open_stream(channel: grpc.Channel) -> tuple[queue.SimpleQueue[Any], Iterator[Any]]:
    """A stream that has answered its first step and stays open."""
    requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
    replies = iter(policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests.get, None)))
    requests.put(pb.StreamActRequest(obs=flat(observations(1)), mode=pb.MODE_MEAN))
    assert next(replies).step == 0
    return requests, replies


@pytest.mark.parametrize("cut_by", ["a second signal", "the end of the grace"])
def test_a_drain_cut_short_says_what_it_cancelled(model_path: Path, cut_by: str) -> None:
    grace = "60" if cut_by == "a second signal" else "0.5"
    with start_server(model_path, "--grace-s", grace) as server:
        assert server.target is not None
        channel = grpc.insecure_channel(server.target)
        requests, replies = _open_stream(channel)
        mark = len(server.lines)
        server.process.terminate()
        server.wait_for_line("SIGTERM: not serving", start=mark)
        if cut_by == "a second signal":
            server.process.send_signal(signal.SIGINT)
        with pytest.raises(grpc.RpcError):
            next(replies)  # the stream's client hears that it ended
        assert server.process.wait(timeout=30) == 0
        requests.put(None)
        channel.close()
    said = (
        "a second signal: cancelling 1 call(s) and stream(s) still running"
        if cut_by == "a second signal"
        else "grace over: cancelling 1 call(s) and stream(s) still running"
    )
    assert any(said in line for line in server.lines), server.lines


def test_sigterm_ends_a_health_watch_once_the_calls_are_done(model_path: Path) -> None:
    """A health Watch never ends by itself. Once the server's own calls have ended, the drain
    cancels it rather than wait out the grace: the watcher hears NOT_SERVING and then that the
    server went away, and the server exits 0 well before its 60 s grace."""
    with start_server(model_path, "--grace-s", "60") as server:
        assert server.target is not None
        with grpc.insecure_channel(server.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=45
            )
            statuses = iter(watch)
            assert next(statuses).status == health_pb2.HealthCheckResponse.SERVING
            server.process.terminate()
            assert next(statuses).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as raised:
                next(statuses)
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
        assert server.process.wait(timeout=30) == 0
    assert any("cancelling the calls gRPC still holds" in line for line in server.lines)
