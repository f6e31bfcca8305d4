"""The local backend against real processes: groups, pid files, orphans, parent death, port retry.

The shared contract (readiness, classified failures, teardown) runs in
``tests/contract/test_local_contract.py``; this module proves what is specific to subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backends.deploy import procs
from backends.deploy.base import EngineFailure, ExitInfo
from backends.deploy.gpus import parse_fake_inventory
from backends.deploy.leases import GpuLeaser
from backends.deploy.local import LocalBackend, LocalDeployment
from backends.engines.base import LaunchPlan
from core import atomic
from tests.contract.backend_contract import http_status, standin_plan, wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process groups, /proc, pdeathsig"
)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    ident = procs.read_identity(pid)
    return ident is not None and procs.is_running(ident)


def child_pid_from_log(log_path: Path, timeout_s: float = 15.0) -> int:
    found: list[int] = []

    def _seen() -> bool:
        m = re.search(r"child_pid=(\d+)", log_path.read_text() if log_path.exists() else "")
        if m:
            found.append(int(m.group(1)))
        return bool(m)

    assert wait_for(_seen, timeout_s), f"the stand-in never reported its child:\n{log_path.read_text()}"
    return found[0]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    b = LocalBackend(tmp_path / "state", grace_s=1.0, poll_interval_s=0.05, probe_timeout_s=0.5)
    yield b
    b.teardown_all()
    assert b.live() == []


def identity(pid: int) -> procs.ProcessIdentity:
    ident = procs.read_identity(pid)
    assert ident is not None, f"process {pid} does not exist"
    return ident


def deploy(
    backend: LocalBackend,
    tmp_path: Path,
    mode: str,
    name: str = "eng",
    *,
    gpu_ids: Sequence[int] = (),
    gpus: int = 0,
    env: dict[str, str] | None = None,
    echo_env: Sequence[str] = (),
    port: int | None = None,
) -> LocalDeployment:
    plan = standin_plan(mode, gpus=gpus, env=env, echo_env=echo_env, port=port)
    return backend.deploy(
        plan, name=name, gpu_ids=gpu_ids, log_path=tmp_path / f"{name}.log", labels={"autotuner/spec": "t"}
    )


# ---------------------------------------------------------------------------------- process group


def test_teardown_kills_the_whole_group_children_included(backend: LocalBackend, tmp_path: Path) -> None:
    dep = deploy(backend, tmp_path, "child")
    dep.wait_ready(30)
    child = child_pid_from_log(dep.log_path)
    leader = dep.pid
    assert leader is not None and running(leader) and running(child)
    assert os.getpgid(child) == leader, "the engine leads its own process group"
    dep.teardown()
    assert not running(leader)
    assert not running(child), "teardown returns only when every member of the group is gone"


def test_teardown_also_stops_children_that_left_the_group(backend: LocalBackend, tmp_path: Path) -> None:
    dep = deploy(backend, tmp_path, "setsid-child")
    dep.wait_ready(30)
    child = child_pid_from_log(dep.log_path)
    assert os.getpgid(child) != dep.pid
    dep.teardown()
    assert not running(child), "found by the marker in its environment"


def test_sigterm_first_then_sigkill(backend: LocalBackend, tmp_path: Path) -> None:
    polite = deploy(backend, tmp_path, "serve", name="polite")
    polite.wait_ready(30)
    polite.teardown()
    assert "got SIGTERM" in polite.log_tail()
    assert polite.exit_info() == ExitInfo(exit_code=0)

    stubborn = deploy(backend, tmp_path, "ignore-term", name="stubborn")
    stubborn.wait_ready(30)
    started = time.monotonic()
    stubborn.teardown()
    assert time.monotonic() - started >= backend.grace_s, "SIGKILL only after the grace period"
    assert stubborn.exit_info() == ExitInfo(signal=signal.SIGKILL)


def test_teardown_all_stops_every_deployment_in_parallel(backend: LocalBackend, tmp_path: Path) -> None:
    deps = [deploy(backend, tmp_path, "ignore-term", name=f"stubborn-{i}") for i in range(3)]
    for dep in deps:
        dep.wait_ready(30)
    started = time.monotonic()
    backend.teardown_all()
    elapsed = time.monotonic() - started
    assert not any(dep.alive() for dep in deps)
    assert backend.live() == []
    assert elapsed < 3 * backend.grace_s - 0.2, "grace periods overlap instead of adding up"


def test_engine_outlives_the_thread_that_deployed_it(backend: LocalBackend, tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits; spawns go through one long-lived thread
    box: list[LocalDeployment] = []
    t = threading.Thread(target=lambda: box.append(deploy(backend, tmp_path, "serve")))
    t.start()
    t.join()
    dep = box[0]
    dep.wait_ready(30)
    time.sleep(0.3)
    assert dep.alive()
    assert http_status(dep.base_url + "/health") == 200


# ------------------------------------------------------------------------------------ environment


def test_lease_ids_become_cuda_visible_devices(backend: LocalBackend, tmp_path: Path) -> None:
    leaser = GpuLeaser(parse_fake_inventory("4xH100"))
    first = leaser.acquire(2, timeout=0)
    second = leaser.acquire(2, timeout=0)
    assert first is not None and second is not None
    a = deploy(
        backend, tmp_path, "serve", name="a", gpus=2, gpu_ids=list(first.ids), echo_env=["CUDA_DEVICE_ORDER"]
    )
    b = deploy(backend, tmp_path, "serve", name="b", gpus=2, gpu_ids=list(second.ids))
    a.wait_ready(30)
    b.wait_ready(30)
    assert "CUDA_VISIBLE_DEVICES=0,1" in a.log_tail()
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in a.log_tail(), "CUDA numbers GPUs like NVML does"
    assert "CUDA_VISIBLE_DEVICES=2,3" in b.log_tail()


def test_plan_env_reaches_the_engine_but_not_the_pid_file(backend: LocalBackend, tmp_path: Path) -> None:
    secret = "hf_pidfileSECRET0123456789"
    dep = deploy(backend, tmp_path, "serve", env={"HF_TOKEN": secret}, echo_env=["HF_TOKEN"])
    dep.wait_ready(30)
    assert secret in dep.log_path.read_text(), "the engine got the value (it printed it)"
    assert secret not in dep.log_tail(), "tails are redacted"
    pid_file = backend.pid_dir / "eng.json"
    record = json.loads(pid_file.read_text())
    assert secret not in pid_file.read_text()
    assert record["pid"] == dep.pid == record["pgid"]
    assert dep.pid is not None and record["startTime"] == identity(dep.pid).start_time
    assert record["argv"] == dep.argv
    assert record["labels"] == {"autotuner/spec": "t"}
    assert record["owner"]["pid"] == os.getpid()
    dep.teardown()
    assert not pid_file.exists()


# ------------------------------------------------------------------------------------------ ports


def test_port_taken_before_the_engine_binds_is_retried_once(backend: LocalBackend, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        dep = deploy(backend, tmp_path, "serve", port=taken)
        dep.wait_ready(30)
        assert dep.base_url != f"http://127.0.0.1:{taken}"
        assert f"port {taken} was taken; retrying on port" in dep.log_tail()
        assert http_status(dep.base_url + "/v1/models") == 200
        assert f"--port {taken}" not in " ".join(dep.argv)


def test_port_retry_gives_up_after_its_budget(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state", port_retries=0, poll_interval_s=0.05, probe_timeout_s=0.5)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        dep = deploy(backend, tmp_path, "serve", port=squatter.getsockname()[1])
        with pytest.raises(EngineFailure) as info:
            dep.wait_ready(30)
        dep.teardown()
    assert info.value.kind == "startup_crash"
    assert "Address already in use" in info.value.log_tail


def test_free_port_is_bindable_and_not_repeated() -> None:
    ports = {procs.free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


# ------------------------------------------------------------------------ parent death and orphans

PARENT = """
import json, sys, time
from pathlib import Path
from backends.deploy.local import LocalBackend
from tests.contract.backend_contract import standin_plan

