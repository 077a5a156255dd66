"""Filling a repeated float field through the wire format gives the message a list would."""

from __future__ import annotations

import numpy as np
import pytest

from server.wire import packed_floats
from swingup.v1 import policy_pb2 as pb


@pytest.mark.parametrize("count", [0, 1, 64, 65, 127, 128, 1024, 4096, 40_000])
def test_packed_floats_build_the_message_a_list_builds(count: int) -> None:
    rng = np.random.default_rng(count)
    values = (rng.standard_normal((count, 1)) * 10.0 ** rng.integers(-40, 38, (count, 1))).astype(
        np.float32
    )
    values.ravel()[: min(count, 4)] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, 2.0][
        : min(count, 4)
    ]
    usual = pb.StreamActResponse(
        actions=values.ravel().tolist(), batch_size=count, model_version="abc", step=7
    )
    packed = packed_floats(
        pb.StreamActResponse(batch_size=count, model_version="abc", step=7), "actions", values
    )
    assert packed == usual
    assert packed.SerializeToString() == usual.SerializeToString()
    assert np.array_equal(np.array(packed.actions, dtype=np.float32), values.ravel())


def test_packed_floats_take_any_layout_and_dtype() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]  # a strided float64 view
    reply = packed_floats(pb.ActResponse(), "actions", values)
    assert list(reply.actions) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_packed_floats_refuse_a_field_that_is_not_repeated_float() -> None:
    with pytest.raises(TypeError, match="model_version is not a repeated float field"):
        packed_floats(pb.ActResponse(), "model_version", np.zeros(2, np.float32))
