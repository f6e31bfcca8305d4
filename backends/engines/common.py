"""What the five engine mappings share: one pipeline from a configuration to a command line.

``_build`` is the single path every public method goes through, so that ``plan`` shows exactly
the argv that ``run`` starts and ``check_spec`` rejects exactly what ``launch`` would refuse:

1. engine flags: fixed ``engine.args`` first, then the configuration's flag axes on top, each
   looked up in the flag table (aliases folded to the canonical name), type- and choice-checked;
2. parallelism (:mod:`backends.engines.parallel`): preset, fields, raw parallel flags, rules;
3. quantization (:mod:`backends.engines.quantization`): preset, fields, the engine's mapper;
4. the merged flags in a fixed order (parallel, quantization, then the rest by name), so that the
   same configuration always gives the same argv whatever order its dict came in.

Subclasses only say how their command starts (executable, model, host and port), which flags
the autotuner owns, and what their model block cannot express.
"""

from __future__ import annotations

import abc
import importlib.util
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from backends.engines import parallel, quantization
from backends.engines.base import FlagTable, LaunchPlan, load_flag_table
from backends.engines.flag_checks import check_flags
from backends.engines.values import check_value, render_flag
from specs.errors import ConfigRejected, Rejection, SpecProblem, UserError
from specs.loader import LoadedSpec
from specs.model import EnvFrom, Scalar, TuningSpec
from specs.suggest import closest


