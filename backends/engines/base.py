"""The engine protocol and the per-engine flag tables.

An *engine* turns one experiment's configuration into the exact argument list the engine
accepts. A configuration is a flat ``dict`` keyed by search-axis name (see
:func:`specs.space.axes`): engine flags by their normalized name (``max-num-seqs``),
``quant.<field>`` / ``quant.preset`` and ``parallel.<field>`` / ``parallel.preset``.

Every engine has a flag table (``flags/<engine>.json``) copied from that engine's own source, with
the engine version it came from; the mapping is checked against it so that a command line never
carries a flag the engine does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

from specs.errors import SpecProblem
from specs.loader import LoadedSpec
from specs.model import Scalar, TuningSpec

Config = dict[str, Scalar]
FlagType = Literal["int", "float", "str", "bool", "path", "json"]
#: ``optional``: ``--x``/``--no-x`` (argparse BooleanOptionalAction);
#: ``store_true``: bare ``--x`` when true, omitted when false;
#: ``value``: ``--x true``/``--x false`` (pydantic-settings and click style)
BoolStyle = Literal["optional", "store_true", "store_false", "value"]


@dataclass(frozen=True)
class FlagInfo:
    name: str
    type: FlagType
    choices: tuple[Scalar, ...] | None = None
    bool_style: BoolStyle | None = None
    #: for store_true flags that have a separate negative flag, e.g. SGLang ``disable-radix-cache``
    help: str = ""


@dataclass(frozen=True)
class FlagTable:
    engine: str
    version: str
    source: str
    #: how flags are spelled on the command line: ``--max-num-seqs`` or ``--max_num_seqs``
    separator: Literal["-", "_"]
    flags: dict[str, FlagInfo] = field(default_factory=dict)

    def key(self, name: str) -> str:
        """Normalized lookup key: dashes and underscores are the same to users."""
        return name.replace("_", "-").lower()

    def get(self, name: str) -> FlagInfo | None:
        return self._index().get(self.key(name))

    @cache  # noqa: B019  (tables are immutable singletons)
    def _index(self) -> dict[str, FlagInfo]:
        return {self.key(n): f for n, f in self.flags.items()}

    def spell(self, name: str) -> str:
        info = self.get(name)
        canonical = info.name if info else name
        return "--" + canonical


@cache
def load_flag_table(engine: str) -> FlagTable:
    """Read ``backends/engines/flags/<engine>.json``."""
    text = resources.files("backends.engines").joinpath("flags", f"{engine}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    flags = {
        name: FlagInfo(
            name=name,
            type=spec["type"],
            choices=tuple(spec["choices"]) if spec.get("choices") is not None else None,
            bool_style=spec.get("bool_style"),
            help=spec.get("help", ""),
        )
        for name, spec in data["flags"].items()
    }
    return FlagTable(
        engine=data["engine"], version=data["version"], source=data["source"], separator=data["separator"], flags=flags
    )


@dataclass
class LaunchPlan:
    """Everything a deploy backend needs to start one engine instance."""

    #: the full command line, an argument list (never a shell string)
    argv: list[str]
    #: extra environment (secrets stay references until the backend resolves them)
    env: dict[str, str]
    gpus: int
    world_size: int
    port: int
    #: paths polled for readiness, in order
    health_paths: tuple[str, ...] = ("/health", "/v1/models")
    #: POST endpoint that clears the prefix cache between load points, if the engine has one
    reset_cache_path: str | None = None
    #: name the OpenAI API must be called with
    served_model: str = ""
    #: argv without the executable prefix, for ``docker run IMAGE ...`` where the image's
    #: entrypoint already is the server (the original system doubled ``vllm serve``)
    container_args: list[str] = field(default_factory=list)
    image: str | None = None
    notes: list[str] = field(default_factory=list)


class Engine(Protocol):
    """Contract of an engine mapping.

    * :meth:`launch` is pure: same spec and config, same argv. It never starts anything.
    * Every ``--flag`` in ``argv`` exists in :attr:`flags` (the contract test checks it).
    * :meth:`check` reports every problem of a spec for this engine, located; it never raises.
    """

    name: str
    flags: FlagTable

    def check(self, loaded: LoadedSpec) -> list[SpecProblem]: ...

    def resolve(self, spec: TuningSpec, config: Config) -> dict[str, Scalar]:
        """The engine flags (normalized name → value) a configuration turns into, after presets."""
        ...

    def gpus_for(self, spec: TuningSpec, config: Config) -> int: ...

    def launch(self, spec: TuningSpec, config: Config, *, host: str, port: int) -> LaunchPlan: ...
