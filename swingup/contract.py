"""The one place that knows the pendulum's spaces and the exported model's contract.

The ONNX file is the interface between the trainer and everything that serves it, so its tensor
names, shapes and metadata keys live here and nowhere else. This module imports nothing heavy:
the server and the client read it without torch.
"""

from __future__ import annotations

from typing import Final

ENV_ID: Final = "Pendulum-v1"

# Observation: (cos theta, sin theta, theta-dot). Pendulum-v1 clips theta-dot to +-8.
OBS_DIM: Final = 3
OBS_LOW: Final = (-1.0, -1.0, -8.0)
OBS_HIGH: Final = (1.0, 1.0, 8.0)

# Action: torque, clipped by the environment to +-2.
ACTION_DIM: Final = 1
ACTION_LOW: Final = -2.0
ACTION_HIGH: Final = 2.0

# The model's name where a protocol names models (Open Inference Protocol, Triton repository).
MODEL_NAME: Final = "pendulum-a2c"

# Tensor names of the exported actor. Dynamic batch on the first axis.
INPUT_NAME: Final = "obs"
MEAN_NAME: Final = "action_mean"
STD_NAME: Final = "action_std"

# How often a client may ping a server's connection (its keepalive's floor, to find a hung
# replica). The server accepts pings half as far apart, so that one a little early is no strike.
MIN_PING_INTERVAL_S: Final = 1.0

# A stream that continues a session starts at its first request's first_step, below this: the
# replies' step is a uint64, and a session must have room to count on.
MAX_FIRST_STEP: Final = 2**63

# The model the repository ships and `swingup-serve` serves by default, relative to the repo root.
SHIPPED_MODEL: Final = "models/pendulum-a2c.onnx"

# Bumped when the graph's inputs, outputs or the meaning of a metadata key change.
FORMAT_VERSION: Final = "1"
ONNX_OPSET: Final = 17

# Keys of the ONNX model's metadata_props. All values are strings (ONNX's rule).
META_FORMAT_VERSION: Final = "swingup.format_version"
META_OBS_SHAPE: Final = "swingup.obs_shape"
META_OBS_LOW: Final = "swingup.obs_low"
META_OBS_HIGH: Final = "swingup.obs_high"
META_ACTION_SHAPE: Final = "swingup.action_shape"
META_ACTION_LOW: Final = "swingup.action_low"
META_ACTION_HIGH: Final = "swingup.action_high"
META_ENV_ID: Final = "swingup.env_id"
META_PRESET: Final = "swingup.preset"
META_HYPERPARAMETERS: Final = "swingup.hyperparameters"
META_FRAMES: Final = "swingup.frames"
META_EVAL_MEAN: Final = "swingup.eval_mean"
META_EVAL_STD: Final = "swingup.eval_std"
META_EVAL_EPISODES: Final = "swingup.eval_episodes"
META_CHECKPOINT_SHA256: Final = "swingup.checkpoint_sha256"
META_CREATED: Final = "swingup.created"
META_VERSION: Final = "swingup.version"

REQUIRED_META: Final = (
    META_FORMAT_VERSION,
    META_OBS_SHAPE,
    META_ACTION_SHAPE,
    META_ACTION_LOW,
    META_ACTION_HIGH,
)
