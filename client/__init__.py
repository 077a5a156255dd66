"""Controllers' side of Swingup: talk to a policy server over gRPC, knowing only the proto.

`PolicyClient` (blocking) and `AsyncPolicyClient` (asyncio) ask for actions one call at a time
or through a stream session; `swingup-client` drives local Pendulum-v1 environments with them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.aio_client import AsyncPolicyClient, AsyncPolicyStream
    from client.credentials import Credentials
    from client.errors import PolicyError
    from client.policy_client import PolicyClient, PolicyStream

__all__ = [
    "AsyncPolicyClient",
    "AsyncPolicyStream",
    "Credentials",
    "PolicyClient",
    "PolicyError",
    "PolicyStream",
]

# The names load on first use, not with the package: `swingup-client` imports `client.cli`,
# whose guard must already stand when gRPC and numpy load (Ctrl-C then is one line, exit 130).
_MODULES = {
    "AsyncPolicyClient": "client.aio_client",
    "AsyncPolicyStream": "client.aio_client",
    "Credentials": "client.credentials",
    "PolicyError": "client.errors",
    "PolicyClient": "client.policy_client",
    "PolicyStream": "client.policy_client",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
