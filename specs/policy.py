"""The operator policy: what a spec author may ask of this host (docs/security.md).

After Argo CD's ``AppProject`` (source repos, destinations and resource kinds a team may use) and
Flux's multi-tenancy lockdown (no cross-namespace references, a default service account): the
person who can push a spec is not the person who runs the daemon, so everything a spec could use
to reach beyond its own experiment is closed by default and opened only by the operator, in one
YAML file given with ``--policy FILE`` (or ``AUTOTUNER_POLICY``):

.. code-block:: yaml

    engines: [vllm, sglang, sim]          # engines a spec may choose (default: all)
    images: ["vllm/vllm-openai[:@]*", "registry.example.com/*"]
    env: [MY_ENGINE_KNOB]                 # variable names (globs) a spec may set, besides the defaults
    secretEnv: [HF_TOKEN]                 # daemon variables ``fromEnv`` may reference
    passEnv: [NCCL_SOCKET_IFNAME]         # daemon variables every engine gets unchanged
    allowLoaderEnv: false                 # PATH, LD_*, PYTHON*, HF_ENDPOINT, ... in engine.env
    allowRemoteCode: false                # trust-remote-code style flags
    dataRoots: [/data/datasets]           # folders datasets and local models may come from
    volumeRoots: [/data/hf-cache]         # host folders docker volumes may mount
    namespaces: [llm-tuning]              # kubernetes namespaces experiments may run in
    serviceAccounts: [tuner]              # kubernetes service accounts a spec may name
    volumeClaims: [hf-cache]              # PersistentVolumeClaims a spec may mount (modelCachePvc)
    maxParallelism: 4
    maxConcurrency: 1024
    maxRequestRate: 1000
    maxRequestsPerLevel: 100000

Why a frozen dataclass here and not a pydantic model in the reconciler: backends (the engine
environment, docker volumes) and the reconciler (validation) both need it, and ``specs`` is the
package both may import. The file itself is parsed with pydantic (strict, unknown keys refused,
located errors from the spec loader's YAML walk), so a typo in the policy is an error at start,
never a silently open default.

A violation is a located user error of the *spec* (``file:line: field: message``), naming the
policy setting that would allow it: the spec is Stalled and the other specs go on.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from specs.errors import SpecError, SpecProblem, UnsafePath, UserError
from specs.loader import parse_yaml
from specs.model import ENGINES, EnvFrom, FileDataset, TuningSpec
from specs.paths import inside_roots
from specs.suggest import did_you_mean

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_SPEC_ENV",
    "LOADER_ENV",
    "POLICY_ENV_VAR",
    "REMOTE_CODE_FLAGS",
    "Policy",
    "check_host_path",
    "check_policy",
    "is_loader_var",
    "load_policy",
    "policy_from_env",
]

POLICY_ENV_VAR = "AUTOTUNER_POLICY"
MAX_POLICY_BYTES = 256 * 1024

#: the official images of each engine, by tag or digest, and anything built locally
DEFAULT_IMAGES: tuple[str, ...] = (
    "vllm/vllm-openai",
    "vllm/vllm-openai[:@]*",
    "docker.io/vllm/vllm-openai[:@]*",
    "lmsysorg/sglang",
    "lmsysorg/sglang[:@]*",
    "docker.io/lmsysorg/sglang[:@]*",
    "nvcr.io/nvidia/tensorrt-llm/release[:@]*",
    "ghcr.io/ggml-org/llama.cpp[:@]*",
    "localhost/*",
)

#: variable names a spec may set in ``engine.env`` without the operator's say: the engines' own
#: tuning knobs and the usual thread/allocator settings. Loader variables are refused even when
#: a pattern here would match them (``CUDA_VISIBLE_DEVICES`` belongs to the GPU lease).
DEFAULT_SPEC_ENV: tuple[str, ...] = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "VLLM_*",
    "SGLANG_*",
    "SGL_*",
    "TRTLLM_*",
    "TLLM_*",
    "LLAMA_*",
    "NCCL_*",
    "CUDA_*",
    "PYTORCH_*",
    "TORCH_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

#: variables that decide which code a process loads or where it talks to: a spec setting any of
#: them can run its own committed code (``PYTHONPATH`` + ``sitecustomize.py``, ``PATH`` + a fake
#: ``vllm``, ``LD_PRELOAD``) or redirect downloads (``HF_ENDPOINT``). Matched case-insensitively.
LOADER_ENV: tuple[str, ...] = (
    "PATH",
    "LD_*",
    "DYLD_*",
    "PYTHON*",
    "VIRTUAL_ENV",
    "CONDA_*",
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE",
    "XDG_*",
    "HOME",
    "TMPDIR",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "IFS",
    "PERL5*",
    "PERLLIB",
    "RUBY*",
    "NODE_OPTIONS",
    "NODE_PATH",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "MALLOC_*",
    "*_PLUGIN*",
    "*PROXY",
    "SSL_CERT_*",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_*",
    "AUTOTUNER_*",
    "TRITON_*",
    "TORCHINDUCTOR_*",
    "TORCH_EXTENSIONS_DIR",
    "*_CACHE_DIR",
    "*_CACHE_ROOT",
    "*_CONFIG_ROOT",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
)

#: daemon variables ``fromEnv`` may reference by default
DEFAULT_SECRET_ENV: tuple[str, ...] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

#: flags that make an engine import code shipped with the model (normalized: ``_`` → ``-``)
REMOTE_CODE_FLAGS: frozenset[str] = frozenset({"trust-remote-code"})

_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*(@sha256:[0-9a-f]{64})?$")


def is_loader_var(name: str) -> bool:
    """True when ``name`` is a loader variable (see :data:`LOADER_ENV`)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in LOADER_ENV)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Policy:
    """What the operator allows specs to do on this host; the defaults are the safe ones.

    Paths in ``data_roots`` and ``volume_roots`` are absolute. The repository checkout is always
    a data root (a spec may read its own committed files); no host folder is a volume root unless
    listed.
    """

    engines: tuple[str, ...] = ENGINES
    images: tuple[str, ...] = DEFAULT_IMAGES
    #: variable names (globs) a spec may set, on top of :data:`DEFAULT_SPEC_ENV`
    env: tuple[str, ...] = ()
    secret_env: tuple[str, ...] = DEFAULT_SECRET_ENV
    pass_env: tuple[str, ...] = ()
    allow_loader_env: bool = False
    allow_remote_code: bool = False
    data_roots: tuple[Path, ...] = ()
    volume_roots: tuple[Path, ...] = ()
    #: dataset URLs (globs) a spec may fetch: the daemon fetches them from inside the operator's
    #: network, so a site that has internal HTTPS services narrows this to the public hosts used
    dataset_urls: tuple[str, ...] = ("https://*",)
    #: kubernetes: namespaces (globs) experiments may run in; a spec may name no service
    #: account and mount no claim the operator did not list (Flux's lockdown: the namespace's
    #: default service account unless told otherwise)
    namespaces: tuple[str, ...] = ("default",)
    service_accounts: tuple[str, ...] = ()
    volume_claims: tuple[str, ...] = ()
    max_parallelism: int = 8
    max_concurrency: int = 1024
    max_request_rate: float = 1000.0
    max_requests_per_level: int = 100_000
    #: where the policy came from, for messages ("the default policy" when no file)
    source: str = field(default="the default policy", compare=False)

    def spec_env_allowed(self, name: str) -> bool:
        """May a spec set ``name`` in ``engine.env``?"""
        if is_loader_var(name):
            return self.allow_loader_env
        return _matches(name, DEFAULT_SPEC_ENV) or _matches(name, self.env)

    def reference_allowed(self, source: str) -> bool:
        """May ``fromEnv`` read the daemon's variable ``source``?"""
        return _matches(source, self.secret_env)

    def image_allowed(self, image: str) -> bool:
        return bool(_IMAGE.match(image)) and ".." not in image and _matches(image, self.images)

    def data_roots_for(self, checkout: Path) -> tuple[Path, ...]:
        return (Path(checkout), *self.data_roots)


