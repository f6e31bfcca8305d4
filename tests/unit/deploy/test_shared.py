"""The deployment core every backend shares: classification rules, the readiness clock, teardown
once, the redacted tail, and the mapping of a pod's status to a failure kind."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backends.deploy.base import (
    OWN_LINE_MARK,
    DeployCancelled,
    ExitInfo,
    classify_failure,
    looks_like_missing_executable,
)
from backends.deploy.shared import BackendCore, DeploymentCore, DeployRequest, Readiness, executable_missing
from backends.engines.base import LaunchPlan
from specs.records import ENVIRONMENT_FAILURES


def test_environment_failures_are_never_reclassified_as_oom() -> None:
    log = "torch.OutOfMemoryError: CUDA out of memory\n"
    for kind in ("executable_missing", "image_unavailable", "unschedulable", "environment"):
        assert classify_failure(log, kind) == kind  # type: ignore[arg-type]
    assert classify_failure(log, "startup_crash") == "oom"


def test_our_own_lines_never_make_an_oom() -> None:
    log = f"{OWN_LINE_MARK}2026-01-01T00:00:00+00:00] starting x: engine --note 'out of memory'\nbye\n"
    assert classify_failure(log, "startup_crash") == "startup_crash"


@pytest.mark.parametrize(
    ("text", "program", "expected"),
    [
        ('exec: "vllm": executable file not found in $PATH', "", True),
        ("crun: executable file `/x/engine` not found in $PATH: No such file or directory", "", True),
        ("OCI runtime attempted to invoke a command that was not found", "", True),
        ("stat /nonexistent/bin/engine: no such file or directory", "/nonexistent/bin/engine", True),
        # a missing mount source says the same words about another path: not a missing program
        ("statfs /data/models: no such file or directory", "vllm", False),
        ("port is already allocated", "vllm", False),
    ],
)
def test_missing_executable_detection(text: str, program: str, expected: bool) -> None:
    assert looks_like_missing_executable(text, program) is expected


def test_executable_missing_is_an_environment_failure_with_a_hint() -> None:
    failure = executable_missing("exp", "the program 'vllm'", "No such file or directory", where="host")
    assert failure.kind == "executable_missing" and failure.kind in ENVIRONMENT_FAILURES
    assert "'vllm'" in failure.message and "PATH" in (failure.hint or "")


def test_readiness_clock_cancels_restarts_and_expires() -> None:
    cancel, torn_down = threading.Event(), threading.Event()
    clock = Readiness("exp", 0.2, 0.05, cancel, torn_down)
    clock.check_cancelled()
    time.sleep(0.25)
    assert clock.expired()
    clock.restart()
    assert not clock.expired() and 0 < clock.left() <= 0.2
    assert "not ready after 0.2 s (why)" in clock.timeout_message("why")
    cancel.set()
    started = time.monotonic()
    clock.pause()  # returns at once: cancelled
    assert time.monotonic() - started < 0.05
    with pytest.raises(DeployCancelled):
        clock.check_cancelled()


class _Backend(BackendCore["_Deployment"]):
    kind = "test"
    isolated_env = True

    def __init__(self) -> None:
        self.environ = {"HF_TOKEN": "hf_secret_value", "PATH": "/bin"}
        self.policy = None
        self.tail_lines = 20
        self.poll_interval_s = 0.05
        self.probe_timeout_s = 0.5
        self._init_registry()
        self.launched: list[_Deployment] = []

    def _new_deployment(self, request: DeployRequest) -> _Deployment:
        return _Deployment(self, request)

    def _launch(self, dep: _Deployment) -> None:
        self.launched.append(dep)


class _Deployment(DeploymentCore):
    def __init__(self, backend: _Backend, request: DeployRequest) -> None:
        super().__init__(backend, request)
        self.releases = 0

    def exit_info(self) -> ExitInfo | None:
        return ExitInfo(exit_code=1)

    def _release(self) -> None:
        self.releases += 1
        time.sleep(0.1)
        raise RuntimeError("teardown must never raise")


def _plan(**kwargs: Any) -> LaunchPlan:
    return LaunchPlan(argv=["engine"], env={}, gpus=0, world_size=1, port=8000, served_model="m", **kwargs)


def test_deploy_keeps_secrets_out_of_an_isolated_plan_and_redacts_them(tmp_path: Path) -> None:
    backend = _Backend()
    dep = backend.deploy(
        _plan(env_from={"HF_TOKEN": "HF_TOKEN"}),
        name="exp",
        gpu_ids=[],
        log_path=tmp_path / "e.log",
        labels={},
    )
    assert backend.launched == [dep] and backend.live() == [dep]
    assert "HF_TOKEN" not in dep.plan.env and "PATH" not in dep.plan.env  # no host setup variables
    dep._log_line("token hf_secret_value")
    with (tmp_path / "e.log").open("a") as log:
        log.write("engine says hf_secret_value\n")
    assert "hf_secret_value" not in dep.log_tail() and "***" in dep.log_tail()
    failure = dep._failure_now("startup_crash", "crashed with hf_secret_value")
    assert "hf_secret_value" not in failure.message and failure.exit_code == 1
    with pytest.raises(ValueError, match="already running"):
        backend.deploy(_plan(), name="exp", gpu_ids=[], log_path=tmp_path / "f.log", labels={})
    with pytest.raises(ValueError, match="GPU"):
        backend.deploy(_plan(), name="exp2", gpu_ids=[0], log_path=tmp_path / "f.log", labels={})


def test_teardown_runs_once_from_many_threads_and_never_raises(tmp_path: Path) -> None:
    backend = _Backend()
    dep = backend.deploy(_plan(), name="exp", gpu_ids=[], log_path=tmp_path / "e.log", labels={})
    threads = [threading.Thread(target=dep.teardown) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dep.teardown()
    assert dep.releases == 1
    assert backend.live() == []


def _pod(**container: Any) -> dict[str, Any]:
    return {"status": {"phase": "Running", "containerStatuses": [{"name": "engine", **container}]}}


def _assess(pod: dict[str, Any], program: str = "/nonexistent/bin/engine") -> Any:
    pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")
    from backends.deploy.kubernetes import pods

    return pods.assess(
        pod,
        name="exp",
        image="img:1",
        program=program,
        events=lambda reason: "",
        scheduling_late=False,
        scheduling_timeout=60,
    )


def test_a_pod_whose_program_is_not_in_the_image_is_executable_missing() -> None:
    ended = {
        "exitCode": 128,
        "reason": "StartError",
        "message": 'exec: "/nonexistent/bin/engine": stat /nonexistent/bin/engine: no such file or directory',
    }
    problem = _assess(_pod(state={"terminated": ended}))
    assert problem.kind == "executable_missing" and problem.hint
    crash = _assess(_pod(state={"terminated": {"exitCode": 1, "reason": "Error"}}))
    assert crash.kind == "startup_crash"
    assert _assess(_pod(state={"running": {}})) is None
