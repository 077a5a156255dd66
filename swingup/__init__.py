"""Swingup: train a pendulum swing-up policy and serve it to remote controllers.

This package holds what every part shares and nothing heavy: the model contract, the generated
gRPC code (`swingup.v1`), the CLI helper and atomic file writes.
"""

__version__ = "0.1.0"
