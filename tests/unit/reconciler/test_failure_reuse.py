"""Which failed experiments a later generation reuses: configuration failures only.

An environment failure (missing executable or image, missing model, too few GPUs, an
unschedulable pod, host trouble) says nothing about the configuration, so after the host is
fixed the same configuration must be measured again, never answered from the old record. The
executor is an in-process stand-in whose "environment" the test switches from broken to fixed
(the real runner's classification is tested on the sim in tests/integration/test_experiment_runner.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconciler.results import ResultsStore
from reconciler.study import Study
from reconciler.study.contract import Measurement
from specs import load_spec_text
from specs.errors import HostUnavailable
from specs.model import TuningSpec
from specs.records import (
    CONFIGURATION_FAILURES,
    ENVIRONMENT_FAILURES,
    FailureRecord,
    LoadPointRecord,
    failure_side,
)
from specs.space import Config

SPEC = """
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: reuse-test}
spec:
  model: {id: llama-3-8b}
  engine: {name: sim}
  search:
    strategy: grid
    maxExperiments: 2
    includeDefault: false
    parameters:
      max-num-seqs: {values: [8, 16]}
  workload:
    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 10}}
    load: {concurrency: [1]}
  slo:
    ttft_p90_ms: {max: MAX}
  objectives:
    - {metric: output_throughput, direction: maximize}
"""


def spec(bound: int) -> TuningSpec:
    return load_spec_text(SPEC.replace("MAX", str(bound))).spec


class Host:
    """Measures like an engine would, or fails with ``kind`` while the host is broken."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.broken = True
        self.calls = 0

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement:
        self.calls += 1
        if self.broken:
            return Measurement(
                state="FAILED", failure=FailureRecord(kind=self.kind, reason=f"{self.kind} here")
            )
        seqs = float(config["max-num-seqs"])  # type: ignore[arg-type]
        point = LoadPointRecord(
            load_kind="concurrency",
            load_value=1,
            metrics={"output_throughput": seqs * 10, "ttft_p90_ms": 50.0, "completed": 10},
        )
        return Measurement(state="COMPLETE", load_points=[point], engine_flags=dict(config))


def run(s: TuningSpec, root: Path, host: Host) -> list[str]:
    study = Study(
        s, ResultsStore(root, s.name), host, workload_fingerprint="fp", workload_info={}, engine_flags_of=dict
    )
    if host.broken and failure_side(host.kind) == "environment":
        # the study pauses at the first environment failure instead of spending its budget
        with pytest.raises(HostUnavailable, match=host.kind):
            study.run()
    else:
        study.run()
    gen = [r for r in ResultsStore(root, s.name).experiments() if r.generation == s.generation()]
    return sorted(r.state + (":reused" if r.reused_from else "") for r in gen)


def test_the_taxonomy_has_two_disjoint_sides() -> None:
    assert not CONFIGURATION_FAILURES & ENVIRONMENT_FAILURES
    assert failure_side("timeout") == "transient"


@pytest.mark.parametrize("kind", sorted(ENVIRONMENT_FAILURES))
def test_an_environment_failure_is_measured_again_once_the_host_is_fixed(tmp_path: Path, kind: str) -> None:
    host = Host(kind)
    assert run(spec(500), tmp_path, host) == ["FAILED"]
    host.broken = False
    # the next generation (an edited SLO) re-runs both configurations instead of reusing the failure
    assert run(spec(400), tmp_path, host) == ["COMPLETE", "COMPLETE"]
    assert host.calls == 3


@pytest.mark.parametrize("kind", ["executable_missing", "gpus_unavailable", "image_unavailable"])
def test_an_environment_failure_spends_no_budget_and_the_same_study_resumes(
    tmp_path: Path, kind: str
) -> None:
    host = Host(kind)
    s = spec(500)
    assert run(s, tmp_path, host) == ["FAILED"]
    assert run(s, tmp_path, host) == ["FAILED", "FAILED"], "still broken: paused again at once"
    host.broken = False
    # the same generation: the failed configuration is asked again, and the budget of 2 is whole
    assert run(s, tmp_path, host) == ["COMPLETE", "COMPLETE", "FAILED", "FAILED"]
    assert host.calls == 4


@pytest.mark.parametrize("kind", sorted(CONFIGURATION_FAILURES))
def test_a_configuration_failure_is_reused(tmp_path: Path, kind: str) -> None:
    host = Host(kind)
    assert run(spec(500), tmp_path, host) == ["FAILED", "FAILED"]
    host.broken = False
    assert run(spec(400), tmp_path, host) == ["FAILED:reused", "FAILED:reused"]
    assert host.calls == 2


def test_an_environment_failure_shows_as_a_condition_until_an_experiment_runs(tmp_path: Path) -> None:
    from reconciler.status import build_status

    s = spec(500)
    host = Host("executable_missing")
    run(s, tmp_path, host)
    records = ResultsStore(tmp_path, s.name).experiments()
    status = build_status(name=s.name, phase="running", message="", old=None, spec=s, records=records)
    degraded = status.condition("Degraded")
    assert degraded is not None and degraded.status == "True"
    assert degraded.reason == "EnvironmentFailure" and "executable_missing" in degraded.message
    host.broken = False
    run(spec(400), tmp_path, host)
    s2 = spec(400)
    records = ResultsStore(tmp_path, s.name).experiments()
    status = build_status(name=s.name, phase="running", message="", old=status, spec=s2, records=records)
    assert status.condition("Degraded") is None, "Degraded is present only while true"
