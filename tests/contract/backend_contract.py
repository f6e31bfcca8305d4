"""The contract every deploy backend must meet (after Optuna's ``testing/pytest_storages.py``).

Usage, in a test module of a backend::

    from tests.contract.backend_contract import BackendContract

    class TestDockerBackendContract(BackendContract):
        gpu_env, no_gpu_value = "NVIDIA_VISIBLE_DEVICES", "void"

        @pytest.fixture
        def backend(self, tmp_path, podman):
            return DockerBackend(tmp_path / "state", base_url=podman.base_url, mounts=podman.mounts)

        # optional: how a behaviour becomes a LaunchPlan for this backend
        @pytest.fixture
        def standin(self, podman):
            return lambda mode, **kw: standin_plan(mode, host="0.0.0.0", image=podman.standin_image, **kw)

The stand-in engine (``standin_engine.py``) is a real process with scripted behaviour: ready
after a delay, exits at once, never ready, out of memory, ignores SIGTERM, crashes after being
ready. The default ``standin`` fixture runs it with this Python; a container backend runs
``plan.container_args`` in an image whose entrypoint is the stand-in (``tests/podman.py``).

Class attributes let a backend state what differs for it: ``pins_gpu_ids`` is false for
Kubernetes, where the device plugin, not the lease, picks the GPUs; ``gpu_env`` and
``no_gpu_value`` name the variable through which the engine learns its GPUs.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

import pytest

from backends.deploy.base import DeployBackend, DeployCancelled, Deployment, EngineFailure
from backends.deploy.procs import free_port
from backends.engines.base import LaunchPlan
from specs.errors import UserError
from specs.records import ENVIRONMENT_FAILURES

STANDIN = Path(__file__).resolve().parent / "standin_engine.py"


class StandinFactory(Protocol):
    def __call__(
        self,
        mode: str,
        *,
        gpus: int = 0,
        ready_delay: float = 0.0,
        env: Mapping[str, str] | None = None,
        echo_env: Sequence[str] = (),
        env_from: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
        cat: Sequence[str] = (),
        simulated: bool = False,
    ) -> LaunchPlan: ...


DeployFn = Callable[..., Deployment]


def standin_plan(
    mode: str,
    *,
    gpus: int = 0,
    ready_delay: float = 0.0,
    env: Mapping[str, str] | None = None,
    echo_env: Sequence[str] = (),
    env_from: Mapping[str, str] | None = None,
    files: Mapping[str, str] | None = None,
    cat: Sequence[str] = (),
    simulated: bool = False,
    port: int | None = None,
    host: str = "127.0.0.1",
    image: str = "standin:test",
) -> LaunchPlan:
    """A LaunchPlan running the stand-in engine; mode ``missing`` names a program that does not exist.

    ``container_args`` are the stand-in's arguments alone, for an image whose entrypoint is the
    stand-in (as ``vllm/vllm-openai``'s is ``vllm serve``); for ``missing`` they name the absent
    program, for an image without an entrypoint.
    """
    port = free_port() if port is None else port
    args = ["--mode", mode, "--port", str(port), "--host", host, "--ready-delay", str(ready_delay)]
    for name in echo_env:
        args += ["--echo-env", name]
    for path in cat:
        args += ["--cat", path]
    argv = ["/nonexistent/bin/engine", *args] if mode == "missing" else [sys.executable, str(STANDIN), *args]
    return LaunchPlan(
        argv=argv,
        env=dict(env or {}),
        gpus=gpus,
        world_size=max(gpus, 1),
        port=port,
        served_model="standin",
        container_args=argv[:1] + args if mode == "missing" else args,
        image=image,
        env_from=dict(env_from or {}),
        files=dict(files or {}),
        simulated=simulated,
    )


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET, or ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def tail_showing(dep: Deployment, needle: str, timeout_s: float, lines: int = 100) -> str:
    """The log tail once it shows ``needle`` (or after ``timeout_s``): a container's or a pod's
    log reaches the daemon through a follower stream, shortly after the engine wrote it."""
    wait_for(lambda: needle in dep.log_tail(lines), timeout_s)
    return dep.log_tail(lines)


class BackendContract:
    """What every :class:`~backends.deploy.base.DeployBackend` must do. Subclass and give ``backend``."""

    #: the engine sees exactly the leased GPU ids (local, docker); not on Kubernetes
    pins_gpu_ids: ClassVar[bool] = True
    #: the variable that tells the engine its GPUs, and its value for an engine without any:
    #: ``CUDA_VISIBLE_DEVICES`` for a process; a container's runtime reads
    #: ``NVIDIA_VISIBLE_DEVICES`` (inside, the devices are renumbered from 0)
    gpu_env: ClassVar[str] = "CUDA_VISIBLE_DEVICES"
    no_gpu_value: ClassVar[str] = ""
    #: generous bound for "promptly" on a loaded 2-core CI machine
    slack_s: ClassVar[float] = 5.0

    @pytest.fixture
    def backend(self, tmp_path: Path) -> DeployBackend:
        raise NotImplementedError("a backend's contract test must provide the 'backend' fixture")

    @pytest.fixture
    def standin(self) -> StandinFactory:
        return standin_plan

    @pytest.fixture
    def deploy(self, backend: DeployBackend, tmp_path: Path) -> Iterator[DeployFn]:
        """Deploy with defaults, and tear down whatever a test left running."""
        made: list[Deployment] = []
        counter = iter(range(10_000))

        def _deploy(plan: LaunchPlan, *, gpu_ids: Sequence[int] = (), name: str | None = None) -> Deployment:
            name = name or f"contract-{next(counter)}"
            dep = backend.deploy(
                plan,
                name=name,
                gpu_ids=list(gpu_ids),
                log_path=tmp_path / "logs" / f"{name}.log",
                labels={"autotuner/spec": "contract", "autotuner/experiment": name},
            )
            made.append(dep)
            return dep

        yield _deploy
        for dep in made:
            dep.teardown()

    # ----------------------------------------------------------------------------- readiness

    def test_deploy_returns_before_the_engine_is_ready(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        started = time.monotonic()
        # 3 s: a container's create and start on a busy CI machine stays well below it
        dep = deploy(standin("serve", ready_delay=3.0))
        assert time.monotonic() - started < 3.0, "deploy must not wait for readiness"
        dep.wait_ready(30)
        assert time.monotonic() - started >= 3.0, "ready only once every health path answers 2xx"
        assert http_status(dep.base_url + "/v1/models") == 200
        assert dep.alive()
        assert dep.exit_info() is None

    def test_teardown_stops_a_ready_engine_and_is_idempotent(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("serve"))
        dep.wait_ready(30)
        url = dep.base_url + "/health"
        dep.teardown()
        dep.teardown()
        assert not dep.alive()
        assert http_status(url, timeout=1.0) is None
        assert dep.exit_info() is not None

    def test_teardown_before_ready_never_raises(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("never"))
        dep.teardown()
        dep.teardown()
        assert not dep.alive()

    def test_teardown_escalates_to_sigkill(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("ignore-term"))
        dep.wait_ready(30)
        dep.teardown()
        assert not dep.alive()
        assert http_status(dep.base_url + "/health", timeout=1.0) is None

    # ------------------------------------------------------------------------------ failures

    def test_startup_crash_is_classified_with_log_tail(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("exit"))
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(30)
        failure = info.value
        assert failure.kind == "startup_crash"
        assert failure.exit_code == 3
        assert "unknown flag --bogus-flag" in failure.log_tail
        assert failure.to_dict()["kind"] == "startup_crash"
        assert not dep.alive()

    def test_out_of_memory_is_classified(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("oom", gpus=1), gpu_ids=[0] if self.pins_gpu_ids else [])
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(30)
        assert info.value.kind == "oom"
        assert "CUDA out of memory" in info.value.log_tail
        assert info.value.exit_code == 1

    def test_readiness_timeout(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("never"))
        started = time.monotonic()
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(1.0)
        elapsed = time.monotonic() - started
        assert info.value.kind == "readiness_timeout"
        assert 1.0 <= elapsed < 1.0 + self.slack_s
        assert "loading model weights" in info.value.log_tail, info.value.log_tail
        assert info.value.exit_code is None
        assert dep.alive(), "wait_ready does not tear down; the caller does"

    def test_hang_after_out_of_memory_is_oom_not_timeout(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("oom-hang"))
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(1.0)
        assert info.value.kind == "oom"

    def test_missing_program_fails_in_wait_ready_not_deploy(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("missing"))
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(10)
        # the host's (or the image's) problem, not the configuration's: never cached
        assert info.value.kind == "executable_missing"
        assert info.value.kind in ENVIRONMENT_FAILURES
        assert "/nonexistent/bin/engine" in info.value.message
        assert info.value.hint
        assert not dep.alive()
        dep.teardown()

    def test_crash_after_ready_gives_a_crashed_failure(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("crash-after"))
        dep.wait_ready(30)
        assert wait_for(lambda: not dep.alive(), 10 + self.slack_s)
        failure = dep.failure()
        assert failure.kind == "crashed"
        assert failure.exit_code == 7
        assert "engine core died" in failure.log_tail
        assert (
            dep.failure("benchmark_errors", "42 of 50 requests failed").message == "42 of 50 requests failed"
        )

    # ------------------------------------------------------------------------------- cancel

    def test_cancel_event_stops_waiting_promptly(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("never"))
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(DeployCancelled):
            dep.wait_ready(60, cancel=cancel)
        assert time.monotonic() - started < 0.3 + self.slack_s

    def test_teardown_from_another_thread_cancels_waiting(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("never"))
        threading.Timer(0.3, dep.teardown).start()
        started = time.monotonic()
        with pytest.raises(DeployCancelled):
            dep.wait_ready(60)
        assert time.monotonic() - started < 0.3 + self.slack_s
        assert wait_for(lambda: not dep.alive(), self.slack_s)

    # -------------------------------------------------------------------- environment, logs

    def test_engine_sees_exactly_the_leased_gpus(self, deploy: DeployFn, standin: StandinFactory) -> None:
        if not self.pins_gpu_ids:
            pytest.skip("this backend's scheduler assigns GPUs")
        dep = deploy(standin("serve", gpus=2, echo_env=[self.gpu_env]), gpu_ids=[1, 3])
        dep.wait_ready(30)
        assert f"{self.gpu_env}=1,3" in tail_showing(dep, f"{self.gpu_env}=", self.slack_s, 50)
        cpu = deploy(standin("serve", echo_env=[self.gpu_env]))
        cpu.wait_ready(30)
        tail = tail_showing(cpu, f"{self.gpu_env}=", self.slack_s, 50)
        assert f"{self.gpu_env}={self.no_gpu_value}\n" in tail + "\n", "a CPU engine sees no GPU"

    def test_log_tail_has_engine_output_and_no_secrets(
        self, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        secret = "hf_contractSECRETvalue123"
        dep = deploy(
            standin("serve", env={"HF_TOKEN": secret, "PLAIN": "visible"}, echo_env=["HF_TOKEN", "PLAIN"])
        )
        dep.wait_ready(30)
        tail = tail_showing(dep, "PLAIN=", self.slack_s)
        assert "PLAIN=visible" in tail
        assert "HF_TOKEN=***" in tail
        assert secret not in tail
        assert dep.log_tail(1).count("\n") == 0
        dep.teardown()
        assert "PLAIN=visible" in dep.log_tail(100), "the log outlives the engine"

    # ---------------------------------------------------------------------------- bookkeeping

    def test_bad_calls_are_value_errors(self, deploy: DeployFn, standin: StandinFactory) -> None:
        with pytest.raises(ValueError, match="DNS-1123"):
            deploy(standin("serve"), name="Bad_Name")
        with pytest.raises(ValueError, match="GPU"):
            deploy(standin("serve", gpus=2), gpu_ids=[0])

    def test_names_are_unique_among_live_deployments(self, deploy: DeployFn, standin: StandinFactory) -> None:
        first = deploy(standin("serve"), name="same-name")
        with pytest.raises(ValueError, match="same-name"):
            deploy(standin("serve"), name="same-name")
        first.teardown()
        second = deploy(standin("serve"), name="same-name")
        second.wait_ready(30)

    def test_cleanup_orphans_leaves_live_deployments_alone(
        self, backend: DeployBackend, deploy: DeployFn, standin: StandinFactory
    ) -> None:
        dep = deploy(standin("serve"))
        dep.wait_ready(30)
        assert backend.cleanup_orphans() == []
        assert dep.alive()
        assert http_status(dep.base_url + "/health") == 200

    def test_referenced_secrets_are_resolved_and_never_shown(
        self, deploy: DeployFn, standin: StandinFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        secret = "s3cr3t-by-reference-0042"
        monkeypatch.setenv("CONTRACT_SECRET_SOURCE", secret)
        # the engine-side name does not look secret: the value is redacted because it was referenced
        plan = standin(
            "serve", env_from={"ENGINE_AUTH_VALUE": "CONTRACT_SECRET_SOURCE"}, echo_env=["ENGINE_AUTH_VALUE"]
        )
        dep = deploy(plan)
        dep.wait_ready(30)
        tail = tail_showing(dep, "ENGINE_AUTH_VALUE=", self.slack_s)
        assert "ENGINE_AUTH_VALUE=***" in tail
        assert secret not in tail

    def test_engine_does_not_inherit_the_daemons_environment(
        self, deploy: DeployFn, standin: StandinFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # docs/security.md: an engine's environment is built from nothing; a daemon variable the
        # spec never referenced (a git token, cloud credentials) must not reach it
        monkeypatch.setenv("CONTRACT_DAEMON_ONLY", "daemon-private-value-0077")
        dep = deploy(standin("serve", echo_env=["CONTRACT_DAEMON_ONLY", "LANG"]))
        dep.wait_ready(30)
        tail = tail_showing(dep, "LANG=", self.slack_s)
        assert "CONTRACT_DAEMON_ONLY=<unset>" in tail
        assert "daemon-private-value-0077" not in tail
        assert "LANG=C.UTF-8" in tail

    def test_loader_variables_are_refused(self, deploy: DeployFn, standin: StandinFactory) -> None:
        for name in ("LD_PRELOAD", "PYTHONPATH", "PATH", "HF_ENDPOINT"):
            with pytest.raises(UserError, match=name):
                deploy(standin("serve", env={name: "/tmp/anything"}))

    def test_a_missing_referenced_secret_is_a_user_error(
        self, deploy: DeployFn, standin: StandinFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("CONTRACT_UNSET_SOURCE", raising=False)
        with pytest.raises(UserError, match="CONTRACT_UNSET_SOURCE"):
            deploy(standin("serve", env_from={"HF_TOKEN": "CONTRACT_UNSET_SOURCE"}))

    def test_plan_files_are_in_the_working_directory(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(
            standin("serve", files={"conf/extra.yaml": "kv_cache_config: 0.9\n"}, cat=["conf/extra.yaml"])
        )
        dep.wait_ready(30)
        tail = tail_showing(dep, "conf/extra.yaml:", self.slack_s, 50)
        assert "conf/extra.yaml: kv_cache_config: 0.9" in tail
        with pytest.raises(ValueError, match="relative path"):
            deploy(standin("serve", files={"../escape.yaml": "x"}))

    def test_simulated_gpus_are_not_leased(self, deploy: DeployFn, standin: StandinFactory) -> None:
        dep = deploy(standin("serve", gpus=4, simulated=True, echo_env=[self.gpu_env]), gpu_ids=[])
        dep.wait_ready(30)
        tail = tail_showing(dep, f"{self.gpu_env}=", self.slack_s, 50)
        assert f"{self.gpu_env}={self.no_gpu_value}\n" in tail + "\n"
        with pytest.raises(ValueError, match="GPU"):
            deploy(standin("serve", gpus=2, simulated=True), gpu_ids=[0, 1])