state, log, mode, then = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
backend = LocalBackend(state)
dep = backend.deploy(standin_plan(mode), name="orphan-test", gpu_ids=[], log_path=log, labels={})
dep.wait_ready(30)
print(json.dumps({"pid": dep.pid}), flush=True)
if then == "exit":
    sys.exit(0)
time.sleep(600)
"""


def start_parent(tmp_path: Path, mode: str, then: str) -> tuple[subprocess.Popen[str], int, Path, Path]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    state, log = tmp_path / "state", tmp_path / "engine.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen(
        [sys.executable, str(script), str(state), str(log), mode, then],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert parent.stdout is not None
    with parent.stdout:
        line = parent.stdout.readline()
    assert line, f"the parent died before deploying; log:\n{log.read_text() if log.exists() else ''}"
    return parent, int(json.loads(line)["pid"]), state, log


def test_kill_9_of_the_tool_leaves_no_engine_and_cleanup_finds_the_rest(tmp_path: Path) -> None:
    parent, engine, state, log = start_parent(tmp_path, "child", "sleep")
    child = child_pid_from_log(log)
    try:
        assert running(engine) and running(child)
        parent.kill()  # SIGKILL: no atexit, no finally
        parent.wait()
        assert wait_for(lambda: not running(engine), 10), "the parent-death signal killed the engine"
        # the signal reaches the direct child only; a grandchild is what cleanup_orphans is for
        assert running(child)
        pid_file = state / "local" / "orphan-test.json"
        assert pid_file.exists()
        assert LocalBackend(state).cleanup_orphans() == ["orphan-test"]
        assert not running(child)
        assert not pid_file.exists()
        assert LocalBackend(state).cleanup_orphans() == [], "a second pass finds nothing"
    finally:
        for pid in (engine, child):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_normal_exit_of_the_tool_tears_down_gracefully(tmp_path: Path) -> None:
    parent, engine, state, log = start_parent(tmp_path, "serve", "exit")
    assert parent.wait(timeout=30) == 0
    assert not running(engine)
    assert "got SIGTERM" in log.read_text(), "atexit teardown, not the parent-death SIGKILL"
    assert not (state / "local" / "orphan-test.json").exists()


def _dead_identity() -> procs.ProcessIdentity:
    p = subprocess.Popen(["true"])
    ident = None
    while ident is None:  # read it while the exited process is still an unreaped zombie
        ident = procs.read_identity(p.pid)
    p.wait()
    return ident


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env=env)


def _write_record(
    pid_dir: Path, name: str, *, owner: procs.ProcessIdentity, pid: int, start: int, marker: str
) -> Path:
    record = procs.PidRecord(
        name=name,
        marker=marker,
        owner=owner,
        argv=["sleep", "60"],
        pid=pid,
        pgid=pid,
        start_time=start,
        boot_id=identity(os.getpid()).boot_id,
    )
    path = procs.pid_file_path(pid_dir, name)
    atomic.write_json(path, record.to_dict())
    return path


def test_cleanup_orphans_alive_stale_recycled_and_foreign(tmp_path: Path) -> None:
    pid_dir = tmp_path / "state" / "local"
    dead_owner = _dead_identity()
    orphan = _sleeper(dict(os.environ, **{procs.MARKER_ENV: "m-orphan"}))
    unrelated = _sleeper()  # its pid is "recycled": the pid file claims it with another start time
    foreign_owner = _sleeper()  # a live other autotuner process
    foreign_engine = _sleeper(dict(os.environ, **{procs.MARKER_ENV: "m-foreign"}))
    procs_ = [orphan, unrelated, foreign_owner, foreign_engine]
    try:
        assert wait_for(lambda: all(procs.read_identity(p.pid) for p in procs_), 5)
        ident = {p.pid: identity(p.pid) for p in procs_}
        alive = _write_record(
            pid_dir,
            "alive",
            owner=dead_owner,
            pid=orphan.pid,
            start=ident[orphan.pid].start_time,
            marker="m-orphan",
        )
        stale = _write_record(
            pid_dir, "stale", owner=dead_owner, pid=dead_owner.pid, start=0, marker="m-gone"
        )
        recycled = _write_record(
            pid_dir,
            "recycled",
            owner=dead_owner,
            pid=unrelated.pid,
            start=ident[unrelated.pid].start_time + 1,
            marker="m-recycled",
        )
        foreign = _write_record(
            pid_dir,
            "foreign",
            owner=ident[foreign_owner.pid],
            pid=foreign_engine.pid,
            start=ident[foreign_engine.pid].start_time,
            marker="m-foreign",
        )
        (pid_dir / "garbage.json").write_text("{not json")

        stopped = procs.cleanup_orphans(pid_dir, grace_s=2.0)

        assert stopped == ["alive"]
        assert orphan.wait(timeout=5) == -signal.SIGTERM, "stopped politely first"
        assert unrelated.poll() is None, "a recycled pid is never killed"
        assert foreign_engine.poll() is None, "a live owner's engine is not an orphan"
        assert not alive.exists() and not stale.exists() and not recycled.exists()
        assert foreign.exists()
        assert not (pid_dir / "garbage.json").exists()
    finally:
        for p in procs_:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_dead_owners_leftover_name_is_reclaimed_on_deploy(backend: LocalBackend, tmp_path: Path) -> None:
    leftover = _sleeper(dict(os.environ, **{procs.MARKER_ENV: "m-left"}))
    try:
        assert wait_for(lambda: procs.read_identity(leftover.pid) is not None, 5)
        start = identity(leftover.pid).start_time
        _write_record(
            backend.pid_dir, "eng", owner=_dead_identity(), pid=leftover.pid, start=start, marker="m-left"
        )
        dep = deploy(backend, tmp_path, "serve")
        dep.wait_ready(30)
        assert leftover.wait(timeout=10) < 0
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


# ---------------------------------------------------------------------------------- the sim engine


def sim_plan(*flags: str) -> LaunchPlan:
    port = procs.free_port()
    argv = [sys.executable, "-m", "backends.sim", "--host", "127.0.0.1", "--port", str(port), *flags]
    return LaunchPlan(argv=argv, env={}, gpus=0, world_size=1, port=port, simulated=True)


def test_the_sim_engine_deploys_serves_and_stops(backend: LocalBackend, tmp_path: Path) -> None:
    dep = backend.deploy(
        sim_plan("--startup-seconds", "0.5"), name="sim", gpu_ids=[], log_path=tmp_path / "sim.log", labels={}
    )
    try:
        dep.wait_ready(60)
        assert http_status(dep.base_url + "/v1/models") == 200
    finally:
        dep.teardown()
    assert not dep.alive()
    assert http_status(dep.base_url + "/health", timeout=1.0) is None


def test_the_sim_engines_start_up_crash_is_classified(backend: LocalBackend, tmp_path: Path) -> None:
    dep = backend.deploy(
        sim_plan("--fault", "crash-at-start"),
        name="sim",
        gpu_ids=[],
        log_path=tmp_path / "sim.log",
        labels={},
    )
    with pytest.raises(EngineFailure) as info:
        dep.wait_ready(60)
    dep.teardown()
    assert info.value.kind == "startup_crash"
    assert info.value.exit_code == 1
    assert "crash-at-start" in info.value.log_tail
