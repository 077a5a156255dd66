"""The container images and Kubernetes manifests, checked offline: no Docker engine, no cluster.

The Dockerfiles are parsed for the facts that matter (who runs what, what is installed, where the
model lies). The manifests are validated against the Kubernetes JSON schemas that
kubernetes-validate ships, strictly (an unknown or misspelt field fails), then cross-checked
against each other, against the images and against the server's own option parser.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fnmatch
import functools
import ipaddress
import json
import os
import shlex
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from server.config import ENV_PREFIX, ServeConfig
from server.servicer import SERVICE_NAME
from swingup import contract
from swingup.cli import UsageError, add_config, to_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
CPU_IMAGE = ROOT / "Dockerfile"
GPU_IMAGE = ROOT / "Dockerfile.gpu"
IMAGES = [CPU_IMAGE, GPU_IMAGE]
# The oldest Kubernetes these manifests support (gRPC probes are GA since 1.27) and the newest
# schemas the pinned kubernetes-validate ships.
K8S_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

Manifest = dict[str, Any]


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {args!r}: use the NAME=value form"
                env[name] = value
        return env


@functools.cache
def stages(path: Path) -> list[Stage]:
    """The build stages, continuation lines joined, comments dropped, ARG defaults substituted."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # Docker drops comments inside continuations too
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: ends inside a continuation"
    args: dict[str, str] = {}
    result: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), " ".join(rest.split())
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        for name, value in args.items():
            rest = rest.replace("${" + name + "}", value)
        if keyword == "FROM":
            result.append(Stage(rest.split()[0], []))
        elif result:
            result[-1].instructions.append((keyword, rest))
    return result


def final_stage(path: Path) -> Stage:
    return stages(path)[-1]


def copies(stage: Stage) -> list[tuple[list[str], str, dict[str, str]]]:
    """(sources, destination, --options) of each COPY from the build context."""
    result = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        options = {}
        for word in words:
            if word.startswith("--"):
                name, _, value = word[2:].partition("=")
                options[name] = value
        paths = [w for w in words if not w.startswith("--")]
        if "from" not in options:
            result.append((paths[:-1], paths[-1], options))
    return result


def pip_installs(path: Path) -> list[tuple[list[str], list[str]]]:
    """(options, requirements) of every `pip install` in every stage's RUN."""
    result = []
    for stage in stages(path):
        for run in stage.all("RUN"):
            for command in run.split("&&"):
                words = shlex.split(command)
                if words[:2] in (["python", "-m"], ["python3", "-m"]):
                    words = words[2:]
                if len(words) < 2 or Path(words[0]).name != "pip" or words[1] != "install":
                    continue
                options: list[str] = []
                requirements: list[str] = []
                rest = iter(words[2:])
                for word in rest:
                    if word in ("-c", "-r", "--constraint", "--requirement"):
                        options += [word, next(rest)]
                    elif word.startswith("-"):
                        options.append(word)
                    else:
                        requirements.append(word)
                result.append((options, requirements))
    return result


def project_requirements(*extras: str) -> set[str]:
    """Canonical names of swingup's core dependencies plus those of `extras` (pyproject.toml,
    as installed: `make` reinstalls whenever pyproject.toml changes)."""
    names: set[str] = set()
    for spec in metadata.requires("swingup") or []:
        requirement = Requirement(spec)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
            names.add(canonicalize_name(requirement.name))
    return names


def image_uid(path: Path) -> int:
    users = final_stage(path).all("USER")
    assert users, f"{path.name}: no USER, so the server would run as root"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"{path.name}: USER {user}: runAsNonRoot can only verify a numeric uid"
    return int(user)


