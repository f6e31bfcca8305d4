"""Dealing a workload's prompts to an experiment's phases: disjoint, reproducible, honest when short."""

from __future__ import annotations

import pytest

from backends.workloads.selection import PromptDeal


def test_warmup_levels_and_repeats_never_share_a_prompt() -> None:
    deal = PromptDeal(list(range(100)), seed=3)
    warm, note = deal.take(8)
    levels = [deal.take(20)[0] for _ in range(4)]
    assert note is None
    dealt = [*warm, *(p for level in levels for p in level)]
    assert len(set(dealt)) == len(dealt) == 88, "no prompt dealt twice"
    assert warm != list(range(8)), "the warm-up is not simply the first prompts of the list"


def test_the_same_seed_deals_the_same_prompts_in_the_same_places() -> None:
    a, b = PromptDeal(list(range(50)), seed=9), PromptDeal(list(range(50)), seed=9)
    assert [a.take(10)[0] for _ in range(3)] == [b.take(10)[0] for _ in range(3)]
    assert PromptDeal(list(range(50)), seed=10).take(10)[0] != PromptDeal(list(range(50)), seed=9).take(10)[0]


def test_a_short_workload_repeats_prompts_and_says_so() -> None:
    deal = PromptDeal(list(range(5)), seed=0)
    _, note = deal.take(4)
    assert note is None
    second, note = deal.take(4)
    assert note is not None and "fewer than this experiment sends" in note
    assert len(second) == 4


def test_an_empty_workload_is_refused() -> None:
    with pytest.raises(ValueError):
        PromptDeal([], seed=0)
