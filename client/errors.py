"""The one exception the client raises for a failed call: the gRPC status and its message."""

from __future__ import annotations

import grpc


class PolicyError(Exception):
    """A call the server (or the channel) failed; `code` and `details` say how."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> PolicyError:
        # A failed call raises an error that is also the call (grpc.Call, or the asyncio
        # AioRpcError), which carries the status.
        if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
            return cls(error.code(), error.details() or "")
        return cls(grpc.StatusCode.UNKNOWN, str(error))
