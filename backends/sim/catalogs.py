"""The GPU and model catalogs the simulator computes with.

The numbers live in ``catalog/gpus.json`` and ``catalog/models.json`` (package data), not in
code, because they are facts with sources (spec sheets, ``config.json`` files) that reviewers
check line by line, and adding a GPU or a model should not need a code change. This module only
reads them into frozen dataclasses and resolves names.

Names are matched case-insensitively, and a model also answers to its Hugging Face id and a few
aliases, so that a spec written for vLLM (``model.id: Qwen/Qwen2.5-7B-Instruct``) runs on the
simulator unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from specs.suggest import did_you_mean

GIB = 1024**3


class UnknownNameError(LookupError):
    """A ``--gpu`` or ``--model`` that is not in the catalog; the message lists what is."""


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    memory_bytes: int
    #: HBM/GDDR bandwidth, bytes per second
    bandwidth: float
    #: dense tensor-core peak per precision (``bf16``, ``fp8``, ``int8``), FLOP/s; a missing key
    #: means the GPU has no tensor cores for that precision
    flops: dict[str, float]
    interconnect: str
    #: GPU-to-GPU bandwidth, one direction, bytes per second
    link_bandwidth: float
    #: fixed cost of one small all-reduce, seconds
    link_latency: float
    source: str

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


@dataclass(frozen=True)
class ModelSpec:
    key: str
    hf_id: str
    params: float
    #: parameters one token goes through (equal to :attr:`params` for a dense model)
    active_params: float
    #: parameters held by MoE experts (0 for a dense model)
    expert_params: float
    num_experts: int
    experts_per_token: int
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    max_position_embeddings: int
    source: str

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied): kept in 16 bits by quantizers."""
        one = self.vocab_size * self.hidden_size
        return one if self.tied_embeddings else 2 * one


def _gpu(key: str, raw: dict[str, Any]) -> GpuSpec:
    return GpuSpec(
        key=key,
        name=raw["name"],
        memory_bytes=int(raw["memory_mib"]) * 1024 * 1024,
        bandwidth=float(raw["bandwidth_gbps"]) * 1e9,
        flops={k: float(v) * 1e12 for k, v in raw["tflops"].items()},
        interconnect=raw["interconnect"],
        link_bandwidth=float(raw["link_gbps"]) * 1e9,
        link_latency=float(raw["link_latency_us"]) * 1e-6,
        source=raw["source"],
    )


def _model(key: str, raw: dict[str, Any]) -> ModelSpec:
    params = float(raw["params_b"]) * 1e9
    return ModelSpec(
        key=key,
        hf_id=raw["hf_id"],
        params=params,
        active_params=float(raw.get("active_params_b", raw["params_b"])) * 1e9,
        expert_params=float(raw.get("expert_params_b", 0.0)) * 1e9,
        num_experts=int(raw.get("num_experts", 1)),
        experts_per_token=int(raw.get("experts_per_token", 1)),
        layers=int(raw["layers"]),
        hidden_size=int(raw["hidden_size"]),
        attention_heads=int(raw["attention_heads"]),
        kv_heads=int(raw["kv_heads"]),
        head_dim=int(raw["head_dim"]),
        intermediate_size=int(raw["intermediate_size"]),
        vocab_size=int(raw["vocab_size"]),
        tied_embeddings=bool(raw["tied_embeddings"]),
        max_position_embeddings=int(raw["max_position_embeddings"]),
        source=raw["source"],
    )


def _read(name: str) -> dict[str, Any]:
    text = resources.files("backends.sim").joinpath("catalog").joinpath(name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def gpus() -> dict[str, GpuSpec]:
    """Every GPU of the catalog by its key (``h100``, ``rtx-4090``, ...)."""
    return {k: _gpu(k, v) for k, v in _read("gpus.json")["gpus"].items()}


@cache
def models() -> dict[str, ModelSpec]:
    """Every model of the catalog by its key (``llama-3-8b``, ``mixtral-8x7b``, ...)."""
    return {k: _model(k, v) for k, v in _read("models.json")["models"].items()}


@cache
def _aliases(kind: str) -> dict[str, str]:
    raw = _read(f"{kind}s.json")[f"{kind}s"]
    table: dict[str, str] = {}
    for key, entry in raw.items():
        names = [key, *entry.get("aliases", [])]
        if "hf_id" in entry:
            names.append(entry["hf_id"])
        for name in names:
            table[name.lower()] = key
    return table


def _resolve(kind: str, name: str) -> str:
    table = _aliases(kind)
    folded = name.strip().lower()
    if folded in table:
        return table[folded]
    # "org/Model-Name" or a local path ending in the model's folder name
    tail = folded.rstrip("/").rsplit("/", 1)[-1]
    if tail in table:
        return table[tail]
    known = sorted(set(table.values()))
    raise UnknownNameError(
        f"unknown {kind} {name!r}{did_you_mean(folded, table)} (known: {', '.join(known)})"
    )


def find_gpu(name: str) -> GpuSpec:
    """The catalog GPU called ``name`` (key or alias, any case); :class:`UnknownNameError` if none."""
    return gpus()[_resolve("gpu", name)]


def find_model(name: str) -> ModelSpec:
    """The catalog model called ``name``: key, alias or Hugging Face id, any case."""
    return models()[_resolve("model", name)]
