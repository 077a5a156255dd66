"""Hot reload: a directory of numbered versions, the watcher, SIGHUP, the admin RPC, streams that
keep their model, refused versions, and 64 callers served without a miss while versions swap."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support import (
    TEST_METADATA,
    Reference,
    client_cli,
    export_test_model,
    observations,
    start_server,
    stopped,
)

from client import PolicyClient
from client.localserver import LocalServer
from server.models import SERVED_FROM_MEMORY, candidates
from swingup import atomic
from swingup.v1 import admin_pb2, admin_pb2_grpc, policy_pb2_grpc
from swingup.v1 import policy_pb2 as pb
from trainer import triton_repo

SEEDS = (0, 1, 2, 3)  # distinct models; version N is the model of seed N % 4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("versions")
    return {seed: export_test_model(root / f"seed{seed}.onnx", seed=seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def references(models: dict[int, Path]) -> dict[int, Reference]:
    return {seed: Reference(path) for seed, path in models.items()}


def publish(model_dir: Path, data: bytes) -> str:
    """The next version of `model_dir`, written as the trainer's exporter writes it."""
    path = triton_repo.add_version(model_dir.parent, data, model_dir.name)
    return path.parent.name


def publish_next(model_dir: Path, models: dict[int, Path]) -> str:
    """The next version, holding the model this test module assigns its number (N % 4)."""
    existing = triton_repo.versions(model_dir)
    number = existing[-1] + 1 if existing else 1
    assert publish(model_dir, models[number % len(SEEDS)].read_bytes()) == str(number)
    return str(number)


def out_of_bounds_model(weight: float = 100.0, batch: str | int = "batch") -> bytes:
    """A well-formed model with the contract's graph and metadata whose mean is `weight` x obs:
    at 100, only the smoke inference can tell it breaks the contract (|mean| <= 2)."""
    obs = helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, 3])
    mean = helper.make_tensor_value_info("action_mean", TensorProto.FLOAT, [batch, 1])
    std = helper.make_tensor_value_info("action_std", TensorProto.FLOAT, [batch, 1])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [weight] * 3)
    ones = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "w"], ["action_mean"]),
            helper.make_node("Mul", ["action_mean", "zero"], ["scaled"]),
            helper.make_node("Add", ["scaled", "one"], ["action_std"]),
        ],
        "out-of-bounds",
        [obs],
        [mean, std],
        [weights, ones, helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, TEST_METADATA)
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def repository(tmp_path: Path, models: dict[int, Path], count: int) -> Path:
    model_dir = tmp_path / "repo" / "pendulum-a2c"
    for _ in range(count):
        publish_next(model_dir, models)
    return model_dir


def check_answer(
    obs: np.ndarray,
    reply: pb.ActResponse | pb.StreamActResponse,
    references: dict[int, Reference],
    valid: set[str],
) -> None:
    """The reply names a valid version, and its actions are that version's model's."""
    assert reply.model_version in valid, f"version {reply.model_version!r} was never valid"
    want = references[int(reply.model_version) % len(SEEDS)](obs)[0]
    np.testing.assert_allclose(np.reshape(reply.actions, want.shape), want, rtol=0, atol=1e-5)


def act(client: PolicyClient, obs: np.ndarray) -> pb.ActResponse:
    return client._stub.Act(pb.ActRequest(obs=obs.ravel().tolist()), timeout=10)


