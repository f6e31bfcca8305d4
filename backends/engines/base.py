"""The engine protocol and the per-engine flag tables.

An *engine* turns one experiment's configuration into the exact argument list the engine
accepts. A configuration is a flat ``dict`` keyed by search-axis name (see
:func:`specs.space.axes`): engine flags by their normalized name (``max-num-seqs``),
``quant.<field>`` / ``quant.preset`` and ``parallel.<field>`` / ``parallel.preset``.

Every engine has a flag table (``flags/<engine>.json``) copied from that engine's own source, with
the engine version it came from; the mapping is checked against it so that a command line never
carries a flag the engine does not know.

Two kinds of "no": a *spec* problem is located in the YAML (:meth:`Engine.check`, and
``backends.validation.check_spec`` for everything that needs the whole search space); a
*configuration* problem (:class:`Rejection`) says why one point of the space cannot run on this
engine, e.g. ``tp=2, dp=4`` with SGLang's dp-attention. Launching a rejected configuration raises
:class:`specs.errors.ConfigRejected` instead of producing a command line the engine would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Generic, Literal, Protocol, TypeVar

from specs.errors import Rejection, SpecProblem, UserError
from specs.loader import LoadedSpec
from specs.model import Scalar, TuningSpec

Config = dict[str, Scalar]
FlagType = Literal["int", "float", "str", "bool", "path", "json"]
#: ``optional``: ``--x``/``--no-x`` (argparse BooleanOptionalAction);
#: ``store_true``: bare ``--x`` when true, omitted when false;
#: ``store_false``: bare ``--x`` when false, omitted when true;
#: ``value``: ``--x true``/``--x false`` (pydantic-settings and click style)
BoolStyle = Literal["optional", "store_true", "store_false", "value"]


@dataclass(frozen=True)
class FlagInfo:
    name: str
    type: FlagType
    choices: tuple[Scalar, ...] | None = None
    bool_style: BoolStyle | None = None
    help: str = ""
    #: other spellings the engine accepts for the same option (``tp-size`` for SGLang's
    #: ``--tensor-parallel-size``); users may write any of them, the command line uses :attr:`name`
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class FlagTable:
    engine: str
    version: str
    source: str
    #: how flags are spelled on the command line: ``--max-num-seqs`` or ``--max_num_seqs``
    separator: Literal["-", "_"]
    flags: dict[str, FlagInfo] = field(default_factory=dict)
    #: caveats about where the table came from (e.g. the exact revision that was read)
    note: str = ""
    _by_key: dict[str, FlagInfo] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Built once: tables are immutable singletons (``load_flag_table`` caches them), so the
        # index never goes stale. Aliases index to the same FlagInfo as the canonical name.
        index: dict[str, FlagInfo] = {}
        for info in self.flags.values():
            for spelling in (info.name, *info.aliases):
                index[self.key(spelling)] = info
        object.__setattr__(self, "_by_key", index)  # frozen: the one write, at construction

    @staticmethod
    def key(name: str) -> str:
        """Normalized lookup key: dashes and underscores are the same to users."""
        return name.replace("_", "-").lower()

    def get(self, name: str) -> FlagInfo | None:
        return self._by_key.get(self.key(name))

    def names(self) -> list[str]:
        """Every spelling users may write (canonical names and aliases), for "did you mean"."""
        out: list[str] = []
        for info in self.flags.values():
            out += [info.name, *info.aliases]
        return out

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
            aliases=tuple(spec.get("aliases", ())),
        )
        for name, spec in data["flags"].items()
    }
    return FlagTable(
        engine=data["engine"],
        version=data["version"],
        source=data["source"],
        separator=data["separator"],
        flags=flags,
        note=data.get("note", ""),
    )


@dataclass
class LaunchPlan:
    """Everything a deploy backend needs to start one engine instance."""

    #: the full command line, an argument list (never a shell string)
    argv: list[str]
    #: extra environment with literal values
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
    #: what follows ``docker run IMAGE`` (or a pod's ``args``): argv without the executable prefix
    #: where the image's entrypoint already is the server (the original system doubled ``vllm
    #: serve``), the whole command where the image has no server entrypoint (SGLang, TRT-LLM)
    container_args: list[str] = field(default_factory=list)
    image: str | None = None
    notes: list[str] = field(default_factory=list)
    #: files the engine reads, by path relative to its working directory → content; the backend
    #: writes them into the experiment's working directory (and mounts it in containers) before
    #: starting the engine. TensorRT-LLM's ``--extra_llm_api_options`` YAML is one.
    files: dict[str, str] = field(default_factory=dict)
    #: secrets by reference: variable to set in the engine → variable of the daemon's environment
    #: to read it from; resolved by the backend at start, never written to a record
    env_from: dict[str, str] = field(default_factory=dict)
    #: the GPUs are simulated (the sim engine): count them for per-GPU metrics, lease none
    simulated: bool = False


Settings = TypeVar("Settings")


@dataclass
class BlockResult(Generic[Settings]):
    """What an engine-agnostic block of a configuration (``quantization``, ``parallel``) maps to
    on one engine: the resolved settings, the engine flags and LLM API arguments they become, and
    why the engine cannot honour them. :class:`backends.engines.common.TableEngine` merges these
    into its launch plan."""

    settings: Settings
    #: engine flags (canonical table names) written for the block
    flags: dict[str, Scalar] = field(default_factory=dict)
    #: LLM API arguments (TensorRT-LLM's ``--extra_llm_api_options`` file)
    llm_api: dict[str, Any] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)


class Engine(Protocol):
    """Contract of an engine mapping.

    * :meth:`launch` is pure: same spec and config, same argv. It never starts anything.
    * Every ``--flag`` in ``argv`` exists in :attr:`flags` (the contract test checks it).
    * :meth:`check` reports every problem of a spec for this engine, located; it never raises.
    * :meth:`config_problems` is empty exactly when :meth:`resolve` and :meth:`launch` succeed
      for a configuration of a spec that passed :meth:`check`; they raise :class:`specs.errors.ConfigRejected`
      otherwise. :meth:`gpus_for` never raises: it counts what the parallel settings ask for.
    """

    name: str
    flags: FlagTable

    def check(self, loaded: LoadedSpec) -> list[SpecProblem]: ...

    def config_problems(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> list[Rejection]:
        """Why this configuration cannot run (engine rules: parallel combinations, quantization
        support, a flag set twice); empty when it can."""
        ...

    def startup_problems(
        self, spec: TuningSpec, config: Mapping[str, Scalar], *, gpu: str | None = None
    ) -> list[Rejection]:
        """Why the engine would refuse this configuration when it starts, or could not fit it in
        memory (:mod:`backends.engines.startup`), each naming its source; ``gpu`` is a GPU name
        of the simulator's catalog when known. Empty when nothing predicts a failure."""
        ...

    def rule_flags(self) -> frozenset[str]:
        """Canonical names of engine flags that :meth:`config_problems` or :meth:`gpus_for` read
        (raw parallel flags, flags that quantization rules depend on)."""
        ...

    def resolve(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> dict[str, Scalar]:
        """The engine flags (normalized name → value) a configuration turns into, after presets."""
        ...

    def gpus_for(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> int: ...

    def launch(
        self, spec: TuningSpec, config: Mapping[str, Scalar], *, host: str, port: int
    ) -> LaunchPlan: ...

    def local_problem(self) -> UserError | None:
        """Why this engine cannot start as a process on this host (a missing optional extra or
        binary), checked before a study with the local backend starts; ``None`` when it can."""
        ...

    def executable_problem(self) -> str | None:
        """Why the engine's executable cannot be started as a process on this host right now
        (not on ``PATH``, its module not importable); ``None`` when it can. The experiment
        runner asks before every launch on the local backend and records an
        ``executable_missing`` failure (an environment failure: never cached), so installing
        the engine later makes the configuration run."""
        ...

    def missing_module(self, log_tail: str) -> bool:
        """The start-up log says the engine itself is not installed (``No module named``)."""
        ...

    def failure_detail(self, log_tail: str) -> str | None:
        """The engine's own words for why it stopped, read from its log tail the way this
        engine writes it; ``None`` to let the runner pick the last error-looking line."""
        ...