def check_host_path(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """The resolved host path if it lies inside one of ``roots``; :class:`UnsafePath` else.

    For the docker and kubernetes backends' host mounts: call it with ``policy.volume_roots``
    again right before mounting (the folder may have become a symlink since validation).
    """
    roots = tuple(roots)
    if not Path(path).is_absolute():
        raise UnsafePath(f"{path}: a host path must be absolute")
    if not roots:
        raise UnsafePath(
            f"{path}: this host allows no host folders to be mounted "
            "(volumeRoots in the operator policy, docs/security.md)"
        )
    try:
        return inside_roots(path, roots)
    except UnsafePath as exc:
        raise UnsafePath(str(exc).replace("dataRoots", "volumeRoots")) from None


# ------------------------------------------------------------------------------------- checking


def check_policy(loaded: Any, policy: Policy, *, checkout: Path | None = None) -> list[SpecProblem]:
    """Every way a schema-valid spec (a :class:`specs.loader.LoadedSpec`) oversteps ``policy``.

    ``checkout`` is the repository root that relative dataset and model paths start from; without
    it only what the text shows is checked (absolute paths, ``..``).
    """
    spec: TuningSpec = loaded.spec
    body = spec.spec
    problems: list[SpecProblem] = []
    where = f"({policy.source})"

    def add(path: tuple[str | int, ...], message: str) -> None:
        problems.append(loaded.problem(path, message))

    if body.engine.name not in policy.engines:
        add(
            ("spec", "engine", "name"),
            f"engine {body.engine.name!r} is not allowed on this host {where}; allowed: "
            f"{', '.join(policy.engines) or 'none'} (engines in the operator policy)",
        )
    if body.engine.image is not None and not policy.image_allowed(body.engine.image):
        add(
            ("spec", "engine", "image"),
            f"image {body.engine.image!r} is not from an allowed registry {where}; allowed: "
            f"{', '.join(policy.images)} (images in the operator policy)",
        )
    for name, value in body.engine.env.items():
        at = ("spec", "engine", "env", name)
        if is_loader_var(name) and not policy.allow_loader_env:
            add(
                at,
                f"{name} decides which code the engine loads or where it connects; a spec may not "
                "set it (allowLoaderEnv in the operator policy)",
            )
        elif not policy.spec_env_allowed(name):
            add(
                at,
                f"{name} is not a variable a spec may set {where}; allowed: engine knobs such as "
                "VLLM_*, SGLANG_*, NCCL_*, CUDA_* (add it to env in the operator policy)",
            )
        if isinstance(value, EnvFrom) and not policy.reference_allowed(value.from_env):
            add(
                (*at, "fromEnv"),
                f"fromEnv may reference only {', '.join(policy.secret_env) or 'no variable'} "
                f"{where}; {value.from_env} is not one of them (secretEnv in the operator policy)",
            )
    if not policy.allow_remote_code:
        for path, flag, value in _flags(spec):
            if flag.replace("_", "-") in REMOTE_CODE_FLAGS and _truthy(value):
                add(
                    path,
                    f"{flag} lets the model's own code run on this host; a spec may not enable it "
                    "(allowRemoteCode in the operator policy)",
                )
    backend = body.backend
    if backend.kind == "kubernetes":
        if not _matches(backend.namespace, policy.namespaces):
            add(
                ("spec", "backend", "namespace"),
                f"namespace {backend.namespace!r} is not one experiments may run in {where}; allowed: "
                f"{', '.join(policy.namespaces) or 'none'} (namespaces in the operator policy)",
            )
        if backend.service_account is not None and backend.service_account not in policy.service_accounts:
            add(
                ("spec", "backend", "serviceAccount"),
                f"service account {backend.service_account!r} is not one a spec may use {where} "
                "(serviceAccounts in the operator policy); leave it out to use the namespace's default",
            )
        if backend.model_cache_pvc is not None and backend.model_cache_pvc not in policy.volume_claims:
            add(
                ("spec", "backend", "modelCachePvc"),
                f"claim {backend.model_cache_pvc!r} is not one a spec may mount {where} "
                "(volumeClaims in the operator policy)",
            )
    problems += _check_caps(loaded, policy)
    problems += _check_paths(loaded, policy, checkout)
    return problems


def _flags(spec: TuningSpec) -> Iterable[tuple[tuple[str | int, ...], str, Any]]:
    for flag, value in spec.spec.engine.args.items():
        yield ("spec", "engine", "args", flag), flag, value
    for flag, param in spec.spec.search.parameters.items():
        for i, value in enumerate(param.values or []):
            yield ("spec", "search", "parameters", flag, "values", i), flag, value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _check_caps(loaded: Any, policy: Policy) -> list[SpecProblem]:
    spec: TuningSpec = loaded.spec
    out: list[SpecProblem] = []
    search = spec.spec.search
    workload = spec.spec.workload
    if search.parallelism > policy.max_parallelism:
        out.append(
            loaded.problem(
                ("spec", "search", "parallelism"),
                f"parallelism {search.parallelism} is above this host's limit of "
                f"{policy.max_parallelism} (maxParallelism in the operator policy)",
            )
        )
    load = workload.load
    for i, level in enumerate(load.concurrency or []):
        if level > policy.max_concurrency:
            out.append(
                loaded.problem(
                    ("spec", "workload", "load", "concurrency", i),
                    f"concurrency {level} is above this host's limit of {policy.max_concurrency} "
                    "(maxConcurrency in the operator policy)",
                )
            )
    for i, rate in enumerate(load.request_rate or []):
        if not math.isfinite(rate) or rate > policy.max_request_rate:
            out.append(
                loaded.problem(
                    ("spec", "workload", "load", "requestRate", i),
                    f"request rate {rate:g} is above this host's limit of {policy.max_request_rate:g}/s "
                    "(maxRequestRate in the operator policy)",
                )
            )
    capacity = load.capacity
    if capacity is not None:
        limit = policy.max_concurrency if capacity.by == "concurrency" else policy.max_request_rate
        if capacity.high > limit:
            out.append(
                loaded.problem(
                    ("spec", "workload", "load", "capacity", "high"),
                    f"capacity.high {capacity.high:g} is above this host's limit of {limit:g} "
                    f"({'maxConcurrency' if capacity.by == 'concurrency' else 'maxRequestRate'} "
                    "in the operator policy)",
                )
            )
    if workload.requests_per_level > policy.max_requests_per_level:
        out.append(
            loaded.problem(
                ("spec", "workload", "requestsPerLevel"),
                f"requestsPerLevel {workload.requests_per_level} is above this host's limit of "
                f"{policy.max_requests_per_level} (maxRequestsPerLevel in the operator policy)",
            )
        )
    return out


def _check_paths(loaded: Any, policy: Policy, checkout: Path | None) -> list[SpecProblem]:
    spec: TuningSpec = loaded.spec
    out: list[SpecProblem] = []
    dataset = spec.spec.workload.dataset
    if isinstance(dataset, FileDataset) and dataset.path is not None:
        problem = _data_path_problem(dataset.path, policy, checkout)
        if problem is not None:
            out.append(loaded.problem(("spec", "workload", "dataset", "path"), problem))
    if (
        isinstance(dataset, FileDataset)
        and dataset.url is not None
        and not _matches(dataset.url, policy.dataset_urls)
    ):
        out.append(
            loaded.problem(
                ("spec", "workload", "dataset", "url"),
                f"datasets may be fetched only from {', '.join(policy.dataset_urls) or 'nowhere'} on this "
                "host (datasetUrls in the operator policy)",
            )
        )
    for field_name, value in (("id", spec.spec.model.id), ("tokenizer", spec.spec.model.tokenizer)):
        if value is None:
            continue
        local = checkout is not None and os.path.lexists(Path(checkout) / value)
        if local or Path(value).is_absolute() or value.startswith((".", "~")):
            problem = _data_path_problem(value, policy, checkout)
            if problem is not None:
                out.append(loaded.problem(("spec", "model", field_name), problem))
    backend = spec.spec.backend
    for i, volume in enumerate(getattr(backend, "volumes", ()) or ()):
        host = volume.split(":", 1)[0]
        try:
            check_host_path(host, policy.volume_roots)
        except UnsafePath as exc:
            out.append(loaded.problem(("spec", "backend", "volumes", i), f"volume {volume!r}: {exc}"))
    return out


def _data_path_problem(path: str, policy: Policy, checkout: Path | None) -> str | None:
    p = Path(path)
    if checkout is None:
        # only the text can be judged: absolute paths must be under an operator root
        if p.is_absolute():
            try:
                inside_roots(p, policy.data_roots)
            except UnsafePath as exc:
                return str(exc)
        elif ".." in p.parts:
            return f"{path} leaves the repository ('..'); paths are relative to the repository root"
        return None
    try:
        inside_roots(p, policy.data_roots_for(checkout), base=checkout)
    except UnsafePath as exc:
        return str(exc).replace(str(Path(checkout).resolve()), "the repository")
    return None


# ------------------------------------------------------------------------------------- loading


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engines: list[str] | None = None
    images: list[str] | None = None
    env: list[str] = Field(default_factory=list)
    secret_env: list[str] | None = Field(default=None, alias="secretEnv")
    pass_env: list[str] = Field(default_factory=list, alias="passEnv")
    allow_loader_env: bool = Field(default=False, alias="allowLoaderEnv")
    allow_remote_code: bool = Field(default=False, alias="allowRemoteCode")
    data_roots: list[str] = Field(default_factory=list, alias="dataRoots")
    volume_roots: list[str] = Field(default_factory=list, alias="volumeRoots")
    dataset_urls: list[str] | None = Field(default=None, alias="datasetUrls")
    namespaces: list[str] | None = None
    service_accounts: list[str] = Field(default_factory=list, alias="serviceAccounts")
    volume_claims: list[str] = Field(default_factory=list, alias="volumeClaims")
    max_parallelism: int = Field(default=8, ge=1, le=64, alias="maxParallelism")
    max_concurrency: int = Field(default=1024, ge=1, le=100_000, alias="maxConcurrency")
    max_request_rate: float = Field(default=1000.0, gt=0, le=1e6, allow_inf_nan=False, alias="maxRequestRate")
    max_requests_per_level: int = Field(default=100_000, ge=1, le=1_000_000, alias="maxRequestsPerLevel")


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """The policy in ``path`` (YAML), or the default policy when ``path`` is None or empty.

    Raises :class:`UserError` (with every problem located) for an unreadable or invalid file: a
    daemon must not start with a policy it cannot read, since "no policy" would mean defaults
    the operator did not choose.
    """
    if not path:
        return Policy()
    file = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read the policy file {file}: {exc.strerror or exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise UserError(f"the policy file {file} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        data, lines = parse_yaml(raw.decode("utf-8"), file)
    except UnicodeDecodeError:
        raise UserError(f"the policy file {file} is not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(file, 1, "", "a policy file is a mapping of settings")])
    try:
        parsed = _PolicyFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                names = [f.alias or n for n, f in _PolicyFile.model_fields.items()]
                msg = f"unknown setting {key!r}{did_you_mean(key, names)}"
            problems.append(SpecProblem(file, lines.get((key,)), key, msg))
        raise SpecError(problems) from None
    problems = []
    for name in parsed.engines or []:
        if name not in ENGINES:
            problems.append(SpecProblem(file, lines.get(("engines",)), "engines", f"unknown engine {name!r}"))
    roots: dict[str, tuple[Path, ...]] = {}
    for key, alias in (("data_roots", "dataRoots"), ("volume_roots", "volumeRoots")):
        values = getattr(parsed, key)
        for value in values:
            if not Path(value).is_absolute():
                problems.append(
                    SpecProblem(file, lines.get((alias,)), alias, f"{value!r}: roots must be absolute paths")
                )
        roots[key] = tuple(Path(v) for v in values)
    if problems:
        raise SpecError(problems)
    return Policy(
        engines=tuple(parsed.engines) if parsed.engines is not None else ENGINES,
        images=tuple(parsed.images) if parsed.images is not None else DEFAULT_IMAGES,
        env=tuple(parsed.env),
        secret_env=tuple(parsed.secret_env) if parsed.secret_env is not None else DEFAULT_SECRET_ENV,
        pass_env=tuple(parsed.pass_env),
        allow_loader_env=parsed.allow_loader_env,
        allow_remote_code=parsed.allow_remote_code,
        data_roots=roots["data_roots"],
        volume_roots=roots["volume_roots"],
        dataset_urls=tuple(parsed.dataset_urls) if parsed.dataset_urls is not None else ("https://*",),
        namespaces=tuple(parsed.namespaces) if parsed.namespaces is not None else ("default",),
        service_accounts=tuple(parsed.service_accounts),
        volume_claims=tuple(parsed.volume_claims),
        max_parallelism=parsed.max_parallelism,
        max_concurrency=parsed.max_concurrency,
        max_request_rate=parsed.max_request_rate,
        max_requests_per_level=parsed.max_requests_per_level,
        source=f"policy {file}",
    )


def policy_from_env(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy named by ``AUTOTUNER_POLICY``, or the default one."""
    env = os.environ if environ is None else environ
    return load_policy(env.get(POLICY_ENV_VAR) or None)
