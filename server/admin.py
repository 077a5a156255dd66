"""`swingup.v1.AdminService`: reload the model and list its versions (the token guards it)."""

from __future__ import annotations

from typing import Any

import grpc

from server import errors
from server.models import Refusal, Reloader
from server.wire import Malformed, parsed, parser
from swingup.v1 import admin_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    "serving": pb.VERSION_STATE_SERVING,
    "available": pb.VERSION_STATE_AVAILABLE,
    "refused": pb.VERSION_STATE_REFUSED,
}


def _refused(refusal: Refusal) -> pb.ModelVersion:
    return pb.ModelVersion(
        version=refusal.candidate.version or "",
        state=pb.VERSION_STATE_REFUSED,
        reason=refusal.reason,
        path=str(refusal.candidate.path),
    )


class AdminServicer:
    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader

    @errors.unary
    async def ReloadModel(
        self, request: pb.ReloadModelRequest | Malformed, context: Context
    ) -> pb.ReloadModelResponse:
        parsed(request)
        result = await self.reloader.reload()
        return pb.ReloadModelResponse(
            model_version=result.version,
            previous_version=result.previous,
            changed=result.changed,
            refused=[_refused(refusal) for refusal in result.refused],
        )

    @errors.unary
    async def ListVersions(
        self, request: pb.ListVersionsRequest | Malformed, context: Context
    ) -> pb.ListVersionsResponse:
        parsed(request)
        serving = self.reloader.runtime
        versions = [
            pb.ModelVersion(
                version=candidate.version or (serving.version if state == "serving" else ""),
                state=_STATES[state],
                reason=reason,
                path=str(candidate.path),
            )
            for candidate, state, reason in self.reloader.versions()
        ]
        return pb.ListVersionsResponse(serving_version=serving.version, versions=versions)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            "ReloadModel": grpc.unary_unary_rpc_method_handler(
                self.ReloadModel,
                request_deserializer=parser(pb.ReloadModelRequest),
                response_serializer=pb.ReloadModelResponse.SerializeToString,
            ),
            "ListVersions": grpc.unary_unary_rpc_method_handler(
                self.ListVersions,
                request_deserializer=parser(pb.ListVersionsRequest),
                response_serializer=pb.ListVersionsResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
