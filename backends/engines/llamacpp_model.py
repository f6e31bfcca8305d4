"""A tiny llama-architecture GGUF model with random weights, written on the spot.

Why: the llama.cpp engine must be tested, and demonstrated, for real on any machine, and models
cannot be downloaded everywhere (CI runners without a token, air-gapped hosts). A model of a few
hundred kilobytes built by the ``gguf`` package (the llama.cpp project's own writer) is enough to
start the real server, load real tensors, and run real matrix products on every request, so
flags such as threads and batch sizes change measured numbers, while the whole thing is created
in milliseconds and is small enough to commit into the demo's specs repository.

Design decisions:

* **Byte-level SentencePiece vocabulary** (``tokenizer.ggml.model = "llama"``): ``<unk>``,
  ``<s>``, ``</s>`` and the 256 byte tokens ``<0x00>``..``<0xFF>``. llama.cpp's SPM tokenizer
  finds no multi-character piece and falls back to byte tokens for every input, so any prompt
  tokenizes (one token per UTF-8 byte) with no merges table to get wrong.
* **Readable output.** Random weights would sample any byte, and lone bytes above 0x7F are not
  valid UTF-8, which servers hold back or drop, making streamed chunks and token counts
  unreliable. So the residual stream carries a large constant feature (embedding dimension 0)
  and the output projection reads it with ``+1`` for printable ASCII tokens and ``-1`` for all
  others (specials included, so EOS never ends a generation early): after the final RMS norm
  the printable tokens lead by ~11 logits, and the random part of the weights still varies the
  text. Every generated token is then one printable character, one streamed chunk.
* **Deterministic.** One seeded :class:`numpy.random.Generator`, tensors written in a fixed
  order, no timestamps: the same arguments give the same bytes (and so the same fingerprint in
  records). F32 tensors, so nothing depends on a quantizer's version.
* **Atomic.** The file is assembled in a temporary directory and moved into place with
  :func:`core.atomic.write_bytes`, so a reader (the demo's git commit, a running server)
  never sees half a model.

``gguf`` and ``numpy`` are imported lazily: they come with the ``llamacpp`` extra, and importing
this module must not need them.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core import atomic
from specs.errors import MissingExtraError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["TinyLlamaShape", "write_tiny_gguf"]

#: token ids of the specials; byte ``b`` is token ``BYTE_BASE + b``
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_BASE = 3
VOCAB_SIZE = BYTE_BASE + 256
#: bytes the model generates: space to tilde
PRINTABLE = range(0x20, 0x7F)

# ggml token types (gguf.TokenType), repeated here so the vocabulary is plain data
_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_BYTE = 2, 3, 6
#: how strongly the constant residual feature is set (embedding dimension 0)
_BIAS_FEATURE = 8.0


@dataclass(frozen=True)
class TinyLlamaShape:
    """The hyperparameters of the tiny model (llama.* keys of the GGUF file)."""

    n_layers: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_kv_head: int = 2
    n_ff: int = 128
    n_ctx_train: int = 512

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def problems(self) -> list[str]:
        out = []
        for name in ("n_layers", "n_embd", "n_head", "n_kv_head", "n_ff", "n_ctx_train"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if out:
            return out
        if self.n_embd % self.n_head:
            out.append(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        elif self.head_dim % 2:
            out.append(f"the head size n_embd/n_head ({self.head_dim}) must be even for RoPE")
        if self.n_head % self.n_kv_head:
            out.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        return out


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    scores = [0.0] * VOCAB_SIZE
    types = [_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_CONTROL, *([_TOKEN_BYTE] * 256)]
    return tokens, scores, types


def _tensors(shape: TinyLlamaShape, seed: int) -> list[tuple[str, npt.NDArray[np.float32]]]:
    """Every tensor of the llama architecture, by its GGUF name, in numpy (row-major) shape.

    The writer reverses numpy shapes into ggml's ``ne`` order, so a projection from ``n_in`` to
    ``n_out`` is a ``(n_out, n_in)`` array, as in the Hugging Face checkpoints that
    ``convert_hf_to_gguf.py`` reads.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    e, f, kv = shape.n_embd, shape.n_ff, shape.n_kv_head * shape.head_dim

    def normal(rows: int, cols: int, std: float) -> npt.NDArray[np.float32]:
        return rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)

    def ones() -> npt.NDArray[np.float32]:
        return np.ones(e, dtype=np.float32)

    embd = normal(VOCAB_SIZE, e, 1.0)
    embd[:, 0] = _BIAS_FEATURE
    out: list[tuple[str, npt.NDArray[np.float32]]] = [("token_embd.weight", embd)]
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        # small block weights: the blocks vary the text without drowning the constant feature
        out += [
            (p + "attn_norm.weight", ones()),
            (p + "attn_q.weight", normal(e, e, 0.1)),
            (p + "attn_k.weight", normal(kv, e, 0.1)),
            (p + "attn_v.weight", normal(kv, e, 0.1)),
            (p + "attn_output.weight", normal(e, e, 0.05)),
            (p + "ffn_norm.weight", ones()),
            (p + "ffn_gate.weight", normal(f, e, 0.1)),
            (p + "ffn_up.weight", normal(f, e, 0.1)),
            (p + "ffn_down.weight", normal(e, f, 0.05)),
        ]
    head = normal(VOCAB_SIZE, e, 0.3)
    head[:, 0] = -1.0
    head[[BYTE_BASE + b for b in PRINTABLE], 0] = 1.0
    out += [("output_norm.weight", ones()), ("output.weight", head)]
    return out


