"""`from client import PolicyClient, AsyncPolicyClient`: calls, sessions, errors, retries."""

from __future__ import annotations

import asyncio
import inspect
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from support import (
    Reference,
    act_until_each_answers,
    frozen,
    observations,
    replicas,
)

from client import AsyncPolicyClient, PolicyClient, PolicyError, channel, hints, session, wire
from client.credentials import Credentials
from client.localserver import LocalServer
from swingup.v1 import policy_pb2 as pb
from swingup.v1 import policy_pb2_grpc


def test_act_returns_one_action_per_observation(client: PolicyClient, reference: Reference) -> None:
    obs = observations(10)
    actions = client.act(obs)
    assert actions.shape == (10, 1) and actions.dtype == np.float32
    np.testing.assert_allclose(actions, reference(obs)[0], rtol=0, atol=1e-6)
    sampled = client.act(obs, mode="sample", seed=3)
    np.testing.assert_array_equal(sampled, client.act(obs, mode="sample", seed=3))


def test_a_stream_session_steps_and_closes(client: PolicyClient, reference: Reference) -> None:
    stream = client.stream()
    for k in range(5):
        obs = observations(1 + k, seed=k)
        np.testing.assert_allclose(stream.act(obs), reference(obs)[0], rtol=0, atol=1e-6)
    assert stream.steps == 5
    stream.close()
    stream.close()  # closing twice is harmless
    with pytest.raises(PolicyError, match="the stream is closed"):
        stream.act(observations(1))


def test_a_server_error_carries_status_and_message(client: PolicyClient) -> None:
    bad = np.array([[0.0, 1.0, np.inf]], dtype=np.float32)
    with pytest.raises(PolicyError) as raised:
        client.act(bad)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "non-finite value inf" in raised.value.details
    assert str(raised.value).startswith("INVALID_ARGUMENT: non-finite")
    with client.stream(mode="sample", seed=1) as stream:
        stream.act(observations(2))
        with pytest.raises(PolicyError) as raised:
            stream.act(bad)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_wrong_shapes_and_modes_are_refused_before_sending(client: PolicyClient) -> None:
    with pytest.raises(ValueError, match=r"obs must be \[batch, 3\], got shape \(3,\)"):
        client.act(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="mode must be 'mean' or 'sample'"):
        client.act(observations(1), mode="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        client.stream(mode="greedy")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan"), 1e10])
def test_a_deadline_grpc_cannot_keep_is_refused(target: str, timeout: float) -> None:
    """gRPC turns a deadline past ~1e10 s into one already passed: every call would fail."""
    with pytest.raises(ValueError, match=r"^timeout .*: must be a number of seconds > 0"):
        PolicyClient(target, timeout=timeout)
    with pytest.raises(ValueError, match=r"^timeout .*: must be"):
        AsyncPolicyClient(target, timeout=timeout)
    with PolicyClient(target, timeout=None) as client:  # None: no deadline at all
        assert client.act(observations(1)).shape == (1, 1)
        with pytest.raises(ValueError, match=r"^step_timeout .*: must be"):
            client.stream(step_timeout=timeout)
        with pytest.raises(ValueError, match=r"^timeout .*: must be"):
            client.stream(timeout=timeout)
        with client.stream(step_timeout=1e6, timeout=1e6) as stream:  # the longest allowed
            assert stream.act(observations(1)).shape == (1, 1)


def test_a_closed_client_says_so(target: str) -> None:
    client = PolicyClient(target)
    client.close()
    for call in (lambda: client.act(observations(1)), client.info, client.health, client.stream):
        with pytest.raises(PolicyError, match="FAILED_PRECONDITION: the client is closed"):
            call()

    async def main() -> None:
        closed = AsyncPolicyClient(target)
        await closed.close()
        for call in (lambda: closed.act(observations(1)), closed.info, closed.list_versions):
            with pytest.raises(PolicyError, match="the client is closed"):
                await call()
        with pytest.raises(PolicyError, match="the client is closed"):
            closed.stream()

    asyncio.run(main())


def test_a_seed_out_of_range_is_named(client: PolicyClient) -> None:
    assert client.act(observations(1), mode="sample", seed=wire.MAX_SEED).shape == (1, 1)
    for seed in (-1, wire.MAX_SEED + 1):
        with pytest.raises(ValueError, match=f"seed {seed}: must be between 0 and 2"):
            client.act(observations(1), mode="sample", seed=seed)
        with pytest.raises(ValueError, match=f"seed {seed}: must be between"):
            client.stream(mode="sample", seed=seed)


