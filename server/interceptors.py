"""Wrapping gRPC method handlers, for the interceptors that cover every service on the server.

An interceptor sees a call's method and metadata and returns the handler that will serve it. To
observe or refuse a call it returns a copy of the real handler, of the same streaming shape and
with the same (de)serialisers, whose behaviour is wrapped. These helpers build such copies.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from server import errors
from server.errors import ServingError

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # not subscriptable at run time
Context = grpc.aio.ServicerContext[Any, Any]
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]"
)
# Called once per call with its final status code and its duration in seconds.
OnDone = Callable[[grpc.StatusCode, float], None]


def _code(context: Context, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


def with_behaviour(handler: Handler, behaviour: Any) -> Handler:
    """A handler of `handler`'s streaming shape and (de)serialisers that runs `behaviour`."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return, operator]
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def behaviour_of(handler: Handler) -> Any:
    """The function a handler runs (grpc-stubs types it as sync; ours are async)."""
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def observed(handler: Handler, on_done: OnDone) -> Handler:
    """`handler`, reporting each call's final status and duration to `on_done`."""
    behaviour = behaviour_of(handler)

    def finish(context: Context, start: float, exc: BaseException | None) -> None:
        if exc is None:
            code = _code(context, grpc.StatusCode.OK)
        elif isinstance(exc, grpc.aio.AbortError):
            code = _code(context, grpc.StatusCode.UNKNOWN)
        elif isinstance(exc, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        else:
            code = grpc.StatusCode.UNKNOWN
        on_done(code, time.perf_counter() - start)

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
            start = time.perf_counter()
            try:
                async for reply in behaviour(request, context):
                    yield reply
            except BaseException as exc:
                finish(context, start, exc)
                raise
            finish(context, start, None)

        return with_behaviour(handler, streaming)

    # A unary handler, or a streaming one that writes with context.write() and returns.
    async def unary(request: Any, context: Context) -> Any:
        start = time.perf_counter()
        try:
            reply = await behaviour(request, context)
        except BaseException as exc:
            finish(context, start, exc)
            raise
        finish(context, start, None)
        return reply

    return with_behaviour(handler, unary)


def refusing(handler: Handler | None, error: ServingError) -> Handler:
    """A handler of `handler`'s shape (unary if there is none) that refuses every call with
    the status `error` maps to, before reading a request (sent when the handler returns: see
    errors.set_status)."""

    async def refuse(request: Any, context: Context) -> None:
        errors.set_status(context, error)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.response_streaming:

        async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            errors.set_status(context, error)
            return
            yield  # unreachable: makes this an async generator, as the shape requires

        return with_behaviour(handler, refuse_stream)
    return with_behaviour(handler, refuse)
