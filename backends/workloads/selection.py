"""Which prompts each phase of an experiment sends: warm-up, then every load point, all disjoint.

The problem: the warm-up used to send the first prompts of the measured list, and every load
point the same list from the start, so on an engine with prefix caching the measured TTFT was
partly a cache hit (the sim's second level with the same seed was 90 % cached). Resetting the
cache between phases helps only where the engine has a reset endpoint (TensorRT-LLM and
llama.cpp have none), and never within a phase.

The design: one seeded permutation of the workload's prompts is dealt out in order — the
warm-up takes the first ``warmup`` prompts, each load point (and each repeat of it) the next
``n`` — so no measured request repeats a prompt that the engine saw earlier in the experiment,
and a rerun with the same seed sends exactly the same prompts in the same places. The
permutation comes from its own :class:`random.Random` (seeded by a string, stable across
platforms), so it does not disturb the workload's own draws. Prompts that share the workload's
declared prefix (``sharedPrefix``) share it by design; that part is meant to be cached.

When the workload has fewer prompts than the experiment needs, the deal starts over on a fresh
permutation and :meth:`PromptDeal.take` says so in a note: repeats are then unavoidable, and
the engine's cache reset between phases is what keeps them out of the measurement.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class PromptDeal(Generic[T]):
    """Deals a workload's requests out to an experiment's phases, without repeats while it can."""

    def __init__(self, requests: Sequence[T], *, seed: int) -> None:
        if not requests:
            raise ValueError("a workload needs at least one request")
        self._requests = list(requests)
        self._seed = seed
        self._round = 0
        self._order = self._permutation()
        self._next = 0

    def _permutation(self) -> list[int]:
        order = list(range(len(self._requests)))
        random.Random(f"autotuner:{self._seed}:prompt-deal:{self._round}").shuffle(order)
        return order

    def take(self, n: int) -> tuple[list[T], str | None]:
        """The next ``n`` requests, and a note when some repeat a prompt dealt before."""
        out: list[T] = []
        wrapped = False
        while len(out) < n:
            if self._next >= len(self._order):
                self._round += 1
                self._order = self._permutation()
                self._next = 0
                wrapped = True
            out.append(self._requests[self._order[self._next]])
            self._next += 1
        note = None
        if wrapped:
            note = (
                f"the workload has {len(self._requests)} prompts, fewer than this experiment sends: "
                "some prompts of this load point were sent before (the engine's cache is reset "
                "between load points where it has a reset endpoint)"
            )
        return out, note
