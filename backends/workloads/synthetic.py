"""Synthetic prompts: N words drawn from a fixed word list, deterministic for a seed.

Why words and not token ids: the project has no tokenizer at build time (the model may be on
another host, and the sim engine has none), and a text prompt works with every engine and both
OpenAI APIs. The list holds short, common, lowercase English words, each a single token in the
BPE vocabularies of the common model families (a leading space included), so a prompt of N words
is about N tokens there, and exactly N for the sim engine, which counts whitespace-separated
words. docs/workloads.md says how far off a real tokenizer can be.

Determinism: three independent :class:`random.Random` streams, seeded with strings derived from
the seed (string seeds go through sha512, the same on every platform and Python >= 3.2): one for
input lengths, one for output lengths, one for words. Separate streams mean that changing the
output distribution does not change the prompts, and vice versa.

``sharedPrefix`` words are drawn once and start every prompt (a system prompt, for prefix caching).
The input length counts them: a prompt of length L has the prefix plus ``L - sharedPrefix`` words of
its own, and at least one, so every prompt shares the prefix and still differs from the others.
"""

from __future__ import annotations

import random

from backends.workloads.lengths import draw_length
from backends.workloads.model import RequestSpec
from specs.errors import DatasetError
from specs.model import SyntheticDataset

#: Never edit: changing a word changes every synthetic prompt and so every fingerprint.
_WORD_TEXT = """
    the of and to in is was for on are as with his they at be this from have or by one had not
    but what all were when we there can an your which their said if do will each about how up
    out them then she many some so these would other into has more her two like him see time
    could no make than first been its who now people my made over did down only way find use
    may water long little very after words called just where most know get through back much
    before go good new write our used me man too any day same right look think also around
    another came come work three word must because does part even place well such here take
    why things help put years different away again off went old number great tell men say
    small every found still between name should home big give air line set own under read last
    never us left end along while might next sound below saw something thought both few those
    always looked show large often together asked house world going want school important until
    form food keep children feet land side without boy once animals life enough took sometimes
    four head above kind began almost live page got earth need far hand high year mother light
    parts country father let night following picture being study second eyes soon times story
    boys since white days ever paper hard near sentence better best across during today others
    however sure means knew try told young miles sun ways thing whole hear example heard several
    change answer room sea against top turned learn point city play toward five using himself
    usually money seen car morning
"""
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())

#: Upper bound on the words of all synthetic prompts together (about 600 MB of text): beyond it
#: the daemon would run out of memory long before the benchmark ends.
MAX_TOTAL_WORDS = 100_000_000


def build_synthetic(dataset: SyntheticDataset, seed: int) -> list[RequestSpec]:
    rng_in = random.Random(f"autotuner:{seed}:input-lengths")
    rng_out = random.Random(f"autotuner:{seed}:output-lengths")
    rng_words = random.Random(f"autotuner:{seed}:words")

    n = dataset.num_prompts
    prefix_len = dataset.shared_prefix
    input_lengths = [max(draw_length(dataset.input, rng_in), prefix_len + 1) for _ in range(n)]
    output_lengths = [draw_length(dataset.output, rng_out) for _ in range(n)]

    total = sum(input_lengths)
    if total > MAX_TOTAL_WORDS:
        raise DatasetError(
            f"synthetic dataset: {n} prompts of about {total // n} tokens is {total:,} tokens in all, "
            f"above the limit of {MAX_TOTAL_WORDS:,}",
            hint="lower 'numPrompts' (requests cycle through the prompts) or the input length",
        )

    prefix = rng_words.choices(WORDS, k=prefix_len)
    requests = []
    for length, max_tokens in zip(input_lengths, output_lengths, strict=True):
        words = prefix + rng_words.choices(WORDS, k=length - prefix_len)
        requests.append(RequestSpec(prompt=" ".join(words), max_tokens=max_tokens, input_tokens=length))
    return requests


def synthetic_requests(
    n: int,
    *,
    input_len: int = 128,
    output_len: int = 128,
    input_stddev: float = 0.0,
    output_stddev: float = 0.0,
    seed: int = 0,
) -> list[RequestSpec]:
    """``n`` prompts of about ``input_len`` tokens asking for about ``output_len`` tokens each
    (normal lengths with those standard deviations, clipped to at least 1): the prompts of a spec's
    synthetic dataset with these lengths and seed, for callers without a spec (tests,
    benchmarks/loadgen)."""
    if n < 0 or input_len < 1 or output_len < 1:
        raise ValueError("need n >= 0, input_len >= 1 and output_len >= 1")
    if n == 0:
        return []
    dataset = SyntheticDataset.model_validate(
        {
            "kind": "synthetic",
            "input": {"mean": input_len, "stddev": input_stddev},
            "output": {"mean": output_len, "stddev": output_stddev},
            "numPrompts": n,
        }
    )
    return build_synthetic(dataset, seed)
