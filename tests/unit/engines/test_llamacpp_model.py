"""The tiny GGUF model, and the llama-cpp-python it is written for: the model loads and generates,
every flag the mapping emits is one the real server's argument parser takes with the value meant,
values llama.cpp refuses are caught before a start, and llama.cpp's own failure lines are what a
FAILED record quotes.

The model and server tests need the ``llamacpp`` extra (``gguf``, ``llama_cpp``) and are skipped
with the reason otherwise; the mapping tests run everywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from backends.engines import get_engine
from backends.engines.llamacpp import LlamacppEngine, failure_detail, server_failure_detail
from backends.engines.llamacpp_model import BYTE_BASE, PRINTABLE, VOCAB_SIZE, write_tiny_gguf
from specs.model import Scalar
from tests.unit.engines.helpers import load

EXTRA = "needs the llamacpp extra: pip install 'autotuner[llamacpp]'"


@pytest.fixture
def gguf() -> Any:
    return pytest.importorskip("gguf", reason=EXTRA)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ the file


def test_the_model_is_small_deterministic_and_atomic(tmp_path: Path, gguf: Any) -> None:
    a = write_tiny_gguf(tmp_path / "deep" / "dir" / "a.gguf")
    b = write_tiny_gguf(tmp_path / "b.gguf")
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=1)
    assert a == tmp_path / "deep" / "dir" / "a.gguf"
    assert a.stat().st_size < 1_000_000
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)
    # nothing but the model itself is left in the folder (no temporary files)
    assert [p.name for p in a.parent.iterdir()] == ["a.gguf"]
    # rewriting replaces the file in place
    write_tiny_gguf(a, seed=1)
    assert _sha(a) == _sha(c)


def test_the_file_has_the_llama_layout(tmp_path: Path, gguf: Any) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", n_layers=3, n_embd=32, n_head=2, n_kv_head=1, n_ff=48)
    reader = gguf.GGUFReader(path)

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    assert value("general.architecture") == "llama"
    assert value("llama.block_count") == 3
    assert value("llama.embedding_length") == 32
    assert value("llama.attention.head_count_kv") == 1
    assert value("llama.rope.dimension_count") == 16
    assert value("llama.context_length") == 512
    assert value("tokenizer.ggml.model") == "llama"
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == VOCAB_SIZE
    assert tokens[BYTE_BASE + ord("A")] == "<0x41>"
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    # ggml order: the input dimension first
    assert shapes["token_embd.weight"] == [32, VOCAB_SIZE]
    assert shapes["blk.2.attn_k.weight"] == [32, 16]
    assert shapes["blk.0.ffn_down.weight"] == [48, 32]
    assert shapes["output.weight"] == [32, VOCAB_SIZE]
    assert len(shapes) == 2 + 3 * 9 + 1


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"n_embd": 60, "n_head": 8}, "multiple of n_head"),
        ({"n_head": 4, "n_kv_head": 3}, "multiple of n_kv_head"),
        ({"n_embd": 36, "n_head": 4}, "must be even for RoPE"),
        ({"n_layers": 0}, "n_layers must be at least 1"),
    ],
)
def test_impossible_shapes_are_refused(tmp_path: Path, shape: dict[str, int], message: str) -> None:
    # checked before gguf is needed: runs without the extra too
    with pytest.raises(ValueError, match=message):
        write_tiny_gguf(tmp_path / "m.gguf", **shape)
    assert not (tmp_path / "m.gguf").exists()


# ------------------------------------------------------------------------------------- llama.cpp


def test_llama_cpp_loads_it_and_generates_printable_text(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason=EXTRA)
    pytest.importorskip("gguf", reason=EXTRA)
    path = write_tiny_gguf(tmp_path / "m.gguf")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=1, verbose=False, seed=1)
    try:
        # byte fallback: every byte of the prompt is one token, after BOS and the SentencePiece
        # space marker (three bytes of UTF-8)
        assert len(llm.tokenize(b"hello")) == 1 + 3 + 5
        out = llm.create_completion("the of and", max_tokens=24, temperature=0.8)
        text = out["choices"][0]["text"]
        assert out["usage"]["completion_tokens"] == 24
        assert out["choices"][0]["finish_reason"] == "length"
        assert len(text) == 24
        assert all(ord(c) in PRINTABLE for c in text), text
    finally:
        llm.close()


SAMPLES: dict[str, list[Scalar]] = {
    "int": [3],
    "float": [0.5],
    "bool": [True, False],
    "str": ["x"],
    "path": ["/tmp/x"],
}


def _sample(info_type: str, choices: tuple[Scalar, ...] | None) -> list[Scalar]:
    return list(choices) if choices else SAMPLES[info_type]


def _python_flags() -> list[tuple[str, Scalar]]:
    engine = LlamacppEngine()
    reserved = engine.reserved()
    out = []
    for info in engine.flags.flags.values():
        if info.name in reserved:
            continue
        for value in _sample(info.type, info.choices):
            out.append((info.name, value))
    return out


@pytest.mark.parametrize(("flag", "value"), _python_flags())
def test_the_real_server_parses_every_flag_as_meant(flag: str, value: Scalar) -> None:
    pytest.importorskip("llama_cpp", reason=EXTRA)
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

    engine = get_engine("llamacpp")
    args = {flag: value}
    if flag == "type_v" and value not in (0, 1, 30):
        args["flash_attn"] = True  # the mapping refuses a quantized V cache without it
    plan = engine.launch(load("llamacpp", args=args).spec, {}, host="127.0.0.1", port=8123)
    assert plan.argv[1:3] == ["-m", "llama_cpp.server"]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_args_from_model(parser, Settings)
    parsed = parser.parse_args(plan.argv[3:])
    model = parse_model_from_args(ModelSettings, parsed)
    server = parse_model_from_args(ServerSettings, parsed)
    got = getattr(model, flag) if flag in ModelSettings.model_fields else getattr(server, flag)
    assert got == value
    assert (server.host, server.port, model.model) == ("127.0.0.1", 8123, "./models/tiny.gguf")
    # the autotuner's own default rides along unless the spec sets the flag
    assert server.interrupt_requests is (value if flag == "interrupt_requests" else False)


# ------------------------------------------------------------------------------ refused up front


def test_values_llama_cpp_python_refuses_are_located_in_the_spec() -> None:
    loaded = load(
        "llamacpp",
        args={"n_threads": 0, "n_ctx": 512},
        parameters={"n_batch": {"values": [0, 64]}, "n_ubatch": {"low": -4, "high": 64}},
    )
    found = {p.path: p.message for p in get_engine("llamacpp").check(loaded)}
    assert set(found) == {
        "spec.engine.args.n_threads",
        "spec.search.parameters.n_batch.values[0]",
        "spec.search.parameters.n_ubatch.low",
    }
    assert "--n_threads must be at least 1, or -1 for every CPU thread (got 0)" in found.values()
    assert found["spec.search.parameters.n_batch.values[0]"].startswith("--n_batch must be at least 1")
    # -1 means every CPU thread, and llama-server has its own parser: neither is refused
    assert get_engine("llamacpp").check(load("llamacpp", args={"n_threads": -1})) == []
    native = load("llamacpp", variant="native", args={"threads": 0})
    assert get_engine("llamacpp", "native").check(native) == []


def test_a_quantized_v_cache_needs_flash_attention() -> None:
    engine = get_engine("llamacpp")

    def problems(args: dict[str, Any]) -> list[str]:
        return [r.message for r in engine.config_problems(load("llamacpp", args=args).spec, {})]

    [message] = problems({"type_v": 8})
    assert (
        message
        == "llama.cpp quantizes the V cache only with flash attention: --type_v 8 needs --flash_attn true"
    )
    assert len(problems({"type_v": 8, "flash_attn": False})) == 1
    assert problems({"type_v": 8, "flash_attn": True}) == []
    assert problems({"type_v": 30}) == []
    assert problems({"type_k": 8}) == []


def test_the_engine_says_what_is_missing_on_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = get_engine("llamacpp", "native")
    monkeypatch.setenv("PATH", str(tmp_path))
    problem = native.local_problem()
    assert problem is not None and "llama-server" in problem.message and problem.hint
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert native.local_problem() is None
    python = get_engine("llamacpp").local_problem()
    if importlib.util.find_spec("llama_cpp") is None:
        assert python is not None and "autotuner[llamacpp]" in (python.hint or "")
    else:
        assert python is None


# --------------------------------------------------------------------------------- failure lines
# Log tails as llama-cpp-python 0.3.36 wrote them (abridged to the lines that matter).

KV_BLOCK = """\
llama_model_loader: - type  f32:   21 tensors
done_getting_tensors: tensor 'token_embd.weight' (f32) (and 20 others) cannot be used with preferred \
buffer type AMX, using CPU instead
.................
llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=16
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/llama_cpp/_internals.py", line 266, in __init__
    raise ValueError("Failed to create llama_context")