def test_info_and_health(client: PolicyClient) -> None:
    assert client.info().execution_provider == "CPUExecutionProvider"
    assert client.health() == "SERVING"
    assert client.health("swingup.v1.PolicyService") == "SERVING"
    with pytest.raises(PolicyError) as raised:
        client.health("nothing.Here")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert raised.value.details == "the server knows no service 'nothing.Here'"


def test_no_server_is_unavailable() -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{bound.getsockname()[1]}"
        with PolicyClient(target, timeout=5) as nobody:
            with pytest.raises(PolicyError) as raised:
                nobody.act(observations(1))
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE
            assert raised.value.details.startswith(f"{target}: ")
            with pytest.raises(PolicyError, match=f"no server at {target}"):
                nobody.wait_ready(timeout=0.2)


@pytest.mark.parametrize(
    ("details", "secure", "says"),
    [  # details as gRPC 1.85 words them
        (
            "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:1: "
            "Failed to connect to remote host: Connection refused",
            True,
            "nothing listens at the target",
        ),
        (
            "errors resolving nosuchhost.invalid:50051: [field:hostname lookup error:address "
            "lookup failed for nosuchhost.invalid:50051: Domain name not found]",
            False,
            "the target's host name does not resolve",
        ),
        (
            "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:9: "
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: WRONG_VERSION_NUMBER",
            True,
            "no TLS handshake succeeded",
        ),
        ("failed to connect to all addresses; Socket closed", False, "if the server serves TLS"),
        ("Stream removed (Socket closed)", False, "the server dropped the connection"),
        (
            "connections to all backends failing; last error: UNAVAILABLE: ipv4:127.0.0.1:9: "
            "recvmsg:Connection reset by peer (104)",
            True,
            "the server dropped the connection",
        ),
        ("Stream removed (ping timeout)", True, "the server stopped answering keepalive pings"),
        ("this server is stopping; go on with a new stream", False, ""),
    ],
)
def test_the_unavailable_hint_follows_the_details(details: str, secure: bool, says: str) -> None:
    extra = hints.hint(grpc.StatusCode.UNAVAILABLE, details, Credentials(tls=secure))
    assert says in extra and (extra == "") == (says == "")


def test_the_async_client_does_the_same(target: str, reference: Reference) -> None:
    async def main() -> None:
        async with AsyncPolicyClient(target, timeout=10) as client:
            obs = observations(6)
            np.testing.assert_allclose(await client.act(obs), reference(obs)[0], atol=1e-6)
            first = await client.act(obs, mode="sample", seed=9)
            np.testing.assert_array_equal(first, await client.act(obs, mode="sample", seed=9))
            async with client.stream(mode="sample", seed=9) as stream:
                # A session's first step draws the same noise as an Act call with its seed.
                np.testing.assert_array_equal(await stream.act(obs), first)
                assert (await stream.act(obs)).shape == (6, 1)
            assert (await client.info()).batching.max_batch == 4096
            assert await client.health() == "SERVING"
            # The rest of PolicyClient's calls, awaited.
            await client.wait_ready(timeout=10)
            with PolicyClient(target) as blocking:
                assert (await client.list_versions()) == blocking.list_versions()
            with pytest.raises(PolicyError) as raised:
                await client.act(np.full((2, 3), np.nan, dtype=np.float32))
            assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "non-finite value nan" in raised.value.details

    asyncio.run(main())


