"""The environment an engine starts with: built from nothing, never inherited (docs/security.md).

An engine runs code the spec chose (an engine, its flags, a model that may ship code), so it
must not see the daemon's environment: that holds the git token, cloud credentials and whatever
else the operator set for the daemon, none of which the spec ever referenced. Inheriting and then
removing "secret-looking" names is the wrong way round: a name list can never be complete. So
the environment is assembled from four sources, in this order (later wins):

1. a fixed base: ``LANG``/``LC_ALL`` (a UTF-8 locale), unbuffered Python output;
2. the operator's setup, copied from the daemon only by name: :data:`SETUP_VARS` (where the
   engine's programs, libraries and caches are: ``PATH``, ``HOME``, ``TMPDIR``, ``HF_HOME``,
   ``CUDA_HOME`` ...) and the policy's ``passEnv``;
3. the spec's ``engine.env`` literals (already checked against the policy at validation; loader
   variables are refused here again unless the policy allows them, since a backend may be
   handed a plan that did not come through validation);
4. ``fromEnv`` references, resolved from the daemon's environment (only names the policy's
   ``secretEnv`` allows);

and last the GPU lease (``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER``), which nothing overrides.

One function for every backend: the local backend passes the result to ``exec``; the docker and
kubernetes backends pass it as the container's environment (there the setup variables describe
the daemon's host, not the image, so they call it with ``setup=False``).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence

from specs.errors import UserError
from specs.policy import Policy, is_loader_var

__all__ = ["SETUP_VARS", "engine_environment", "resolve_references"]

#: daemon variables that describe the host's installation, copied to local engines by name
SETUP_VARS: tuple[str, ...] = (
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "TZ",
    "LD_LIBRARY_PATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "CUDA_HOME",
    "CUDA_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_CACHE",
    "XDG_CACHE_HOME",
    "TRITON_CACHE_DIR",
)

BASE: dict[str, str] = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


def resolve_references(refs: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Engine variable → the value of the daemon variable it references; every missing one
    reported in one :class:`UserError`."""
    missing = sorted({source for source in refs.values() if source not in environ})
    if missing:
        raise UserError(
            f"the spec's engine.env references {', '.join(missing)}, "
            "which the daemon's environment does not set",
            hint="set it in the daemon's environment (systemd EnvironmentFile=, "
            "or export it before 'autotuner run')",
        )
    return {target: environ[source] for target, source in refs.items()}


def engine_environment(
    *,
    spec_env: Mapping[str, str],
    references: Mapping[str, str] | None = None,
    gpu_ids: Sequence[int] | None,
    daemon_env: Mapping[str, str] | None = None,
    policy: Policy | None = None,
    setup: bool = True,
) -> dict[str, str]:
    """The complete environment of one engine (see the module docstring for the order).

    ``spec_env``: literal variables of the plan (``LaunchPlan.env``); ``references``: engine
    variable → daemon variable (``LaunchPlan.env_from``); ``gpu_ids``: the lease (None: leave
    ``CUDA_VISIBLE_DEVICES`` to the backend, e.g. Kubernetes' device plugin); ``daemon_env``:
    where setup variables and references come from (default: ``os.environ``); ``setup``: copy
    :data:`SETUP_VARS` (local processes) or not (containers); ``policy``: the operator's (None:
    the plan was validated against it upstream, so only the default rules are applied again:
    loader variables refused, references not re-checked). Raises :class:`UserError` for a loader
    variable the policy does not allow, a reference the policy does not allow, or a reference
    the daemon's environment lacks.
    """
    checked = policy is not None
    policy = policy or Policy()
    source = os.environ if daemon_env is None else daemon_env
    refused = sorted(name for name in spec_env if is_loader_var(name) and not policy.allow_loader_env)
    if refused:
        raise UserError(
            f"engine.env sets {', '.join(refused)}, which decide(s) which code the engine loads",
            hint="only the operator may allow this (allowLoaderEnv in the policy, docs/security.md)",
        )
    refs = dict(references or {})
    not_allowed = sorted({src for src in refs.values() if checked and not policy.reference_allowed(src)})
    if not_allowed:
        raise UserError(
            f"engine.env references {', '.join(not_allowed)} of the daemon's environment, "
            "which the policy does not let a spec read",
            hint="the operator lists what fromEnv may read in secretEnv (docs/security.md)",
        )
    env = dict(BASE)
    if setup:
        env.update(_copied(source, SETUP_VARS))
    env.update(_copied(source, policy.pass_env))
    env.update(spec_env)
    env.update(resolve_references(refs, source))
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
        # CUDA numbers devices like NVML (by PCI bus), so lease ids mean the same GPUs to both
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def _copied(source: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pattern in names:
        for key, value in source.items():
            if fnmatch.fnmatchcase(key, pattern):
                out[key] = value
    return out
