"""Failure classification, names, exit descriptions and secret redaction of the deploy protocol."""

from __future__ import annotations

import signal

import pytest

from backends.deploy.base import (
    EngineFailure,
    ExitInfo,
    check_name,
    classify_failure,
    looks_like_address_in_use,
    redact,
    secret_values,
)


@pytest.mark.parametrize(
    "line",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "RuntimeError: CUDA error: out of memory",
        "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
        "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.",
        "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be "
        "stored in KV cache (22032).",
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096 MiB on device 0: "
        "cudaMalloc failed: out of memory",
    ],
)
def test_engine_oom_messages_are_oom(line: str) -> None:
    log = f"INFO loading weights\n{line}\nINFO shutting down\n"
    assert classify_failure(log, "startup_crash") == "oom"
    assert classify_failure(log, "readiness_timeout") == "oom"


def test_other_failures_keep_their_kind() -> None:
    log = "error: unrecognized arguments: --bogus\n"
    assert classify_failure(log, "startup_crash") == "startup_crash"
    assert classify_failure("", "readiness_timeout") == "readiness_timeout"


def test_address_in_use_detection() -> None:
    assert looks_like_address_in_use("OSError: [Errno 98] Address already in use")
    assert looks_like_address_in_use("ERROR:    [Errno 98] error while attempting to bind on address")
    assert looks_like_address_in_use(
        "main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080"
    )
    assert not looks_like_address_in_use("Uvicorn running on http://127.0.0.1:8000")


@pytest.mark.parametrize("name", ["a", "qwen7b-h100-0003", "x" * 63])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "-lead", "trail-", "x" * 64, "dot.ted"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        check_name(name)


def test_exit_info_descriptions() -> None:
    assert ExitInfo(exit_code=3).describe() == "exited with code 3"
    assert ExitInfo(signal=signal.SIGKILL).describe() == "killed by SIGKILL"
    assert ExitInfo(signal=signal.SIGKILL).returncode == -9
    assert ExitInfo().describe() == "never started"


def test_failure_record_and_hint() -> None:
    failure = EngineFailure("oom", "engine e exited with code 1", log_tail="CUDA out of memory", exit_code=1)
    assert failure.to_dict() == {
        "kind": "oom",
        "message": "engine e exited with code 1",
        "exitCode": 1,
        "logTail": "CUDA out of memory",
    }
    assert failure.hint is not None and "memory" in failure.hint
    assert "hint:" in str(failure)


def test_secret_values_and_redaction() -> None:
    env = {"HF_TOKEN": "hf_abcdef123", "OPENAI_API_KEY": "sk-xyz987", "PATH": "/usr/bin", "MY_SECRET": "no"}
    secrets = secret_values(env)
    assert secrets == ["hf_abcdef123", "sk-xyz987"], "longest first; too-short values are left alone"
    assert (
        redact("token=hf_abcdef123 key=sk-xyz987 path=/usr/bin", secrets) == "token=*** key=*** path=/usr/bin"
    )
