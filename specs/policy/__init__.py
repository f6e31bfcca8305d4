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

Three modules, one concern each: :mod:`~specs.policy.rules` (the :class:`Policy` value, its
defaults and the host-path rule the backends apply again at mount time),
:mod:`~specs.policy.check` (a spec against a policy) and :mod:`~specs.policy.load` (the YAML
file). This package re-exports their public names because backends, the reconciler and the CLI
all use the policy as one API.
"""

from specs.policy.check import check_policy
from specs.policy.load import POLICY_ENV_VAR, load_policy, policy_from_env
from specs.policy.rules import (
    DEFAULT_IMAGES,
    DEFAULT_SPEC_ENV,
    LOADER_ENV,
    REMOTE_CODE_FLAGS,
    Policy,
    check_host_path,
    is_loader_var,
)

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