@dataclass
class Built:
    """One configuration, mapped."""

    #: canonical flag name → value, in command-line order
    flags: dict[str, Scalar]
    llm_api: dict[str, Any]
    parallel: parallel.ParallelSettings
    #: engine rules the configuration breaks (see :meth:`TableEngine.config_problems`)
    rejections: list[Rejection] = field(default_factory=list)
    #: flag-level problems: unknown, reserved or badly typed flags, model fields the engine lacks
    invalid: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, tuple[Scalar, str]] = field(default_factory=dict)


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class TableEngine(abc.ABC):
    """Base of the engine mappings; see the module docstring."""

    name: str
    #: how messages name the engine ("vLLM")
    title: ClassVar[str]
    #: flags/<table_name>.json
    table_name: ClassVar[str]
    reset_cache_path: ClassVar[str | None] = None
    health_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    #: environment every instance gets
    base_env: ClassVar[Mapping[str, str]] = {}
    base_notes: ClassVar[tuple[str, ...]] = ()
    simulated: ClassVar[bool] = False
    #: the engine's official image when the spec names none (docker hub / NGC), ``{tag}`` from
    #: :meth:`image_tag`; ``None``: no official image, the spec must give ``engine.image``
    image_template: ClassVar[str | None] = None
    #: where TensorRT-LLM's LLM API options go, relative to the engine's working directory
    LLM_API_FILE: ClassVar[str] = "extra_llm_api_options.yaml"

    def __init__(self, variant: str | None = None) -> None:
        self.variant = variant
        self.flags: FlagTable = load_flag_table(self.table_name)

    # ----------------------------------------------------------------------------------------- hooks

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The executable and its subcommand on the host (``["vllm", "serve"]``)."""

    @abc.abstractmethod
    def container_command(self) -> list[str]:
        """What precedes the arguments after ``docker run IMAGE``: empty where the image's
        entrypoint is the server."""

    @abc.abstractmethod
    def model_argv(self, spec: TuningSpec) -> list[str]:
        """Model, tokenizer, revision and served name, as this engine takes them."""

    def reserved(self) -> dict[str, str]:
        """Flags the autotuner sets itself → what to write instead."""
        return {
            "host": "the host is chosen by the deploy backend for each experiment; remove it",
            "port": "the port is chosen by the autotuner for each experiment; remove it",
        }

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        """(``model.<field>``, message) for model settings this engine cannot express."""
        return []

    def extra_rule_flags(self) -> frozenset[str]:
        return frozenset()

    def gpus(self, built: Built) -> int:
        return parallel.gpus(self.name, built.parallel)

    def served_model(self, spec: TuningSpec) -> str:
        return spec.spec.model.served_name or spec.spec.model.id

    def image_tag(self, version: str | None) -> str:
        """The official images are tagged ``v<version>`` (vLLM, SGLang)."""
        return f"v{version}" if version else "latest"

    def image(self, spec: TuningSpec) -> str | None:
        """``engine.image``, else the official image of ``engine.version``."""
        if spec.spec.engine.image:
            return spec.spec.engine.image
        if self.image_template is None:
            return None
        return self.image_template.format(tag=self.image_tag(spec.spec.engine.version))

    def local_problem(self) -> UserError | None:
        """See :meth:`backends.engines.base.Engine.local_problem`; engines that ship as an
        optional extra or a binary override it (llama.cpp)."""
        return None

    def executable_problem(self) -> str | None:
        """See :meth:`backends.engines.base.Engine.executable_problem`: the command's program
        must be on ``PATH`` (or an existing file), and a module run with ``-m`` by the daemon's
        own interpreter must be importable. A module run by *another* interpreter (SGLang's
        ``python3 -m sglang.launch_server``, in the engine's own environment) cannot be looked
        up without starting it; its ``No module named`` at start-up is recognised instead
        (:meth:`missing_module`)."""
        argv = self.command()
        program = argv[0]
        if shutil.which(program) is None:
            return f"{self.title}'s executable {program!r} is not on the daemon's PATH"
        module = self._module()
        if module is not None and program == sys.executable:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:  # a parent package is missing
                found = False
            if not found:
                return f"{self.title}'s module {module!r} is not installed in the daemon's Python"
        return None

    def missing_module(self, log_tail: str) -> bool:
        """The engine's log says its own module could not be imported (``No module named 'x'``
        for the top package of the ``-m`` module): the engine is not installed, whatever the flags."""
        module = self._module()
        if module is None:
            return False
        top = module.split(".")[0]
        return f"No module named '{top}'" in log_tail or f"No module named {top}" in log_tail

    def _module(self) -> str | None:
        argv = self.command()
        return argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None

    def failure_detail(self, log_tail: str) -> str | None:
        """See :meth:`backends.engines.base.Engine.failure_detail`; engines with a known log
        shape override it (llama.cpp)."""
        return None

    # ----------------------------------------------------------------------------------------- helpers

    def spell(self, name: str) -> str:
        return self.flags.spell(name)

    def endpoint_argv(self, host: str, port: int) -> list[str]:
        return [self.spell("host"), host, self.spell("port"), str(port)]

    def _flag(self, name: str, value: Scalar) -> list[str]:
        info = self.flags.get(name)
        if info is None:  # a mapping emitting a flag its own table lacks is a bug, not a user error
            raise KeyError(f"{self.name}: flag {name!r} is not in flags/{self.table_name}.json")
        return render_flag(self.flags, info, value)

    def unknown_message(self, name: str) -> str:
        best = closest(name, self.flags.names())
        hint = f"; did you mean {best!r}?" if best else ""
        return f"{name!r} is not a flag of {self.title} {self.flags.version}{hint}"

    def reserved_message(self, canonical: str) -> str:
        return f"{self.spell(canonical)} cannot be set here: {self.reserved()[canonical]}"

    def startup_problems(
        self, spec: TuningSpec, config: Mapping[str, Scalar], *, gpu: str | None = None
    ) -> list[Rejection]:
        built = self._build(spec, config)
        if built.invalid or built.rejections:
            return []
        return self.startup_rules(spec, built.flags, gpu)

    def default_values(self, spec: TuningSpec) -> dict[str, Scalar]:
        """The engine's own defaults by flag or axis name, where they do not depend on the host:
        the baseline is then told to the sampler as that point of the space. Empty (unknown)
        for engines whose defaults vary with the GPU or version (vLLM, SGLang, TensorRT-LLM)."""
        return {}

    def startup_rules(
        self, spec: TuningSpec, flags: Mapping[str, Scalar], gpu: str | None
    ) -> list[Rejection]:
        """This engine's start-up rules on the resolved flags (see :mod:`backends.engines.startup`)."""
        return []

    def rule_flags(self) -> frozenset[str]:
        names: set[str] = set(self.extra_rule_flags())
        for flags in parallel.owned_flags(self.name).values():
            names.update(flags)
        for flags in quantization.owned_flags(self.name, self.variant).values():
            names.update(flags)
        return frozenset(names)

    # ----------------------------------------------------------------------------------------- the pipeline

    def _build(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> Built:
        invalid: list[Rejection] = []
        raw: dict[str, tuple[Scalar, str]] = {}
        reserved = self.reserved()

        def add(name: str, value: Scalar, origin: str) -> None:
            info = self.flags.get(name)
            if info is None:
                invalid.append(Rejection(self.unknown_message(name), (origin,)))
                return
            if info.name in reserved:
                invalid.append(Rejection(self.reserved_message(info.name), (origin,)))
                return
            problem = check_value(info, value)
            if problem is not None:
                invalid.append(Rejection(problem, (origin,)))
                return
            if info.name in raw and raw[info.name][1].startswith("engine.args.") == origin.startswith(
                "engine.args."
            ):
                invalid.append(
                    Rejection(
                        f"{self.spell(info.name)} is given twice ({raw[info.name][1]} and {origin})",
                        (origin,),
                    )
                )
                return
            raw[info.name] = (value, origin)

        for name, value in spec.spec.engine.args.items():
            add(name, value, f"engine.args.{name}")
        quant_given: dict[str, Scalar] = {}
        par_given: dict[str, Scalar] = {}
        for key, value in config.items():
            if key.startswith("quant."):
                quant_given[key.removeprefix("quant.")] = value
            elif key.startswith("parallel."):
                par_given[key.removeprefix("parallel.")] = value
            else:
                add(key, value, key)
        for where, message in self.model_problems(spec):
            invalid.append(Rejection(message, (where,)))

        par = parallel.resolve(self.name, par_given, raw)
        quant = quantization.resolve(
            quant_given,
            quantization.QuantContext(engine=self.name, table=self.flags, raw=raw, variant=self.variant),
        )
        flags: dict[str, Scalar] = {}
        flags.update(par.flags)
        flags.update(quant.flags)
        for name in sorted(raw):
            flags.setdefault(name, raw[name][0])
        rejections = [*par.rejections, *quant.rejections]
        llm_api = _deep_merge(par.llm_api, quant.llm_api)
        if llm_api:
            if "extra_llm_api_options" in raw:
                rejections.append(
                    Rejection(
                        f"{self.spell('extra_llm_api_options')} is given directly, but "
                        f"{', '.join(sorted(llm_api))} need the autotuner's own LLM API file: move your "
                        "options into the spec or drop them",
                        (raw["extra_llm_api_options"][1],),
                    )
                )
            else:
                flags["extra_llm_api_options"] = self.LLM_API_FILE
        return Built(
            flags=flags,
            llm_api=llm_api,
            parallel=par.settings,
            rejections=rejections,
            invalid=invalid,
            notes=[*self.base_notes, *quant.notes],
            raw=raw,
        )

    def _strict(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> Built:
        built = self._build(spec, config)
        if built.invalid or built.rejections:
            raise ConfigRejected(self.name, [*built.invalid, *built.rejections])
        return built

    # ----------------------------------------------------------------------------------------- protocol

    def config_problems(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> list[Rejection]:
        return self._build(spec, config).rejections

    def resolve(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> dict[str, Scalar]:
        return dict(self._strict(spec, config).flags)

    def gpus_for(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> int:
        return self.gpus(self._build(spec, config))

    def launch(self, spec: TuningSpec, config: Mapping[str, Scalar], *, host: str, port: int) -> LaunchPlan:
        built = self._strict(spec, config)
        args = self.model_argv(spec) + self.endpoint_argv(host, port)
        for name, value in built.flags.items():
            args += self._flag(name, value)
        env = dict(self.base_env)
        env_from: dict[str, str] = {}
        for key, setting in spec.spec.engine.env.items():
            if isinstance(setting, EnvFrom):
                env_from[key] = setting.from_env
            else:
                env[key] = setting
        files = {}
        if built.llm_api:
            files[self.LLM_API_FILE] = yaml.safe_dump(built.llm_api, sort_keys=True, default_flow_style=False)
        gpus = self.gpus(built)
        return LaunchPlan(
            argv=self.command() + args,
            env=env,
            gpus=gpus,
            world_size=max(gpus, 1),
            port=port,
            health_paths=self.health_paths,
            reset_cache_path=self.reset_cache_path,
            served_model=self.served_model(spec),
            container_args=self.container_command() + args,
            image=self.image(spec),
            notes=list(dict.fromkeys(built.notes)),
            files=files,
            env_from=env_from,
            simulated=self.simulated,
        )

    # ----------------------------------------------------------------------------------------- static checks

    def check(self, loaded: LoadedSpec) -> list[SpecProblem]:
        """Flag-level problems of the spec, located (:mod:`backends.engines.flag_checks`);
        combination rules are checked over the whole search space by
        ``backends.validation.check_spec``."""
        return check_flags(self, loaded)


__all__ = ["Built", "TableEngine"]