def test_a_directory_serves_its_highest_valid_version(
    tmp_path: Path, models: dict[int, Path], references: dict[int, Reference]
) -> None:
    model_dir = repository(tmp_path, models, 2)
    publish(model_dir, b"not an onnx model")  # version 3
    (model_dir / "4").mkdir()  # a version without its model file
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            obs = observations(5)
            check_answer(obs, act(client, obs), references, {"2"})
            assert client.info().model_version == "2"
            listed = client.list_versions()
        assert server.stop() == 0
    assert listed.serving_version == "2"
    states = {v.version: admin_pb2.VersionState.Name(v.state) for v in listed.versions}
    assert states == {
        "4": "VERSION_STATE_REFUSED",
        "3": "VERSION_STATE_REFUSED",
        "2": "VERSION_STATE_SERVING",
        "1": "VERSION_STATE_AVAILABLE",
    }
    refusals = [line for line in server.lines if "refused model version" in line]
    assert len(refusals) == 2 and "model file not found" in refusals[0]
    assert "cannot load" in refusals[1]
    assert all(line.count("/model.onnx") == 1 for line in refusals), refusals  # named once


def test_a_directory_without_a_valid_version_is_one_line(tmp_path: Path) -> None:
    model_dir = tmp_path / "empty-model"
    model_dir.mkdir()
    with LocalServer(["--model", str(model_dir)]) as server, pytest.raises(RuntimeError) as raised:
        server.wait_listening()
    assert "no valid model version in" in str(raised.value)


def test_a_whole_model_repository_is_one_line_naming_its_models(
    tmp_path: Path, models: dict[int, Path]
) -> None:
    root = repository(tmp_path, models, 1).parent  # repo/, not repo/pendulum-a2c/
    with LocalServer(["--model", str(root)]) as server, pytest.raises(RuntimeError) as raised:
        server.wait_listening()
    assert f"it holds models: pass one, as --model {root / 'pendulum-a2c'}" in str(raised.value)


def test_new_versions_arrive_by_watcher_sighup_and_admin_rpc(
    tmp_path: Path, models: dict[int, Path], references: dict[int, Reference]
) -> None:
    model_dir = repository(tmp_path, models, 1)
    with start_server(model_dir, "--watch-s", "0.05") as server:
        assert server.target is not None
        obs = observations(7)
        with PolicyClient(server.target, timeout=10) as client:
            check_answer(obs, act(client, obs), references, {"1"})
            # The watcher sees a new version directory appear.
            mark = len(server.lines)
            publish(model_dir, models[2].read_bytes())
            server.wait_for_line(r"now serving model 2 \(was 1\)", start=mark)
            check_answer(obs, act(client, obs), references, {"2"})
            assert client.info().model_version == "2"
            # SIGHUP walks the versions at once (the watcher may get there first: either way one
            # swap, one log line).
            mark = len(server.lines)
            publish(model_dir, models[3].read_bytes())
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line(r"now serving model 3 \(was 2\)", start=mark)
            check_answer(obs, act(client, obs), references, {"3"})
            # The admin RPC reloads now and says what happened.
            publish(model_dir, models[0].read_bytes())
            reply = client.reload_model()
            # From 3 to 4, or (the watcher got there first) nothing left to change at 4.
            previous = "3" if reply.changed else "4"
            assert (reply.previous_version, reply.model_version) == (previous, "4")
            assert client.info().model_version == "4"
            check_answer(obs, act(client, obs), references, {"4"})
            again = client.reload_model()
            assert (again.changed, again.model_version, list(again.refused)) == (False, "4", [])
        assert server.stop() == 0
    assert sum("now serving model" in line for line in server.lines) == 3


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"\x08\x07garbage", "cannot load"),
        ("metadata", "model metadata lacks swingup.format_version"),
        ("bounds", "broke the contract's bounds"),
        ("fixed", "fixed batch size of 48"),  # it passed the checks, then failed to run
    ],
)
def test_a_version_that_fails_a_check_is_refused_and_the_old_one_serves_on(
    tmp_path: Path,
    models: dict[int, Path],
    references: dict[int, Reference],
    bad: bytes | str,
    reason: str,
) -> None:
    model_dir = repository(tmp_path, models, 1)
    if bad == "metadata":
        model = onnx.load(str(models[1]))
        del model.metadata_props[:]
        data = model.SerializeToString()
    elif bad == "bounds":
        data = out_of_bounds_model()
    elif bad == "fixed":
        data = out_of_bounds_model(weight=0.1, batch=48)
    else:
        assert isinstance(bad, bytes)
        data = bad
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            publish(model_dir, data)
            reply = client.reload_model()
            assert (reply.changed, reply.model_version, reply.previous_version) == (
                False,
                "1",
                "1",
            )
            assert [(r.version, reason in r.reason) for r in reply.refused] == [("2", True)]
            obs = observations(4)
            check_answer(obs, act(client, obs), references, {"1"})
            # Refused once: a second reload does not try (nor log, nor count) it again, and says
            # that it still stands refused above the serving version...
            again = client.reload_model()
            assert list(again.refused) == []
            assert [(r.version, reason in r.reason) for r in again.still_refused] == [("2", True)]
            # ...and the next good version is served.
            publish(model_dir, models[3].read_bytes())
            assert client.reload_model().model_version == "3"
        assert server.stop() == 0
    refusals = [line for line in server.lines if "refused model version 2" in line]
    assert len(refusals) == 1 and reason in refusals[0] and "still serving 1" in refusals[0]