ValueError: Failed to create llama_context
"""

BAD_FILE = """\
[autotuner 2026-10-01T00:00:00+00:00] starting x: python -m llama_cpp.server --model bad.gguf
gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF'
llama_model_load: error loading model: llama_model_loader: failed to load model from bad.gguf
llama_model_load_from_file_impl: failed to load model
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/llama_cpp/llama.py", line 384, in __init__
ValueError: Failed to load model from file: bad.gguf
"""

ASSERT = """\
llama_context: n_ctx = 512
/src/llama.cpp/ggml/src/ggml.c:1774: GGML_ASSERT(type >= 0 && type < GGML_TYPE_COUNT) failed
"""

RUNTIME = """\
INFO:     127.0.0.1:5000 - "POST /v1/completions HTTP/1.1" 200 OK
Exception in ASGI application
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/uvicorn/protocols/http/h11_impl.py", line 403, in run_asgi
RuntimeError: llama_decode returned -3
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            KV_BLOCK,
            "llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=16 "
            "(ValueError: Failed to create llama_context)",
        ),
        (
            BAD_FILE,
            "gguf_init_from_reader: invalid magic characters: 'garb', expected 'GGUF' "
            "(ValueError: Failed to load model from file: bad.gguf)",
        ),
        (ASSERT, "GGML_ASSERT(type >= 0 && type < GGML_TYPE_COUNT) failed"),
        (RUNTIME, "RuntimeError: llama_decode returned -3"),
        ("INFO: Uvicorn running on http://127.0.0.1:8000\n", None),
    ],
)
def test_failure_detail_quotes_llama_cpp(log: str, expected: str | None) -> None:
    assert failure_detail(log) == expected


