"""``spec.model`` and ``spec.engine``: what is served and by which engine, with its fixed
arguments and environment (secrets only by reference, :class:`EnvFrom`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.redact import SECRET_HINT
from specs.model.base import ENV_NAME, BoundedScalar, EngineName, FlagName, StrictModel, bounded


class ModelRef(StrictModel):
    id: str = Field(min_length=1, description="Hugging Face model id, local path, or sim catalog name.")
    revision: str = "main"
    tokenizer: str | None = None
    served_name: str | None = Field(default=None, alias="servedName")

    @field_validator("id", "revision", "tokenizer", "served_name")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c.isspace() or not c.isprintable() for c in v)):
            raise ValueError("must be non-empty with no spaces or control characters")
        return v


class EnvFrom(StrictModel):
    from_env: str = Field(alias="fromEnv", description="Name of a variable in the daemon's environment.")

    @field_validator("from_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid environment variable name")
        return v


class EngineSpec(StrictModel):
    name: EngineName
    version: str | None = Field(default=None, description="Recorded in results; default image tag.")
    image: str | None = Field(default=None, description="Container image (docker and kubernetes backends).")
    variant: Literal["python", "native"] | None = Field(
        default=None, description="llamacpp only: llama-cpp-python server (python) or llama-server (native)."
    )
    args: dict[FlagName, BoundedScalar] = Field(default_factory=dict, description="Fixed engine flags.")
    env: dict[str, str | EnvFrom] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | EnvFrom]) -> dict[str, str | EnvFrom]:
        for key, value in v.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if isinstance(value, str):
                bounded(value)
            if isinstance(value, str) and SECRET_HINT.search(key):
                raise ValueError(
                    f"{key} looks like a secret: give it by reference, {{{key}: {{fromEnv: {key}}}}}, "
                    "so it never lands in the repository or the results"
                )
        return v

    @model_validator(mode="after")
    def _variant(self) -> EngineSpec:
        if self.variant is not None and self.name != "llamacpp":
            raise ValueError("'variant' applies to the llamacpp engine only")
        return self
