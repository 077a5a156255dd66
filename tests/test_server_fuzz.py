"""A property-based fuzz of every RPC's messages: whatever a client sends, the answer is success or
a client-error status (never INTERNAL, UNKNOWN or UNAVAILABLE), and the server stays SERVING and
logs no error. Each test fuzzes a server of its own and checks it afterwards, so none depends on
another having run.

Derandomised (a fixed sequence of examples, no example database), so CI runs what a developer ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import health_of, until_stopped

from client.localserver import LocalServer
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb

CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # a message past the size limit
}
MAX_BATCH = 4096
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

floats = st.floats(width=32)  # NaN, infinities, subnormals, huge values included
obs_values = st.one_of(
    st.lists(floats, max_size=30),
    # Around the batch limit: 4095 to 4097 observations, and widths that are not 3.
    st.builds(
        lambda n, v: [v] * n,
        st.sampled_from([3 * MAX_BATCH - 1, 3 * MAX_BATCH, 3 * MAX_BATCH + 3, 3 * MAX_BATCH + 1]),
        floats,
    ),
)
modes = st.one_of(st.sampled_from([0, 1, 2]), st.integers(-(2**31), 2**31 - 1))
seeds = st.none() | st.integers(0, 2**64 - 1)


@st.composite
def act_requests(draw: st.DrawFn) -> pb.ActRequest:
    request = pb.ActRequest(obs=draw(obs_values), mode=draw(modes))  # type: ignore[arg-type]
    seed = draw(seeds)
    if seed is not None:
        request.seed = seed
    return request


@st.composite
def stream_requests(draw: st.DrawFn) -> pb.StreamActRequest:
    request = pb.StreamActRequest(obs=draw(obs_values), mode=draw(modes))  # type: ignore[arg-type]
    seed = draw(seeds)
    if seed is not None:
        request.seed = seed
    return request


@contextlib.contextmanager
def fuzzing(own_server: LocalServer) -> Iterator[grpc.Channel]:
    """A channel to the test's own server; afterwards the server must still be SERVING and, once
    it has exited, have logged no error."""
    assert own_server.target is not None
    mark = len(own_server.lines)
    with grpc.insecure_channel(own_server.target, options=[("grpc.enable_retries", 0)]) as opened:
        yield opened
    assert health_of(own_server.target) == "SERVING"
    logged = until_stopped(own_server, mark)
    assert not [line for line in logged if " ERROR " in line or "Traceback" in line], logged


def outcome(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        code = exc.code()
        assert code in CLIENT_ERRORS, f"{code.name}: {exc.details()}"
        return code
    return grpc.StatusCode.OK


def test_act(own_server: LocalServer) -> None:
    with fuzzing(own_server) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)

        @FUZZ
        @given(request=act_requests())
        def fuzz(request: pb.ActRequest) -> None:
            outcome(lambda: stub.Act(request, timeout=30))

        fuzz()


def test_stream_act(own_server: LocalServer) -> None:
    with fuzzing(own_server) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)

        @FUZZ
        @given(requests=st.lists(stream_requests(), min_size=0, max_size=4))
        def fuzz(requests: list[pb.StreamActRequest]) -> None:
            outcome(lambda: list(stub.StreamAct(iter(requests), timeout=30)))

        fuzz()


METHODS = [
    "/swingup.v1.PolicyService/Act",
    "/swingup.v1.PolicyService/StreamAct",
    "/swingup.v1.PolicyService/GetModelInfo",
    "/swingup.v1.AdminService/ReloadModel",
    "/swingup.v1.AdminService/ListVersions",
]


def test_any_bytes_to_any_method(own_server: LocalServer) -> None:
    with fuzzing(own_server) as channel:

        @FUZZ
        @given(
            method=st.sampled_from(METHODS), payloads=st.lists(st.binary(max_size=80), max_size=3)
        )
        def fuzz(method: str, payloads: list[bytes]) -> None:
            if method.endswith("StreamAct"):
                stream = channel.stream_stream(method, None, None)
                outcome(lambda: list(stream(iter(payloads), timeout=30)))
            else:
                unary = channel.unary_unary(method, None, None)
                outcome(lambda: unary(payloads[0] if payloads else b"", timeout=30))

        fuzz()


def test_model_info_and_admin_calls(own_server: LocalServer) -> None:
    with fuzzing(own_server) as channel:
        policy = policy_pb2_grpc.PolicyServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        info = policy.GetModelInfo
        assert outcome(lambda: info(pb.GetModelInfoRequest(), timeout=30)).name == "OK"
        listing = admin.ListVersions
        assert outcome(lambda: listing(admin_pb2.ListVersionsRequest(), timeout=30)).name == "OK"
        reload = admin.ReloadModel
        assert outcome(lambda: reload(admin_pb2.ReloadModelRequest(), timeout=30)).name == "OK"