def write_tiny_gguf(
    path: Path,
    *,
    seed: int = 0,
    n_layers: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_kv_head: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 512,
) -> Path:
    """Write a tiny random llama model to ``path`` (parents created, atomically) and return it.

    The defaults give a file of about 430 kB; it loads in llama.cpp (llama-cpp-python's server
    or ``llama-server``) and generates printable ASCII text, one byte per token, up to
    ``n_ctx_train`` tokens of context. Raises :class:`ValueError` for impossible shapes and
    :class:`~specs.errors.MissingExtraError` when the ``gguf`` package is not installed.
    """
    shape = TinyLlamaShape(
        n_layers=n_layers,
        n_embd=n_embd,
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_ff=n_ff,
        n_ctx_train=n_ctx_train,
    )
    problems = shape.problems()
    if problems:
        raise ValueError("tiny GGUF model: " + "; ".join(problems))
    try:
        import gguf
    except ImportError:
        raise MissingExtraError("gguf", "llamacpp") from None

    path = Path(path)
    tokens, scores, types = _vocabulary()
    with tempfile.TemporaryDirectory(prefix="tiny-gguf-") as tmp:
        scratch = Path(tmp) / "model.gguf"
        writer = gguf.GGUFWriter(scratch, arch="llama")
        try:
            writer.add_name(f"tiny-llama-random-s{seed}")
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            writer.add_context_length(shape.n_ctx_train)
            writer.add_embedding_length(shape.n_embd)
            writer.add_block_count(shape.n_layers)
            writer.add_feed_forward_length(shape.n_ff)
            writer.add_head_count(shape.n_head)
            writer.add_head_count_kv(shape.n_kv_head)
            writer.add_rope_dimension_count(shape.head_dim)
            writer.add_rope_freq_base(10000.0)
            writer.add_layer_norm_rms_eps(1e-5)
            writer.add_vocab_size(VOCAB_SIZE)
            writer.add_tokenizer_model("llama")
            writer.add_token_list(tokens)
            writer.add_token_scores(scores)
            writer.add_token_types(types)
            writer.add_unk_token_id(UNK_ID)
            writer.add_bos_token_id(BOS_ID)
            writer.add_eos_token_id(EOS_ID)
            writer.add_add_bos_token(True)
            writer.add_add_eos_token(False)
            for name, tensor in _tensors(shape, seed):
                writer.add_tensor(name, tensor)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        atomic.write_bytes(path, scratch.read_bytes())
    return path
