"""`swingup-client` and `make demo`: driving pendulums through a real server, and its errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from certs import Authority
from PIL import Image
from support import INTERRUPT_AT_IMPORT, Reference, files_up_to_4_kib, frozen

from client import wire
from client.cli import Connection, main
from client.localserver import LocalServer
from swingup.episodes import run_episodes

CLIENT = [sys.executable, "-B", "-m", "client"]  # -B: no .pyc, a file past the size limit

SUMMARY_KEYS = {
    "episodes",
    "mean",
    "std",
    "returns",
    "steps_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
}


def drive(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> dict[str, Any]:
    assert main(["drive", "--target", target, "--json", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary: dict[str, Any] = json.loads(lines[-1])
    assert set(summary) == SUMMARY_KEYS
    assert sum(line.startswith("episode ") for line in lines) == summary["episodes"]
    return summary


def test_drive_reports_the_returns_the_model_earns(
    capsys: pytest.CaptureFixture[str], target: str, reference: Reference
) -> None:
    summary = drive(capsys, target, "--pendulums", "3", "--episodes", "2", "--seed", "40")
    assert summary["episodes"] == 6 and len(summary["returns"]) == 6
    assert summary["mean"] == pytest.approx(np.mean(summary["returns"]))
    assert summary["std"] == pytest.approx(np.std(summary["returns"]))
    assert summary["steps_per_s"] > 0
    assert 0 < summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    # The same episodes with the model run locally earn the same returns.
    local = run_episodes(lambda obs: reference(obs)[0], 6, pendulums=3, seed=40)
    np.testing.assert_allclose(summary["returns"], local.returns, rtol=1e-4)


def test_a_stream_drives_like_act_calls(capsys: pytest.CaptureFixture[str], target: str) -> None:
    by_act = drive(capsys, target, "--pendulums", "2", "--seed", "7")
    by_stream = drive(capsys, target, "--pendulums", "2", "--seed", "7", "--stream")
    assert by_stream["returns"] == by_act["returns"]


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_seeded_sampling_drives_reproducibly(
    capsys: pytest.CaptureFixture[str], target: str, stream: list[str]
) -> None:
    args = ["--pendulums", "2", "--mode", "sample", "--seed", "5", *stream]
    first = drive(capsys, target, *args)
    assert drive(capsys, target, *args)["returns"] == first["returns"]
    assert drive(capsys, target, "--pendulums", "2", "--seed", "5")["returns"] != first["returns"]


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_the_largest_seed_the_library_takes_drives_too(
    capsys: pytest.CaptureFixture[str], target: str, stream: list[str]
) -> None:
    """--seed and the library's `seed` share one bound, the proto's uint64."""
    args = ["--mode", "sample", "--seed", str(wire.MAX_SEED), *stream]
    assert drive(capsys, target, *args)["episodes"] == 1


def test_drive_writes_a_gif(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    gif = tmp_path / "one.gif"
    drive(capsys, target, "--gif", str(gif))
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames > 100


def test_a_gif_that_fails_after_the_run_keeps_the_results(target: str, tmp_path: Path) -> None:
    gif = tmp_path / "big.gif"
    done = subprocess.run(
        [*CLIENT, "drive", "--target", target, "--gif", str(gif), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=files_up_to_4_kib,
    )
    assert done.returncode == 1, done.stderr
    # The user's path, not the temporary file's beside it, in one line; nothing left behind.
    assert done.stderr.startswith(f"swingup-client: error: --gif {gif}: "), done.stderr
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    # The results are printed all the same.
    assert done.stdout.startswith("episode 1: return")
    assert "mean return" in done.stdout and "GIF of" not in done.stdout
    assert json.loads(done.stdout.splitlines()[-1])["episodes"] == 1


def test_a_gif_path_that_cannot_be_written_is_refused_before_driving(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    (tmp_path / "file").touch()
    for gif, message in (
        (tmp_path, f"--gif {tmp_path}: is a directory"),
        (tmp_path / "file" / "x.gif", f"--gif {tmp_path}/file/x.gif: {tmp_path}/file is not a"),
        # access() says yes to root here; a trial write does not.
        (Path("/proc/swingup.gif"), "--gif /proc/swingup.gif: cannot write in /proc ("),
    ):
        with pytest.raises(SystemExit) as exited:
            raise SystemExit(main(["drive", "--target", target, "--gif", str(gif)]))
        assert exited.value.code == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # nothing ran
        assert message in captured.err and captured.err.count("\n") == 1


def test_more_pendulums_than_the_server_takes_is_one_line_before_any_environment(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    assert main(["drive", "--target", target, "--pendulums", "4097"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "swingup-client: error: --pendulums 4097: the server takes at most 4096 observations "
        "a call (its --max-batch)\n"
    )


def test_a_reader_that_leaves_ends_the_output_quietly(target: str) -> None:
    """`swingup-client info | head -3`: stdout's pipe closes, and that is no error to report."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "client", "info", "--target", target],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parent.parent,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_an_unknown_health_service_is_named(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    assert main(["health", "--target", target, "--service", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == "swingup-client: error: NOT_FOUND: the server knows no service 'nope'\n"


