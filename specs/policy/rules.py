"""The :class:`Policy` value and its defaults: what a spec may ask of this host when the operator
said nothing (closed), and the rules the backends apply again right before use
(:func:`check_host_path` at mount time, since a folder may have become a symlink since
validation).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from specs.errors import UnsafePath
from specs.model import ENGINES
from specs.paths import inside_roots

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


def matches_any(name: str, patterns: Iterable[str]) -> bool:
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
        return matches_any(name, DEFAULT_SPEC_ENV) or matches_any(name, self.env)

    def reference_allowed(self, source: str) -> bool:
        """May ``fromEnv`` read the daemon's variable ``source``?"""
        return matches_any(source, self.secret_env)

    def image_allowed(self, image: str) -> bool:
        return bool(_IMAGE.match(image)) and ".." not in image and matches_any(image, self.images)

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
