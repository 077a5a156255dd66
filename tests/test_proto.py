"""The wire contract: generated code matches proto/, arrays travel packed, the service's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor

from swingup import protogen
from swingup.v1 import policy_pb2 as pb

GENERATED = Path(protogen.__file__).parent / "v1"


def test_generated_code_is_current(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path / "swingup" / "v1") for p in tmp_path.rglob("*.py*"))
    assert [str(p) for p in fresh] == [
        "admin_pb2.py",
        "admin_pb2.pyi",
        "admin_pb2_grpc.py",
        "admin_pb2_grpc.pyi",
        "policy_pb2.py",
        "policy_pb2.pyi",
        "policy_pb2_grpc.py",
        "policy_pb2_grpc.pyi",
    ]
    for name in fresh:
        assert (tmp_path / "swingup" / "v1" / name).read_text() == (GENERATED / name).read_text(), (
            f"swingup/v1/{name} differs from proto/: run `make proto`"
        )


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (pb.ActRequest(obs=[0.5] * 6), "obs"),
        (pb.StreamActRequest(obs=[0.5] * 6), "obs"),
        (pb.ActResponse(actions=[0.5] * 6), "actions"),
        (pb.StreamActResponse(actions=[0.5] * 6), "actions"),
    ],
)
def test_arrays_travel_as_packed_float32(message: pb.ActRequest, field: str) -> None:
    # One length-delimited record of 4-byte floats: tag (field 1, wire type 2), length, data.
    assert message.SerializeToString() == b"\x0a\x18" + b"\x00\x00\x00\x3f" * 6
    assert message.DESCRIPTOR.fields_by_name[field].type == descriptor.FieldDescriptor.TYPE_FLOAT


def test_service_shape() -> None:
    service = pb.DESCRIPTOR.services_by_name["PolicyService"]
    assert service.full_name == "swingup.v1.PolicyService"
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {
        "Act": (False, False),
        "StreamAct": (True, True),
        "GetModelInfo": (False, False),
    }
    assert dict(pb.Mode.items()) == {"MODE_UNSPECIFIED": 0, "MODE_MEAN": 1, "MODE_SAMPLE": 2}
    assert pb.ActRequest.DESCRIPTOR.fields_by_name["seed"].has_presence


def test_admin_service_shape() -> None:
    from swingup.v1 import admin_pb2

    service = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]
    assert service.full_name == "swingup.v1.AdminService"
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert shapes == {"ReloadModel": (False, False), "ListVersions": (False, False)}
