"""Synthetic prompts for ``autotuner bench`` when no dataset is given.

No tokenizer is available offline, so a prompt of *n* tokens is approximated by *n* short,
common English words separated by spaces, each of which is a single token for the BPE
tokenizers of current LLMs (with the leading space). The server's reported usage gives the real
count; ``input_tokens`` here is only the fallback when a server reports none. Words are drawn at
random per prompt, so prompts share no prefix and do not flatter a prefix cache.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_VOCABULARY = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how "
    "their if will up other about out many then them these so some her would make like him into time "
    "has look two more write go see number no way could people my than first water been call who oil "
    "its now find long down day did get come made may part over new sound take only little work know "
    "place year live me back give most very after thing our just name good sentence man think say "
    "great where help through much before line right too mean old any same tell boy follow came want "
    "show also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read"
)
_WORDS = tuple(_VOCABULARY.split())


@dataclass(frozen=True, slots=True)
class SyntheticRequest:
    prompt: str
    max_tokens: int
    input_tokens: int | None = None


def _length(rng: random.Random, mean: int, stddev: float) -> int:
    if stddev <= 0:
        return max(1, mean)
    return max(1, round(rng.gauss(mean, stddev)))


def synthetic_requests(
    n: int,
    *,
    input_len: int = 128,
    output_len: int = 128,
    input_stddev: float = 0.0,
    output_stddev: float = 0.0,
    seed: int = 0,
) -> list[SyntheticRequest]:
    """``n`` prompts of about ``input_len`` tokens asking for about ``output_len`` tokens each."""
    if n < 0 or input_len < 1 or output_len < 1:
        raise ValueError("need n >= 0, input_len >= 1 and output_len >= 1")
    rng = random.Random(seed)
    out: list[SyntheticRequest] = []
    for _ in range(n):
        k = _length(rng, input_len, input_stddev)
        prompt = " ".join(rng.choices(_WORDS, k=k))
        out.append(SyntheticRequest(prompt, _length(rng, output_len, output_stddev), k))
    return out