def test_deleting_the_serving_version_rolls_back(
    tmp_path: Path, models: dict[int, Path], references: dict[int, Reference]
) -> None:
    model_dir = repository(tmp_path, models, 3)
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            shutil.rmtree(model_dir / "3")
            reply = client.reload_model()
            assert (reply.previous_version, reply.model_version) == ("3", "2")
            obs = observations(3)
            check_answer(obs, act(client, obs), references, {"2"})
        assert server.stop() == 0


def test_a_stream_keeps_its_model_for_its_life(
    tmp_path: Path, models: dict[int, Path], references: dict[int, Reference]
) -> None:
    model_dir = repository(tmp_path, models, 1)
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None
        obs = observations(6)
        with PolicyClient(server.target, timeout=10) as client:
            old = client.stream()
            np.testing.assert_allclose(old.act(obs), references[1](obs)[0], atol=1e-6)
            publish(model_dir, models[2].read_bytes())
            assert client.reload_model().model_version == "2"
            for _ in range(3):  # the open stream goes on with version 1...
                np.testing.assert_allclose(old.act(obs), references[1](obs)[0], atol=1e-6)
                assert old.model_version == "1"
            old.close()
            with client.stream() as new:  # ...and a new one gets version 2
                np.testing.assert_allclose(new.act(obs), references[2](obs)[0], atol=1e-6)
                assert new.model_version == "2"
        assert server.stop() == 0


