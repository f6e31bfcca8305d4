"""The operator's policy file: YAML, parsed strictly (unknown keys refused, every problem located
with the spec loader's YAML walk), so that a typo is an error at start, never a silently open
default. A daemon must not start with a policy it cannot read: "no policy" would mean defaults
the operator did not choose.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from specs.errors import SpecError, SpecProblem, UserError
from specs.loader import parse_yaml
from specs.model import ENGINES
from specs.policy.rules import DEFAULT_IMAGES, DEFAULT_SECRET_ENV, Policy
from specs.suggest import did_you_mean

POLICY_ENV_VAR = "AUTOTUNER_POLICY"
MAX_POLICY_BYTES = 256 * 1024

#: YAML line of each key path, as :func:`specs.loader.parse_yaml` returns it
Lines = dict[tuple[str | int, ...], int]


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

    Raises :class:`UserError` (with every problem located) for an unreadable or invalid file.
    """
    if not path:
        return Policy()
    file = str(path)
    data, lines = _read(path, file)
    try:
        parsed = _PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_validation_problems(exc, file, lines)) from None
    problems = _engine_problems(parsed, file, lines)
    roots: dict[str, tuple[Path, ...]] = {}
    for key, alias in (("data_roots", "dataRoots"), ("volume_roots", "volumeRoots")):
        values = getattr(parsed, key)
        problems += [
            SpecProblem(file, lines.get((alias,)), alias, f"{value!r}: roots must be absolute paths")
            for value in values
            if not Path(value).is_absolute()
        ]
        roots[key] = tuple(Path(v) for v in values)
    if problems:
        raise SpecError(problems)
    return _policy(parsed, roots, file)


def _read(path: str | os.PathLike[str], file: str) -> tuple[dict[str, Any], Lines]:
    """The file's mapping (empty for an empty file) and its YAML lines; a :class:`UserError` if
    it cannot be read, is too large, is not UTF-8 or is not a mapping."""
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
    return data, lines


def _validation_problems(exc: ValidationError, file: str, lines: Lines) -> list[SpecProblem]:
    problems = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            names = [f.alias or n for n, f in _PolicyFile.model_fields.items()]
            msg = f"unknown setting {key!r}{did_you_mean(key, names)}"
        problems.append(SpecProblem(file, lines.get((key,)), key, msg))
    return problems


def _engine_problems(parsed: _PolicyFile, file: str, lines: Lines) -> list[SpecProblem]:
    return [
        SpecProblem(file, lines.get(("engines",)), "engines", f"unknown engine {name!r}")
        for name in parsed.engines or []
        if name not in ENGINES
    ]


def _policy(parsed: _PolicyFile, roots: dict[str, tuple[Path, ...]], file: str) -> Policy:
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