def test_settings_validation_errors_are_quoted() -> None:
    log = (
        "1 validation error for ModelSettings\nn_batch\n  Input should be greater than or equal to 1 "
        "[type=greater_than_equal, input_value=0, input_type=int]\nusage: __main__.py [-h]\n"
    )
    detail = failure_detail(log)
    assert detail is not None
    assert detail.startswith("1 validation error for ModelSettings: n_batch: Input should be greater")


# llama-server (llama.cpp 0c1e570) logs with a time and a level letter
SERVER_KV_BLOCK = """\
0.00.006.140 I srv    load_model: loading model 'm.gguf'
0.00.007.791 E llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=16
0.00.007.919 E common_fit_params: encountered an error while trying to fit params to free device memory
0.00.009.233 E srv    load_model: failed to create_context with model 'm.gguf'
0.00.009.244 I srv    operator(): operator(): cleaning up before exit...
0.00.009.639 E srv  llama_server: exiting due to model loading error
"""

SERVER_BAD_ARGUMENT = """\

error while handling argument "--threads": stoi

usage:
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            SERVER_KV_BLOCK,
            "llama_init_from_model: K cache type q8_0 with block size 32 does not divide n_embd_head_k=16 "
            "(llama_server: exiting due to model loading error)",
        ),
        (SERVER_BAD_ARGUMENT, 'error while handling argument "--threads": stoi'),
        (ASSERT, "GGML_ASSERT(type >= 0 && type < GGML_TYPE_COUNT) failed"),
        ("0.00.001.441 I srv  llama_server: initializing ...\n", None),
    ],
)
def test_server_failure_detail_quotes_llama_server(log: str, expected: str | None) -> None:
    assert server_failure_detail(log) == expected
    assert get_engine("llamacpp", "native").failure_detail(log) == expected
