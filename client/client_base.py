"""What `PolicyClient` and `AsyncPolicyClient` share besides their channel: the checks of the
target and deadline, the credentials, the closed state and the one mapping of gRPC's errors to
PolicyError. (Each builds its own channel and stubs: grpc's and grpc.aio's differ in type.)"""

from __future__ import annotations

import grpc

from client import channel, hints
from client.credentials import Credentials
from client.errors import PolicyError
from client.session import CLIENT_TIMEOUT, Default


class ClientBase:
    def __init__(self, target: str, timeout: float | None, credentials: Credentials | None) -> None:
        channel.check_timeout("timeout", timeout)
        channel.check_target(target)
        self.target = target
        self.timeout = timeout
        self.credentials = credentials or Credentials()
        self._closed = False
        self._metadata = self.credentials.metadata()

    def _check_open(self) -> None:
        if self._closed:
            raise PolicyError(grpc.StatusCode.FAILED_PRECONDITION, "the client is closed")

    def _error(self, exc: grpc.RpcError) -> PolicyError:
        """The call's PolicyError, with a hint (see `_worded`)."""
        error = PolicyError.from_rpc(exc)
        return self._worded(error.code, error.details, self.timeout)

    def _worded(self, code: grpc.StatusCode, details: str, timeout: float | None) -> PolicyError:
        """A status as a PolicyError, with a hint (`timeout`: the deadline that passed, for a
        DEADLINE_EXCEEDED). A channel that reached no server says which target: gRPC's
        details name only the address it tried last, of all a name has."""
        extra = hints.hint(code, details, self.credentials, timeout)
        if not extra:
            return PolicyError(code, details)
        if code == grpc.StatusCode.UNAVAILABLE:
            return PolicyError(code, f"{self.target}: {details}{extra}")
        return PolicyError(code, details + extra)

    def _step_timeout(self, step_timeout: float | Default | None) -> float | None:
        """A stream step's deadline: by default the client's `timeout`, a call's."""
        return self.timeout if step_timeout is CLIENT_TIMEOUT else step_timeout
