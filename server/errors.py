"""Domain errors and the one mapping from them to gRPC status codes, applied to every RPC.

The layers below the servicer raise these and know nothing of gRPC; `unary` and `streaming`
wrap each handler so that an error becomes the status it names (MLServer's pattern). Anything
else is a bug of ours: it is logged with its traceback and the client gets INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

log = logging.getLogger("swingup.serve")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S")


class ServingError(Exception):
    """A request the server refuses; its message goes to the client verbatim."""


class InvalidRequest(ServingError):
    """The request itself is malformed: the client must change it."""


class UnknownModel(ServingError):
    """The request names a model, or a version, that this server does not serve."""


class Overloaded(ServingError):
    """The batching queue is full: the request is refused at once rather than queued."""


class DeadlineExpired(ServingError):
    """The request's deadline passed before it ran, or a stream sat idle past its limit."""


class Unauthenticated(ServingError):
    """The call carries no valid bearer token."""


class ServerLeaving(ServingError):
    """This replica is stopping and ends a stream so that its client reopens it elsewhere."""


class ClientGone(Exception):
    """The client hung up while the server wrote to it: the call is over, nothing to report."""


class ModelError(Exception):
    """The model cannot be served (missing file, broken contract, unusable provider)."""


_STATUS: dict[type[ServingError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ServerLeaving: grpc.StatusCode.UNAVAILABLE,  # the code clients retry, on another replica
}


def status_of(exc: ServingError) -> grpc.StatusCode:
    codes = (code for cls, code in _STATUS.items() if isinstance(exc, cls))
    return next(codes, grpc.StatusCode.FAILED_PRECONDITION)


def set_status(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    """Give the call the status `exc` maps to; gRPC sends it when the handler returns.

    Not context.abort(), which sends the status at once: then a client could hold its error
    before the interceptors around the handler (the metrics) had seen the call end.
    """
    if isinstance(exc, ServingError):
        code, details = status_of(exc), str(exc)
    elif isinstance(exc, ClientGone):
        code, details = grpc.StatusCode.CANCELLED, str(exc)  # no one is left to read it
    else:
        log.exception("internal error serving a request")
        code, details = grpc.StatusCode.INTERNAL, "internal server error"
    context.set_code(code)
    context.set_details(details)


Context = grpc.aio.ServicerContext[Any, Any]


def unary(
    handler: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """Map exceptions of a unary handler to statuses."""

    @functools.wraps(handler)
    async def wrapped(self: S, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            set_status(context, exc)
            return None  # type: ignore[return-value]  # gRPC sends no reply with an error status

    return wrapped


def streaming(
    handler: Callable[[S, Req, Context], AsyncIterator[Resp]],
) -> Callable[[S, Req, Context], AsyncIterator[Resp]]:
    """Map exceptions of a response-streaming handler to statuses."""

    @functools.wraps(handler)
    async def wrapped(self: S, requests: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            async for reply in handler(self, requests, context):
                yield reply
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            set_status(context, exc)

    return wrapped