def test_reload_under_load_64_callers_20_swaps_one_corrupt_version(
    tmp_path: Path, models: dict[int, Path], references: dict[int, Reference]
) -> None:
    """64 callers (48 unary, 16 streams) run while versions are swapped 20 times through the
    admin RPC and a corrupt version is dropped in halfway: no call fails, and every reply comes
    from a version that was valid and matches that version's model exactly."""
    model_dir = repository(tmp_path, models, 1)
    valid = {"1"}
    swaps, callers, streams = 20, 48, 16
    with start_server(model_dir, "--watch-s", "0.05") as server:
        assert server.target is not None
        target = server.target

        seen: dict[str, asyncio.Event] = {}

        def answered(reply: pb.ActResponse | pb.StreamActResponse, obs: np.ndarray) -> None:
            check_answer(obs, reply, references, valid)
            seen.setdefault(reply.model_version, asyncio.Event()).set()

        async def unary(
            stub: policy_pb2_grpc.PolicyServiceAsyncStub, i: int, stop: asyncio.Event
        ) -> int:
            count = 0
            while not stop.is_set() and count < 5000:
                obs = observations(1 + i % 4, seed=i * 10_000 + count)
                answered(await stub.Act(pb.ActRequest(obs=obs.ravel().tolist()), timeout=30), obs)
                count += 1
            return count

        async def stream(
            stub: policy_pb2_grpc.PolicyServiceAsyncStub, i: int, stop: asyncio.Event
        ) -> int:
            count = 0
            while not stop.is_set() and count < 5000:  # a new session now and then
                call = stub.StreamAct(None, timeout=30)
                version = None
                for _ in range(10):
                    obs = observations(2, seed=i * 10_000 + count)
                    await call.write(pb.StreamActRequest(obs=obs.ravel().tolist()))
                    reply = await call.read()
                    assert isinstance(reply, pb.StreamActResponse)
                    answered(reply, obs)
                    version = version or reply.model_version
                    assert reply.model_version == version  # one model per session
                    count += 1
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            return count

        async def operator(admin: admin_pb2_grpc.AdminServiceAsyncStub) -> None:
            for swap in range(swaps):
                if swap == swaps // 2:
                    corrupt = publish(model_dir, models[0].read_bytes()[:-200])  # truncated
                    reply = await admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)
                    assert [r.version for r in reply.refused] in ([corrupt], [])
                version = publish_next(model_dir, models)
                valid.add(version)  # valid once it is on disk: the watcher may swap it in first
                reply = await admin.ReloadModel(admin_pb2.ReloadModelRequest(), timeout=60)
                assert reply.model_version == version, reply
                # Traffic reaches each version before the next swap.
                await asyncio.wait_for(seen.setdefault(version, asyncio.Event()).wait(), 30)

        async def main() -> list[int]:
            async with grpc.aio.insecure_channel(target) as channel:
                stub = policy_pb2_grpc.PolicyServiceStub(channel)
                admin = admin_pb2_grpc.AdminServiceStub(channel)
                stop = asyncio.Event()
                load = [asyncio.ensure_future(unary(stub, i, stop)) for i in range(callers)]
                load += [asyncio.ensure_future(stream(stub, i, stop)) for i in range(streams)]
                try:
                    await operator(admin)
                finally:
                    stop.set()
                return list(await asyncio.gather(*load))

        counts = asyncio.run(main())
        assert server.stop() == 0
    assert all(count > 0 for count in counts), counts
    assert sum("now serving model" in line for line in server.lines) == swaps
    assert sum("refused model version" in line for line in server.lines) == 1
    (counted,) = stopped(server)
    assert counted.answered == counted.accepted  # every accepted one answered


