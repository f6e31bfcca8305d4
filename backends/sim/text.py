"""What the simulator reads and writes instead of tokens.

There is no tokenizer: **one whitespace-separated word is one token**, in prompts and in outputs.
That keeps token counts obvious to anyone reading a test (``"a b c"`` is 3 prompt tokens), makes
the usage the server reports agree with a client that counts words, and costs a ``str.split``.

* Prefix caching needs the prompt's content, not only its length: full blocks of
  ``block_size`` words are hashed in a chain (each hash covers the whole prefix), so two prompts
  share exactly their common block-aligned prefix.
* Output length without ``ignore_eos`` is a pseudo-random "EOS" position drawn from a geometric
  distribution (constant per-token EOS probability ``1/MEAN_OUTPUT_TOKENS``), seeded by the
  engine seed and the request's content only — never by arrival order or time — so the same
  requests get the same lengths however they interleave.
* Output text is a fixed cycle of 4-letter words, sliced, never built word by word.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Hashable, Sequence

#: mean of the simulated EOS position when a request does not set ignore_eos
MEAN_OUTPUT_TOKENS = 256

_WORDS = (
    "able",
    "acid",
    "aged",
    "also",
    "area",
    "army",
    "away",
    "baby",
    "back",
    "ball",
    "band",
    "bank",
    "base",
    "bath",
    "bear",
    "beat",
    "been",
    "beer",
    "bell",
    "belt",
    "best",
    "bird",
    "blow",
    "blue",
    "boat",
    "body",
    "bone",
    "book",
    "boot",
    "born",
    "boss",
    "both",
    "bowl",
    "bulk",
    "burn",
    "bush",
    "busy",
    "cake",
    "call",
    "calm",
    "came",
    "camp",
    "card",
    "care",
    "case",
    "cash",
    "cast",
    "cell",
    "chat",
    "chip",
    "city",
    "club",
    "coal",
    "coat",
    "code",
    "cold",
    "come",
    "cook",
    "cool",
    "cope",
)
_WIDTH = 5  # " " + four letters: every output token has the same width, so text is a slice
_CYCLE = "".join(" " + w for w in _WORDS)
_CYCLE_TOKENS = len(_WORDS)
_SLAB = _CYCLE * 64  # 4096 tokens of text to slice from


def count_words(text: str) -> int:
    return len(text.split())


def block_hashes(tokens: Sequence[Hashable], block_size: int) -> tuple[int, ...]:
    """Chained hashes of every full block of ``tokens`` (a trailing partial block is not cached).

    Python's ``hash`` is salted per process, which is fine: the hashes are only compared within
    one engine process, and equal prefixes hash equal whatever the salt.
    """
    out: list[int] = []
    h = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = hash((h, tuple(tokens[start : start + block_size])))
        out.append(h)
    return tuple(out)


def eos_position(seed: int, content: bytes) -> int:
    """The 1-based output position at which this request's simulated EOS comes."""
    digest = hashlib.blake2b(content, digest_size=8, key=struct.pack("<q", seed)).digest()
    u = (int.from_bytes(digest, "little") + 0.5) / 2.0**64  # uniform in (0, 1)
    p = 1.0 / MEAN_OUTPUT_TOKENS
    return 1 + int(math.log(u) / math.log1p(-p))


def text_offset(content: bytes) -> int:
    """Where in the word cycle a request's output starts (so different requests read differently)."""
    return hashlib.blake2b(content, digest_size=2).digest()[0] % _CYCLE_TOKENS


def output_text(offset: int, start: int, count: int) -> str:
    """Text of output tokens ``start .. start+count-1`` of a request whose cycle offset is ``offset``."""
    if count <= 0:
        return ""
    first = (offset + start) % _CYCLE_TOKENS
    slab_tokens = len(_SLAB) // _WIDTH - first
    if count <= slab_tokens:
        return _SLAB[first * _WIDTH : (first + count) * _WIDTH]
    parts = [_SLAB[first * _WIDTH :]]
    left = count - slab_tokens
    while left > 0:
        take = min(left, len(_SLAB) // _WIDTH)
        parts.append(_SLAB[: take * _WIDTH])
        left -= take
    return "".join(parts)
