"""`swingup-serve`: serve an exported Swingup policy over gRPC (flags or SWINGUP_* variables)."""

from __future__ import annotations

import os

# Before onnxruntime loads (server.app imports it): its telemetry would otherwise try to persist
# a device id under $HOME and print a coloured warning at every start where it cannot (a user
# without a writable home, a read-only root). The Dockerfile sets the same; an operator's own
# setting wins. Worker processes inherit it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# gRPC core's own INFO lines come per connection ("Handshake failed ..." for every plaintext
# client of a TLS server): any peer could fill the log. Errors still print; an operator's own
# setting (GRPC_VERBOSITY=INFO or DEBUG, to debug) wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import signal

from swingup.interrupts import exit_on_interrupt

# SIGHUP means "reload" once the server serves (server.app installs that handler), but until
# then its default action kills the process: a reload sent while the server starts (systemd's
# ExecReload, a log rotation, the --workers parent forwarding one) would end it with no word.
# Everything a reload rereads is read fresh at start anyway. Workers, spawned while it is
# ignored, inherit this.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

# Ctrl-C while the program still imports (gRPC, onnxruntime: a few hundred ms) is an interrupt
# like any other, not a traceback.
with exit_on_interrupt("swingup-serve"):
    from collections.abc import Sequence

    from server import app, ports, workers
    from server.config import ENV_PREFIX, ServeConfig
    from server.errors import ModelError
    from swingup.cli import UsageError, run


def serve(config: ServeConfig) -> int:
    config.check()
    if config.workers == 1:  # --workers: the parent holds the port before the workers bind it
        ports.check_bindable(config.host, config.port)
    app.setup_logging()
    try:
        app.starting(config)
        return app.run(config) if config.workers == 1 else workers.run_workers(config)
    except ModelError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    return run("swingup-serve", __doc__ or "", {"": (ServeConfig, serve, "")}, argv, ENV_PREFIX)
