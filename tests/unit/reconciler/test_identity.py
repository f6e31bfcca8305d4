"""The identity of a measurement: the configuration hash changes with what changes the
measurement, and with nothing else (a measured configuration is reused by its hash)."""

from __future__ import annotations

from reconciler.study.identity import config_hash
from specs import load_spec_text
from specs.model import TuningSpec

SPEC = """
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: identity-test}
spec:
  model: {id: llama-3-8b}
  engine: {name: sim}
  search:
    strategy: grid
    maxExperiments: 2
    parameters:
      max-num-seqs: {values: [8, 16]}
  workload:
    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 10}}
    load: {concurrency: [1, 4]}
    EXTRA
  objectives:
    - {metric: output_throughput, direction: maximize}
"""


def spec(extra: str = "") -> TuningSpec:
    return load_spec_text(SPEC.replace("EXTRA", extra)).spec


FLAGS = {"max-num-seqs": 8}


def test_specs_differing_only_in_repeats_hash_differently() -> None:
    once, thrice = spec("repeats: 1"), spec("repeats: 3")
    assert once.spec.workload.repeats == 1 and thrice.spec.workload.repeats == 3
    assert config_hash(once, FLAGS, "fp") != config_hash(thrice, FLAGS, "fp")
    assert config_hash(spec("repeats: 3"), FLAGS, "fp") != config_hash(spec("repeats: 5"), FLAGS, "fp")


def test_equal_specs_hash_the_same() -> None:
    assert config_hash(spec("repeats: 3"), FLAGS, "fp") == config_hash(spec("repeats: 3"), FLAGS, "fp")
    # the default is one repeat: saying so does not make it another measurement, so records
    # measured before ``repeats`` existed keep their identity and stay reusable
    assert config_hash(spec(), FLAGS, "fp") == config_hash(spec("repeats: 1"), FLAGS, "fp")


def test_the_hash_follows_flags_and_workload() -> None:
    base = config_hash(spec(), FLAGS, "fp")
    assert config_hash(spec(), {"max-num-seqs": 16}, "fp") != base
    assert config_hash(spec(), FLAGS, "other-workload") != base
