"""`swingup.v1.AdminService`: reload the model and list its versions (the token guards it)."""

from __future__ import annotations

from typing import Any

import grpc

from server import errors
from server.drain import InFlight
from server.models import Refusal, Reloader
from server.wire import Malformed, parsed, register, unary
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
            still_refused=[_refused(refusal) for refusal in result.still_refused],
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

    def add_to_server(self, server: grpc.aio.Server, in_flight: InFlight) -> None:
        register(
            server,
            SERVICE_NAME,
            {
                "ReloadModel": unary(
                    self.ReloadModel, pb.ReloadModelRequest, pb.ReloadModelResponse
                ),
                "ListVersions": unary(
                    self.ListVersions, pb.ListVersionsRequest, pb.ListVersionsResponse
                ),
            },
            in_flight,
        )