class Flaky(policy_pb2_grpc.PolicyServiceServicer):
    """A stand-in server that is UNAVAILABLE for its first `failures` calls."""

    def __init__(self, failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures = failures
        self.code = code
        self.attempts = 0
        self.lock = threading.Lock()

    def Act(self, request: pb.ActRequest, context: grpc.ServicerContext) -> pb.ActResponse:
        with self.lock:
            self.attempts += 1
            attempt = self.attempts
        if attempt <= self.failures:
            context.abort(self.code, f"attempt {attempt} refused")
        return pb.ActResponse(actions=[0.5] * (len(request.obs) // 3), batch_size=1)

    def StreamAct(
        self, request_iterator: Iterator[pb.StreamActRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamActResponse]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this stand-in")

    def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this stand-in")


@pytest.fixture
def flaky_server() -> Iterator[tuple[Flaky, str, Flaky, str]]:
    """Two in-process servers: one UNAVAILABLE twice, one INVALID_ARGUMENT once."""
    unavailable, invalid = Flaky(2), Flaky(1, grpc.StatusCode.INVALID_ARGUMENT)
    servers, targets = [], []
    for servicer in (unavailable, invalid):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
        targets.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        servers.append(server)
    yield unavailable, targets[0], invalid, targets[1]
    for server in servers:
        server.stop(None)


def test_unavailable_is_retried_with_backoff_and_nothing_else_is(
    flaky_server: tuple[Flaky, str, Flaky, str],
) -> None:
    unavailable, unavailable_target, invalid, invalid_target = flaky_server
    with PolicyClient(unavailable_target) as client:
        np.testing.assert_array_equal(client.act(observations(2)), [[0.5], [0.5]])
    assert unavailable.attempts == 3
    with (
        PolicyClient(invalid_target) as client,
        pytest.raises(PolicyError, match="INVALID_ARGUMENT: attempt 1 refused"),
    ):
        client.act(observations(2))
    assert invalid.attempts == 1


def test_calls_are_spread_over_every_address_a_name_resolves_to(model_path: Path) -> None:
    """Client-side round robin: replicas behind one name (a headless Service) all get calls.
    Round robin reaches the second replica as soon as its connection is up; pick_first (gRPC's
    default) never would, and the helper's bound would fail."""
    with (
        replicas(model_path) as (first, second),
        PolicyClient(f"ipv4:{first.target},{second.target}") as client,
    ):
        act_until_each_answers(client, (first, second), at_least=5)


@pytest.mark.timeout(120)  # a bounded loop; the mark turns a hang into a failure
def test_a_hung_replica_leaves_the_rotation(model_path: Path) -> None:
    """Frozen (SIGSTOP), a replica keeps its TCP connections up: only the client's keepalive
    pings find it, and round robin then sends every call to the replica that answers."""
    with replicas(model_path) as (hung, healthy):
        target = f"ipv4:{hung.target},{healthy.target}"
        with PolicyClient(target, timeout=1.0, keepalive_s=1.0) as client:
            act_until_each_answers(client, (hung, healthy), at_least=1)
            with frozen(hung):
                outcomes = []
                for _ in range(40):  # bounded: a rotation keeping the hung one fails below
                    try:
                        client.act(observations(1))
                        outcomes.append("OK")
                    except PolicyError as exc:
                        outcomes.append(exc.code.name)
                    if outcomes[-20:] == ["OK"] * 20:
                        break
    # Calls sent to it before the pings found it failed; then 20 in a row were answered.
    assert outcomes[-20:] == ["OK"] * 20, outcomes
    assert set(outcomes) <= {"OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"}, outcomes


@pytest.mark.parametrize("client_class", [PolicyClient, AsyncPolicyClient])
def test_the_default_keepalive_drops_a_hung_replica_within_the_default_deadline(
    client_class: type[PolicyClient | AsyncPolicyClient],
) -> None:
    """Pings find a hung replica within two keepalive intervals: by default before the calls
    waiting on it reach their deadline, so they are retried elsewhere (test_replica_faults)."""
    timeout = inspect.signature(client_class).parameters["timeout"].default
    assert timeout > 2 * channel.KEEPALIVE_S


@pytest.mark.parametrize("client_class", [PolicyClient, AsyncPolicyClient])
@pytest.mark.parametrize("keepalive_s", [0.5, float("nan"), 0.0])
def test_keepalive_below_what_servers_accept_is_refused(
    client_class: type[PolicyClient | AsyncPolicyClient], keepalive_s: float
) -> None:
    with pytest.raises(ValueError, match=rf"keepalive_s {keepalive_s!r}: must be a number .* >= 1"):
        client_class("localhost:1", keepalive_s=keepalive_s)


@pytest.mark.parametrize(
    ("code", "reopen", "reopens", "moves"),
    [
        (grpc.StatusCode.UNAVAILABLE, True, 0, True),
        (grpc.StatusCode.UNAVAILABLE, True, 2, True),
        (grpc.StatusCode.UNAVAILABLE, False, 0, False),  # turned off
        (grpc.StatusCode.UNAVAILABLE, True, 3, False),  # three a step at most
        (grpc.StatusCode.CANCELLED, True, 0, False),
        (grpc.StatusCode.INVALID_ARGUMENT, True, 0, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True, 0, False),
    ],
)
def test_a_session_moves_to_a_new_stream_only_when_its_server_went_away(
    code: grpc.StatusCode, reopen: bool, reopens: int, moves: bool
) -> None:
    assert session.may_reopen(code, reopen, reopens) is moves


@pytest.mark.timeout(60)  # a hung step is a failure, not a stuck run
def test_a_frozen_server_fails_a_stream_step_with_deadline_exceeded(
    own_server: LocalServer,
) -> None:
    assert own_server.target is not None
    with PolicyClient(own_server.target, timeout=0.5) as client:
        stream = client.stream()  # each step's deadline is the client's timeout
        stream.act(observations(1))
        with frozen(own_server), pytest.raises(PolicyError) as raised:
            stream.act(observations(1))
        assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert raised.value.details == "no reply to step 2 within 0.5 s"
        with frozen(own_server), pytest.raises(PolicyError) as unary:
            client.act(observations(1))  # gRPC says "Deadline Exceeded": we say which
        assert unary.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "(no reply within 0.5 s: " in unary.value.details
        with pytest.raises(PolicyError, match="the stream is closed"):  # not reopened
            stream.act(observations(1))
        with frozen(own_server):
            untouched = client.stream(step_timeout=0.25)  # a first step and a close, frozen
            with pytest.raises(PolicyError, match=r"no reply to step 1 within 0\.25 s"):
                untouched.act(observations(1))
            idle = client.stream(step_timeout=0.25)
            with pytest.raises(PolicyError, match=r"did not end the stream within 0\.25 s"):
                idle.close()


@pytest.mark.timeout(60)
def test_a_frozen_server_fails_an_async_stream_step_with_deadline_exceeded(
    own_server: LocalServer,
) -> None:
    assert own_server.target is not None
    target = own_server.target

    async def main() -> None:
        async with AsyncPolicyClient(target, timeout=0.5) as client:
            stream = client.stream()
            await stream.act(observations(1))
            with frozen(own_server), pytest.raises(PolicyError) as raised:
                await stream.act(observations(1))
            assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert raised.value.details == "no reply to step 2 within 0.5 s"
            with frozen(own_server):
                # A stream that never started: grpc.aio's write waits for it to start.
                untouched = client.stream(step_timeout=0.25)
                with pytest.raises(PolicyError, match=r"no reply to step 1 within 0\.25 s"):
                    await untouched.act(observations(1))
                idle = client.stream(step_timeout=0.25)
                with pytest.raises(PolicyError, match=r"did not end the stream within 0\.25 s"):
                    await idle.close()
            # The deadline's cancellation ended with the step: the task goes on as before.
            assert (await client.act(observations(2))).shape == (2, 1)

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_a_session_whose_step_ran_out_of_time_goes_on_from_its_step(
    own_server: LocalServer,
) -> None:
    # A seeded sampling session cut by a frozen server, then opened again at its step count
    # (first_step), draws what one unbroken session draws, in both clients.
    assert own_server.target is not None
    target = own_server.target
    obs = [observations(2, seed=k) for k in range(6)]
    with PolicyClient(target, timeout=0.5) as client:
        with client.stream(mode="sample", seed=7) as whole:
            unbroken = [whole.act(o) for o in obs]
        cut = client.stream(mode="sample", seed=7)
        before = [cut.act(o) for o in obs[:2]]
        with frozen(own_server), pytest.raises(PolicyError, match="no reply to step 3"):
            cut.act(obs[2])
        assert cut.steps == 2
        with client.stream(mode="sample", seed=7, first_step=cut.steps) as again:
            after = [again.act(o) for o in obs[2:]]
            assert again.steps == 6
        np.testing.assert_array_equal(np.stack(before + after), np.stack(unbroken))
        for step in (-1, 2**63, 1.5):
            with pytest.raises(ValueError, match=f"first_step {step}: must be between 0 and"):
                client.stream(first_step=step)  # type: ignore[arg-type]  # 1.5 is the point

    async def main() -> None:
        async with AsyncPolicyClient(target, timeout=5) as client:
            async with client.stream(mode="sample", seed=7, first_step=2) as again:
                after = [await again.act(o) for o in obs[2:]]
            np.testing.assert_array_equal(np.stack(after), np.stack(unbroken[2:]))
            with pytest.raises(ValueError, match="first_step -1: must be between 0 and"):
                client.stream(first_step=-1)

    asyncio.run(main())


class Leaving(Flaky):
    """A stand-in replica that keeps leaving: it answers a session's first step, then ends
    every stream `hold_s` after the step it is sent, with UNAVAILABLE, as a server in its lame
    duck does. (Response headers go first: the call is committed, so gRPC does not retry it
    itself and the session reopens.)"""

    def __init__(self, hold_s: float) -> None:
        super().__init__(failures=0)
        self.hold_s = hold_s
        self.ended = 0  # streams ended under a waiting step

    def StreamAct(
        self, request_iterator: Iterator[pb.StreamActRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamActResponse]:
        context.send_initial_metadata(())
        answered = False
        for request in request_iterator:
            if not answered and not request.HasField("first_step"):  # a new session's first
                answered = True
                yield pb.StreamActResponse(actions=[0.5] * (len(request.obs) // 3))
                continue
            # The slow goodbye under test, not a synchronisation: the step waits this long.
            time.sleep(self.hold_s)
            with self.lock:
                self.ended += 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "this server is stopping: test")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_step_deadline_covers_every_stream_the_step_is_sent_on(asynchronous: bool) -> None:
    """Each stream ends 0.6 s into the step; the step's deadline is 1 s. It runs out on the
    second stream: the step fails with the error that moved it, saying so. (Were the deadline
    each stream's anew, every stream would end before it, and the step would fail only after
    1 + MAX_REOPENS streams, 2.4 s.)"""
    leaving = Leaving(hold_s=0.6)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(leaving, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()

    async def step_twice_async() -> None:
        async with AsyncPolicyClient(target, timeout=1.0) as client:
            stream = client.stream()
            await stream.act(observations(1))
            await stream.act(observations(1))

    def step_twice() -> None:
        if asynchronous:
            asyncio.run(step_twice_async())
            return
        with PolicyClient(target, timeout=1.0) as client:
            stream = client.stream()
            stream.act(observations(1))
            stream.act(observations(1))

    try:
        with pytest.raises(PolicyError) as raised:
            step_twice()
    finally:
        server.stop(None)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE, raised.value
    assert raised.value.details.startswith("this server is stopping: test; ")
    assert "no reply to step 2 within 1 s, on " in raised.value.details
    assert leaving.ended < 1 + session.MAX_REOPENS


@pytest.mark.timeout(60)
def test_an_exception_in_a_stream_block_ends_the_stream_without_waiting(
    own_server: LocalServer,
) -> None:
    assert own_server.target is not None
    with PolicyClient(own_server.target, timeout=30) as client:
        # Leaving the block on an exception cancels the call instead of waiting for a server
        # that will not answer, and the caller sees its own exception, not a gRPC one.
        stream = client.stream()
        stream.act(observations(1))
        with frozen(own_server), pytest.raises(KeyError), stream:
            raise KeyError("the caller's")
        with pytest.raises(PolicyError, match="the stream is closed"):
            stream.act(observations(1))

    async def main() -> None:
        async with AsyncPolicyClient(own_server.target or "", timeout=30) as client:
            stream = client.stream()
            await stream.act(observations(1))
            with frozen(own_server), pytest.raises(KeyError):
                async with stream:
                    raise KeyError("the caller's")

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_a_stream_serves_one_thread_at_a_time(own_server: LocalServer) -> None:
    assert own_server.target is not None
    outcomes: queue.SimpleQueue[str] = queue.SimpleQueue()
    with PolicyClient(own_server.target) as client:
        stream = client.stream(step_timeout=None)
        stream.act(observations(1))

        def step() -> None:
            try:
                stream.act(observations(1))
                outcomes.put("answered")
            except RuntimeError as exc:
                outcomes.put(str(exc))
            except PolicyError as exc:
                outcomes.put(exc.code.name)

        with frozen(own_server):
            threads = [threading.Thread(target=step) for _ in range(2)]
            for thread in threads:
                thread.start()
            # Whichever thread came second is refused at once; the first waits for a reply
            # until close() from this thread ends its step.
            assert "one thread at a time" in outcomes.get(timeout=30)
            stream.close()
            for thread in threads:
                thread.join()
        assert outcomes.get_nowait() == "CANCELLED"

    async def main() -> None:
        async with AsyncPolicyClient(own_server.target or "") as client:
            stream = client.stream(step_timeout=None)
            await stream.act(observations(1))
            with frozen(own_server):
                first = asyncio.ensure_future(stream.act(observations(1)))
                await asyncio.sleep(0)  # yields once: the first step is now waiting
                with pytest.raises(RuntimeError, match="one task at a time"):
                    await stream.act(observations(1))
                await stream.close()
                with pytest.raises(PolicyError) as raised:
                    await first
                assert raised.value.code == grpc.StatusCode.CANCELLED

    asyncio.run(main())


def test_credentials_and_targets_grpc_would_misuse_are_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token: must be visible ASCII"):
        Credentials(token="t\u00f6ken")  # gRPC core would fail it as 'Invalid metadata'
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"ca\.pem: not a PEM CA certificate"):
        PolicyClient("127.0.0.1:1", credentials=Credentials(ca=not_pem))
    for target in ("", "127.0.0.1:99999"):
        with pytest.raises(ValueError, match=r"^target '.*': "):
            PolicyClient(target)
        with pytest.raises(ValueError, match=r"^target '.*': "):
            AsyncPolicyClient(target)