def test_a_single_file_reloads_when_replaced(tmp_path: Path, models: dict[int, Path]) -> None:
    served = tmp_path / "policy.onnx"
    shutil.copyfile(models[0], served)
    with start_server(served, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            first = client.info().model_version
            served.touch()  # the same bytes: the same version
            assert client.reload_model().changed is False
            atomic.write_bytes(served, models[1].read_bytes())  # replaced in one rename
            reply = client.reload_model()
            assert reply.changed and reply.previous_version == first
            second = hashlib.sha256(served.read_bytes()).hexdigest()[:12]
            assert reply.model_version == second
            # A corrupt replacement is refused; the listing still shows what serves.
            atomic.write_bytes(served, b"corrupt")
            assert client.reload_model().model_version == second
            listed = [(v.version, v.state, v.reason) for v in client.list_versions().versions]
            assert listed[0] == (second, admin_pb2.VERSION_STATE_SERVING, SERVED_FROM_MEMORY)
            assert [state for _, state, _ in listed[1:]] == [admin_pb2.VERSION_STATE_REFUSED]
        assert server.stop() == 0


def test_a_single_file_refused_or_removed_is_one_warning(
    tmp_path: Path, models: dict[int, Path]
) -> None:
    served = tmp_path / "policy.onnx"
    shutil.copyfile(models[0], served)
    with start_server(served, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            first = client.info().model_version
            atomic.write_bytes(served, b"corrupt")
            assert [r.reason for r in client.reload_model().refused] != []
            served.unlink()
            assert "model file not found" in client.reload_model().refused[0].reason
            assert client.info().model_version == first
        assert server.stop() == 0
    warnings = [line.split(" WARNING ", 1)[1] for line in server.lines if " WARNING " in line]
    # Each refusal names the file and what still serves; nothing says it again.
    assert len(warnings) == 2, warnings
    assert all(w.startswith("refused model policy.onnx") for w in warnings), warnings
    assert all(w.endswith(f"still serving {first}") for w in warnings), warnings


@pytest.mark.parametrize("how", ["emptied", "moved away"])
def test_a_directory_left_without_a_valid_version_says_so(
    tmp_path: Path, models: dict[int, Path], how: str
) -> None:
    model_dir = repository(tmp_path, models, 1)
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None
        with PolicyClient(server.target, timeout=10) as client:
            if how == "emptied":
                shutil.rmtree(model_dir / "1")
            else:
                model_dir.rename(tmp_path / "elsewhere")
            assert list(client.reload_model().refused) == []
            listed = [(v.version, v.state, v.reason) for v in client.list_versions().versions]
            assert listed == [("1", admin_pb2.VERSION_STATE_SERVING, SERVED_FROM_MEMORY)]
        assert server.stop() == 0
    warnings = [line.split(" WARNING ", 1)[1] for line in server.lines if " WARNING " in line]
    assert warnings == [f"no valid version left in {model_dir}: still serving 1"]


def test_the_client_cli_reloads_and_lists_versions(tmp_path: Path, models: dict[int, Path]) -> None:
    model_dir = repository(tmp_path, models, 1)
    with start_server(model_dir, "--watch-s", "0") as server:
        assert server.target is not None

        def cli(command: str) -> subprocess.CompletedProcess[str]:
            return client_cli(command, "--target", server.target or "")

        publish(model_dir, b"corrupt")
        refused = cli("reload")
        assert refused.returncode == 1  # a version was refused
        assert json.loads(refused.stdout)["refused"][0]["version"] == "2"
        # Not tried again, but still refused above the serving version: a gate still fails.
        still = cli("reload")
        assert still.returncode == 1
        assert json.loads(still.stdout)["still_refused"][0]["version"] == "2"
        publish_next(model_dir, models)
        done = cli("reload")
        assert done.returncode == 0 and json.loads(done.stdout)["model_version"] == "3"
        assert "still_refused" not in json.loads(done.stdout)  # 2 is below the serving 3
        listed = json.loads(cli("versions").stdout)
        assert listed["serving_version"] == "3"
        assert [v["state"] for v in listed["versions"]] == [
            "VERSION_STATE_SERVING",
            "VERSION_STATE_REFUSED",
            "VERSION_STATE_AVAILABLE",
        ]
        assert server.stop() == 0


def test_version_directories_are_ascii_numbers(tmp_path: Path) -> None:
    # "²" is a digit to str.isdigit() and not to int(): it stopped the watcher for good.
    for name in ("2", "007", "²", "x1", "10", "02"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version")
    found = candidates(tmp_path)
    assert [(c.version, c.path.parent.name) for c in found] == [
        ("10", "10"),
        ("7", "007"),
        ("2", "2"),  # one version 2: "02" is the same number under another name
    ]


def test_a_model_that_fails_to_run_is_one_line_at_start_and_names_its_file(
    tmp_path: Path, models: dict[int, Path]
) -> None:
    fixed = tmp_path / "fixed.onnx"
    fixed.write_bytes(out_of_bounds_model(weight=0.1, batch=48))
    alone = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--model", str(fixed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode == 2 and "Traceback" not in alone.stderr, alone.stderr
    errors = [line for line in alone.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(fixed) in errors[0], alone.stderr
    assert "fixed batch size of 48" in errors[0]
    # As the highest version of a directory it is refused, and the server starts on the next.
    model_dir = repository(tmp_path, models, 1)
    publish(model_dir, fixed.read_bytes())
    with start_server(model_dir) as server:
        assert server.stop() == 0
    assert any("refused model version 2" in line for line in server.lines)
