# syntax=docker/dockerfile:1
# swingup-serve on CPU: the server extra only (onnxruntime, grpcio, health, reflection), no torch.
#
#   docker build -t swingup-serve .
#   docker run --rm -p 50051:50051 swingup-serve
#   docker run --rm -p 50051:50051 -v "$PWD/my-models:/models:ro" swingup-serve   # your own model
#   docker run --rm -p 50051:50051 -v "$PWD/runs:/runs:ro" \
#       -e SWINGUP_MODEL=/runs/x/actor.onnx swingup-serve                        # another path
#
# Every flag of `swingup-serve --help` is also a SWINGUP_<FLAG> variable: -e SWINGUP_WORKERS=2.
# Needs BuildKit (the default builder since Docker 23) for COPY --chmod.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its server dependencies into a venv ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the wheel is built from (see .dockerignore); constraints.txt holds every pin.
COPY pyproject.toml constraints.txt README.md ./
# All four packages the wheel declares; trainer's and client's own dependencies stay out.
COPY swingup/ swingup/
COPY server/ server/
COPY trainer/ trainer/
COPY client/ client/
RUN /opt/venv/bin/pip install -c constraints.txt '.[server]' \
    && /opt/venv/bin/pip check

# --- runtime: the venv, the model, a non-root user --------------------------------------------
FROM ${PYTHON_IMAGE}
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --gid 10001 swingup \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin swingup
COPY --from=build /opt/venv /opt/venv
# The shipped model at a fixed path; mount a volume over /models, or point SWINGUP_MODEL elsewhere.
# --chmod: the exporter writes 0600 files, which the non-root user could not read.
COPY --chmod=0444 models/pendulum-a2c.onnx /models/pendulum-a2c.onnx

# 0.0.0.0: inside a container loopback is unreachable from outside (the server logs a warning
# that this port has no TLS: terminate TLS at the load balancer or mesh). Use "::" on IPv6 pods.
# ORT_DISABLE_TELEMETRY: onnxruntime would otherwise try to persist a device id under $HOME,
# which a read-only root filesystem refuses (it logs a warning at every start).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    SWINGUP_MODEL=/models/pendulum-a2c.onnx \
    SWINGUP_HOST=0.0.0.0 \
    SWINGUP_PORT=50051 \
    SWINGUP_DEVICE=cpu
# Fail the build, not the first start, if the entry point cannot import.
RUN swingup-serve --help > /dev/null

USER 10001:10001
WORKDIR /
# gRPC. Prometheus metrics are off by default: SWINGUP_METRICS_PORT=9090 serves them at
# :9090/metrics (publish that port too): plain HTTP without authentication, so only on a
# network the scraper alone reaches.
EXPOSE 50051
# No HEALTHCHECK: Kubernetes ignores it and uses its built-in gRPC probes against the standard
# grpc.health.v1 service (deploy/k8s/deployment.yaml). Under plain Docker: grpc_health_probe.
# Exec form: the server is PID 1 and handles SIGTERM itself (NOT_SERVING, then drains).
CMD ["swingup-serve"]
