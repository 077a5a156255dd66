"""The blocking client: `PolicyClient(target).act(obs)`, stream sessions, model info, health."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import channel, hints, wire
from client.client_base import ClientBase
from client.credentials import Credentials
from client.errors import PolicyError
from client.session import CLIENT_TIMEOUT, Default, StreamSession
from client.wire import Mode
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb

R = TypeVar("R")


class PolicyClient(ClientBase):
    """A channel to a policy server. `timeout` is each call's deadline in seconds (None: none;
    else > 0 and <= channel.MAX_TIMEOUT_S, or ValueError).

    PolicyService calls (act, info, a stream's opening) that fail UNAVAILABLE are retried with
    backoff by gRPC itself (see `channel.RETRY_POLICY`); health, reload_model and list_versions
    are not. Any failure raises `PolicyError` carrying the status code and the server's
    message. A closed client raises PolicyError(FAILED_PRECONDITION).
    `credentials` choose TLS, a client certificate and a bearer token (default: plaintext).
    `keepalive_s` pings each connection that often while calls are open and drops one whose
    server does not answer within as long (a hung replica leaves the rotation); >= 1, None: off.
    Below half of `timeout`, the drop comes before the deadline of the calls and stream steps
    waiting on a hung replica, and they are retried or moved to another instead of failing.
    """

    def __init__(
        self,
        target: str,
        timeout: float | None = 5.0,
        credentials: Credentials | None = None,
        keepalive_s: float | None = channel.KEEPALIVE_S,
    ) -> None:
        options = channel.channel_options(keepalive_s)  # first: a bad value leaves nothing open
        super().__init__(target, timeout, credentials)
        if self.credentials.secure:
            channel_credentials = self.credentials.channel_credentials()
            self._channel = grpc.secure_channel(target, channel_credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def act(self, obs: np.ndarray, mode: Mode = "mean", seed: int | None = None) -> np.ndarray:
        """Actions float32 [B, 1] for observations [B, 3]; `seed` makes sampling repeatable."""
        request = wire.act_request(obs, mode, seed)
        try:
            reply = self._stub.Act(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except ValueError:  # gRPC's word for a closed channel
            self._check_open()
            raise
        return wire.actions_of(reply.actions, len(obs))

    def stream(
        self,
        mode: Mode = "mean",
        seed: int | None = None,
        timeout: float | None = None,
        reopen: bool = True,
        step_timeout: float | Default | None = CLIENT_TIMEOUT,
        first_step: int = 0,
    ) -> PolicyStream:
        """Open a control session (StreamAct). `timeout` bounds the whole session (default
        none); `step_timeout` each step, from its request to its reply, on every stream it is
        sent on together (default: the client's `timeout`; None: none); `reopen` moves it to
        a new stream when its server goes away (see StreamSession); `first_step` goes on with
        a session that ended after that many steps (its `steps`), such as one whose step ran
        out of time: its replies are numbered, and a seeded session's noise drawn, from there."""
        step = self._step_timeout(step_timeout)
        return PolicyStream(self, mode, seed, timeout, reopen, step, first_step)

    def _unary(self, method: Callable[..., R], request: object) -> R:
        """One call with this client's deadline and metadata; gRPC errors become PolicyError.
        (Act inlines the same steps: it is the hot path.)"""
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except ValueError:  # gRPC's word for a closed channel
            self._check_open()
            raise

    def info(self) -> pb.ModelInfo:
        return self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest())

    def reload_model(self) -> admin_pb2.ReloadModelResponse:
        """AdminService.ReloadModel: swap in the highest valid version now."""
        return self._unary(self._admin.ReloadModel, admin_pb2.ReloadModelRequest())

    def list_versions(self) -> admin_pb2.ListVersionsResponse:
        """AdminService.ListVersions: the versions on disk and the state of each."""
        return self._unary(self._admin.ListVersions, admin_pb2.ListVersionsRequest())

    def health(self, service: str = "") -> str:
        """The server's health status name ("SERVING", "NOT_SERVING", ...) for `service`."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            reply = self._unary(self._health.Check, request)
        except PolicyError as exc:
            raise hints.health_error(exc, service) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def wait_ready(self, timeout: float) -> None:
        """Block until the channel is connected, or raise PolicyError(UNAVAILABLE)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise PolicyError(
                grpc.StatusCode.UNAVAILABLE, f"no server at {self.target} after {timeout:g} s"
            ) from None

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _StepWatch:
    """One thread per session that cancels its call when a step waits past `limit` seconds,
    counted from the step's first request over every stream it is sent on (`move`).

    A step costs two attribute writes (`arm`, `disarm`): a step takes ~0.4 ms, so a thread or
    a timer per step would cost more than the step. The thread sleeps until the armed step's
    deadline, and without one until `arm` wakes it. A reply that lands just as its deadline
    passes may still see the call cancelled: the step counts as late.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.expired = False  # the watch cancelled a call: the stream is over
        self._call: grpc.Call | None = None
        self._since: float | None = None  # when the armed step was sent; None: none armed
        self._idle = False  # the thread sleeps until `arm` wakes it
        self._closed = False
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="swingup-step-watch", daemon=True).start()

    def arm(self, call: grpc.Call, since: float) -> None:
        self._call = call
        self._since = since
        if self._idle:  # read after writing `_since`: `_run` reads them the other way round
            with self._wake:
                self._wake.notify()

    def move(self, call: grpc.Call) -> None:
        """Watch `call`, the new stream the armed step is sent again on, against the step's
        deadline: it is one for the step, however many streams the step takes."""
        with self._wake:  # `_run` fires holding the lock: it cannot cancel the old call now
            self._call = call
            if self.expired:  # the deadline passed while the step moved
                call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs

    def disarm(self) -> None:
        self._since = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while not self._closed:
                since, call = self._since, self._call
                if since is None or call is None:
                    self._idle = True
                    if self._since is None and not self._closed:
                        self._wake.wait()
                    self._idle = False
                    continue
                left = since + self.limit - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                elif self._since == since:  # still the same step, still waiting
                    self.expired = True
                    self._since = None
                    call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs


class PolicyStream(StreamSession):
    """One StreamAct session: `act(obs)` sends a batch and waits for its actions. It moves to a
    new stream when its server goes away (see StreamSession).

    A stream serves one thread at a time: `act` while another thread's step waits raises
    RuntimeError (its replies would be crossed). `close()` or `cancel()` may come from any
    thread; a waiting step then fails with CANCELLED.
    """

    def __init__(
        self,
        client: PolicyClient,
        mode: Mode,
        seed: int | None,
        timeout: float | None,
        reopen: bool = True,
        step_timeout: float | None = None,
        first_step: int = 0,
    ) -> None:
        super().__init__(mode, seed, timeout, reopen, step_timeout, first_step)
        self._client = client
        self._busy = threading.Lock()
        self._watch = None if step_timeout is None else _StepWatch(step_timeout)
        if self._watch is not None:  # an abandoned stream must not keep its thread
            weakref.finalize(self, self._watch.close)
        self._start()

    def _start(self) -> None:
        """Open a stream: its request queue (None ends it), the call and its replies."""
        client = self._client
        client._check_open()
        self._requests: queue.SimpleQueue[pb.StreamActRequest | None] = queue.SimpleQueue()
        self._call = client._stub.StreamAct(
            iter(self._requests.get, None), timeout=self._timeout(), metadata=client._metadata
        )
        self._replies = iter(self._call)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self._check_open()
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "a PolicyStream serves one thread at a time: another thread's step is waiting"
            )
        try:
            return self._step(obs)
        except (PolicyError, ValueError):
            # The session's own verdict, or a bad observation (nothing was sent).
            if not self._open and self._watch is not None:
                self._watch.close()
            raise
        except BaseException:
            # Ctrl-C (or any exception) while the reply was awaited: the call is mid-step, and
            # its late reply would answer the next step. End it.
            self.cancel()
            raise
        finally:
            self._busy.release()

    def _step(self, obs: np.ndarray) -> np.ndarray:
        if self._watch is not None:
            self._watch.arm(self._call, time.monotonic())
        while True:
            request = self._request(obs)
            self._requests.put(request)
            try:
                reply = next(self._replies)
            except grpc.RpcError as exc:
                error = self._error(exc)
            except StopIteration:
                error = PolicyError(grpc.StatusCode.UNKNOWN, "the server ended the stream")
            else:
                if self._watch is not None:
                    self._watch.disarm()
                return self._answered(reply, request)
            self._requests.put(None)  # ends the failed stream's request thread
            self._failed(error)
            self._start()
            if self._watch is not None:
                self._watch.move(self._call)

    def _error(self, exc: grpc.RpcError) -> PolicyError:
        if self._watch is not None and self._watch.expired:
            return self._step_expired()
        if not self._open:  # close() or cancel() from another thread
            return PolicyError(grpc.StatusCode.CANCELLED, "the stream was closed")
        return self._client._error(exc)

    def close(self) -> None:
        """End the session and wait for the server to finish it (at most the step deadline).
        From another thread while a step waits: end the session now, as `cancel()`."""
        if not self._open:
            return
        if not self._busy.acquire(blocking=False):
            self.cancel()
            return
        try:
            self._open = False
            self._requests.put(None)
            if self._watch is not None:
                self._watch.arm(self._call, time.monotonic())
            try:
                for _ in self._replies:
                    pass
            except grpc.RpcError as exc:
                if self._watch is not None and self._watch.expired:
                    raise self._close_expired() from None
                raise self._client._error(exc) from None
        finally:
            self._busy.release()
            if self._watch is not None:
                self._watch.close()

    def cancel(self) -> None:
        """End the session now, without waiting for the server."""
        self._open = False
        self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        self._requests.put(None)
        if self._watch is not None:
            self._watch.close()

    def __enter__(self) -> PolicyStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # the caller's exception is what to report: no waiting, no second error
            self.cancel()
