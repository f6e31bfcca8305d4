"""The engine environment is built from nothing (backends/deploy/environment.py)."""

from __future__ import annotations

import pytest

from backends.deploy.environment import SETUP_VARS, engine_environment
from specs.errors import UserError
from specs.policy import Policy

DAEMON = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/var/lib/autotuner",
    "AUTOTUNER_GIT_TOKEN": "ghp_daemon_token",
    "AWS_SECRET_ACCESS_KEY": "aws-daemon-secret",
    "HF_TOKEN": "hf_daemon_token",
    "NCCL_SOCKET_IFNAME": "eth0",
}


def test_only_setup_spec_and_referenced_variables_reach_the_engine() -> None:
    env = engine_environment(
        spec_env={"VLLM_ATTENTION_BACKEND": "FLASH_ATTN"},
        references={"HF_TOKEN": "HF_TOKEN"},
        gpu_ids=[1, 3],
        daemon_env=DAEMON,
        policy=Policy(),
    )
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == "/var/lib/autotuner"
    assert env["VLLM_ATTENTION_BACKEND"] == "FLASH_ATTN" and env["HF_TOKEN"] == "hf_daemon_token"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["LANG"] == "C.UTF-8"
    assert "AUTOTUNER_GIT_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "NCCL_SOCKET_IFNAME" not in env
    assert set(env) <= {
        *SETUP_VARS,
        "LANG",
        "LC_ALL",
        "PYTHONUNBUFFERED",
        "VLLM_ATTENTION_BACKEND",
        "HF_TOKEN",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
    }


def test_pass_env_and_containers() -> None:
    env = engine_environment(
        spec_env={}, gpu_ids=None, daemon_env=DAEMON, policy=Policy(pass_env=("NCCL_*",)), setup=False
    )
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert "PATH" not in env and "CUDA_VISIBLE_DEVICES" not in env


def test_the_lease_wins_and_loader_variables_are_refused() -> None:
    with pytest.raises(UserError, match="LD_PRELOAD"):
        engine_environment(spec_env={"LD_PRELOAD": "/x.so"}, gpu_ids=[], daemon_env=DAEMON)
    allowed = Policy(allow_loader_env=True)
    env = engine_environment(
        spec_env={"PATH": "/opt/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        gpu_ids=[2],
        daemon_env=DAEMON,
        policy=allowed,
    )
    assert env["PATH"] == "/opt/bin" and env["CUDA_VISIBLE_DEVICES"] == "2"


def test_references_outside_secret_env_and_missing_ones() -> None:
    with pytest.raises(UserError, match="AUTOTUNER_GIT_TOKEN"):
        engine_environment(
            spec_env={},
            references={"X": "AUTOTUNER_GIT_TOKEN"},
            gpu_ids=[],
            daemon_env=DAEMON,
            policy=Policy(),
        )
    with pytest.raises(UserError, match="HUGGING_FACE_HUB_TOKEN"):
        engine_environment(
            spec_env={},
            references={"X": "HUGGING_FACE_HUB_TOKEN"},
            gpu_ids=[],
            daemon_env=DAEMON,
            policy=Policy(),
        )
