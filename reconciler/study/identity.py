"""The identity of a measurement, and which earlier records answer for a configuration.

* A configuration is identified by a hash of everything that affects the measurement (resolved
  engine flags, engine, model, backend, workload fingerprint, load, the request settings and the
  repeat count); one measured before — in this or an earlier generation — is reused, not re-run.
  The hash reads the *resolved* engine flags, so two spellings of one engine configuration are
  one measurement.
* ``repeats`` enters the key only above 1: one repeat is what every record measured before the
  setting existed was, and keeping its key unchanged keeps those records reusable.
* A measurement, or a failure on the *configuration* side of the taxonomy
  (:func:`specs.records.failure_side`), is reused like a measurement. Environment failures
  (missing executable, too few GPUs, ...) and transient ones (timeouts) are not: fixing the host,
  or plain luck, must lead to a new measurement. An environment failure also spends no budget
  and is kept out of this generation's sampler history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from specs.model import TuningSpec
from specs.records import ExperimentRecord, failure_side


def config_hash(spec: TuningSpec, engine_flags: dict[str, Any], workload_fingerprint: str) -> str:
    body = spec.spec
    wl = body.workload
    key: dict[str, Any] = {
        "engine": {
            "name": body.engine.name,
            "version": body.engine.version,
            "image": body.engine.image,
            "variant": body.engine.variant,
        },
        "model": body.model.model_dump(mode="json"),
        "backend": body.backend.kind,
        "flags": engine_flags,
        "workload": workload_fingerprint,
        "load": wl.load.model_dump(mode="json"),
        "requests": [wl.requests_per_level, wl.warmup_requests, wl.api, wl.ignore_eos],
    }
    if wl.repeats > 1:
        key["repeats"] = wl.repeats
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def host_failed(r: ExperimentRecord) -> bool:
    """The experiment failed on the environment's side: it counts for nothing (budget, sampler
    history of this generation, reuse)."""
    return r.state == "FAILED" and r.failure is not None and failure_side(r.failure.kind) == "environment"


def reusable(r: ExperimentRecord) -> bool:
    """A record that answers for its configuration in any later generation (module docstring)."""
    if r.reused_from is not None:
        return False
    if r.state == "COMPLETE":
        return True
    return r.state == "FAILED" and r.failure is not None and failure_side(r.failure.kind) == "configuration"


@dataclass
class Known:
    """The configurations measured so far, by hash: ``reusable`` over every generation (a
    configuration found here is answered from its record), ``generation`` this generation's
    counted records (one proposed again is a duplicate), ``inflight`` the ones running now."""

    reusable: dict[str, ExperimentRecord] = field(default_factory=dict)
    generation: dict[str, ExperimentRecord] = field(default_factory=dict)
    inflight: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, every: Iterable[ExperimentRecord], counted: Iterable[ExperimentRecord]) -> Known:
        known = cls()
        for r in every:
            if reusable(r):
                known.reusable.setdefault(r.config_hash, r)
        known.generation = {r.config_hash: r for r in counted}
        return known

    def seen(self, chash: str) -> bool:
        """Measured in this generation already, or running now."""
        return chash in self.generation or chash in self.inflight

    def hashes(self) -> set[str]:
        return set(self.generation) | self.inflight

    def add(self, r: ExperimentRecord) -> None:
        if reusable(r):
            self.reusable.setdefault(r.config_hash, r)
        self.generation.setdefault(r.config_hash, r)
