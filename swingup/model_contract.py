"""What an exported actor must be to be served: its graph and its metadata.

The server refuses a model that breaks this (server.runtime), and `swingup-train evaluate`
checks an ONNX file the same way, so a model that evaluates is one the server takes. Both pass
an onnxruntime session, which this module only reads (it imports neither side).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from swingup import contract


def parse_numbers(text: str) -> tuple[float, ...]:
    """A metadata value holding numbers: JSON ("[3]", "2.0") or separated ("3", "-1, -1, -8");
    ValueError if it is not numbers."""
    try:
        value = json.loads(text)
    except ValueError:
        value = [float(t) for t in re.split(r"[\s,]+", text.strip(" ()[]")) if t]
    if _is_number(value):
        return (float(value),)
    if isinstance(value, list) and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise ValueError(text)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def graph_problem(session: Any) -> str:
    """What breaks the contract in the session's graph: one float [batch, 3] input with a
    dynamic batch, two float outputs of the contract's names; "" if nothing."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs], [o.name for o in outputs]
    if names != ([contract.INPUT_NAME], [contract.MEAN_NAME, contract.STD_NAME]):
        return (
            f"model graph takes {names[0]} and returns {names[1]}; the contract "
            f"is {contract.INPUT_NAME} -> {contract.MEAN_NAME}, {contract.STD_NAME}"
        )
    shape = list(inputs[0].shape)
    if inputs[0].type != "tensor(float)" or shape[1:] != [contract.OBS_DIM]:
        return f"model input is {inputs[0].type} {shape}, not float [batch, 3]"
    if isinstance(shape[0], int):  # a symbolic dimension is a name (or None)
        return (
            f"model input has a fixed batch size of {shape[0]}: the server batches any number "
            "of observations, so export it with a dynamic batch dimension"
        )
    types = [o.type for o in outputs]
    if types != ["tensor(float)", "tensor(float)"]:
        return f"model outputs are {', '.join(types)}, not float"
    return ""


def metadata_problem(metadata: Mapping[str, str]) -> str:
    """What breaks the contract in the model's metadata; "" if nothing."""
    missing = [key for key in contract.REQUIRED_META if key not in metadata]
    if missing:
        return f"model metadata lacks {', '.join(missing)}: not a Swingup export"
    if metadata[contract.META_FORMAT_VERSION] != contract.FORMAT_VERSION:
        return (
            f"model format version {metadata[contract.META_FORMAT_VERSION]!r}, this server "
            f"speaks {contract.FORMAT_VERSION!r}"
        )
    expected = {
        contract.META_OBS_SHAPE: (float(contract.OBS_DIM),),
        contract.META_ACTION_SHAPE: (float(contract.ACTION_DIM),),
        contract.META_ACTION_LOW: (contract.ACTION_LOW,),
        contract.META_ACTION_HIGH: (contract.ACTION_HIGH,),
    }
    for key, want in expected.items():
        try:
            got = parse_numbers(metadata[key])
        except ValueError:
            return f"model metadata {key}={metadata[key]!r} is not a number"
        if got != want:
            return f"model metadata {key}={metadata[key]!r}, the contract has {want}"
    return ""


def problem(session: Any) -> str:
    """The first thing that breaks the contract in the session's model; "" if nothing."""
    return graph_problem(session) or metadata_problem(
        dict(session.get_modelmeta().custom_metadata_map)
    )