def test_info_prints_the_model_description(capsys: pytest.CaptureFixture[str], target: str) -> None:
    assert main(["info", "--target", target]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["execution_provider"] == "CPUExecutionProvider"
    assert info["obs_shape"] == [3] and info["batching"]["max_batch"] == 4096


def test_health_prints_the_status(capsys: pytest.CaptureFixture[str], target: str) -> None:
    assert main(["health", "--target", target]) == 0
    assert main(["health", "--target", target, "--service", "swingup.v1.PolicyService"]) == 0
    assert capsys.readouterr().out.split() == ["SERVING", "SERVING"]


def test_an_absent_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{bound.getsockname()[1]}"
        for command in (["health"], ["info"], ["drive", "--stream"], ["drive"]):
            assert main([*command, "--target", target, "--timeout", "2"]) == 1
            err = capsys.readouterr().err
            assert err.startswith("swingup-client: error: UNAVAILABLE") and err.count("\n") == 1
            assert "(nothing listens at the target: is the server running" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drive", "--pendulums", "0"], "--pendulums 0: must be at least 1"),
        (["drive", "--episodes", "-1"], "--episodes -1: must be at least 1"),
        (["drive", "--pendulums", "100000"], "--pendulums 100000: at most 65536"),
        (["drive", "--mode", "greedy"], "invalid choice: 'greedy'"),
        (["drive", "--seed", "-1"], "--seed -1: must be between 0 and 2**64 - 1"),
        (["drive", "--seed", str(2**64)], f"--seed {2**64}: must be between 0 and 2**64 - 1"),
        (["info", "--timeout", "0"], "--timeout 0: must be a number of seconds > 0"),
        (["info", "--timeout", "-1"], "--timeout -1: must be"),
        (["drive", "--timeout", "inf"], "--timeout inf: must be"),
        (["health", "--timeout", "nan"], "--timeout nan: must be"),
        (
            ["versions", "--timeout", "1e10"],
            "--timeout 1e+10: must be a number of seconds > 0 and <= 1000000",
        ),
        (["drive", "--keepalive-s", "0.5"], "--keepalive-s 0.5: must be a number of seconds >= 1"),
        (["health", "--keepalive-s", "-1"], "--keepalive-s -1: must be"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        code = main(args)
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_bad_environment_variable_is_named_by_the_command_that_needs_it(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWINGUP_CLIENT_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as exited:
        main(["health", "--target", target])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "swingup-client health: error: environment variable SWINGUP_CLIENT_TIMEOUT: "
        "invalid value 'soon'\n"
    )
    # Flags win: given, the flag stands in for the variable.
    assert main(["health", "--target", target, "--timeout", "5"]) == 0
    # A variable only `drive` reads does not stop `health`.
    monkeypatch.delenv("SWINGUP_CLIENT_TIMEOUT")
    monkeypatch.setenv("SWINGUP_CLIENT_EPISODES", "many")
    assert main(["health", "--target", target]) == 0
    assert capsys.readouterr().out == "SERVING\nSERVING\n"


@pytest.mark.parametrize("keepalive", ["0", "1", "30"])  # off, the floor, longer
def test_keepalive_may_be_set_or_turned_off(
    target: str, keepalive: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["health", "--target", target, "--keepalive-s", keepalive]) == 0
    assert capsys.readouterr().out == "SERVING\n"


def test_the_console_script_is_installed(target: str) -> None:
    script = Path(sys.executable).parent / "swingup-client"
    result = subprocess.run(
        [str(script), "health"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SWINGUP_CLIENT_TARGET": target, "PATH": ""},
    )
    assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr


def test_a_demo_output_directory_that_cannot_be_made_is_one_line_before_serving() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.demo", "--out", "/proc/swingup-demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr == "client.demo: error: --out /proc/swingup-demo: No such file or directory\n"
    )


def test_the_demo_serves_drives_and_stops(model_path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.demo", "--model", str(model_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("return") == 12 + 1  # 4 pendulums x 3 episodes, and the mean
    assert "latency p50" in out and "p99" in out
    with Image.open(tmp_path / "pendulum.gif") as image:
        assert image.n_frames > 100
    assert "stopped after 600 model calls for 2400 observations" in result.stderr


@pytest.mark.timeout(120)  # a hung drive is a failure, not a stuck run
def test_a_frozen_server_fails_a_streamed_drive_at_the_step_deadline(
    capsys: pytest.CaptureFixture[str], own_server: LocalServer
) -> None:
    assert own_server.target is not None
    with frozen(own_server):
        args = ["drive", "--stream", "--timeout", "0.5", "--target", own_server.target]
        assert main(args) == 1
    err = capsys.readouterr().err
    assert err == "swingup-client: error: DEADLINE_EXCEEDED: no reply to step 1 within 0.5 s\n"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_ctrl_c_is_one_line_and_keeps_the_returns_printed_so_far(
    target: str, stream: list[str]
) -> None:
    command = ["drive", "--target", target, "--episodes", "1000", *stream]
    drive = subprocess.Popen(
        [sys.executable, "-m", "client", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert drive.stdout is not None
        # Each episode's return is printed as it ends: the first says the drive is under way.
        assert drive.stdout.readline().startswith("episode 1: return")
        drive.send_signal(signal.SIGINT)
        out, err = drive.communicate(timeout=60)
    finally:
        drive.kill()
        drive.wait()
    assert (drive.returncode, err) == (130, "swingup-client: interrupted\n")
    assert all(line.startswith("episode ") for line in out.splitlines())


# What swingup-client imports before it can do anything (gRPC, protobuf, numpy), and gymnasium,
# which drive imports when the episodes start.
@pytest.mark.parametrize("module", ["google.protobuf", "grpc", "numpy", "gymnasium"])
def test_ctrl_c_while_starting_is_one_line_130(target: str, module: str) -> None:
    program = [sys.executable, "-c", INTERRUPT_AT_IMPORT, module, "client.cli"]
    argv = [*program, "drive", "--target", target, "--episodes", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, "swingup-client: interrupted\n")
    assert done.stdout == ""


def test_the_token_is_the_files_first_line_that_is_not_blank_or_a_comment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    path.write_text("# the controllers' token\n\n  s3cret-token  \nsecond-line\n")
    assert Connection(token_file=path).credentials().token == "s3cret-token"
    path.write_bytes(b"\xef\xbb\xbfbom-token\r\n")  # a byte order mark is not the token's
    assert Connection(token_file=path).credentials().token == "bom-token"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\n", "not a text file"),
        (b"# only a comment\n\n", "holds no token"),
        (b"tok en\n", "line 1: a token must be visible ASCII characters without spaces"),
        ("# mine\nt\u00f6ken\n".encode(), "line 2: a token must be visible ASCII"),
    ],
)
def test_a_token_file_without_a_usable_token_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    assert main(["info", "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"swingup-client: error: --token-file {path}: {message}")
    assert err.count("\n") == 1
    assert main(["info", "--token-file", str(tmp_path)]) == 2
    assert f"--token-file {tmp_path}: is a directory\n" in capsys.readouterr().err


def test_a_token_variable_that_is_not_visible_ascii_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWINGUP_TOKEN", "t\u00f6ken")
    assert main(["info"]) == 2
    assert "$SWINGUP_TOKEN: the token must be visible ASCII" in capsys.readouterr().err


def test_tls_files_are_checked_before_any_call(
    capsys: pytest.CaptureFixture[str], target: str, tmp_path: Path
) -> None:
    ca = Authority.create(tmp_path / "ca")
    mine, other = ca.issue("controller", server=False), ca.issue("other", server=False)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for flags, message in (
        (["--tls-ca", str(not_pem)], f"--tls-ca {not_pem}: not a PEM CA certificate ("),
        (
            ["--tls-ca", str(ca.cert), "--tls-cert", str(mine.cert), "--tls-key", str(other.key)],
            f"--tls-cert {mine.cert} / --tls-key {other.key}: not a matching PEM certificate "
            "and private key (",
        ),
        (["--tls-ca", str(tmp_path)], f"--tls-ca {tmp_path}: is a directory"),
    ):
        assert main(["info", "--target", target, *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"swingup-client: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "--target '': is empty"),
        ("127.0.0.1:99999", "port 99999 is not between 0 and 65535"),
        ("ipv4:127.0.0.1:50051,127.0.0.1:70000", "port 70000 is not between"),
    ],
)
def test_a_target_grpc_would_misread_is_one_line(
    capsys: pytest.CaptureFixture[str], address: str, message: str
) -> None:
    assert main(["health", "--target", address]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
