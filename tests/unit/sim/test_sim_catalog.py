"""The catalogs: required entries, internal consistency with the architectures, name lookup."""

from __future__ import annotations

import pytest

from backends.sim.catalogs import UnknownNameError, find_gpu, find_model, gpus, models


def test_required_gpus_have_memory_bandwidth_and_flops() -> None:
    for key in ("h100", "h200", "a100-80g", "l40s", "rtx-4090"):
        gpu = gpus()[key]
        assert gpu.memory_bytes > 20 * 2**30
        assert gpu.bandwidth > 500e9
        assert gpu.flops["bf16"] > 100e12
        assert gpu.link_bandwidth > 0 and gpu.link_latency > 0
        assert gpu.source


def test_gpu_ordering_matches_spec_sheets() -> None:
    g = gpus()
    assert g["h200"].bandwidth > g["h100"].bandwidth > g["a100-80g"].bandwidth > g["rtx-4090"].bandwidth
    assert (
        g["h200"].memory_bytes > g["h100"].memory_bytes > g["l40s"].memory_bytes > g["rtx-4090"].memory_bytes
    )
    assert "fp8" not in g["a100-80g"].flops  # Ampere has no FP8 tensor cores
    assert g["h100"].link_bandwidth > g["l40s"].link_bandwidth  # NVLink vs PCIe


def test_required_models_present() -> None:
    m = models()
    for key in ("llama-3-8b", "qwen2.5-7b", "llama-3-70b", "llama-3.2-1b"):
        assert key in m
    assert any(spec.is_moe for spec in m.values())


def _architecture_params(key: str) -> float:
    """Parameters recomputed from the architecture (attention, MLP or experts, embeddings)."""
    m = models()[key]
    q = m.attention_heads * m.head_dim
    kv = m.kv_heads * m.head_dim
    attention = m.hidden_size * q + 2 * m.hidden_size * kv + q * m.hidden_size
    mlp = 3 * m.hidden_size * m.intermediate_size * (m.num_experts if m.is_moe else 1)
    return m.layers * (attention + mlp) + m.embedding_params


@pytest.mark.parametrize("key", sorted(models()))
def test_parameter_counts_match_architecture(key: str) -> None:
    m = models()[key]
    assert _architecture_params(key) == pytest.approx(m.params, rel=0.02)


@pytest.mark.parametrize("key", [k for k, m in models().items() if m.is_moe])
def test_moe_active_parameters_follow_routing(key: str) -> None:
    m = models()[key]
    expected_active = m.params - m.expert_params * (1 - m.experts_per_token / m.num_experts)
    assert m.active_params == pytest.approx(expected_active, rel=0.03)
    expert_weights = m.layers * m.num_experts * 3 * m.hidden_size * m.intermediate_size
    assert m.expert_params == pytest.approx(expert_weights, rel=0.02)


def test_lookup_by_key_alias_hf_id_and_path_any_case() -> None:
    assert find_model("LLAMA-3-8B").key == "llama-3-8b"
    assert find_model("meta-llama/Meta-Llama-3-8B-Instruct").key == "llama-3-8b"
    assert find_model("Qwen/Qwen2.5-7B-Instruct").key == "qwen2.5-7b"
    assert find_model("/models/hf/Qwen2.5-7B-Instruct/").key == "qwen2.5-7b"
    assert find_model("tiny-1b").key == "llama-3.2-1b"
    assert find_gpu("H100").key == "h100"
    assert find_gpu("RTX-4090").key == "rtx-4090"
    assert find_gpu("A100").key == "a100-80g"


def test_unknown_names_list_the_catalog_and_suggest() -> None:
    with pytest.raises(UnknownNameError) as info:
        find_model("llama-3-8")
    message = str(info.value)
    assert "unknown model 'llama-3-8'" in message
    assert "did you mean" in message
    assert "qwen2.5-7b" in message
    with pytest.raises(UnknownNameError, match="known: a100-80g"):
        find_gpu("tpu-v5")