def server_config(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> ServeConfig:
    """`env` as swingup-serve itself reads it: its option parser, then its own checks (but for
    the model file's existence: the path is inside the image)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="swingup-serve")
    try:
        add_config(parser, ServeConfig, ENV_PREFIX)
        config = to_config(ServeConfig, parser.parse_args([]))
    except SystemExit:
        pytest.fail(f"swingup-serve refuses {dict(env)} (its message is in stderr)")
    except UsageError as exc:
        pytest.fail(f"swingup-serve refuses {dict(env)}: {exc}")
    dataclasses.replace(config, model=Path(__file__)).check()
    return config


def server_env_names() -> set[str]:
    return {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(ServeConfig)}


def assert_server_env(env: Mapping[str, str], where: str) -> None:
    unknown = {n for n in env if n.startswith(ENV_PREFIX)} - server_env_names()
    assert not unknown, f"{where}: {sorted(unknown)} are not options of swingup-serve"


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_image_runs_swingup_serve_as_a_non_root_user(path: Path) -> None:
    stage = final_stage(path)
    assert image_uid(path) != 0
    assert not stage.all("ENTRYPOINT"), f"{path.name}: an ENTRYPOINT would wrap the server"
    command = json.loads(stage.all("CMD")[-1])  # exec form: the server is PID 1, gets SIGTERM
    assert command[0] == "swingup-serve"
    (script,) = metadata.entry_points(group="console_scripts", name="swingup-serve")
    assert script.value == "server.cli:main"


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_image_serves_its_exposed_port_on_all_interfaces(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = final_stage(path).env()
    assert_server_env(env, path.name)
    config = server_config({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, monkeypatch)
    assert not is_loopback(config.host), f"{path.name}: loopback is unreachable from outside"
    exposed = {p.split("/")[0] for args in final_stage(path).all("EXPOSE") for p in args.split()}
    assert str(config.port) in exposed
    assert config.port == 50051


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_image_bakes_in_the_shipped_model_where_swingup_model_points(path: Path) -> None:
    stage = final_stage(path)
    model = stage.env()["SWINGUP_MODEL"]
    baked = [(src, opts) for src, dest, opts in copies(stage) if dest == model]
    assert baked, f"{path.name}: SWINGUP_MODEL={model} is not a file the image copies"
    sources, options = baked[0]
    assert sources == [contract.SHIPPED_MODEL]
    # The exporter writes files 0600; the non-root user must still be able to read the copy.
    assert int(options.get("chmod", "0"), 8) & 0o004, f"{path.name}: COPY the model --chmod=0444"


def test_cpu_image_installs_the_server_extra_and_no_torch() -> None:
    installs = pip_installs(CPU_IMAGE)
    requirements = [Requirement(r) for _, reqs in installs for r in reqs if not r.startswith(".")]
    projects = [r for _, reqs in installs for r in reqs if r.startswith(".")]
    assert projects == [".[server]"]
    assert all(opts[:2] == ["-c", "constraints.txt"] for opts, _ in installs)
    assert requirements == [], "the CPU image installs only what '.[server]' names"
    names = project_requirements("server")
    assert "onnxruntime" in names
    assert not names & {"torch", "onnxruntime-gpu"}, "the server extra must stay free of torch"
    assert not any("torch" in run for s in stages(CPU_IMAGE) for run in s.all("RUN"))


def test_gpu_image_installs_the_server_extra_with_onnxruntime_gpu_instead() -> None:
    installs = pip_installs(GPU_IMAGE)
    assert (["--no-deps"], ["."]) in installs, "swingup itself, without onnxruntime"
    listed = [reqs for opts, reqs in installs if opts[:2] == ["-c", "constraints.txt"]]
    assert len(listed) == 1
    requirements = [Requirement(r) for r in listed[0]]
    expected = project_requirements("server") - {"onnxruntime"} | {"onnxruntime-gpu"}
    assert {canonicalize_name(r.name) for r in requirements} == expected
    (gpu,) = [r for r in requirements if r.name == "onnxruntime-gpu"]
    assert str(gpu.specifier).startswith("=="), "onnxruntime-gpu is not in constraints.txt: pin it"
    assert not any("torch" in run for s in stages(GPU_IMAGE) for run in s.all("RUN"))
    assert final_stage(GPU_IMAGE).env()["SWINGUP_DEVICE"] == "cuda"
    assert final_stage(GPU_IMAGE).base.startswith("nvidia/cuda:")
    assert "runtime" in final_stage(GPU_IMAGE).base


def test_cpu_image_is_python_3_11_slim() -> None:
    assert {stage.base for stage in stages(CPU_IMAGE)} == {"python:3.11-slim"}


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_build_context_holds_what_the_image_copies(path: Path) -> None:
    patterns = [
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in patterns and ".git" in patterns
    assert not any(p.startswith("!") for p in patterns), "negations are beyond this check"
    for stage in stages(path):
        for sources, _, _ in copies(stage):
            for source in sources:
                # The shipped model is made by `make model`; everything else is in the repo.
                if source != contract.SHIPPED_MODEL:
                    assert (ROOT / source).exists(), f"{path.name}: COPY {source}: missing"
                parts = Path(source).parts
                prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
                ignored = [p for p in patterns for x in prefixes if fnmatch.fnmatch(x, p)]
                assert not ignored, f"{path.name}: COPY {source}, but .dockerignore has {ignored}"


# --- Kubernetes manifests ---------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def manifests() -> list[Manifest]:
    docs = []
    for path in manifest_files():
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def one(kind: str) -> Manifest:
    (found,) = [m for m in manifests() if m["kind"] == kind]
    return found


def services() -> list[Manifest]:
    return [m for m in manifests() if m["kind"] == "Service"]


def pod_spec() -> Manifest:
    spec: Manifest = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> Manifest:
    (only,) = pod_spec()["containers"]
    return dict(only)


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def container_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return int(ports[name])


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "manifest", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}"
)
def test_manifest_matches_the_kubernetes_schema(manifest: Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest['kind']} against Kubernetes {version}: {where}: {exc.message}")


def test_strict_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(one("Deployment"))
    spec = broken["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    image_names = {i["name"] for i in kustomization["images"]}
    assert container()["image"].split(":")[0] in image_names


def test_every_selector_matches_the_pods() -> None:
    labels = pod_labels()
    deployment = one("Deployment")
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    for service in services():
        assert selects(service["spec"]["selector"], labels), service["metadata"]["name"]
    assert selects(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    for spread in pod_spec().get("topologySpreadConstraints", []):
        assert selects(spread["labelSelector"]["matchLabels"], labels)


def test_services_reach_the_grpc_port() -> None:
    names = set()
    for service in services():
        (port,) = service["spec"]["ports"]
        target = port["targetPort"]
        resolved = container_port(target) if isinstance(target, str) else target
        assert resolved == port["port"] == 50051, service["metadata"]["name"]
        names.add(service["metadata"]["name"])
        headless = service["spec"].get("clusterIP") == "None"
        assert headless == service["metadata"]["name"].endswith("-headless")
    assert names == {"swingup", "swingup-headless"}


def test_probes_ask_the_health_service_on_the_container_port() -> None:
    health_services = {"", SERVICE_NAME}  # what server/app.py registers with grpc.health.v1
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc = container()[probe]["grpc"]
        assert grpc["port"] == container_port("grpc"), probe
        assert grpc.get("service", "") in health_services, probe
    # Readiness follows the policy service: NOT_SERVING as soon as the drain starts.
    assert container()["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_container_env_is_a_valid_server_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {e["name"]: e["value"] for e in container()["env"]}
    assert_server_env(env, "deployment.yaml")
    # What the server sees: the image's ENV, overridden by the container's.
    image_env = {k: v for k, v in final_stage(CPU_IMAGE).env().items() if k.startswith(ENV_PREFIX)}
    config = server_config({**image_env, **env}, monkeypatch)
    assert config.port == container_port("grpc")
    assert not is_loopback(config.host), "kubelet probes and Services reach the pod's IP"
    assert config.device == "cpu"
    mounts = [m["mountPath"] for m in container().get("volumeMounts", [])]
    baked = final_stage(CPU_IMAGE).env()["SWINGUP_MODEL"]
    assert str(config.model) == baked or any(str(config.model).startswith(m) for m in mounts)


def test_pod_runs_as_the_images_non_root_user() -> None:
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == image_uid(CPU_IMAGE) == image_uid(GPU_IMAGE)
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]


def test_termination_grace_covers_the_prestop_sleep_the_lame_duck_and_the_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {e["name"]: e["value"] for e in container()["env"]}
    config = server_config(env, monkeypatch)
    assert config.lame_duck_s > 0  # PolicyClients on the headless Service lose no call
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    shutdown_s = float(command[1]) + config.lame_duck_s + config.grace_s
    assert pod_spec()["terminationGracePeriodSeconds"] > shutdown_s


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler")["spec"]
    deployment = one("Deployment")
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "cpu" in container()["resources"]["requests"], "CPU utilisation is of the request"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_pdb_leaves_a_pod_to_evict() -> None:
    pdb = one("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] < one("HorizontalPodAutoscaler")["spec"]["minReplicas"]


def test_resources_fit_a_two_core_node() -> None:
    resources = container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert cpu_cores(requests["cpu"]) <= cpu_cores(limits["cpu"]) <= 2
    assert mebibytes(requests["memory"]) <= mebibytes(limits["memory"])
    workers = int({e["name"]: e["value"] for e in container()["env"]}["SWINGUP_WORKERS"])
    # One worker is one event loop and one onnxruntime thread: about a core each.
    assert cpu_cores(limits["cpu"]) >= workers
