"""Controllers' side of Swingup: talk to a policy server over gRPC, knowing only the proto.

`PolicyClient` (blocking) and `AsyncPolicyClient` (asyncio) ask for actions one call at a time
or through a stream session; `swingup-client` drives local Pendulum-v1 environments with them.
"""

from client.aio_client import AsyncPolicyClient, AsyncPolicyStream
from client.errors import PolicyError
from client.policy_client import PolicyClient, PolicyStream

__all__ = ["AsyncPolicyClient", "AsyncPolicyStream", "PolicyClient", "PolicyError", "PolicyStream"]
