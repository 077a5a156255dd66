"""The floor: a bare grpcio server answering `swingup.v1.PolicyService` with nothing of ours.

`python -m bench.echo_server [--kind aio|sync] [--port 0]` serves `Act` and `StreamAct` with the
generated messages, so a client uses the very stub it uses against our server and both sides
parse and serialize the same bytes; but no model, no validation, no batching, no sampling runs:
the answer is the first component of each observation, packed as the actions. It logs the same
"listening on HOST:PORT" line as `swingup-serve`, stops on SIGTERM or SIGINT, and stops by itself
after `--lifetime-s` in any case (a benchmark that dies must not leave it running).

`--kind model --model PATH` is the echo plus the model: the aio echo whose answer is the actor's
mean action from a plain `InferenceSession.run` (one intra-op thread, no spinning, as ours),
clipped to the action bounds, with no checks, batching, sampling, bound buffers or metrics. It
splits the gap between the echo and our server into what running the model costs any server
and what our code around it adds.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc

from swingup.v1 import policy_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PolicyService"].full_name
VERSION = "echo00000000"  # as long as our model version, so the replies weigh the same


def reply(request: pb.ActRequest | pb.StreamActRequest) -> pb.ActResponse:
    actions = request.obs[::3]
    return pb.ActResponse(actions=actions, batch_size=len(actions), model_version=VERSION)


def stream_reply(request: pb.StreamActRequest, step: int) -> pb.StreamActResponse:
    actions = request.obs[::3]
    return pb.StreamActResponse(
        actions=actions, batch_size=len(actions), model_version=VERSION, step=step
    )


# --- grpc.aio, like our server ----------------------------------------------------------------


async def _act_aio(request: pb.ActRequest, context: Any) -> pb.ActResponse:
    return reply(request)


async def _stream_aio(
    requests: AsyncIterator[pb.StreamActRequest], context: Any
) -> AsyncIterator[pb.StreamActResponse]:
    step = 0
    async for request in requests:
        yield stream_reply(request, step)
        step += 1


# --- the aio echo plus the model ----------------------------------------------------------------


def _model_handlers(path: str) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    import numpy as np
    import onnxruntime as ort

    from swingup import contract

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    outputs = [session.get_outputs()[0].name]  # the mean

    def actions(request: pb.ActRequest | pb.StreamActRequest) -> list[float]:
        obs = np.fromiter(request.obs, np.float32, len(request.obs)).reshape(-1, contract.OBS_DIM)
        (mean,) = session.run(outputs, {contract.INPUT_NAME: obs})
        clipped = np.clip(mean, contract.ACTION_LOW, contract.ACTION_HIGH)
        return list(clipped.ravel().tolist())

    async def act(request: pb.ActRequest, context: Any) -> pb.ActResponse:
        out = actions(request)
        return pb.ActResponse(actions=out, batch_size=len(out), model_version=VERSION)

    async def stream(
        requests: AsyncIterator[pb.StreamActRequest], context: Any
    ) -> AsyncIterator[pb.StreamActResponse]:
        step = 0
        async for request in requests:
            out = actions(request)
            yield pb.StreamActResponse(
                actions=out, batch_size=len(out), model_version=VERSION, step=step
            )
            step += 1

    return _handlers(act, stream)


# --- the synchronous server: a thread per call in flight ---------------------------------------


def _act_sync(request: pb.ActRequest, context: Any) -> pb.ActResponse:
    return reply(request)


def _stream_sync(
    requests: Iterator[pb.StreamActRequest], context: Any
) -> Iterator[pb.StreamActResponse]:
    for step, request in enumerate(requests):
        yield stream_reply(request, step)


def _handlers(act: Any, stream: Any) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    return {
        "Act": grpc.unary_unary_rpc_method_handler(
            act,
            request_deserializer=pb.ActRequest.FromString,
            response_serializer=pb.ActResponse.SerializeToString,
        ),
        "StreamAct": grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=pb.StreamActRequest.FromString,
            response_serializer=pb.StreamActResponse.SerializeToString,
        ),
    }


def _announce(host: str, port: int, kind: str) -> None:
    print(f"echo ({kind}) listening on {host}:{port}", file=sys.stderr, flush=True)


async def serve_aio(host: str, port: int, lifetime_s: float, model: str | None = None) -> None:
    server = grpc.aio.server()
    handlers = _handlers(_act_aio, _stream_aio) if model is None else _model_handlers(model)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _announce(host, bound, "aio" if model is None else "aio, with the model")
    try:
        await asyncio.wait_for(stop.wait(), lifetime_s)
    except asyncio.TimeoutError:
        print("echo: lifetime over, stopping", file=sys.stderr, flush=True)
    await server.stop(1.0)


def serve_sync(host: str, port: int, lifetime_s: float, threads: int) -> None:
    # A stream holds its thread for its whole life: the pool must outnumber the callers.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    handlers = _handlers(_act_sync, _stream_sync)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    _announce(host, bound, "sync")
    if not stop.wait(lifetime_s):
        print("echo: lifetime over, stopping", file=sys.stderr, flush=True)
    server.stop(1.0).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server", description=__doc__)
    parser.add_argument("--kind", choices=["aio", "sync", "model"], default="aio")
    parser.add_argument("--model", help="the ONNX actor (--kind model only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1100, help="sync server's pool size")
    parser.add_argument("--lifetime-s", type=float, default=1800.0)
    args = parser.parse_args(argv)
    if args.kind == "model" and not args.model:
        parser.error("--kind model needs --model PATH")
    if args.kind != "sync":
        asyncio.run(serve_aio(args.host, args.port, args.lifetime_s, args.model))
    else:
        serve_sync(args.host, args.port, args.lifetime_s, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
