"""The root of a spec file: :class:`TuningSpec` (``apiVersion``, ``kind``, ``metadata``,
``spec``) and :class:`SpecBody`, which joins the sections. :meth:`TuningSpec.generation` decides
when an edit starts a new study."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator

from specs.model.backend import Backend, LocalBackend
from specs.model.base import SloKey, StrictModel, dns_label
from specs.model.engine import EngineSpec, ModelRef
from specs.model.objectives import Objective, Placement, ReportSpec, SloBound
from specs.model.search import SearchSpec
from specs.model.workload import WorkloadSpec


class Metadata(StrictModel):
    name: str = Field(description="DNS-1123 label; names results/<name>/ and the site page.")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return dns_label(v, "name")


class SpecBody(StrictModel):
    suspend: bool = False
    placement: Placement | None = None
    model: ModelRef
    engine: EngineSpec
    backend: Backend = Field(default_factory=lambda: LocalBackend(kind="local"))
    search: SearchSpec = Field(default_factory=SearchSpec)
    workload: WorkloadSpec
    slo: dict[SloKey, SloBound] = Field(default_factory=dict)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="output_throughput_per_gpu", direction="maximize")],
        min_length=1,
        max_length=3,
    )
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("slo")
    @classmethod
    def _slo_keys(cls, v: dict[str, SloBound]) -> dict[str, SloBound]:
        for key, bound in v.items():
            if key == "error_rate" and bound.max > 1:
                raise ValueError("error_rate is a fraction: its max must be at most 1")
        return v

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, v: list[Objective]) -> list[Objective]:
        metrics = [o.metric for o in v]
        if len(set(metrics)) != len(metrics):
            raise ValueError("each objective metric may appear once")
        return v


class TuningSpec(StrictModel):
    """The root of a spec file."""

    api_version: Literal["autotuner/v1"] = Field(alias="apiVersion")
    kind: Literal["TuningSpec"]
    metadata: Metadata
    spec: SpecBody

    @property
    def name(self) -> str:
        return self.metadata.name

    def normalized(self) -> dict[str, Any]:
        """The spec with defaults filled in, in a stable JSON-able form."""
        return self.model_dump(mode="json", by_alias=True)

    def generation(self) -> str:
        """Hash of what defines the study. ``suspend``, ``placement``, ``report`` and metadata
        labels do not start a new study, so they are left out; ``search.pruning: false`` does (its
        PRUNED records are measured again, whole)."""
        data = self.normalized()
        body = dict(data["spec"])
        for key in ("suspend", "placement", "report"):
            body.pop(key, None)
        if body["search"].get("pruning") is True:
            # the default, left out so that the generations of specs older than the field stay
            body["search"] = {k: v for k, v in body["search"].items() if k != "pruning"}
        canonical = json.dumps({"name": data["metadata"]["name"], "spec": body}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
