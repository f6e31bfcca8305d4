"""The TuningSpec schema (``apiVersion: autotuner/v1``, ``kind: TuningSpec``).

Pydantic models at the edge (YAML in), plain data inside. Every model forbids unknown fields; the
loader turns those errors into "did you mean" hints. camelCase keys follow Kubernetes style; the
engine-agnostic ``quantization``/``parallel`` blocks and SLO metric names keep their snake_case
vocabulary because that is how users already know them.

Cross-engine rules (which flags exist, which dtypes an engine accepts, parallel combinations) are
not here: they need the engines' flag tables and live in ``backends.engines``.

One module per section of the spec (:mod:`~specs.model.engine`, :mod:`~specs.model.backend`,
:mod:`~specs.model.search`, :mod:`~specs.model.workload`, :mod:`~specs.model.objectives`) over
the shared value types of :mod:`~specs.model.base`, joined by :mod:`~specs.model.spec`. This
package re-exports their public names: the schema is one public API, imported by every layer
as ``from specs.model import TuningSpec, ...``.
"""

from __future__ import annotations

from specs.model.backend import (
    Backend,
    DockerBackend,
    Gpus,
    KubeResources,
    KubernetesBackend,
    LocalBackend,
    Toleration,
)
from specs.model.base import (
    API_VERSION,
    DNS1123_LABEL,
    ENGINES,
    ENV_NAME,
    KIND,
    MAX_NUMBER,
    MAX_SEED,
    MAX_STRING,
    PARALLEL_BOOL_FIELDS,
    PARALLEL_FIELDS,
    QUANT_FIELDS,
    QUANT_PRESETS,
    BoundedScalar,
    EngineName,
    FiniteFloat,
    FlagName,
    Number,
    Scalar,
    SloKey,
    Strategy,
)
from specs.model.engine import EngineSpec, EnvFrom, ModelRef
from specs.model.objectives import Objective, Placement, ReportSpec, SloBound
from specs.model.search import ParallelSpec, ParamSpec, QuantizationSpec, SearchSpec
from specs.model.spec import Metadata, SpecBody, TuningSpec
from specs.model.workload import (
    CapacitySearch,
    Dataset,
    FileDataset,
    LengthDist,
    LoadSpec,
    SyntheticDataset,
    WorkloadSpec,
)

__all__ = [
    "API_VERSION",
    "DNS1123_LABEL",
    "ENGINES",
    "ENV_NAME",
    "KIND",
    "MAX_NUMBER",
    "MAX_SEED",
    "MAX_STRING",
    "PARALLEL_BOOL_FIELDS",
    "PARALLEL_FIELDS",
    "QUANT_FIELDS",
    "QUANT_PRESETS",
    "Backend",
    "BoundedScalar",
    "CapacitySearch",
    "Dataset",
    "DockerBackend",
    "EngineName",
    "EngineSpec",
    "EnvFrom",
    "FileDataset",
    "FiniteFloat",
    "FlagName",
    "Gpus",
    "KubeResources",
    "KubernetesBackend",
    "LengthDist",
    "LoadSpec",
    "LocalBackend",
    "Metadata",
    "ModelRef",
    "Number",
    "Objective",
    "ParallelSpec",
    "ParamSpec",
    "Placement",
    "QuantizationSpec",
    "ReportSpec",
    "Scalar",
    "SearchSpec",
    "SloBound",
    "SloKey",
    "SpecBody",
    "Strategy",
    "SyntheticDataset",
    "Toleration",
    "TuningSpec",
    "WorkloadSpec",
]
