"""llama.cpp, two ways:

* ``python`` (default): llama-cpp-python's server, ``python -m llama_cpp.server --model FILE
  --host H --port P [--n_threads 4 --flash_attn true ...]``. Its options are pydantic fields
  turned into argparse options (``llama_cpp/server/cli.py``), spelled with underscores, and
  booleans take a value. It is an optional extra of this package (``autotuner[llamacpp]``), so it
  runs with the daemon's own Python.
* ``native``: the ``llama-server`` binary, ``llama-server --model FILE --host H --port P
  [--threads 4 --ctx-size 4096 ...]``, long option names; the ``ghcr.io/ggml-org/llama.cpp:server``
  image has it as entrypoint.

Neither has GPU parallelism here: every parallel setting other than 1 is refused. An experiment
needs no GPU unless layers are offloaded (``n_gpu_layers`` / ``n-gpu-layers`` other than 0), and
then one. Neither has a prefix-cache reset endpoint (llama-server's slot cache is per slot), and
llama-cpp-python has no ``/health`` (it answers 404), so readiness is ``/v1/models`` there: the
server loads the model before it binds its port, so an answer means the model is loaded.

Why :meth:`LlamacppEngine.failure_detail`: most start-up refusals come from llama.cpp's C code,
which logs one line (``llama_init_from_model: quantized V cache requires flash_attn to be
enabled``) and returns NULL; the Python side then raises a generic ``ValueError: Failed to
create llama_context``. The reason of a FAILED experiment must carry llama.cpp's own line, so
the log is read the way a person would: the engine's last complaint before the traceback.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Mapping
from typing import ClassVar

from backends.engines.common import Built, TableEngine
from backends.engines.values import check_value
from specs.errors import MissingExtraError, Rejection, SpecProblem, UserError
from specs.loader import LoadedSpec
from specs.model import Scalar, TuningSpec

#: a line that says what went wrong (llama.cpp's C side has no log levels in its text)
_COMPLAINT = re.compile(
    r"error|fail|invalid|requires|does not|cannot|can't|not supported|unsupported|unknown|expected|"
    r"exceed|too (large|small|many|long)|out of memory|not enough",
    re.IGNORECASE,
)
#: the last line of a Python traceback: ``ValueError: ...``, ``pydantic_core.…ValidationError: ...``
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b(:.*)?$")
#: ggml type ids of V caches that need no flash attention: f32, f16, bf16
UNQUANTIZED_CACHE_TYPES = (0, 1, 30)
_VALIDATION = re.compile(r"^\d+ validation errors? for \w+$")
_DETAIL_CHARS = 300


def failure_detail(log_tail: str) -> str | None:
    """llama.cpp's own words for why the engine stopped, from its log tail; ``None`` if none.

    In order: a ``GGML_ASSERT``/``GGML_ABORT`` (the C library aborted; no Python traceback
    follows); a settings validation error of llama-cpp-python (``n_batch: Input should be greater
    than or equal to 1``); else the last Python traceback, explained by the complaint lines
    llama.cpp printed just before it (the first of them: the root cause comes first, as in
    ``invalid magic characters`` → ``error loading model`` → ``failed to load model``).
    """
    # progress dots ("......") stay: they separate the loading chatter from what follows
    lines = [
        line.strip() for line in log_tail.splitlines() if line.strip() and not line.startswith("[autotuner")
    ]
    for line in reversed(lines):
        if "GGML_ASSERT" in line or "GGML_ABORT" in line:
            # drop the source path: "/…/ggml.c:1774: GGML_ASSERT(...) failed" → the assertion
            return _clip(line[line.find("GGML_") :])
    for i, line in enumerate(lines):
        if _VALIDATION.match(line):
            field_lines = lines[i + 1 : i + 3]
            return _clip(f"{line}: {': '.join(field_lines)}" if field_lines else line)
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    start = starts[-1]
    after = lines[start + 1 :]
    exception = next((line for line in reversed(after) if _EXCEPTION.match(line)), None)
    causes: list[str] = []
    for line in reversed(lines[:start]):
        # "... cannot be used with preferred buffer type AMX, using CPU instead" is a notice
        if not _COMPLAINT.search(line) or line.endswith("instead"):
            break
        causes.append(line)
    if causes and exception:
        return _clip(f"{causes[-1]} ({exception})")
    return _clip(causes[-1]) if causes else (_clip(exception) if exception else None)


#: llama-server's log lines: ``0.00.007.791 E llama_init_from_model: ...`` (time, level, text)
_SERVER_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+ ([A-Z]) (.*)$")
#: the component tag some of them carry before the function name: ``srv  load_model: ...``
_SERVER_TAG = re.compile(r"^[a-z]{2,5}\s+(?=\S+:)")


def server_failure_detail(log_tail: str) -> str | None:
    """llama-server's own words for why it stopped: a bad argument (``error while handling
    argument "--threads": stoi``), else the first error-level line of the log tail, the root cause
    of the chain of errors that follows it (with the last line of that chain when it says more,
    such as ``exiting due to model loading error``), else an aborted assertion."""
    lines = [
        line.strip() for line in log_tail.splitlines() if line.strip() and not line.startswith("[autotuner")
    ]
    for line in lines:
        if line.startswith("error while handling argument") or line.startswith("error: "):
            return _clip(line)
    errors = [
        _SERVER_TAG.sub("", m.group(2)).strip()
        for m in map(_SERVER_LINE.match, lines)
        if m and m.group(1) == "E"
    ]
    if errors:
        first, last = errors[0], errors[-1]
        return _clip(first if first == last else f"{first} ({last})")
    return failure_detail(log_tail)


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _offloads(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value != 0


class LlamacppEngine(TableEngine):
    """llama-cpp-python's server (variant ``python``)."""

    name = "llamacpp"
    title = "llama-cpp-python"
    table_name = "llamacpp"
    health_paths: ClassVar[tuple[str, ...]] = ("/v1/models",)
    #: an abort (GGML_ASSERT) would otherwise attach gdb and print hundreds of backtrace lines,
    #: pushing llama.cpp's own assertion out of the log tail that a FAILED record keeps
    base_env: ClassVar[Mapping[str, str]] = {"GGML_NO_BACKTRACE": "1"}
    #: lowest value each flag's pydantic field takes (``Field(ge=...)`` in settings.py). A lower
    #: value makes the server print the error *above* its whole help text and exit, so the log
    #: tail would not show it: it is refused here, located in the spec, instead
    minimums: ClassVar[Mapping[str, int]] = {
        "n_gpu_layers": -1,
        "main_gpu": 0,
        "n_ctx": 0,
        "n_batch": 1,
        "n_ubatch": 1,
        "n_threads_batch": -1,
        "last_n_tokens_size": 0,
    }
    #: flags set unless the spec sets them, with why. llama-cpp-python's server by default ends
    #: the running stream when another request arrives (interrupt_requests, meant for one chatting
    #: user): at any concurrency above 1 every stream but the last would stop after a token or
    #: two, and throughput would be measured on truncated requests
    defaults: ClassVar[Mapping[str, tuple[Scalar, str]]] = {
        "interrupt_requests": (
            False,
            "interrupt_requests false: a new request would otherwise end the running stream early",
        ),
    }
    gpu_layers_flag: ClassVar[str] = "n_gpu_layers"
    flash_flag: ClassVar[str] = "flash_attn"
    #: the V cache type flag the flash-attention rule reads; "" where the rule does not apply
    value_type_flag: ClassVar[str] = "type_v"
    alias_flag: ClassVar[str] = "model_alias"

    def __init__(self, variant: str | None = None) -> None:
        super().__init__(variant or "python")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server"]

    def container_command(self) -> list[str]:
        return ["python3", "-m", "llama_cpp.server"]

    def reserved(self) -> dict[str, str]:
        return {
            **super().reserved(),
            "model": "the GGUF file comes from spec.model.id",
            self.alias_flag: "set spec.model.servedName instead",
            "hf_pretrained_model_name_or_path": "set spec.model.tokenizer instead",
        }

    def _build(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> Built:
        built = super()._build(spec, config)
        # kvcache_dtype turns flash attention on itself (quantization.py); a type_v given directly
        # needs it given too, or llama.cpp refuses to create the context
        if self.value_type_flag and self.value_type_flag in built.raw:
            v_type, v_where = built.raw[self.value_type_flag]
            flash = built.raw.get(self.flash_flag)
            if v_type not in UNQUANTIZED_CACHE_TYPES and (flash is None or flash[0] is not True):
                built.rejections.append(
                    Rejection(
                        "llama.cpp quantizes the V cache only with flash attention: "
                        f"{self.spell(self.value_type_flag)} {v_type} needs "
                        f"{self.spell(self.flash_flag)} true",
                        (v_where, *((flash[1],) if flash else ())),
                    )
                )
        for name, (value, why) in self.defaults.items():
            if name not in built.flags:
                built.flags[name] = value
                built.notes.append(f"set by the autotuner: {why}")
        return built

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        if spec.spec.model.revision != "main":
            return [
                (
                    "model.revision",
                    "llama.cpp loads one GGUF file and cannot pin a revision: download it and give its "
                    "path as model.id",
                )
            ]
        return []

    def check(self, loaded: LoadedSpec) -> list[SpecProblem]:
        problems = super().check(loaded)
        body = loaded.spec.spec
        for name, value in body.engine.args.items():
            message = self._range_problem(name, value)
            if message:
                problems.append(loaded.problem(("spec", "engine", "args", name), message))
        for name, param in body.search.parameters.items():
            path = ("spec", "search", "parameters", name)
            if param.values is not None:
                for i, value in enumerate(param.values):
                    message = self._range_problem(name, value)
                    if message:
                        problems.append(loaded.problem((*path, "values", i), message))
            elif param.low is not None:
                message = self._range_problem(name, param.low)
                if message:
                    problems.append(loaded.problem((*path, "low"), message))
        return problems

    def _range_problem(self, name: str, value: Scalar) -> str | None:
        info = self.flags.get(name)
        if info is None or check_value(info, value) is not None:
            return None  # unknown or mistyped: the table check reports it
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        shown = self.spell(info.name)
        if info.name == "n_threads" and (value == 0 or value < -1):
            return f"{shown} must be at least 1, or -1 for every CPU thread (got {value})"
        low = self.minimums.get(info.name)
        if low is not None and value < low:
            return f"{shown} must be at least {low} (got {value}); {self.title} refuses it at start-up"
        return None

    def extra_rule_flags(self) -> frozenset[str]:
        return frozenset(f for f in (self.gpu_layers_flag, self.flash_flag, self.value_type_flag) if f)

    def gpus(self, built: Built) -> int:
        value = built.raw.get(self.gpu_layers_flag, (0, ""))[0]
        return 1 if _offloads(value) else 0

    def local_problem(self) -> UserError | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return MissingExtraError("llama_cpp", "llamacpp")
        return None

    def failure_detail(self, log_tail: str) -> str | None:
        """llama.cpp's own reason for a failed start or crash (see :func:`failure_detail`)."""
        return failure_detail(log_tail)

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model"), model.id]
        if model.served_name:
            out += [self.spell(self.alias_flag), model.served_name]
        if model.tokenizer:
            out += [self.spell("hf_pretrained_model_name_or_path"), model.tokenizer]
        return out


class LlamaServerEngine(LlamacppEngine):
    """The native ``llama-server`` binary (variant ``native``)."""

    title = "llama-server"
    table_name = "llamacpp-native"
    # llama-server's own parser reports bad values in one line that the log tail keeps
    minimums: ClassVar[Mapping[str, int]] = {}
    #: llama-server serves requests in parallel slots and never interrupts one for another
    defaults: ClassVar[Mapping[str, tuple[Scalar, str]]] = {}
    health_paths: ClassVar[tuple[str, ...]] = ("/health", "/v1/models")
    gpu_layers_flag = "n-gpu-layers"
    flash_flag = "flash-attn"
    # llama-server's flash attention defaults to auto, which turns it on where a quantized V cache
    # needs it: no rule to apply
    value_type_flag = ""
    alias_flag = "alias"

    def __init__(self, variant: str | None = None) -> None:
        super().__init__("native")

    def command(self) -> list[str]:
        return ["llama-server"]

    def container_command(self) -> list[str]:
        return []

    def reserved(self) -> dict[str, str]:
        return {
            "host": "the host is chosen by the deploy backend for each experiment; remove it",
            "port": "the port is chosen by the autotuner for each experiment; remove it",
            "model": "the GGUF file comes from spec.model.id",
            self.alias_flag: "set spec.model.servedName instead",
        }

    def local_problem(self) -> UserError | None:
        if shutil.which("llama-server") is None:
            return UserError(
                "engine.variant native runs the llama-server binary, which is not on the daemon's PATH",
                hint="install llama.cpp (a release from https://github.com/ggml-org/llama.cpp/releases, "
                "or build it) and put llama-server on PATH, or use variant: python with "
                "pip install 'autotuner[llamacpp]'",
            )
        return None

    def model_problems(self, spec: TuningSpec) -> list[tuple[str, str]]:
        out = super().model_problems(spec)
        if spec.spec.model.tokenizer:
            out.append(
                ("model.tokenizer", "llama-server uses the GGUF's own tokenizer: remove model.tokenizer")
            )
        return out

    def failure_detail(self, log_tail: str) -> str | None:
        """llama-server's own reason (see :func:`server_failure_detail`)."""
        return server_failure_detail(log_tail)

    def model_argv(self, spec: TuningSpec) -> list[str]:
        model = spec.spec.model
        out = [self.spell("model"), model.id]
        if model.served_name:
            out += [self.spell(self.alias_flag), model.served_name]
        return out
